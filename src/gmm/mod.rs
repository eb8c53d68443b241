//! An analytic denoiser: the exact ε of a Gaussian mixture prior, and the
//! exact posterior of a linear measurement under it.
//!
//! With `p(x0) = Σ_k w_k N(μ_k, Σ_k)`, `Σ_k = U_k diag(λ_k) U_kᵀ + s_k² I`
//! ([`GmmComponent`]) and `x_t = a·x0 + b·ε`, each component's marginal is
//! `N(aμ_k, C_k)`, `C_k = a²Σ_k + b²I`, and the optimal prediction is
//! `ε*(x) = b·Σ_k r_k C_k⁻¹(x − aμ_k)` with responsibilities `r = softmax_k(ln
//! w_k − ½ ln det C_k − ½ |x − aμ_k|²_{C_k⁻¹})` (`docs/math.md` §8.2). Woodbury
//! keeps every product at O(D·r). It makes full sampling loops testable
//! against diffusers and the official guidance code without a network.

pub mod component;
pub mod metrics;
pub mod posterior;

pub use component::GmmComponent;
pub use posterior::{ExactPosterior, PosteriorComponent};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::guidance::ModelPoint;
use crate::sampler::Denoiser;
use crate::sampler::GuidedDenoiser;
use crate::schedule::NoiseSchedule;
use crate::tensor::{HostSlice, Tensor};
use component::dot;

/// The exact ε-predictor of a Gaussian mixture, evaluated on the host in f64.
#[derive(Clone, Debug)]
pub struct GmmDenoiser {
    components: Vec<GmmComponent>,
    dim: usize,
    schedule: NoiseSchedule,
}

impl GmmDenoiser {
    /// An isotropic mixture: `means` holds `weights.len()` rows of `dim`
    /// values, component k is `N(μ_k, stds[k]² I)`; weights must be positive.
    pub fn new(
        means: Vec<f64>,
        stds: Vec<f64>,
        weights: Vec<f64>,
        dim: usize,
        schedule: NoiseSchedule,
    ) -> Result<Self> {
        let k = weights.len();
        if k == 0 || stds.len() != k || dim == 0 {
            return Err(Error::LengthMismatch {
                what: "gmm stds per component",
                expected: k,
                got: stds.len(),
            });
        }
        if means.len() != k * dim {
            return Err(Error::LengthMismatch {
                what: "gmm means",
                expected: k * dim,
                got: means.len(),
            });
        }
        let components = means
            .chunks(dim)
            .zip(stds.iter().zip(&weights))
            .map(|(mean, (&std, &weight))| GmmComponent::isotropic(weight, mean.to_vec(), std))
            .collect();
        Self::from_components(components, dim, schedule)
    }

    /// A mixture of low-rank-plus-isotropic components, each checked
    /// (lengths, positive weight and std, non-negative λ, orthonormal basis).
    pub fn from_components(
        components: Vec<GmmComponent>,
        dim: usize,
        schedule: NoiseSchedule,
    ) -> Result<Self> {
        if components.is_empty() || dim == 0 {
            return Err(Error::LengthMismatch {
                what: "gmm components (at least one, of positive dimension)",
                expected: 1,
                got: components.len().min(dim),
            });
        }
        for c in &components {
            c.validate(dim)?;
        }
        Ok(GmmDenoiser {
            components,
            dim,
            schedule,
        })
    }

    /// Dimension D of one sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The mixture's components.
    pub fn components(&self) -> &[GmmComponent] {
        &self.components
    }

    /// The mixture weights, normalised.
    pub fn weights(&self) -> Vec<f64> {
        let total: f64 = self.components.iter().map(|c| c.weight).sum();
        self.components.iter().map(|c| c.weight / total).collect()
    }

    /// ε for one sample `x` (length D) at `ᾱ`.
    pub fn eps_item(&self, x: &[f64], alpha_bar: f64) -> Vec<f64> {
        self.eps_at(x, alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())
    }

