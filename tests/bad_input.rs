//! Every way a caller can get it wrong gives a typed error with the offending
//! values, never a panic.

mod common;

use diffinv::ops::{solver_step, solver_step_raw};
use diffinv::solver::{Corrector, CorrectorBase, SolverStep, StepLaunch};
use diffinv::{
    sample, select, DType, Error, GmmDenoiser, GridSpec, HostSlice, NoiseSchedule, Ops, Plan,
    PlanConfig, SamplerOptions, Shape, Solver, Spacing, Tensor,
};

fn step_with_history() -> SolverStep {
    SolverStep {
        cx: 1.0,
        ce: 0.5,
        d_slot: Some(1),
        h1: Some(0),
        h2: None,
        xc_slot: None,
        corrector: None,
        a: 0.9,
        b: [0.2, 0.1, 0.0],
        noise: 0.0,
    }
}

fn launch() -> StepLaunch {
    StepLaunch { step: 0, seed: 0 }
}

fn wrong_buffers_are_rejected<B: Ops>(b: &B) {
    let dtype = DType::F32;
    let mut x = Tensor::zeros(b, Shape::new(1, 3, 4, 4), dtype).unwrap();
    let mut state = Tensor::zeros(b, Shape::flat(2 * 64), dtype).unwrap();
    let step = step_with_history();

    let m_shape = Tensor::zeros(b, Shape::new(1, 3, 4, 5), dtype).unwrap();
    match solver_step(b, &step, launch(), &mut x, &m_shape, &mut state) {
        Err(Error::ShapeMismatch { expected, got, .. }) => {
            assert_eq!(expected, Shape::new(1, 3, 4, 4));
            assert_eq!(got, Shape::new(1, 3, 4, 5));
        }
        other => panic!("expected ShapeMismatch, got {:?}", other.err()),
    }

    let m_dtype = Tensor::zeros(b, Shape::new(1, 3, 4, 4), DType::F16).unwrap();
    assert!(matches!(
        solver_step(b, &step, launch(), &mut x, &m_dtype, &mut state),
        Err(Error::DTypeMismatch {
            expected: DType::F32,
            got: DType::F16,
            ..
        })
    ));

    let m = Tensor::zeros(b, Shape::new(1, 3, 4, 4), dtype).unwrap();
    let mut short_state = Tensor::zeros(b, Shape::flat(64), dtype).unwrap();
    assert!(matches!(
        solver_step(b, &step, launch(), &mut x, &m, &mut short_state),
        Err(Error::LengthMismatch {
            expected: 128,
            got: 64,
            ..
        })
    ));

    assert!(matches!(
        x.upload(b, HostSlice::F32(&[1.0; 47])),
        Err(Error::LengthMismatch {
            expected: 48,
            got: 47,
            ..
        })
    ));

    assert!(matches!(
        Tensor::zeros(b, Shape::new(1, 0, 4, 4), dtype),
        Err(Error::InvalidShape { .. })
    ));
    assert!(matches!(
        Tensor::zeros(b, Shape::new(usize::MAX, 2, 1, 1), dtype),
        Err(Error::InvalidShape { .. })
    ));
    if !b.supports(DType::F64) {
        assert!(matches!(
            Tensor::zeros(b, Shape::flat(4), DType::F64),
            Err(Error::UnsupportedDType {
                dtype: DType::F64,
                ..
            })
        ));
    }
}

mod buffers {
    crate::for_each_backend!(super::wrong_buffers_are_rejected);
}

