//! Parameters, FLOPs and weight bytes of the released DDPM architectures, from
//! the built network (random weights): the numbers behind the roofline estimate
//! in BENCHMARKS.md.
//!
//! `cargo run --release --example unet_flops`

use diffinv::unet::{UNet, UNetConfig};
use diffinv::DType;

fn main() -> diffinv::Result<()> {
    let cases = [
        ("ddpm-cifar10-32", UNetConfig::ddpm_cifar10_32(), 32),
        ("ddpm-celebahq-256", UNetConfig::ddpm_celebahq_256(), 256),
    ];
    for (name, config, side) in cases {
        // f16 storage: half the memory of a build that only counts.
        let net = UNet::random(config, DType::F16, 0)?;
        let flops = net.flops(1, side, side);
        println!(
            "{name} at {side}×{side}: {:.1} M parameters ({:.0} MB in f16, {:.0} MB in f32), {:.1} GFLOP per image",
            net.parameters() as f64 * 1e-6,
            net.parameters() as f64 * 2e-6,
            net.parameters() as f64 * 4e-6,
            flops as f64 * 1e-9,
        );
    }
    Ok(())
}
