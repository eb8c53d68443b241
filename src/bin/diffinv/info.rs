//! `diffinv info`: every backend, whether it opens here, its device, and why
//! not when it does not.

use diffinv::backend::select;

use crate::error::CliResult;

pub fn run() -> CliResult<()> {
    println!("{:<6} {:<10} device / reason", "backend", "available");
    for name in ["cpu", "wgpu", "cuda"] {
        match select(Some(name)) {
            Ok(s) => println!("{name:<7} {:<10} {}", "yes", s.backend.device_name()),
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