    /// For `x = a·x0 + b·n`: every component's responsibility `r_k` and
    /// `e_k = C_k⁻¹(x − aμ_k)`, with the components' marginals.
    fn responsibilities(&self, x: &[f64], a: f64, b: f64) -> Responsibilities<'_> {
        let noised: Vec<_> = self.components.iter().map(|c| c.at(a, b)).collect();
        let (logits, scores): (Vec<f64>, Vec<Vec<f64>>) =
            noised.iter().map(|n| n.logit_and_score(x)).unzip();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        Responsibilities {
            r: exps.iter().map(|e| e / total).collect(),
            scores,
            noised,
        }
    }

    /// The exact ε for one sample `x` of `x_t = a·x0 + b·n`:
    /// `ε = b·Σ_k r_k C_k⁻¹(x − aμ_k)`.
    pub fn eps_at(&self, x: &[f64], a: f64, b: f64) -> Vec<f64> {
        let resp = self.responsibilities(x, a, b);
        let mut eps = vec![0.0; self.dim];
        for (rk, ek) in resp.r.iter().zip(&resp.scores) {
            eps.iter_mut().zip(ek).for_each(|(o, e)| *o += b * rk * e);
        }
        eps
    }

    /// The Jacobian of [`GmmDenoiser::eps_at`] applied to `v`: with
    /// `e_k = C_k⁻¹(x − aμ_k)` and `ē·v = Σ r_k e_k·v`,
    /// `J v = b·[Σ_k r_k C_k⁻¹v + Σ_k r_k e_k (ē·v − e_k·v)]`. `J` is symmetric
    /// (ε is a scaled gradient of a log-density), so this is also the VJP `Jᵀv`.
    pub fn eps_jvp_at(&self, x: &[f64], a: f64, b: f64, v: &[f64]) -> Vec<f64> {
        let resp = self.responsibilities(x, a, b);
        let ev: Vec<f64> = resp.scores.iter().map(|ek| dot(ek, v)).collect();
        let mean_ev: f64 = resp.r.iter().zip(&ev).map(|(rk, evk)| rk * evk).sum();
        let mut out = vec![0.0; self.dim];
        for (k, ek) in resp.scores.iter().enumerate() {
            let cv = resp.noised[k].precision_apply(v);
            let c = resp.r[k] * (mean_ev - ev[k]);
            for ((o, eki), cvi) in out.iter_mut().zip(ek).zip(&cv) {
                *o += resp.r[k] * cvi + c * eki;
            }
        }
        out.iter_mut().for_each(|o| *o *= b);
        out
    }

    /// `n` draws from the prior, item after item: component by a uniform from
    /// Philox (`seed`, step 0), then `μ + Σ^{1/2} ξ` with ξ from (`seed`, step 1 + i).
    pub fn sample_prior(&self, seed: u64, n: usize) -> Vec<f64> {
        let weights = self.weights();
        (0..n)
            .flat_map(|i| {
                let (_, u) = crate::rng::uniforms(seed, 0, i as u32);
                let k = pick(&weights, f64::from(u));
                let xi: Vec<f64> = (0..self.dim)
                    .map(|j| crate::rng::normal_f64(seed, 1 + i as u32, j as u32))
                    .collect();
                let c = &self.components[k];
                c.sqrt_covariance_apply(&xi)
                    .into_iter()
                    .zip(&c.mean)
                    .map(|(s, m)| m + s)
                    .collect::<Vec<f64>>()
            })
            .collect()
    }

    /// ε for a batch laid out item after item, at network time `tau`.
    pub fn eps_batch(&self, x: &[f64], tau: f64) -> Result<Vec<f64>> {
        if !x.len().is_multiple_of(self.dim) {
            return Err(Error::LengthMismatch {
                what: "gmm input (a multiple of the dimension)",
                expected: self.dim,
                got: x.len(),
            });
        }
        let alpha_bar = self.schedule.alpha_bar(tau);
        Ok(x.chunks(self.dim)
            .flat_map(|item| self.eps_item(item, alpha_bar))
            .collect())
    }
}

/// Responsibilities of one sample, with what the Jacobian product reuses.
struct Responsibilities<'c> {
    r: Vec<f64>,
    scores: Vec<Vec<f64>>,
    noised: Vec<component::Noised<'c>>,
}

/// The index whose cumulative weight first exceeds `u ∈ [0, 1)`.
pub(crate) fn pick(weights: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (k, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return k;
        }
    }
    weights.len() - 1
}

