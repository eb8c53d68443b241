//! Per-call cost of the fused solver step through the C ABI next to the Rust
//! API, f16 on the CPU backend, at 1×3×64×64 (where call overhead shows) and
//! 16×3×256×256 (where it drowns in memory traffic), plus 1×1×8×8, where the
//! update itself is a few dozen nanoseconds and the time is the call.
//!
//! The step is step 5 of a 20-step DPM-Solver++ 2M plan (reads x, ε and one
//! history slot; writes x and one slot). Three ways to call it on the same data:
//! - `rust/owned`: `SolverRun::step` on a tensor the crate allocated (the model
//!   output already in the run's buffer);
//! - `rust/borrowed`: `cpu::scope` tensors over the caller's `Vec<f16>`s and
//!   `SolverRun::step_with` — the zero-copy Rust path;
//! - `c-abi`: `diffinv_run_step` on the same `Vec`s' pointers (called through
//!   the exported `extern "C"` function, exactly what a C caller links).
//!
//! Every timed call starts from the same x: inputs are restored untimed in
//! batches (the update is expanding; repeating it would overflow f16).

use std::time::Duration;

use criterion::{BatchSize, Criterion};
use half::f16;
use half::slice::HalfFloatSliceExt;

use diffinv::backend::cpu::{self, CpuBackend};
use diffinv::{
    rng, DType, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    SolverRun, Tensor,
};
use diffinv_capi::*;

const STEP: usize = 5;
const SHAPES: [[usize; 4]; 3] = [[1, 1, 8, 8], [1, 3, 64, 64], [16, 3, 256, 256]];

fn plan() -> Plan {
    let config = PlanConfig {
        solver: Solver::DPMPP_2M,
        steps: 20,
        ..PlanConfig::default()
    };
    Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap()
}

fn halves(v: &[f32]) -> Vec<f16> {
    let mut h = vec![f16::ZERO; v.len()];
    h.convert_from_f32_slice(v);
    h
}

/// The C ABI's handles for one run, freed on drop.
struct CRun {
    backend: *mut DiffinvBackend,
    plan: *mut DiffinvPlan,
    run: *mut DiffinvRun,
}

impl CRun {
    fn new(dims: &[usize; 4]) -> Self {
        let (mut backend, mut plan, mut run) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        // SAFETY: every pointer is a valid out-parameter or a config on the
        // stack; handles are freed in reverse order in Drop.
        unsafe {
            let mut sc = std::mem::zeroed();
            let mut so = std::mem::zeroed::<DiffinvSolverConfig>();
            assert_eq!(diffinv_schedule_config_default(&mut sc), DiffinvStatus::Ok);
            assert_eq!(diffinv_solver_config_default(&mut so), DiffinvStatus::Ok);
            assert_eq!(diffinv_backend_cpu_new(&mut backend), DiffinvStatus::Ok);
            assert_eq!(diffinv_plan_new(&sc, &so, &mut plan), DiffinvStatus::Ok);
            let status = diffinv_run_new(
                backend,
                plan,
                dims.as_ptr(),
                4,
                DIFFINV_DTYPE_F16,
                0,
                &mut run,
            );
            assert_eq!(status, DiffinvStatus::Ok);
        }
        CRun { backend, plan, run }
    }
}

impl Drop for CRun {
    fn drop(&mut self) {
        // SAFETY: live handles from `new`, freed once, run first.
        unsafe {
            diffinv_run_free(self.run);
            diffinv_plan_free(self.plan);
            diffinv_backend_free(self.backend);
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let plan = plan();
    for dims in SHAPES {
        let shape = Shape::from_dims(&dims).unwrap();
        let n = shape.checked_len().unwrap();
        let small = n < 1 << 16;
        let label = format!("{}x{}x{}x{} f16", dims[0], dims[1], dims[2], dims[3]);
        let x0 = halves(&rng::normal_vec(1, n));
        let eps = halves(&rng::normal_vec(2, n));
        // Enough restored inputs per batch to amortise the timer, few enough
        // to stay small in memory.
        let batch = BatchSize::NumIterations(if small { 64 } else { 2 });
        let mut group = c.benchmark_group(format!("capi/{label}"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(if small { 3 } else { 6 }))
            .sample_size(if small { 50 } else { 10 });

        let backend = CpuBackend::new();
        let options = SamplerOptions::default();
        let mut run = SolverRun::new(&backend, &plan, shape, DType::F16, options).unwrap();
        run.model_out_mut()
            .upload(&backend, HostSlice::F16(&eps))
            .unwrap();
        group.bench_function("rust/owned", |b| {
            b.iter_batched_ref(
                || Tensor::from_host(&backend, shape, DType::F16, HostSlice::F16(&x0)).unwrap(),
                |x| run.step(&backend, STEP, x).unwrap(),
                batch,
            )
        });

        let mut run = SolverRun::new(&backend, &plan, shape, DType::F16, options).unwrap();
        let mut eps_mine = eps.clone();
        group.bench_function("rust/borrowed", |b| {
            b.iter_batched_ref(
                || x0.clone(),
                |x| {
                    cpu::scope(|s| {
                        let xt = s.tensor(x.as_mut_slice(), shape)?;
                        let et = s.tensor(eps_mine.as_mut_slice(), shape)?;
                        run.step_with(&backend, STEP, xt, et)
                    })
                    .unwrap()
                },
                batch,
            )
        });

        let crun = CRun::new(&dims);
        group.bench_function("c-abi", |b| {
            b.iter_batched_ref(
                || x0.clone(),
                |x| {
                    // SAFETY: a live run; x and eps hold n f16 each and do not overlap.
                    let status = unsafe {
                        diffinv_run_step(
                            crun.run,
                            STEP,
                            x.as_mut_ptr().cast(),
                            n,
                            eps.as_ptr().cast(),
                            n,
                        )
                    };
                    assert_eq!(status, DiffinvStatus::Ok);
                },
                batch,
            )
        });
        group.finish();
    }
    c.final_summary();
}
