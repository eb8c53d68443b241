//! Pieces the fused-vs-unfused benchmarks share: a framework's in-place axpy
//! as one launch, and a criterion timer that reports the median step with the
//! launches and host syncs per step.

use std::time::{Duration, Instant};

use criterion::Criterion;

use diffinv::ops::solver_step;
use diffinv::solver::{SolverStep, StepLaunch};
use diffinv::{Ops, Tensor};

/// `dst ← a·dst + b·src` as one launch of the solver kernel (x ← cx·x − ce·m
/// with no history: `a·x_in + b0·D`, D = cx·x − ce·m).
pub fn axpy<B: Ops>(
    backend: &B,
    history: &mut Tensor<B>,
    dst: &mut Tensor<B>,
    a: f64,
    b: f64,
    src: &Tensor<B>,
) {
    let step = SolverStep {
        cx: 0.0,
        ce: -b,
        d_slot: None,
        h1: None,
        h2: None,
        xc_slot: None,
        corrector: None,
        a,
        b: [1.0, 0.0, 0.0],
        noise: 0.0,
    };
    let launch = StepLaunch { step: 0, seed: 0 };
    solver_step(backend, &step, launch, dst, src, history).expect("axpy launch");
}

/// What [`time_step`] measured: the median step, and per step the launches
/// and host syncs.
pub struct Timed {
    pub median: Duration,
    pub launches: f64,
    pub host_syncs: f64,
}

/// Criterion for slow fused-vs-unfused cases: 10 samples, a short warm-up
/// and measurement (a lavapipe case takes seconds per call); command-line
/// options still apply.
pub fn quick_criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

/// Time `step` (then a synchronize) under criterion as `id`; `None` when the
/// id is filtered out.
pub fn time_step<B: Ops>(
    c: &mut Criterion,
    b: &B,
    id: &str,
    mut step: impl FnMut(),
) -> Option<Timed> {
    let mut samples = Vec::new();
    let (launches_before, syncs_before) = (b.launch_count(), b.host_sync_count());
    c.bench_function(id, |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                step();
                b.synchronize().unwrap();
                let dt = t.elapsed();
                total += dt;
                samples.push(dt);
            }
            total
        })
    });
    samples.sort();
    let median = *samples.get(samples.len() / 2)?;
    let per_step = |count: u64| count as f64 / samples.len() as f64;
    Some(Timed {
        median,
        launches: per_step(b.launch_count() - launches_before),
        // Less the synchronize that ends each timed step.
        host_syncs: per_step(b.host_sync_count() - syncs_before) - 1.0,
    })
}
