//! `diffinv`: restore a photograph with a diffusion prior in a handful of
//! steps, list the backends, time the kernels, or run a UNet checkpoint on
//! stored inputs.

mod bench;
mod error;
mod image_io;
mod info;
mod restore;
mod unet_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Diffusion-prior restoration with fused CUDA / WGSL kernels.
#[derive(Parser)]
#[command(name = "diffinv", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Degrade an image, restore it with a diffusion prior, score and save both.
    Restore(restore::RestoreArgs),
    /// Every backend: whether it is available, its device, and why not.
    Info,
    /// The kernel microbenchmarks on one backend, as a table.
    Bench(bench::BenchArgs),
    /// Run a UNet checkpoint on stored inputs (safetensors in and out).
    Unet(unet_cmd::UnetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Restore(args) => restore::run(args),
        Command::Info => info::run(),
        Command::Bench(args) => bench::run(args),
        Command::Unet(args) => unet_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diffinv: {e}");
            ExitCode::FAILURE
        }
    }
}
