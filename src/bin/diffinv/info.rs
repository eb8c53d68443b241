//! `diffinv info`: every backend, whether it opens here, its device (and what
//! runs its FFTs and convolutions), and why not when it does not.

use diffinv::backend::{select, BackendFn};
use diffinv::ops::nn::ConvPath;
use diffinv::ops::FftPath;
use diffinv::Ops;

use crate::error::CliResult;

/// Which FFT and convolution paths a backend takes, so GPU users can compare
/// cuFFT and cuDNN with the crate's kernels (`DIFFINV_CUFFT=0` /
/// `DIFFINV_CUDNN=0` keep the libraries unloaded).
struct PathsOf;

impl BackendFn for PathsOf {
    type Output = (FftPath, ConvPath);
    fn call<B: Ops>(self, backend: &B) -> (FftPath, ConvPath) {
        (backend.fft_path(), backend.conv_path())
    }
}

pub fn run() -> CliResult<()> {
    println!("{:<6} {:<10} device / reason", "backend", "available");
    for name in ["cpu", "wgpu", "cuda"] {
        match select(Some(name)) {
            Ok(s) => {
                let (fft, conv) = s.backend.run(PathsOf);
                println!(
                    "{name:<7} {:<10} {} (FFT: {fft}; nn conv: {conv})",
                    "yes",
                    s.backend.device_name(),
                )
            }
            Err(e) => println!("{name:<7} {:<10} {e}", "no"),
        }
    }
    let auto = select(Some("auto"))?;
    println!(
        "\nauto picks {}: {}",
        auto.backend.kind().name(),
        auto.reason
    );
    Ok(())
}
