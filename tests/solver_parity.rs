//! Backend parity of the fused solver update: the same bodies run on every
//! backend (`for_each_backend!`), compared with the CPU backend's f64 path on
//! the same (dtype-rounded) inputs.
//!
//! Tolerances (normalised error, max abs) on one fused update with |values| ≤ 2:
//! f32 storage 1e-6 / 1e-5 (f32 math and f32-rounded scalars vs f64);
//! f16 storage 2e-3 / 8e-3 (one f16 rounding of each stored output, 2^-11 relative).

mod common;

use common::{compare, values, SIZES};
use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::solver_step;
use diffinv::solver::{slot_stride, SolverStep, StepLaunch};
use diffinv::{
    sample, DType, GmmDenoiser, HostSlice, NoiseSchedule, Ops, Plan, PlanConfig, SamplerOptions,
    Shape, Solver, Tensor,
};

fn round_to(dtype: DType, v: &[f64]) -> Vec<f64> {
    match dtype {
        DType::F16 => v
            .iter()
            .map(|&x| f64::from(half::f16::from_f64(x)))
            .collect(),
        DType::F32 => v.iter().map(|&x| f64::from(x as f32)).collect(),
        DType::F64 => v.to_vec(),
        DType::C64 | DType::U32 => unreachable!("the solver family is real"),
    }
}

/// Inputs, after rounding to the storage dtype: x, model output, state.
struct Inputs {
    x: Vec<f64>,
    m: Vec<f64>,
    state: Vec<f64>,
}

fn inputs(n: usize, dtype: DType, with_non_finite: bool) -> Inputs {
    let mut m = values(2, n, 2.0);
    if with_non_finite && n > 3 {
        m[1] = f64::NAN;
        m[n - 2] = f64::INFINITY;
    }
    Inputs {
        x: round_to(dtype, &values(1, n, 2.0)),
        m: round_to(dtype, &m),
        state: round_to(dtype, &values(3, 4 * slot_stride(n), 2.0)),
    }
}

/// Run one step on `backend`; returns (x', state').
fn run_step<B: Ops>(
    backend: &B,
    dtype: DType,
    step: &SolverStep,
    inp: &Inputs,
) -> (Vec<f64>, Vec<f64>) {
    let n = inp.x.len();
    let up =
        |shape, v: &[f64]| Tensor::from_host(backend, shape, dtype, HostSlice::F64(v)).unwrap();
    let mut x = up(Shape::flat(n), &inp.x);
    let m = up(Shape::flat(n), &inp.m);
    let mut state = up(Shape::flat(inp.state.len()), &inp.state);
    let launch = StepLaunch {
        step: 3,
        seed: 0x5eed,
    };
    let before = backend.launch_count();
    solver_step(backend, step, launch, &mut x, &m, &mut state).unwrap();
    assert_eq!(
        backend.launch_count() - before,
        1,
        "one launch per fused step"
    );
    (x.to_f64(backend).unwrap(), state.to_f64(backend).unwrap())
}

fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (2e-3, 8e-3),
        _ => (1e-6, 1e-5),
    }
}

fn fused_step_matches_f64_reference<B: Ops>(backend: &B) {
    let cpu = CpuBackend::new();
    for dtype in [DType::F32, DType::F16] {
        if !backend.supports(dtype) {
            common::skip(
                &format!("{:?} {dtype:?}", backend.kind()),
                "dtype not supported",
            );
            continue;
        }
        let (rel, abs) = tolerance(dtype);
        for &n in &SIZES {
            for (name, step) in common::steps::step_kinds() {
                let inp = inputs(n, dtype, n == 4097);
                let (want_x, want_s) = run_step(&cpu, DType::F64, &step, &inp);
                let (got_x, got_s) = run_step(backend, dtype, &step, &inp);
                let what = format!("{:?} {dtype:?} n={n} {name}", backend.kind());
                compare(&format!("{what}: x"), &got_x, &want_x, rel, abs);
                compare(&format!("{what}: state"), &got_s, &want_s, rel, abs);
            }
        }
    }
}

mod fused_step {
    crate::for_each_backend!(super::fused_step_matches_f64_reference);
}

/// Full DPM-Solver++ 3M / UniPC / DDIM(η) loops with the analytic model, in f32
/// and f16 on the backend vs the CPU f64 loop. Errors accumulate over the steps
/// and through the model (|x| ≤ ~2): f32 ≤ 2e-5 abs, f16 ≤ 2e-2 abs.
fn full_loops_match_f64<B: Ops>(backend: &B) {
    let cpu = CpuBackend::new();
    let schedule = NoiseSchedule::ddpm_linear();
    let shape = Shape::new(2, 3, 5, 7);
    let dim = shape.item_len();
    let model = GmmDenoiser::new(
        values(9, 2 * dim, 0.8),
        vec![0.1, 0.3],
        vec![0.6, 0.4],
        dim,
        schedule.clone(),
    )
    .unwrap();
    let x_t = values(10, 2 * dim, 1.5);
    let opts = SamplerOptions {
        seed: 77,
        check_finite: true,
    };
    for solver in [Solver::DPMPP_3M, Solver::UniPc, Solver::Ddim { eta: 0.7 }] {
        let plan = Plan::new(
            &schedule,
            &PlanConfig {
                solver,
                steps: 8,
                ..PlanConfig::default()
            },
        )
        .unwrap();
        let mut x = Tensor::from_host(&cpu, shape, DType::F64, HostSlice::F64(&x_t)).unwrap();
        sample(&cpu, &plan, &mut model.clone(), &mut x, opts, |_| {}).unwrap();
        let want = x.to_f64(&cpu).unwrap();
        for (dtype, abs) in [(DType::F32, 2e-5), (DType::F16, 2e-2)] {
            if !backend.supports(dtype) {
                continue;
            }
            let mut x = Tensor::from_host(backend, shape, dtype, HostSlice::F64(&x_t)).unwrap();
            let before = backend.launch_count();
            let mut steps_seen = 0;
            sample(backend, &plan, &mut model.clone(), &mut x, opts, |p| {
                steps_seen = p.step + 1
            })
            .unwrap();
            assert_eq!(steps_seen, plan.len());
            assert_eq!(
                backend.launch_count() - before,
                plan.len() as u64,
                "one launch per step"
            );
            let got = x.to_f64(backend).unwrap();
            compare(
                &format!("{:?} {solver:?} {dtype:?}", backend.kind()),
                &got,
                &want,
                1.0,
                abs,
            );
        }
    }
}

mod full_loop {
    crate::for_each_backend!(super::full_loops_match_f64);
}
