//! The main job for now: sample with the analytic GMM denoiser on the default
//! backend and print the trajectory summary.
//!
//! ```text
//! cargo run --release --example sample_gmm -- [--solver dpmpp2m|dpmpp3m|unipc|ddim] [--steps N]
//!                                              [--dtype f16|f32] [--batch B] [--eta E]
//! DIFFINV_BACKEND=cpu|wgpu|cuda|auto picks the backend (default auto).
//! ```

use std::process::ExitCode;

use diffinv::{
    rng, sample, select, BackendFn, DType, GmmDenoiser, HostSlice, NoiseSchedule, Ops, Plan,
    PlanConfig, SamplerOptions, Shape, Solver, Tensor,
};

struct Args {
    solver: Solver,
    steps: usize,
    dtype: DType,
    batch: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        solver: Solver::DPMPP_2M,
        steps: 20,
        dtype: DType::F16,
        batch: 4,
    };
    let mut eta = 0.0;
    let mut solver_name = "dpmpp2m".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--solver" => solver_name = value()?,
            "--steps" => args.steps = value()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--batch" => args.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--eta" => eta = value()?.parse().map_err(|e| format!("--eta: {e}"))?,
            "--dtype" => {
                args.dtype = match value()?.as_str() {
                    "f16" => DType::F16,
                    "f32" => DType::F32,
                    other => return Err(format!("--dtype {other}: expected f16 or f32")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.solver = match solver_name.as_str() {
        "dpmpp2m" => Solver::DPMPP_2M,
        "dpmpp3m" => Solver::DPMPP_3M,
        "unipc" => Solver::UniPc,
        "ddim" => Solver::Ddim { eta },
        other => {
            return Err(format!(
                "--solver {other}: expected dpmpp2m, dpmpp3m, unipc or ddim"
            ))
        }
    };
    Ok(args)
}

const STDS: [f64; 3] = [0.05, 0.15, 0.3];

/// Means of a 3-component mixture on `dim`-sized images: smooth and distinct.
fn demo_means(dim: usize) -> Vec<f64> {
    (0..3)
        .flat_map(|k| (0..dim).map(move |i| 0.6 * ((i as f64) * 0.05 * (k + 1) as f64).sin()))
        .collect()
}

fn run<B: Ops>(backend: &B, args: &Args) -> diffinv::Result<()> {
    let schedule = NoiseSchedule::ddpm_linear();
    let shape = Shape::new(args.batch, 3, 16, 16);
    let config = PlanConfig {
        solver: args.solver,
        steps: args.steps,
        ..PlanConfig::default()
    };
    let plan = Plan::new(&schedule, &config)?;
    let dim = shape.item_len();
    let means = demo_means(dim);
    let mut model = GmmDenoiser::new(
        means.clone(),
        STDS.to_vec(),
        vec![0.5, 0.3, 0.2],
        dim,
        schedule.clone(),
    )?;
    let x_t = rng::normal_vec(2024, shape.checked_len()?);
    let mut x = Tensor::from_host(backend, shape, args.dtype, HostSlice::F32(&x_t))?;
    println!(
        "solver {:?}, {} steps, {:?}, shape {shape}",
        args.solver,
        plan.len(),
        args.dtype
    );
    println!("{:>4} {:>7} {:>10}", "step", "tau", "sigma");
    let start = std::time::Instant::now();
    let launches = backend.launch_count();
    sample(
        backend,
        &plan,
        &mut model,
        &mut x,
        SamplerOptions {
            seed: 1,
            check_finite: true,
        },
        |p| println!("{:>4} {:>7.1} {:>10.5}", p.step, p.tau, p.sigma),
    )?;
    let elapsed = start.elapsed();
    let out = x.to_f64(backend)?;
    let mean = out.iter().sum::<f64>() / out.len() as f64;
    let (lo, hi) = out
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    println!(
        "done in {elapsed:.2?} ({} kernel launches): mean {mean:.4}, min {lo:.4}, max {hi:.4}",
        backend.launch_count() - launches
    );
    // A good sampler lands each item near one mixture mean, about one component std away.
    for (b, item) in out.chunks(dim).enumerate() {
        let rms = |k: usize| {
            let mu = &means[k * dim..(k + 1) * dim];
            (item
                .iter()
                .zip(mu)
                .map(|(x, m)| (x - m).powi(2))
                .sum::<f64>()
                / dim as f64)
                .sqrt()
        };
        let k = (0..3)
            .min_by(|&i, &j| rms(i).total_cmp(&rms(j)))
            .unwrap_or(0);
        println!(
            "item {b}: nearest component {k}, rms distance {:.4} (component std {})",
            rms(k),
            STDS[k]
        );
    }
    Ok(())
}

/// The sampling run, generic over whichever backend `select` chose.
struct Sample<'a>(&'a Args);

impl BackendFn for Sample<'_> {
    type Output = diffinv::Result<()>;
    fn call<B: Ops>(self, backend: &B) -> Self::Output {
        run(backend, self.0)
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = select(None).and_then(|sel| {
        println!(
            "backend: {} on {} ({})",
            sel.backend.kind(),
            sel.backend.device_name(),
            sel.reason
        );
        sel.backend.run(Sample(&args))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