/// Hand-made steps the kernels cannot run as written are refused before any
/// launch, and x and the state are left untouched.
fn malformed_steps_are_rejected<B: Ops>(b: &B) {
    let dtype = DType::F32;
    let shape = Shape::new(1, 1, 3, 3);
    let mut x = Tensor::from_host(b, shape, dtype, HostSlice::F32(&[1.0; 9])).unwrap();
    let m = Tensor::zeros(b, shape, dtype).unwrap();
    let mut state = Tensor::zeros(b, Shape::flat(4 * 64), dtype).unwrap();
    let corrector = Corrector {
        base: CorrectorBase::Slot,
        a: 1.0,
        c: [0.5, 0.0, 0.0],
    };
    let bad = [
        SolverStep {
            h1: Some(1),
            ..step_with_history()
        },
        SolverStep {
            xc_slot: Some(2),
            h2: Some(2),
            corrector: Some(corrector),
            ..step_with_history()
        },
        SolverStep {
            corrector: Some(corrector),
            ..step_with_history()
        },
    ];
    let launches = b.launch_count();
    for step in bad {
        match solver_step(b, &step, launch(), &mut x, &m, &mut state) {
            Err(Error::InvalidStep { reason }) => assert!(
                reason.contains("slot"),
                "reason should name the slot problem: {reason}"
            ),
            other => panic!("expected InvalidStep for {step:?}, got {other:?}"),
        }
    }
    for (name, step) in [
        (
            "cx",
            SolverStep {
                cx: f64::NAN,
                ..step_with_history()
            },
        ),
        (
            "b2",
            SolverStep {
                b: [0.0, 0.0, f64::INFINITY],
                ..step_with_history()
            },
        ),
        (
            "noise",
            SolverStep {
                noise: -0.5,
                ..step_with_history()
            },
        ),
    ] {
        match solver_step(b, &step, launch(), &mut x, &m, &mut state) {
            Err(Error::InvalidParameter { name: got, .. }) => assert_eq!(got, name),
            other => panic!("expected InvalidParameter({name}), got {other:?}"),
        }
    }
    assert_eq!(
        b.launch_count(),
        launches,
        "a rejected step must not launch"
    );
    assert_eq!(x.to_f32(b).unwrap(), vec![1.0; 9]);
}

mod steps {
    crate::for_each_backend!(super::malformed_steps_are_rejected);
}

/// `solver_step_raw` is safe to call directly: buffers the kernel would
/// overrun, a stride that breaks the slot layout and a wrong dtype are typed
/// errors, and nothing launches.
fn raw_steps_check_their_buffers<B: Ops>(b: &B) {
    let step = step_with_history(); // slots 0 and 1
    let (n, stride) = (100, 128);
    let run = |x_len: usize, m_len: usize, s_len: usize, stride: usize, dtype: DType| {
        let mut x = b.alloc(x_len, dtype).unwrap();
        let m = b.alloc(m_len, dtype).unwrap();
        let mut s = b.alloc(s_len, dtype).unwrap();
        solver_step_raw(
            b,
            &step,
            launch(),
            DType::F16,
            n,
            stride,
            &mut x,
            &m,
            &mut s,
        )
    };
    let launches = b.launch_count();
    assert!(run(n, n, 2 * stride, stride, DType::F16).is_ok());
    assert_eq!(b.launch_count(), launches + 1);
    let short = |r: diffinv::Result<()>, expected: usize, got: usize| match r {
        Err(Error::LengthMismatch {
            expected: e,
            got: g,
            ..
        }) => assert_eq!((e, g), (expected, got)),
        other => panic!("expected LengthMismatch({expected}, {got}), got {other:?}"),
    };
    short(run(n - 1, n, 2 * stride, stride, DType::F16), n, n - 1);
    short(run(n, n - 1, 2 * stride, stride, DType::F16), n, n - 1);
    short(
        run(n, n, 2 * stride - 1, stride, DType::F16),
        2 * stride,
        2 * stride - 1,
    );
    for bad_stride in [130, 64, 0] {
        match run(n, n, 2 * 192, bad_stride, DType::F16) {
            Err(Error::InvalidParameter { name, value, .. }) => {
                assert_eq!((name, value), ("slot stride", bad_stride as f64))
            }
            other => panic!("stride {bad_stride}: expected InvalidParameter, got {other:?}"),
        }
    }
    assert!(matches!(
        run(n, n, 2 * stride, stride, DType::F32),
        Err(Error::DTypeMismatch {
            expected: DType::F16,
            got: DType::F32,
            ..
        })
    ));
    assert_eq!(
        b.launch_count(),
        launches + 1,
        "a rejected step must not launch"
    );
}

mod raw {
    crate::for_each_backend!(super::raw_steps_check_their_buffers);
}

fn plan(solver: Solver, grid: GridSpec, steps: usize) -> diffinv::Result<Plan> {
    let config = PlanConfig {
        solver,
        grid,
        steps,
        ..PlanConfig::default()
    };
    Plan::new(&NoiseSchedule::ddpm_linear(), &config)
}

fn leading() -> GridSpec {
    GridSpec::Diffusers {
        spacing: Spacing::Leading,
        steps_offset: 0,
    }
}