impl GmmDenoiser {
    /// `f` applied to every item of the batch `x` on the host, uploaded to `out`.
    fn per_item<B: Backend>(
        &self,
        backend: &B,
        x: &Tensor<B>,
        out: &mut Tensor<B>,
        f: impl Fn(usize, &[f64]) -> Vec<f64>,
    ) -> Result<()> {
        if x.shape().item_len() != self.dim {
            return Err(Error::LengthMismatch {
                what: "gmm input item (C·H·W)",
                expected: self.dim,
                got: x.shape().item_len(),
            });
        }
        let values: Vec<f64> = x
            .to_f64(backend)?
            .chunks(self.dim)
            .enumerate()
            .flat_map(|(i, item)| f(i, item))
            .collect();
        out.upload(backend, HostSlice::F64(&values))
    }
}

/// The conditional samplers' view: ε at the model point they name, and the
/// exact Jacobian product (J is symmetric, so JVP = VJP).
impl<B: Backend> GuidedDenoiser<B> for GmmDenoiser {
    fn eps(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        out: &mut Tensor<B>,
    ) -> Result<()> {
        self.per_item(backend, x, out, |_, item| {
            self.eps_at(item, point.a, point.b)
        })
    }

    fn vjp(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        m: &Tensor<B>,
        out: &mut Tensor<B>,
    ) -> Result<bool> {
        if m.len() != x.len() {
            return Err(Error::LengthMismatch {
                what: "gmm VJP vector (one value per element of x)",
                expected: x.len(),
                got: m.len(),
            });
        }
        let m = m.to_f64(backend)?;
        let dim = self.dim;
        self.per_item(backend, x, out, |i, item| {
            self.eps_jvp_at(item, point.a, point.b, &m[i * dim..(i + 1) * dim])
        })?;
        Ok(true)
    }
}

impl<B: Backend> Denoiser<B> for GmmDenoiser {
    fn predict(&mut self, backend: &B, x: &Tensor<B>, tau: f64, out: &mut Tensor<B>) -> Result<()> {
        if x.shape().item_len() != self.dim {
            return Err(Error::LengthMismatch {
                what: "gmm input item (C·H·W)",
                expected: self.dim,
                got: x.shape().item_len(),
            });
        }
        let eps = self.eps_batch(&x.to_f64(backend)?, tau)?;
        out.upload(backend, HostSlice::F64(&eps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixture(dim: usize) -> GmmDenoiser {
        let means = (0..3 * dim)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 7.0)
            .collect();
        GmmDenoiser::new(
            means,
            vec![0.1, 0.3, 0.6],
            vec![0.5, 0.3, 0.2],
            dim,
            NoiseSchedule::ddpm_linear(),
        )
        .unwrap()
    }

    /// The exact Jacobian product equals a central difference of ε (to the
    /// difference's O(δ²) error) and is symmetric: ⟨Jv, w⟩ = ⟨v, Jw⟩.
    #[test]
    fn jacobian_product_matches_a_central_difference_and_is_symmetric() {
        let dim = 12;
        let g = mixture(dim);
        let x: Vec<f64> = (0..dim).map(|i| (i as f64 * 0.37).sin()).collect();
        let v: Vec<f64> = (0..dim).map(|i| (i as f64 * 1.3).cos()).collect();
        let w: Vec<f64> = (0..dim).map(|i| 1.0 / (1.0 + i as f64)).collect();
        for (a, b) in [(0.9, 0.44), (0.4, 0.92), (0.05, 0.999)] {
            let jv = g.eps_jvp_at(&x, a, b, &v);
            let delta = 1e-5;
            let shifted = |s: f64| -> Vec<f64> {
                let xs: Vec<f64> = x
                    .iter()
                    .zip(&v)
                    .map(|(xi, vi)| xi + s * delta * vi)
                    .collect();
                g.eps_at(&xs, a, b)
            };
            let (plus, minus) = (shifted(1.0), shifted(-1.0));
            for i in 0..dim {
                let fd = (plus[i] - minus[i]) / (2.0 * delta);
                assert!(
                    (fd - jv[i]).abs() < 1e-6 * (1.0 + jv[i].abs()),
                    "a={a}: {fd} vs {}",
                    jv[i]
                );
            }
            let jw = g.eps_jvp_at(&x, a, b, &w);
            let dot = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(s, t)| s * t).sum::<f64>();
            assert!((dot(&jv, &w) - dot(&v, &jw)).abs() < 1e-12 * (1.0 + dot(&jv, &w).abs()));
        }
    }
}
