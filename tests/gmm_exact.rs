//! The Gaussian-mixture prior with low-rank-plus-isotropic components and its
//! exact posterior (`docs/math.md` §8): ε and the Jacobian product against a
//! dense f64 computation, the posterior against an independent closed form,
//! exact draws against their own moments, and the metrics' basic laws.

mod common;

use common::{compare, values};
use diffinv::backend::cpu::CpuBackend;
use diffinv::gmm::metrics::{posterior_metrics, sliced_wasserstein2};
use diffinv::gmm::posterior::DenseOperator;
use diffinv::gmm::{ExactPosterior, GmmComponent};
use diffinv::ops::Operator;
use diffinv::{Error, GmmDenoiser, NoiseSchedule, Shape};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

const DIM: usize = 24;

/// `r` orthonormal directions in R^DIM (Gram–Schmidt on seeded values).
fn orthonormal(seed: u64, r: usize) -> Vec<f64> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for j in 0..r {
        let mut u = values(seed + j as u64, DIM, 1.0);
        for b in &basis {
            let p: f64 = u.iter().zip(b).map(|(x, y)| x * y).sum();
            u.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.iter_mut().for_each(|x| *x /= norm);
        basis.push(u);
    }
    basis.concat()
}

fn low_rank_mixture() -> GmmDenoiser {
    let components = (0..3)
        .map(|k| GmmComponent {
            weight: [0.5, 0.3, 0.2][k],
            mean: values(10 + k as u64, DIM, 0.8),
            std: [0.05, 0.1, 0.2][k],
            basis: orthonormal(20 + 7 * k as u64, k + 2),
            lambdas: (0..k + 2)
                .map(|j| 0.4 / (1.0 + j as f64).powf(1.5))
                .collect(),
        })
        .collect();
    GmmDenoiser::from_components(components, DIM, NoiseSchedule::ddpm_linear()).unwrap()
}

fn dense_covariance(c: &GmmComponent) -> Mat<f64> {
    Mat::from_fn(DIM, DIM, |i, j| {
        let mut v = if i == j { c.std * c.std } else { 0.0 };
        for (k, l) in c.lambdas.iter().enumerate() {
            v += l * c.direction(k)[i] * c.direction(k)[j];
        }
        v
    })
}

/// ε by dense matrices: `C_k = a²Σ_k + b²I`, Cholesky, log-det from its diagonal.
fn dense_eps(g: &GmmDenoiser, x: &[f64], a: f64, b: f64) -> Vec<f64> {
    let mut logits = Vec::new();
    let mut scores = Vec::new();
    for c in g.components() {
        let mut cov = dense_covariance(c);
        for i in 0..DIM {
            for j in 0..DIM {
                cov[(i, j)] *= a * a;
            }
            cov[(i, i)] += b * b;
        }
        let llt = cov.llt(Side::Lower).unwrap();
        let d = Mat::from_fn(DIM, 1, |i, _| x[i] - a * c.mean[i]);
        let e = llt.solve(&d);
        let quad: f64 = (0..DIM).map(|i| d[(i, 0)] * e[(i, 0)]).sum();
        let log_det: f64 = (0..DIM).map(|i| 2.0 * llt.L()[(i, i)].ln()).sum();
        logits.push(c.weight.ln() - 0.5 * log_det - 0.5 * quad);
        scores.push((0..DIM).map(|i| e[(i, 0)]).collect::<Vec<f64>>());
    }
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let mut eps = vec![0.0; DIM];
    for (l, e) in logits.iter().zip(&scores) {
        let r = (l - max).exp() / total;
        eps.iter_mut().zip(e).for_each(|(o, v)| *o += b * r * v);
    }
    eps
}

#[test]
fn low_rank_eps_matches_a_dense_computation() {
    let g = low_rank_mixture();
    for (seed, a) in [(1, 0.95), (2, 0.6), (3, 0.2), (4, 0.02)] {
        let b = (1.0f64 - a * a).sqrt();
        let x = values(seed, DIM, 1.0);
        compare(
            "eps",
            &g.eps_at(&x, a, b),
            &dense_eps(&g, &x, a, b),
            1e-12,
            1e-12,
        );
    }
}

#[test]
fn low_rank_jacobian_product_matches_central_differences_and_is_symmetric() {
    let g = low_rank_mixture();
    let (v, w) = (values(30, DIM, 1.0), values(31, DIM, 1.0));
    for (seed, a) in [(5, 0.9), (6, 0.5), (7, 0.1)] {
        let b = (1.0f64 - a * a).sqrt();
        let x = values(seed, DIM, 1.0);
        let jv = g.eps_jvp_at(&x, a, b, &v);
        let delta = 1e-5;
        let at = |s: f64| {
            let xs: Vec<f64> = x.iter().zip(&v).map(|(p, q)| p + s * delta * q).collect();
            g.eps_at(&xs, a, b)
        };
        let fd: Vec<f64> = at(1.0)
            .iter()
            .zip(at(-1.0))
            .map(|(p, m)| (p - m) / (2.0 * delta))
            .collect();
        compare("J v vs central difference", &jv, &fd, 1e-6, 1e-6);
        let jw = g.eps_jvp_at(&x, a, b, &w);
        let dot = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(s, t)| s * t).sum::<f64>();
        let (vjw, wjv) = (dot(&v, &jw), dot(&w, &jv));
        assert!(
            (vjw - wjv).abs() <= 1e-12 * (1.0 + vjw.abs()),
            "{vjw} vs {wjv}"
        );
    }
}

