//! `diffinv bench`: the kernel microbenchmarks on one backend as a terminal
//! table — each fused kernel's median time, GB/s of the bytes it must move at
//! minimum, that as a fraction of the backend's own copy bandwidth, and its
//! launches. (`cargo bench` has the full criterion suites with their unfused
//! baselines; this is the quick look.)

use std::time::{Duration, Instant};

use clap::Args;
use diffinv::backend::{select, BackendFn};
use diffinv::guidance::{CpgdmConfig, CpgdmPlan};
use diffinv::ops::{
    solver_step, CgOptions, ConjugateGradient, CpgdmSampler, NormalSystem, Operator,
};
use diffinv::solver::{SolverStep, StepLaunch};
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

use crate::error::CliResult;

#[derive(Args)]
pub struct BenchArgs {
    /// auto, cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Images per batch (3×256×256 each).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Timed repetitions per kernel (the median is reported).
    #[arg(long, default_value_t = 20)]
    reps: usize,
}

/// The median of `reps` runs of `f` (each followed by a synchronize) and the
/// launches per run.
fn time<B: Ops>(b: &B, reps: usize, mut f: impl FnMut()) -> diffinv::Result<(Duration, f64)> {
    f();
    b.synchronize()?;
    let before = b.launch_count();
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f();
        b.synchronize()?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let launches = (b.launch_count() - before) as f64 / reps as f64;
    Ok((samples[reps / 2], launches))
}

struct Table {
    rows: Vec<(String, Duration, f64, f64)>,
}

impl Table {
    fn add(&mut self, what: String, (median, launches): (Duration, f64), bytes: f64) {
        self.rows
            .push((what, median, bytes / median.as_secs_f64() / 1e9, launches));
    }
}

struct Bench {
    batch: usize,
    reps: usize,
}

impl BackendFn for Bench {
    type Output = diffinv::Result<Table>;
    fn call<B: Ops>(self, b: &B) -> Self::Output {
        let shape = Shape::new(self.batch, 3, 256, 256);
        let n = shape.checked_len()?;
        let values: Vec<f32> = (0..n).map(|i| ((i % 89) as f32 - 44.0) / 44.0).collect();
        let tensor = |dtype| Tensor::from_host(b, shape, dtype, HostSlice::F32(&values));
        let mut table = Table { rows: Vec::new() };
        let reps = self.reps.max(1);
        let (src, mut dst) = (tensor(DType::F32)?, tensor(DType::F32)?);
        table.add(
            "copy (f32)".into(),
            time(b, reps, || {
                let _ = b.copy(src.buffer(), dst.buffer_mut());
            })?,
            2.0 * 4.0 * n as f64,
        );
        // One DDIM-like step x ← a·x + b·ε (no history), per dtype.
        for dtype in [DType::F16, DType::F32] {
            if !b.supports(dtype) {
                continue;
            }
            let (mut x, eps) = (tensor(dtype)?, tensor(dtype)?);
            let mut none = Tensor::zeros(b, Shape::flat(1), dtype)?;
            let step = SolverStep {
                cx: 0.0,
                ce: -0.1,
                d_slot: None,
                h1: None,
                h2: None,
                xc_slot: None,
                corrector: None,
                a: 0.99,
                b: [1.0, 0.0, 0.0],
                noise: 0.0,
            };
            let launch = StepLaunch { step: 0, seed: 0 };
            table.add(
                format!("solver step ({dtype:?})"),
                time(b, reps, || {
                    let _ = solver_step(b, &step, launch, &mut x, &eps, &mut none);
                })?,
                3.0 * dtype.size() as f64 * n as f64,
            );
        }
        let item = Shape::from_dims(&[3, 256, 256])?;
        let op = Operator::avg_pool(b, item, 4)?;
        let mut px = tensor(DType::F32)?;
        table.add(
            "sr4 projector P (f32)".into(),
            time(b, reps, || {
                let _ = op.project(b, &src, &mut px);
            })?,
            2.0 * 4.0 * n as f64,
        );
        // A C-ΠGDM step with the Jacobian dropped (one fused pass).
        let plan = CpgdmPlan::new(CpgdmConfig {
            steps: 100_000,
            ..CpgdmConfig::default()
        })?;
        let y = Tensor::zeros(b, Shape::new(self.batch, 3, 64, 64), DType::F32)?;
        let mut run = CpgdmSampler::new(b, &plan, &op, &y)?;
        run.init(b, &src)?;
        table.add(
            "C-ΠGDM step, J dropped (f32)".into(),
            time(b, reps, || {
                let _ = run.update(b, &src, None);
            })?,
            7.0 * 4.0 * n as f64,
        );
        // One CG iteration: the difference of 9 and 1 iterations, over 8.
        let mut per = Vec::new();
        for m in [1, 9] {
            let options = CgOptions {
                iterations: m,
                tolerance: None,
            };
            let mut cg = ConjugateGradient::new(
                b,
                &op,
                self.batch,
                DType::F32,
                NormalSystem::tikhonov(1.0),
                options,
            )?;
            let mut x = tensor(DType::F32)?;
            per.push(time(b, reps, || {
                let _ = cg.solve(b, &mut x, &src, 1.0, 1.0);
            })?);
        }
        let iteration = (
            per[1].0.saturating_sub(per[0].0) / 8,
            (per[1].1 - per[0].1) / 8.0,
        );
        table.add(
            "CG iteration, sr4 (f32)".into(),
            iteration,
            11.0 * 4.0 * n as f64,
        );
        Ok(table)
    }
}

pub fn run(args: BenchArgs) -> CliResult<()> {
    let selection = select(Some(&args.backend))?;
    let device = selection.backend.device_name();
    let table = selection.backend.run(Bench {
        batch: args.batch.max(1),
        reps: args.reps,
    })?;
    let copy = table.rows.first().map_or(1.0, |r| r.2);
    println!(
        "{} × 3×256×256 on {} ({device})\n",
        args.batch,
        selection.backend.kind().name()
    );
    println!(
        "{:<30} {:>10} {:>8} {:>7} {:>9}",
        "kernel", "median", "GB/s", "of copy", "launches"
    );
    for (what, median, gbps, launches) in &table.rows {
        println!(
            "{what:<30} {:>8.3} ms {gbps:>8.1} {:>6.0} % {launches:>9.0}",
            median.as_secs_f64() * 1e3,
            100.0 * gbps / copy
        );
    }
    Ok(())
}