#[test]
fn step_counts_outside_the_schedule_are_rejected() {
    for solver in [Solver::DPMPP_2M, Solver::UniPc, Solver::Ddim { eta: 0.0 }] {
        assert!(matches!(
            plan(solver, leading(), 0),
            Err(Error::InvalidSteps {
                steps: 0,
                train_steps: 1000
            })
        ));
        assert!(matches!(
            plan(solver, leading(), 1001),
            Err(Error::InvalidSteps {
                steps: 1001,
                train_steps: 1000
            })
        ));
    }
    // The boundaries themselves are valid.
    assert_eq!(plan(Solver::DPMPP_2M, leading(), 1).unwrap().len(), 1);
    assert_eq!(
        plan(
            Solver::Ddim { eta: 0.0 },
            GridSpec::Diffusers {
                spacing: Spacing::Trailing,
                steps_offset: 0
            },
            1000
        )
        .unwrap()
        .len(),
        1000
    );
}

#[test]
fn custom_timesteps_are_validated() {
    let custom = |ts: Vec<f64>| {
        let steps = ts.len();
        plan(Solver::DPMPP_2M, GridSpec::Custom(ts), steps)
    };
    match custom(vec![900.0, 500.0, 500.0]) {
        Err(Error::InvalidTimesteps { index, value, .. }) => assert_eq!((index, value), (2, 500.0)),
        other => panic!("expected InvalidTimesteps, got {:?}", other.err()),
    }
    assert!(matches!(
        custom(vec![100.0, 500.0]),
        Err(Error::InvalidTimesteps { index: 1, .. })
    ));
    assert!(matches!(
        custom(vec![1000.0, 5.0]),
        Err(Error::InvalidTimesteps { index: 0, .. })
    ));
    assert!(matches!(
        custom(vec![500.0, -1.0]),
        Err(Error::InvalidTimesteps { index: 1, .. })
    ));
    assert!(matches!(
        custom(vec![f64::NAN]),
        Err(Error::InvalidTimesteps { index: 0, .. })
    ));
    assert!(matches!(
        custom(vec![]),
        Err(Error::InvalidSteps { steps: 0, .. })
    ));
    let ok = custom(vec![999.0, 500.5, 10.0]).unwrap();
    assert_eq!(
        ok.steps.iter().map(|s| s.point.tau).collect::<Vec<_>>(),
        [999.0, 500.5, 10.0]
    );
}

#[test]
fn solver_options_are_validated() {
    assert!(matches!(
        plan(Solver::Ddim { eta: 1.5 }, leading(), 10),
        Err(Error::InvalidParameter { name: "eta", .. })
    ));
    assert!(matches!(
        plan(Solver::Ddim { eta: f64::NAN }, leading(), 10),
        Err(Error::InvalidParameter { name: "eta", .. })
    ));
    let order4 = Solver::DpmSolverPP {
        order: 4,
        second_order: Default::default(),
        lower_order_final: true,
        euler_at_final: false,
    };
    assert!(matches!(
        plan(order4, leading(), 10),
        Err(Error::InvalidParameter { name: "order", .. })
    ));
    assert!(matches!(
        plan(Solver::DPMPP_2M, GridSpec::Karras { rho: -1.0 }, 10),
        Err(Error::InvalidParameter { name: "rho", .. })
    ));
    assert!(matches!(
        NoiseSchedule::new(
            diffinv::BetaSchedule::Linear {
                start: 0.0,
                end: 0.02
            },
            1000
        ),
        Err(Error::InvalidParameter {
            name: "beta_start",
            ..
        })
    ));
    assert!(matches!(
        NoiseSchedule::from_alphas_cumprod(vec![0.9, 0.95]),
        Err(Error::InvalidParameter {
            name: "alphas_cumprod",
            ..
        })
    ));
}

#[test]
fn unknown_backend_names_are_rejected() {
    match select(Some("metal-ish")) {
        Err(Error::UnknownBackend { name }) => assert_eq!(name, "metal-ish"),
        Err(e) => panic!("expected UnknownBackend, got {e}"),
        Ok(_) => panic!("expected UnknownBackend, got a backend"),
    }
    let sel = select(Some("cpu")).unwrap();
    assert_eq!(sel.backend.kind(), diffinv::BackendKind::Cpu);
}