#[test]
fn a_basis_that_is_not_orthonormal_or_a_negative_lambda_is_refused() {
    let mut c = low_rank_mixture().components()[1].clone();
    c.basis[3] += 1e-3;
    let err = GmmDenoiser::from_components(vec![c.clone()], DIM, NoiseSchedule::ddpm_linear());
    assert!(
        matches!(err, Err(Error::InvalidParameter { .. })),
        "{err:?}"
    );
    let mut c = low_rank_mixture().components()[1].clone();
    c.lambdas[0] = -0.1;
    let err = GmmDenoiser::from_components(vec![c], DIM, NoiseSchedule::ddpm_linear());
    assert!(
        matches!(err, Err(Error::InvalidParameter { name: "lambda", .. })),
        "{err:?}"
    );
    let err = GmmDenoiser::from_components(vec![], DIM, NoiseSchedule::ddpm_linear());
    assert!(matches!(err, Err(Error::LengthMismatch { .. })), "{err:?}");
}

/// An 8 × 24 measurement: pairwise averages of the first 16 coordinates.
fn pair_average() -> DenseOperator {
    let (rows, cols) = (8, DIM);
    let mut data = vec![0.0; rows * cols];
    for i in 0..rows {
        data[i * cols + 2 * i] = 0.5;
        data[i * cols + 2 * i + 1] = 0.5;
    }
    DenseOperator { rows, cols, data }
}

/// Noisy: the information form `S = (Σ⁻¹ + HᵀH/σ²)⁻¹`, `m = S(Σ⁻¹μ + Hᵀy/σ²)`
/// — a different route to the same Gaussian — and the evidence by brute force.
#[test]
fn the_noisy_posterior_matches_the_information_form() {
    let g = low_rank_mixture();
    let h = pair_average();
    let sigma = 0.1;
    let y = values(40, h.rows, 0.5);
    let post = ExactPosterior::new(&g, &h, &y, sigma).unwrap();
    let hm = Mat::from_fn(h.rows, DIM, |i, j| h.data[i * DIM + j]);
    let mut log_ev = Vec::new();
    for (c, pc) in g.components().iter().zip(post.components()) {
        let sigma_inv = dense_covariance(c)
            .llt(Side::Lower)
            .unwrap()
            .solve(Mat::<f64>::identity(DIM, DIM));
        let precision = &sigma_inv + hm.transpose() * &hm * (1.0 / (sigma * sigma));
        let rhs = &sigma_inv * Mat::from_fn(DIM, 1, |i, _| c.mean[i])
            + hm.transpose() * Mat::from_fn(h.rows, 1, |i, _| y[i] / (sigma * sigma));
        let mean = precision.llt(Side::Lower).unwrap().solve(&rhs);
        let want: Vec<f64> = (0..DIM).map(|i| mean[(i, 0)]).collect();
        compare("posterior component mean", &pc.mean, &want, 1e-10, 1e-12);
        let mut g_cov = &hm * dense_covariance(c) * hm.transpose();
        for i in 0..h.rows {
            g_cov[(i, i)] += sigma * sigma;
        }
        let llt = g_cov.llt(Side::Lower).unwrap();
        let innov = Mat::from_fn(h.rows, 1, |i, _| y[i] - h.apply(&c.mean)[i]);
        let solved = llt.solve(&innov);
        let quad: f64 = (0..h.rows).map(|i| innov[(i, 0)] * solved[(i, 0)]).sum();
        let log_det: f64 = (0..h.rows).map(|i| 2.0 * llt.L()[(i, i)].ln()).sum();
        log_ev.push(c.weight.ln() - 0.5 * (quad + log_det));
        assert_eq!(pc.rank(), DIM);
    }
    let max = log_ev.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = log_ev.iter().map(|l| (l - max).exp()).sum();
    let want: Vec<f64> = log_ev.iter().map(|l| (l - max).exp() / total).collect();
    compare("posterior weights", &post.weights(), &want, 1e-10, 1e-14);
}

