//! `diffinv restore`: degrade a clean image with a task's operator, restore it
//! with a diffusion prior, and write degraded.png, baseline.png (H⁺y),
//! restored.png and compare.png (clean | baseline | restored).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use diffinv::backend::{select, AnyBackend, BackendFn, BackendKind};
use diffinv::restore::{
    restore, Image, Method, RestoreConfig, Restored, Task, DEFAULT_START, MAX_SAMPLES,
};
use diffinv::sampler::{Jacobian, Progress};
use diffinv::unet::{DeviceUNet, UNet};
use diffinv::{DType, Ops};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{fail, CliError, CliResult};
use crate::image_io::{self, Fit, Staged};

#[derive(Args)]
pub struct RestoreArgs {
    /// The clean image (PNG or JPEG): it is degraded, then restored.
    #[arg(long)]
    image: PathBuf,
    /// sr4, inpaint-box, inpaint-random, colorize or deblur.
    #[arg(long, default_value = "sr4")]
    task: String,
    /// Measurement noise σ in image units ([0, 1]). With noise, cpigdm,
    /// pigdm and dds weigh y by it, deblurring inverts a blur truncated at
    /// √(2σ), and cpigdm and pigdm refuse deblurring (use dps or dds).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// cpigdm, pigdm, dps or dds.
    #[arg(long, default_value = "cpigdm")]
    method: String,
    /// Sampler steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// fd (a forward difference: two network calls per step) or dropped.
    #[arg(long, default_value = "dropped")]
    jacobian: String,
    /// auto, cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// f16 or f32.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Where the network runs: auto (on the backend if it is a GPU and the
    /// dtype f32, else on the CPU), cpu, or device (on the backend, f32).
    #[arg(long, default_value = "auto")]
    network: String,
    /// Seeds the start noise, every step's noise and the random mask.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The training index τ0 (2…999) where the sampler starts from noised
    /// H⁺y.
    #[arg(long, default_value_t = DEFAULT_START)]
    start: usize,
    /// End with x + H⁺(y − Hx), the sample made consistent with y: auto (when
    /// --noise is 0), on or off.
    #[arg(long, default_value = "auto")]
    project: String,
    /// Posterior samples to draw (one batch, 1…64); restored.png is their
    /// mean, which scores higher PSNR than one sample where the prior is
    /// unsure (deblurring's fine detail) but looks smoother.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// A diffusers UNet2DModel folder; default: the bundled demo model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the four PNGs go (created if missing).
    #[arg(long, default_value = "restore-out")]
    out: PathBuf,
    /// Print one JSON object with the settings and the metrics.
    #[arg(long)]
    json: bool,
    /// Crop to the nearest size the model and task take.
    #[arg(long, conflicts_with = "pad")]
    crop: bool,
    /// Pad (by reflection) to the nearest size the model and task take.
    #[arg(long)]
    pad: bool,
}

/// The bundled demo model: `assets/demo-unet` here, else in the source tree.
fn default_model() -> PathBuf {
    let local = PathBuf::from("assets/demo-unet");
    if local.join("config.json").is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-unet")
}

fn parse<T: Copy>(what: &str, value: &str, options: &[(&str, T)]) -> CliResult<T> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            CliError(format!(
                "unknown {what} {value:?} (one of: {})",
                names.join(", ")
            ))
        })
}

impl RestoreArgs {
    fn network_choice(&self) -> CliResult<Network> {
        let options = [
            ("auto", Network::Auto),
            ("cpu", Network::Cpu),
            ("device", Network::Device),
        ];
        parse("network", &self.network, &options)
    }
}

fn config(args: &RestoreArgs) -> CliResult<RestoreConfig> {
    let tasks: Vec<(&str, Task)> = Task::ALL.iter().map(|&t| (t.name(), t)).collect();
    let methods: Vec<(&str, Method)> = Method::ALL.iter().map(|&m| (m.name(), m)).collect();
    let jacobians = [
        ("fd", Jacobian::FiniteDifference),
        ("dropped", Jacobian::Dropped),
    ];
    let dtypes = [("f16", DType::F16), ("f32", DType::F32)];
    if args.steps == 0 {
        return fail!("--steps must be at least 1");
    }
    if !(args.noise.is_finite() && args.noise >= 0.0) {
        return fail!("--noise must be a finite σ ≥ 0, not {}", args.noise);
    }
    if !(1..=MAX_SAMPLES).contains(&args.samples) {
        return fail!("--samples must be 1…{MAX_SAMPLES}, not {}", args.samples);
    }
    let noiseless = args.noise == 0.0;
    let projections = [("auto", noiseless), ("on", true), ("off", false)];
    Ok(RestoreConfig {
        task: parse("task", &args.task, &tasks)?,
        noise: args.noise,
        method: parse("method", &args.method, &methods)?,
        steps: args.steps,
        jacobian: parse("jacobian", &args.jacobian, &jacobians)?,
        dtype: parse("dtype", &args.dtype, &dtypes)?,
        seed: args.seed,
        start: args.start,
        project: parse("project", &args.project, &projections)?,
        samples: args.samples,
    })
}

/// A progress bar on a terminal, one line per step otherwise (on stderr).
fn reporter(steps: usize) -> impl FnMut(Progress) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(steps as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed} {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    move |p: Progress| match &bar {
        Some(bar) => {
            bar.set_position(p.step as u64 + 1);
            if p.step + 1 == p.steps {
                bar.finish_and_clear();
            }
        }
        None => eprintln!(
            "step {}/{} (network time {:.0})",
            p.step + 1,
            p.steps,
            p.tau
        ),
    }
}

