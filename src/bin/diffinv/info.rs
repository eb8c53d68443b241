//! `diffinv info`: every backend, whether it opens here, its device (and what
//! runs its FFTs), and why not when it does not.

use diffinv::backend::{select, BackendFn};
use diffinv::ops::FftPath;
use diffinv::Ops;

use crate::error::CliResult;

/// Which FFT path a backend takes, so GPU users can compare cuFFT with the
/// crate's kernels (`DIFFINV_CUFFT=0` keeps cuFFT unloaded).
struct FftPathOf;

impl BackendFn for FftPathOf {
    type Output = FftPath;
    fn call<B: Ops>(self, backend: &B) -> FftPath {
        backend.fft_path()
    }
}

pub fn run() -> CliResult<()> {
    println!("{:<6} {:<10} device / reason", "backend", "available");
    for name in ["cpu", "wgpu", "cuda"] {
        match select(Some(name)) {
            Ok(s) => println!(
                "{name:<7} {:<10} {} (FFT: {})",
                "yes",
                s.backend.device_name(),
                s.backend.run(FftPathOf)
            ),
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
