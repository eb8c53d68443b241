//! How far N samples are from the exact posterior (`docs/math.md` §8.4;
//! the benchmark in `examples/posterior_table.rs`).
//!
//! - sliced Wasserstein-2 against N exact draws: the root mean, over fixed
//!   seeded unit directions θ, of the 1-D W₂² between the sorted projections;
//! - the posterior mean's relative error;
//! - measurement consistency: the RMS of `y − Hx` per measurement;
//! - proportions: total variation between the sampled components (each
//!   sample assigned to its most probable exact component) and the exact π;
//! - spread: the mean squared Mahalanobis distance per dimension under the
//!   assigned exact component (1 for exact draws; < 1 too tight, > 1 too wide).

use super::component::dot;
use super::posterior::ExactPosterior;
use crate::error::{Error, Result};
use crate::rng;

/// Number of directions of [`sliced_wasserstein2`].
pub const PROJECTIONS: usize = 256;

/// Seed of the directions, fixed so every table uses the same ones.
const PROJECTION_SEED: u64 = 0x5157_2d32;

/// Sliced W₂ between two equal-sized sets of `dim`-vectors (item after item),
/// over [`PROJECTIONS`] fixed directions.
pub fn sliced_wasserstein2(a: &[f64], b: &[f64], dim: usize) -> Result<f64> {
    if dim == 0 || a.len() != b.len() || !a.len().is_multiple_of(dim) || a.is_empty() {
        return Err(Error::LengthMismatch {
            what: "sliced W2 sample sets (equal, non-empty, whole items)",
            expected: a.len(),
            got: b.len(),
        });
    }
    let n = a.len() / dim;
    let mut total = 0.0;
    for p in 0..PROJECTIONS {
        let mut theta: Vec<f64> = (0..dim)
            .map(|i| rng::normal_f64(PROJECTION_SEED, p as u32, i as u32))
            .collect();
        let norm = dot(&theta, &theta).sqrt();
        theta.iter_mut().for_each(|t| *t /= norm);
        let project = |set: &[f64]| -> Vec<f64> {
            let mut v: Vec<f64> = set.chunks(dim).map(|x| dot(x, &theta)).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (pa, pb) = (project(a), project(b));
        total += pa
            .iter()
            .zip(&pb)
            .map(|(s, t)| (s - t).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    Ok((total / PROJECTIONS as f64).sqrt())
}

/// Every metric of one sample set against the exact posterior.
#[derive(Clone, Debug, PartialEq)]
pub struct PosteriorMetrics {
    pub sliced_w2: f64,
    pub mean_rel_error: f64,
    pub consistency: f64,
    pub proportion_tv: f64,
    pub spread: f64,
}

/// The metrics of `samples` (N items) against `posterior` and its N exact
/// draws `exact`.
pub fn posterior_metrics(
    posterior: &ExactPosterior,
    samples: &[f64],
    exact: &[f64],
) -> Result<PosteriorMetrics> {
    let (h, y) = posterior.measurement();
    let dim = h.cols;
    let sliced_w2 = sliced_wasserstein2(samples, exact, dim)?;
    let n = samples.len() / dim;
    let truth = posterior.mean();
    let mut mean = vec![0.0; dim];
    for x in samples.chunks(dim) {
        mean.iter_mut().zip(x).for_each(|(m, v)| *m += v / n as f64);
    }
    let err: f64 = mean.iter().zip(&truth).map(|(a, b)| (a - b).powi(2)).sum();
    let mean_rel_error = (err / dot(&truth, &truth)).sqrt();
    let mut residual2 = 0.0;
    let mut counts = vec![0.0; posterior.components().len()];
    let mut spread = 0.0;
    for x in samples.chunks(dim) {
        residual2 += h
            .apply(x)
            .iter()
            .zip(y)
            .map(|(hx, yi)| (yi - hx).powi(2))
            .sum::<f64>();
        let (k, maha) = posterior.classify(x);
        counts[k] += 1.0 / n as f64;
        spread += maha / n as f64;
    }
    let consistency = (residual2 / (n * h.rows) as f64).sqrt();
    let proportion_tv = 0.5
        * counts
            .iter()
            .zip(posterior.weights())
            .map(|(c, w)| (c - w).abs())
            .sum::<f64>();
    Ok(PosteriorMetrics {
        sliced_w2,
        mean_rel_error,
        consistency,
        proportion_tv,
        spread,
    })
}