fn nan_in_model_output_is_reported<B: Ops>(b: &B) {
    let p = plan(Solver::DPMPP_2M, leading(), 4).unwrap();
    let shape = Shape::new(2, 1, 3, 3);
    let poison_at = 13;
    let mut model = |b: &B, x: &Tensor<B>, tau: f64, out: &mut Tensor<B>| {
        let mut v = x.to_f32(b)?;
        if tau < 500.0 {
            v[poison_at] = f32::NAN;
        }
        out.upload(b, HostSlice::F32(&v))
    };
    let x0 = vec![0.5f32; 18];
    let mut x = Tensor::from_host(b, shape, DType::F32, HostSlice::F32(&x0)).unwrap();
    let checked = SamplerOptions {
        seed: 0,
        check_finite: true,
    };
    match sample(b, &p, &mut model, &mut x, checked, |_| {}) {
        Err(Error::NonFinite {
            step, index, count, ..
        }) => {
            assert_eq!(index, poison_at);
            assert_eq!(count, 1);
            assert!(p.steps[step].point.tau < 500.0);
        }
        other => panic!("expected NonFinite, got {:?}", other.err()),
    }
    // Without the check the NaN propagates to exactly that element.
    let mut x = Tensor::from_host(b, shape, DType::F32, HostSlice::F32(&x0)).unwrap();
    sample(b, &p, &mut model, &mut x, SamplerOptions::default(), |_| {}).unwrap();
    let out = x.to_f32(b).unwrap();
    assert!(out[poison_at].is_nan());
    assert_eq!(out.iter().filter(|v| v.is_nan()).count(), 1);
}

mod non_finite {
    crate::for_each_backend!(super::nan_in_model_output_is_reported);
}

#[test]
fn runs_reject_foreign_samples_and_steps_past_the_end() {
    let cpu = diffinv::backend::cpu::CpuBackend::new();
    let p = plan(Solver::UniPc, leading(), 2).unwrap();
    let shape = Shape::new(1, 1, 2, 2);
    let mut run =
        diffinv::SolverRun::new(&cpu, &p, shape, DType::F32, SamplerOptions::default()).unwrap();
    let mut x = Tensor::zeros(&cpu, shape, DType::F32).unwrap();
    assert!(matches!(
        run.step(&cpu, 2, &mut x),
        Err(Error::StepOutOfRange { step: 2, steps: 2 })
    ));
    let mut zero =
        |_: &diffinv::backend::cpu::CpuBackend, _: &Tensor<_>, _: f64, _: &mut Tensor<_>| Ok(());
    let mut wrong_dtype = Tensor::zeros(&cpu, shape, DType::F16).unwrap();
    assert!(matches!(
        run.predict_and_step(&cpu, 0, &mut zero, &mut wrong_dtype),
        Err(Error::DTypeMismatch {
            expected: DType::F32,
            got: DType::F16,
            ..
        })
    ));
    let mut wrong_shape = Tensor::zeros(&cpu, Shape::new(1, 1, 2, 3), DType::F32).unwrap();
    assert!(matches!(
        run.predict_and_step(&cpu, 0, &mut zero, &mut wrong_shape),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn gmm_rejects_mismatched_dimensions() {
    let s = NoiseSchedule::ddpm_linear();
    assert!(matches!(
        GmmDenoiser::new(vec![0.0; 10], vec![0.1], vec![1.0], 4, s.clone()),
        Err(Error::LengthMismatch {
            what: "gmm means",
            expected: 4,
            got: 10
        })
    ));
    assert!(matches!(
        GmmDenoiser::new(vec![0.0; 4], vec![-0.1], vec![1.0], 4, s.clone()),
        Err(Error::InvalidParameter { name: "std", .. })
    ));
    let cpu = diffinv::backend::cpu::CpuBackend::new();
    let mut g = GmmDenoiser::new(vec![0.0; 4], vec![0.1], vec![1.0], 4, s).unwrap();
    let p = plan(Solver::DPMPP_2M, leading(), 3).unwrap();
    let mut x = Tensor::zeros(&cpu, Shape::new(1, 1, 1, 5), DType::F32).unwrap();
    assert!(matches!(
        sample(&cpu, &p, &mut g, &mut x, SamplerOptions::default(), |_| {}),
        Err(Error::LengthMismatch {
            expected: 4,
            got: 5,
            ..
        })
    ));
}
