//! DDS against the official code (HJ-harry/DDS on an exact GMM model): every
//! run `tests/fixtures/ipsolvers/manifest_dds.json` lists is replayed from its
//! data alone — grid, ᾱ, Tweedie's x̂0 before CG, the CG result with the
//! official early stop (‖r‖ < 1e-5) and its count of K applications, every
//! state and the output — on the f64 CPU path, then free-running on every
//! backend in f32 and f16. A run dropped into the folder and listed in the
//! manifest is picked up with no code change.

mod common;

use common::compare;
use common::fixtures::{ipsolvers_gmm, ipsolvers_manifest, ipsolvers_operator, Fixture};
use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::CgOptions;
use diffinv::sampler::{DataConsistency, DdsConfig, DdsPlan, DdsRun, GuidedDenoiser};
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

/// The official early stop.
const OFFICIAL_TOLERANCE: f64 = 1e-5;

struct Run {
    name: String,
    f: Fixture,
    plan: DdsPlan,
    meta: serde_json::Value,
    x_shape: Vec<usize>,
}

/// Every DDS run of the manifest with its plan, built from the run's settings.
fn runs() -> Vec<Run> {
    let manifest = ipsolvers_manifest("manifest_dds.json");
    let mut runs = Vec::new();
    for (name, run) in manifest.as_object().unwrap() {
        let meta = run["meta"].clone();
        let settings = &meta["run"];
        let number = |k: &str| {
            settings[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {k}"))
        };
        let consistency = if number("sigma_y") > 0.0 {
            DataConsistency::Tikhonov {
                gamma: number("gamma"),
            }
        } else {
            DataConsistency::NormalEquations
        };
        let plan = DdsPlan::new(DdsConfig {
            steps: number("steps") as usize,
            cg: CgOptions {
                iterations: number("cg_iter") as usize,
                tolerance: Some(OFFICIAL_TOLERANCE),
            },
            eta: number("eta"),
            consistency,
            ..DdsConfig::default()
        })
        .unwrap();
        let f = Fixture::open(&format!("ipsolvers/{name}.safetensors"));
        let (_, x_shape) = f.f64("x_true");
        runs.push(Run {
            name: name.clone(),
            f,
            plan,
            meta,
            x_shape,
        });
    }
    assert!(!runs.is_empty(), "manifest_dds.json lists no run");
    runs
}

/// Rows `n` of a stacked key.
fn row(f: &Fixture, key: &str, n: usize) -> Vec<f64> {
    let (v, shape) = f.f64(key);
    let len: usize = shape[1..].iter().product();
    v[n * len..(n + 1) * len].to_vec()
}

fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// The grid and ᾱ of each run are the official ones.
#[test]
fn the_grid_is_the_official_one() {
    for run in runs() {
        let f = &run.f;
        let (t, _) = f.f64("t_idx");
        let (s, _) = f.f64("s_idx");
        let (abar_t, _) = f.f64("abar_t");
        let (abar_s, _) = f.f64("abar_s");
        assert_eq!(run.plan.steps.len(), t.len(), "{}", run.name);
        for (n, step) in run.plan.steps.iter().enumerate() {
            assert_eq!(
                (step.t as f64, step.s as f64),
                (t[n], s[n]),
                "{} pair {n}",
                run.name
            );
            assert!(
                (step.abar_t - abar_t[n]).abs() <= 1e-15,
                "{} ᾱ_t {n}",
                run.name
            );
            assert!(
                (step.abar_s - abar_s[n]).abs() <= 1e-15,
                "{} ᾱ_s {n}",
                run.name
            );
        }
        let pairs = run.meta["pairs"].as_array().unwrap();
        assert_eq!(pairs.len(), run.plan.steps.len());
    }
}

/// Step by step on the f64 CPU path, with the official noise: x̂0 before and
/// after CG, the K-application counts and every state within 1e-6 relative.
#[test]
fn official_runs_step_by_step_on_the_f64_path() {
    let b = CpuBackend::new();
    let mut gmm = ipsolvers_gmm();
    for run in runs() {
        let (f, name) = (&run.f, &run.name);
        let shape = Shape::from_dims(&run.x_shape).unwrap();
        let op = ipsolvers_operator(
            &b,
            &run.meta,
            f,
            Shape::from_dims(&run.x_shape[1..]).unwrap(),
        );
        let (y, ys) = f.f64("y");
        let y = Tensor::from_host(
            &b,
            Shape::from_dims(&ys).unwrap(),
            DType::F64,
            HostSlice::F64(&y),
        )
        .unwrap();
        let z = Tensor::from_host(&b, shape, DType::F64, HostSlice::F64(&row(f, "x", 0))).unwrap();
        let mut dds = DdsRun::new(&b, &run.plan, &op, &y, &z).unwrap();
        let (counts, _) = f.f64("cg_num_K");
        let (drawn, _) = f.f64("z_drawn");
        let mut eps = Tensor::zeros(&b, shape, DType::F64).unwrap();
        let mut worst = [0f64; 3];
        for n in 0..run.plan.steps.len() {
            let point = dds.model_point().unwrap();
            gmm.eps(&b, dds.x(), point, &mut eps).unwrap();
            dds.tweedie(&b, &eps).unwrap();
            worst[0] = worst[0].max(max_rel(
                &dds.x0().to_f64(&b).unwrap(),
                &row(f, "x0_before_cg", n),
            ));
            dds.consistency(&b).unwrap();
            worst[1] = worst[1].max(max_rel(
                &dds.x0().to_f64(&b).unwrap(),
                &row(f, "x0_after_cg", n),
            ));
            let applications: Vec<f64> = dds
                .cg()
                .iterations_run(&b)
                .unwrap()
                .iter()
                .map(|&i| (i + 1) as f64)
                .collect();
            let batch = applications.len();
            assert_eq!(
                applications,
                counts[n * batch..(n + 1) * batch],
                "{name} step {n}: K applications"
            );
            let z_step =
                Tensor::from_host(&b, shape, DType::F64, HostSlice::F64(&row(f, "z_step", n)))
                    .unwrap();
            assert_eq!(
                dds.needs_noise(),
                drawn[n] != 0.0 && run.plan.renoise(n)[1] != 0.0
            );
            dds.renoise(&b, &eps, Some(&z_step)).unwrap();
            worst[2] = worst[2].max(max_rel(&dds.x().to_f64(&b).unwrap(), &row(f, "x", n + 1)));
        }
        eprintln!(
            "{name}: x̂0 before CG {:.1e}, after {:.1e}, states {:.1e}",
            worst[0], worst[1], worst[2]
        );
        assert!(worst.iter().all(|&w| w <= 1e-6), "{name}: {worst:?}");
        let (x_final, _) = f.f64("x_final");
        compare(
            &format!("{name} x_final"),
            &dds.x().to_f64(&b).unwrap(),
            &x_final,
            1e-6,
            1e-6,
        );
    }
}

/// The whole sampler on every backend and network dtype, with the official
/// start and noise (fed through `DdsRun`): x_final tracks the official run.
fn official_runs_on_every_backend<B: Ops>(b: &B) {
    let mut gmm = ipsolvers_gmm();
    for run in runs() {
        let (f, name) = (&run.f, &run.name);
        let shape = Shape::from_dims(&run.x_shape).unwrap();
        let op = ipsolvers_operator(
            b,
            &run.meta,
            f,
            Shape::from_dims(&run.x_shape[1..]).unwrap(),
        );
        let (y, ys) = f.f64("y");
        for dtype in [DType::F32, DType::F16] {
            if !b.dds_supports(dtype) {
                continue;
            }
            let t =
                |v: &[f64], s: Shape| Tensor::from_host(b, s, dtype, HostSlice::F64(v)).unwrap();
            let yt = t(&y, Shape::from_dims(&ys).unwrap());
            let mut dds = DdsRun::new(b, &run.plan, &op, &yt, &t(&row(f, "x", 0), shape)).unwrap();
            let mut eps = Tensor::zeros(b, shape, dtype).unwrap();
            for n in 0..run.plan.steps.len() {
                gmm.eps(b, dds.x(), dds.model_point().unwrap(), &mut eps)
                    .unwrap();
                dds.tweedie(b, &eps).unwrap();
                dds.consistency(b).unwrap();
                dds.renoise(b, &eps, Some(&t(&row(f, "z_step", n), shape)))
                    .unwrap();
            }
            let (x_final, _) = f.f64("x_final");
            let err = max_rel(&dds.x().to_f64(b).unwrap(), &x_final);
            let tol = if dtype == DType::F16 { 2e-3 } else { 1e-6 };
            eprintln!("{:?} {dtype:?} {name}: x_final {err:.1e}", b.kind());
            assert!(
                err <= tol,
                "{:?} {dtype:?} {name}: x_final off by {err:.1e}",
                b.kind()
            );
        }
    }
}

mod every_backend {
    crate::for_each_backend!(super::official_runs_on_every_backend);
}

/// `dds_sample` is the step API with Philox noise; a progress callback can
/// stop it; bad input is a typed error before any launch.
#[test]
fn dds_sample_is_the_step_api_and_rejects_bad_input() {
    use diffinv::sampler::dds_sample;
    use diffinv::Error;
    use std::ops::ControlFlow;
    let b = CpuBackend::new();
    let mut gmm = ipsolvers_gmm();
    let run = runs().remove(0);
    let f = &run.f;
    let shape = Shape::from_dims(&run.x_shape).unwrap();
    let op = ipsolvers_operator(
        &b,
        &run.meta,
        f,
        Shape::from_dims(&run.x_shape[1..]).unwrap(),
    );
    let (y, ys) = f.f64("y");
    let y = Tensor::from_host(
        &b,
        Shape::from_dims(&ys).unwrap(),
        DType::F32,
        HostSlice::F64(&y),
    )
    .unwrap();
    let z = Tensor::from_host(&b, shape, DType::F32, HostSlice::F64(&row(f, "x", 0))).unwrap();
    let seed = 17;
    let mut seen = Vec::new();
    let out = dds_sample(&b, &run.plan, &op, &y, &z, &mut gmm, seed, |p| {
        seen.push(p.sigma)
    })
    .unwrap();
    assert_eq!(seen.len(), run.plan.steps.len());
    assert_eq!(*seen.last().unwrap(), 0.0);
    // The same run by hand.
    let mut dds = DdsRun::new(&b, &run.plan, &op, &y, &z).unwrap();
    let mut eps = Tensor::zeros(&b, shape, DType::F32).unwrap();
    let n_el = shape.checked_len().unwrap();
    for n in 0..run.plan.steps.len() {
        gmm.eps(&b, dds.x(), dds.model_point().unwrap(), &mut eps)
            .unwrap();
        dds.tweedie(&b, &eps).unwrap();
        dds.consistency(&b).unwrap();
        let noise: Vec<f64> = (0..n_el)
            .map(|i| diffinv::rng::normal_f64(seed, n as u32, i as u32))
            .collect();
        let z = Tensor::from_host(&b, shape, DType::F32, HostSlice::F64(&noise)).unwrap();
        dds.renoise(&b, &eps, dds.needs_noise().then_some(&z))
            .unwrap();
    }
    assert_eq!(out.to_f64(&b).unwrap(), dds.x().to_f64(&b).unwrap());
    // Stopping after two steps returns the third network input.
    let stopped = dds_sample(&b, &run.plan, &op, &y, &z, &mut gmm, seed, |p| {
        if p.step == 1 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_ne!(stopped.to_f64(&b).unwrap(), out.to_f64(&b).unwrap());
    // NaN in y, a start of the wrong size, η outside [0, 1], γ < 0, M = 0.
    let mut bad_y = y.to_f64(&b).unwrap();
    bad_y[3] = f64::NAN;
    let bad_y = Tensor::from_host(&b, y.shape(), DType::F32, HostSlice::F64(&bad_y)).unwrap();
    assert!(matches!(
        DdsRun::new(&b, &run.plan, &op, &bad_y, &z),
        Err(Error::NonFinite { .. })
    ));
    let small = Tensor::zeros(&b, Shape::new(2, 3, 8, 8), DType::F32).unwrap();
    assert!(matches!(
        DdsRun::new(&b, &run.plan, &op, &y, &small),
        Err(Error::ShapeMismatch { .. })
    ));
    let config = run.plan.config.clone();
    for bad in [
        DdsConfig {
            eta: 1.5,
            ..config.clone()
        },
        DdsConfig {
            consistency: DataConsistency::Tikhonov { gamma: -1.0 },
            ..config.clone()
        },
        DdsConfig {
            cg: CgOptions {
                iterations: 0,
                tolerance: None,
            },
            ..config.clone()
        },
    ] {
        assert!(matches!(
            DdsPlan::new(bad),
            Err(Error::InvalidParameter { .. })
        ));
    }
    assert!(matches!(
        DdsPlan::new(DdsConfig { steps: 0, ..config }),
        Err(Error::InvalidSteps { .. })
    ));
}

/// The warm start: the grid τ0 … 0 in equal steps, the start weights
/// √ᾱ_τ0 and √(1 − ᾱ_τ0), and τ0 beyond the schedule a typed error.
#[test]
fn the_warm_start_grid_and_weights() {
    use diffinv::Error;
    let plan = DdsPlan::new(DdsConfig {
        steps: 5,
        warm_start: Some(400),
        ..DdsConfig::default()
    })
    .unwrap();
    let ts: Vec<i64> = plan.steps.iter().map(|s| s.t).collect();
    assert_eq!(ts, [400, 300, 200, 100, 0]);
    assert_eq!(plan.steps.last().unwrap().s, -1);
    let (a, b) = plan.start_weights();
    let abar = plan.steps[0].abar_t;
    assert_eq!((a, b), (abar.sqrt(), (1.0 - abar).sqrt()));
    let official = DdsPlan::new(DdsConfig::default()).unwrap();
    assert_eq!(official.start_weights(), (0.0, 1.0));
    assert_eq!(official.steps[0].t, 980);
    let one = DdsPlan::new(DdsConfig {
        steps: 1,
        warm_start: Some(400),
        ..DdsConfig::default()
    })
    .unwrap();
    // One step goes from τ0 straight to the clean end.
    assert_eq!((one.steps[0].t, one.steps[0].s), (400, -1));
    // More steps than indices below τ0 would repeat an index.
    assert!(matches!(
        DdsPlan::new(DdsConfig {
            steps: 6,
            warm_start: Some(4),
            ..DdsConfig::default()
        }),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        DdsPlan::new(DdsConfig {
            warm_start: Some(1000),
            ..DdsConfig::default()
        }),
        Err(Error::InvalidParameter { .. })
    ));
}
