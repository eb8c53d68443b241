//! The CPU forward of the google/ddpm-cifar10-32 architecture (random
//! weights), timed the way `tools/peer_unet.py` times PyTorch and ONNX
//! Runtime: median and minimum of `reps` calls after one warm-up, batch 1 and
//! 8, 32×32, one timestep per item. Run the two back to back for a side-by-side
//! comparison on the same machine load.
//!
//! `cargo run --release --example unet_forward_time -- [f32|f16] [reps]`
//!
//! `DIFFINV_CPU_WINOGRAD=0` in the environment times the im2col convolutions
//! instead of Winograd's.

use std::time::Instant;

use diffinv::unet::{Timesteps, UNet, UNetConfig};
use diffinv::DType;

fn main() -> diffinv::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dtype = match args.first().map(String::as_str) {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some(other) => {
            eprintln!("unknown dtype {other:?}: f32 or f16");
            std::process::exit(2);
        }
    };
    let reps: usize = match args.get(1).map(|s| s.parse()) {
        None => 7,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("reps must be a positive integer");
            std::process::exit(2);
        }
    };
    let mut net = UNet::random(UNetConfig::ddpm_cifar10_32(), dtype, 7)?;
    for batch in [1usize, 8] {
        let dims = [batch, 3, 32, 32];
        let x = diffinv::rng::normal_vec(3, dims.iter().product());
        let t: Vec<i64> = (0..batch as i64).map(|i| 999 - 97 * i).collect();
        net.forward(&x, dims, Timesteps::Int(&t))?;
        let mut ms = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            std::hint::black_box(net.forward(&x, dims, Timesteps::Int(&t))?);
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "diffinv cpu cifar10-32 b{batch} {dtype:?}: median {:.1} ms, min {:.1} ms over {reps}",
            ms[reps / 2],
            ms[0]
        );
    }
    Ok(())
}
