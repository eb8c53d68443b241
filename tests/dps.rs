//! DPS (`diffinv::sampler::dps_sample`): the step's gradient against a
//! numerical gradient of ‖y − H x̂0(x)‖ for every Jacobian mode, the grid, and
//! bad input.

mod common;

use common::values;
use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::Operator;
use diffinv::sampler::{dps_sample, DpsConfig, DpsPlan, GuidedOptions, Jacobian};
use diffinv::{DType, Error, GmmDenoiser, HostSlice, NoiseSchedule, Shape, Tensor};

const ITEM: [usize; 3] = [3, 8, 8];

fn problem(b: &CpuBackend) -> (Operator<CpuBackend>, GmmDenoiser, Vec<f64>, Vec<f64>) {
    let item = Shape::from_dims(&ITEM).unwrap();
    let dim = item.checked_len().unwrap();
    let op = Operator::avg_pool(b, item, 2).unwrap();
    let gmm = GmmDenoiser::new(
        values(1, 2 * dim, 0.5),
        vec![0.3, 0.5],
        vec![0.5, 0.5],
        dim,
        NoiseSchedule::ddpm_linear(),
    )
    .unwrap();
    (op, gmm, values(2, dim / 4, 0.5), values(3, dim, 1.0))
}

/// One step from t = 999 straight to the clean end: x_out = x̂0(z) − ζ∇‖y − Hx̂0‖,
/// so (x_out(ζ) − x_out(0))/ζ is minus the gradient. Checked against central
/// differences of ‖y − Hx̂0(x)‖ computed from the GMM on the host.
#[test]
fn one_step_moves_along_minus_the_gradient_of_the_residual_norm() {
    let b = CpuBackend::new();
    let (op, gmm, y, z) = problem(&b);
    let dim = z.len();
    let abar = NoiseSchedule::ddpm_linear().alphas_cumprod()[999];
    let (a, s) = (abar.sqrt(), (1.0 - abar).sqrt());
    let residual_norm = |x: &[f64]| -> f64 {
        let eps = gmm.eps_at(x, a, s);
        let x0: Vec<f64> = x.iter().zip(&eps).map(|(xi, e)| (xi - s * e) / a).collect();
        let yt =
            Tensor::from_host(&b, Shape::new(1, 3, 8, 8), DType::F64, HostSlice::F64(&x0)).unwrap();
        let mut hx = Tensor::zeros(&b, Shape::new(1, 3, 4, 4), DType::F64).unwrap();
        op.forward(&b, &yt, &mut hx).unwrap();
        let hx = hx.to_f64(&b).unwrap();
        y.iter()
            .zip(&hx)
            .map(|(p, q)| (p - q).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    // x̂0 = (x − σε)/α scales by 1/α ≈ 156 at t = 999, so the central
    // difference is rounding-bound below h ≈ 1e-3 (error ∝ 1/h, measured).
    let h = 1e-2;
    let numeric: Vec<f64> = (0..dim)
        .map(|i| {
            let mut xp = z.clone();
            let mut xm = z.clone();
            xp[i] += h;
            xm[i] -= h;
            (residual_norm(&xp) - residual_norm(&xm)) / (2.0 * h)
        })
        .collect();
    let run = |zeta: f64, jacobian: Jacobian| -> Vec<f64> {
        let plan = DpsPlan::new(DpsConfig {
            steps: 1,
            zeta,
            schedule: NoiseSchedule::ddpm_linear(),
            warm_start: None,
        })
        .unwrap();
        let yt =
            Tensor::from_host(&b, Shape::new(1, 3, 4, 4), DType::F64, HostSlice::F64(&y)).unwrap();
        let zt =
            Tensor::from_host(&b, Shape::new(1, 3, 8, 8), DType::F64, HostSlice::F64(&z)).unwrap();
        let mut gmm = gmm.clone();
        dps_sample(
            &b,
            &plan,
            &op,
            &yt,
            &zt,
            &mut gmm,
            GuidedOptions { jacobian, seed: 0 },
        )
        .unwrap()
        .to_f64(&b)
        .unwrap()
    };
    let base = run(0.0, Jacobian::Exact);
    for (jacobian, tol) in [(Jacobian::Exact, 1e-7), (Jacobian::FiniteDifference, 1e-4)] {
        let moved = run(1.0, jacobian);
        let got: Vec<f64> = moved.iter().zip(&base).map(|(m, b)| b - m).collect();
        let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&numeric)
            .fold(0f64, |m, (g, n)| m.max((g - n).abs()))
            / scale;
        // Measured: exact 2.8e-9; forward difference 1.1e-5 (its O(δ) bias).
        eprintln!("{jacobian:?}: gradient error {err:.1e} of max |∇|");
        assert!(err < tol, "{jacobian:?}: {err:.1e}");
    }
    // Dropping the Jacobian keeps only the identity part of ∂x̂0/∂x: a different
    // direction, still a descent direction for the residual.
    let dropped: Vec<f64> = run(1.0, Jacobian::Dropped)
        .iter()
        .zip(&base)
        .map(|(m, b)| b - m)
        .collect();
    let along: f64 = dropped.iter().zip(&numeric).map(|(d, n)| d * n).sum();
    assert!(along > 0.0);
}

#[test]
fn the_grid_starts_at_the_last_training_index_and_ends_clean() {
    let plan = DpsPlan::new(DpsConfig {
        steps: 4,
        ..DpsConfig::default()
    })
    .unwrap();
    let ts: Vec<(i64, i64)> = plan.steps.iter().map(|s| (s.t, s.s)).collect();
    assert_eq!(ts, vec![(999, 749), (749, 499), (499, 249), (249, -1)]);
    assert_eq!(plan.nfe(Jacobian::Exact), 8);
    assert_eq!(plan.nfe(Jacobian::Dropped), 4);
}

/// A warm start at τ0 spaces the grid below τ0 as the cold grid is spaced
/// below N_train, starts from `√ᾱ_τ0·x_init + √(1 − ᾱ_τ0)·z`, and refuses
/// τ0 outside the schedule or more steps than τ0 + 1.
#[test]
fn the_warm_start_grid_and_weights() {
    let warm = |steps, top| {
        DpsPlan::new(DpsConfig {
            steps,
            warm_start: Some(top),
            ..DpsConfig::default()
        })
    };
    let plan = warm(4, 399).unwrap();
    let ts: Vec<(i64, i64)> = plan.steps.iter().map(|s| (s.t, s.s)).collect();
    assert_eq!(ts, vec![(399, 299), (299, 199), (199, 99), (99, -1)]);
    let abar = plan.steps[0].abar_t;
    assert_eq!(plan.start_weights(), (abar.sqrt(), (1.0 - abar).sqrt()));
    let cold = DpsPlan::new(DpsConfig::default()).unwrap();
    assert_eq!(cold.start_weights(), (0.0, 1.0));
    // One step from τ0 = 0 is the last step of any grid.
    assert_eq!(warm(1, 0).unwrap().steps[0].t, 0);
    assert!(matches!(warm(5, 1000), Err(Error::InvalidParameter { .. })));
    assert!(matches!(warm(402, 400), Err(Error::InvalidSteps { .. })));
    assert_eq!(warm(401, 400).unwrap().steps.len(), 401);
}

#[test]
fn bad_settings_and_shapes_are_typed_errors() {
    for (steps, zeta) in [(0, 0.5), (1001, 0.5), (10, -1.0), (10, f64::NAN)] {
        let err = DpsPlan::new(DpsConfig {
            steps,
            zeta,
            ..DpsConfig::default()
        });
        assert!(
            matches!(
                err,
                Err(Error::InvalidSteps { .. } | Error::InvalidParameter { .. })
            ),
            "{steps} {zeta}: {err:?}"
        );
    }
    let b = CpuBackend::new();
    let (op, mut gmm, y, z) = problem(&b);
    let plan = DpsPlan::new(DpsConfig {
        steps: 2,
        ..DpsConfig::default()
    })
    .unwrap();
    let yt = Tensor::from_host(&b, Shape::new(1, 3, 4, 4), DType::F32, HostSlice::F64(&y)).unwrap();
    let wrong_y =
        Tensor::from_host(&b, Shape::new(1, 3, 2, 8), DType::F32, HostSlice::F64(&y)).unwrap();
    let zt = Tensor::from_host(&b, Shape::new(1, 3, 8, 8), DType::F32, HostSlice::F64(&z)).unwrap();
    let err = dps_sample(
        &b,
        &plan,
        &op,
        &wrong_y,
        &zt,
        &mut gmm,
        GuidedOptions::default(),
    );
    assert!(matches!(err, Err(Error::ShapeMismatch { .. })));
    let x = dps_sample(&b, &plan, &op, &yt, &zt, &mut gmm, GuidedOptions::default()).unwrap();
    assert!(x.to_f64(&b).unwrap().iter().all(|v| v.is_finite()));
}