/// Noiseless exact draws satisfy H x = y; their mean, spread and component
/// proportions agree with the closed form within sampling error, and the
/// sliced W₂ between two independent draw sets is small.
#[test]
fn noiseless_exact_draws_are_consistent_and_match_their_moments() {
    let g = low_rank_mixture();
    let h = pair_average();
    let x0 = g.sample_prior(50, 1);
    let y = h.apply(&x0);
    let post = ExactPosterior::new(&g, &h, &y, 0.0).unwrap();
    for c in post.components() {
        assert_eq!(c.rank(), DIM - h.rows);
    }
    let n = 4000;
    let draws = post.sample(51, n);
    let other = post.sample(52, n);
    let m = posterior_metrics(&post, &draws, &other).unwrap();
    assert!(m.consistency < 1e-12, "H x = y: {}", m.consistency);
    // Sampling error of a mean of 4000 draws; spread is a χ² mean per dimension.
    assert!(m.mean_rel_error < 0.02, "{m:?}");
    assert!((m.spread - 1.0).abs() < 0.03, "{m:?}");
    assert!(m.proportion_tv < 0.03, "{m:?}");
    // Prior draws ignore y: much farther from the posterior than exact draws.
    let prior = g.sample_prior(53, n);
    let prior_sw = sliced_wasserstein2(&prior, &draws, DIM).unwrap();
    assert!(
        m.sliced_w2 < 0.25 * prior_sw,
        "{} vs prior {}",
        m.sliced_w2,
        prior_sw
    );
}

#[test]
fn sliced_w2_is_zero_on_equal_sets_symmetric_and_permutation_invariant() {
    let a = values(60, 10 * DIM, 1.0);
    let b = values(61, 10 * DIM, 1.0);
    assert_eq!(sliced_wasserstein2(&a, &a, DIM).unwrap(), 0.0);
    let ab = sliced_wasserstein2(&a, &b, DIM).unwrap();
    assert_eq!(ab, sliced_wasserstein2(&b, &a, DIM).unwrap());
    let mut shuffled: Vec<&[f64]> = b.chunks(DIM).collect();
    shuffled.reverse();
    assert_eq!(
        ab,
        sliced_wasserstein2(&a, &shuffled.concat(), DIM).unwrap()
    );
    // A shift by s along every axis moves each unit projection by s·Σθ_i.
    let shifted: Vec<f64> = a.iter().map(|v| v + 0.5).collect();
    assert!(sliced_wasserstein2(&a, &shifted, DIM).unwrap() > 0.1);
    assert!(matches!(
        sliced_wasserstein2(&a, &b[..DIM], DIM),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn the_operator_matrix_is_the_operator() {
    let backend = CpuBackend::new();
    let item = Shape::from_dims(&[3, 4, 4]).unwrap();
    let op = Operator::avg_pool(&backend, item, 2).unwrap();
    let h = DenseOperator::of(&backend, &op).unwrap();
    assert_eq!((h.rows, h.cols), (12, 48));
    // Row (c, i, j) averages the 2×2 block at (c, 2i, 2j).
    let x = values(70, 48, 1.0);
    let y = h.apply(&x);
    let want = (x[0] + x[1] + x[4] + x[5]) / 4.0;
    assert!((y[0] - want).abs() < 1e-15);
    let noiseless = ExactPosterior::new(&low_rank_mixture_of_dim(48), &h, &y, 0.0).unwrap();
    compare(
        "H · posterior mean",
        &h.apply(&noiseless.mean()),
        &y,
        1e-10,
        1e-12,
    );
    assert!(matches!(
        ExactPosterior::new(&low_rank_mixture_of_dim(48), &h, &y[..5], 0.0),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        ExactPosterior::new(&low_rank_mixture_of_dim(48), &h, &y, -1.0),
        Err(Error::InvalidParameter { .. })
    ));
}

fn low_rank_mixture_of_dim(dim: usize) -> GmmDenoiser {
    let means = values(80, 2 * dim, 0.5);
    GmmDenoiser::new(
        means,
        vec![0.1, 0.3],
        vec![0.6, 0.4],
        dim,
        NoiseSchedule::ddpm_linear(),
    )
    .unwrap()
}

/// A noiseless H without full row rank (rows repeated, as a truncated blur's
/// are dependent) conditions on its row space: the same posterior as the
/// deduplicated H.
#[test]
fn a_rank_deficient_noiseless_operator_gives_the_row_space_posterior() {
    let g = low_rank_mixture();
    let h = pair_average();
    let mut doubled = h.clone();
    doubled.data.extend_from_slice(&h.data[..2 * DIM]);
    doubled.rows += 2;
    let y = h.apply(&g.sample_prior(90, 1));
    let y2 = doubled.apply(&g.sample_prior(90, 1));
    let a = ExactPosterior::new(&g, &h, &y, 0.0).unwrap();
    let b = ExactPosterior::new(&g, &doubled, &y2, 0.0).unwrap();
    compare("weights", &b.weights(), &a.weights(), 1e-9, 1e-12);
    compare("mean", &b.mean(), &a.mean(), 1e-9, 1e-12);
    let draws = b.sample(91, 50);
    for x in draws.chunks(DIM) {
        compare("H x = y", &doubled.apply(x), &y2, 1e-9, 1e-9);
    }
}