/// Where `--network` puts the network.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Network {
    Auto,
    Cpu,
    Device,
}

/// Whether the network runs on the backend (`DeviceUNet`: no image crossing
/// to the host between steps; f32, or f16 where the backend's nn family
/// stores it) rather than on the CPU (`UNet`: im2col + GEMM, f32 or f16
/// storage). `auto` puts it on a GPU in f32, and on the CPU for the CPU
/// backend, a software adapter (lavapipe: the CPU network is far faster
/// there) and f16.
fn network_on_device(choice: Network, backend: &AnyBackend, dtype: DType) -> CliResult<bool> {
    match choice {
        Network::Cpu => Ok(false),
        Network::Auto => Ok(dtype == DType::F32 && backend.is_gpu()),
        Network::Device if backend.kind() == BackendKind::Cpu => {
            fail!("--network device needs a device backend (wgpu or cuda); the cpu backend runs the CPU network")
        }
        Network::Device => Ok(true),
    }
}

/// The restoration on whichever backend was selected, with the network on
/// the device or the CPU.
struct Job<'a> {
    net: &'a mut UNet,
    on_device: bool,
    model: &'a Path,
    clean: &'a Image,
    config: &'a RestoreConfig,
}

impl BackendFn for Job<'_> {
    type Output = diffinv::Result<Restored>;
    fn call<B: Ops>(self, backend: &B) -> Self::Output {
        let progress = reporter(self.config.steps);
        if self.on_device {
            let mut net = DeviceUNet::load(backend, self.model, self.config.dtype)?;
            net.set_prediction(self.net.prediction());
            return restore(backend, &mut net, self.clean, self.config, progress);
        }
        restore(backend, self.net, self.clean, self.config, progress)
    }
}

pub fn run(args: RestoreArgs) -> CliResult<()> {
    let config = config(&args)?;
    let network_choice = args.network_choice()?;
    let model = args.model.clone().unwrap_or_else(default_model);
    if !model.join("config.json").is_file() {
        return fail!(
            "{} is not a model folder: it has no config.json",
            model.display()
        );
    }
    let mut net = UNet::load(&model, config.dtype)
        .map_err(|e| CliError(format!("cannot load the model in {}: {e}", model.display())))?;
    // Every down block but the last halves the sides.
    let levels = net.config().down_blocks.len().saturating_sub(1) as u32;
    let multiple = lcm(1 << levels, config.task.side_multiple());
    let fit = match (args.crop, args.pad) {
        (true, _) => Fit::Crop,
        (_, true) => Fit::Pad,
        _ => Fit::Exact,
    };
    let clean = image_io::fit(image_io::load(&args.image)?, multiple, fit)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError(format!("cannot create {}: {e}", args.out.display())))?;
    let selection = select(Some(&args.backend))?;
    let backend_name = selection.backend.kind().name();
    let device = selection.backend.device_name();
    let on_device = network_on_device(network_choice, &selection.backend, config.dtype)?;
    let network = if on_device { backend_name } else { "cpu" };
    let out = selection.backend.run(Job {
        net: &mut net,
        on_device,
        model: &model,
        clean: &clean,
        config: &config,
    })?;
    let mut staged = Staged::new();
    staged.png(args.out.join("degraded.png"), &out.degraded)?;
    staged.png(args.out.join("baseline.png"), &out.baseline)?;
    staged.png(args.out.join("restored.png"), &out.restored)?;
    let compare = image_io::side_by_side(&[&clean, &out.baseline, &out.restored]);
    staged.png(args.out.join("compare.png"), &compare)?;
    staged.commit()?;
    let per_nfe = out.seconds / out.nfe as f64;
    let outside = 1.0 - out.network_seconds / out.seconds;
    if args.json {
        let report = serde_json::json!({
            "image": args.image.display().to_string(),
            "height": clean.height,
            "width": clean.width,
            "task": config.task.name(),
            "noise": config.noise,
            "method": config.method.name(),
            "steps": config.steps,
            "jacobian": args.jacobian,
            "dtype": args.dtype,
            "seed": config.seed,
            "start": config.start,
            "project": config.project,
            "samples": config.samples,
            "backend": backend_name,
            "device": device,
            "network_on": network,
            "model": model.display().to_string(),
            "out": args.out.display().to_string(),
            "psnr_baseline": out.baseline_psnr,
            "psnr_restored": out.restored_psnr,
            "ssim_baseline": out.baseline_ssim,
            "ssim_restored": out.restored_ssim,
            "nfe": out.nfe,
            "seconds": out.seconds,
            "seconds_per_nfe": per_nfe,
            "seconds_network": out.network_seconds,
            "share_outside_network": outside,
        });
        println!("{report}");
    } else {
        println!(
            "{} {}×{} · {} · {} {} steps ({} NFE) on {backend_name} ({device}), {}, network on {network}",
            args.image.display(),
            clean.width,
            clean.height,
            config.task.name(),
            config.method.name(),
            config.steps,
            out.nfe,
            args.dtype,
        );
        println!(
            "baseline H⁺y: PSNR {:.2} dB, SSIM {:.3}",
            out.baseline_psnr, out.baseline_ssim
        );
        let what = if config.samples > 1 {
            format!("restored (mean of {} samples):", config.samples)
        } else {
            "restored:".into()
        };
        println!(
            "{what:<13} PSNR {:.2} dB, SSIM {:.3}",
            out.restored_psnr, out.restored_ssim
        );
        println!(
            "{:.2} s in all, {:.3} s per NFE, {:.1} % outside the network; images in {}",
            out.seconds,
            per_nfe,
            100.0 * outside,
            args.out.display()
        );
    }
    Ok(())
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b) * b
}
