//! An analytic denoiser: the exact ε of a Gaussian mixture prior.
//!
//! With `p(x0) = Σ_k w_k N(μ_k, s_k² I)` and `x_t = a·x0 + b·ε` the optimal
//! prediction is `ε*(x) = b·Σ_k r_k (x − a μ_k)/v_k` with `v_k = a²s_k² + b²`
//! and responsibilities `r = softmax_k(ln w_k − (D/2) ln(2π v_k) − |x − aμ_k|²/(2v_k))`.
//! It makes full sampling loops testable against diffusers without a network.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::guidance::{GuidedDenoiser, ModelPoint};
use crate::sampler::Denoiser;
use crate::schedule::NoiseSchedule;
use crate::tensor::{HostSlice, Tensor};

/// The exact ε-predictor of a Gaussian mixture, evaluated on the host in f64.
#[derive(Clone, Debug)]
pub struct GmmDenoiser {
    /// `K × D` component means, row-major.
    means: Vec<f64>,
    stds: Vec<f64>,
    log_weights: Vec<f64>,
    dim: usize,
    schedule: NoiseSchedule,
}

impl GmmDenoiser {
    /// `means` holds `weights.len()` rows of `dim` values; weights must be positive.
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
        for (name, v) in weights
            .iter()
            .map(|&w| ("weight", w))
            .chain(stds.iter().map(|&s| ("std", s)))
        {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidParameter {
                    name,
                    value: v,
                    reason: "gmm weights and stds must be finite and positive",
                });
            }
        }
        Ok(GmmDenoiser {
            means,
            stds,
            log_weights: weights.iter().map(|w| w.ln()).collect(),
            dim,
            schedule,
        })
    }

    /// Dimension D of one sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// ε for one sample `x` (length D) at `ᾱ`.
    pub fn eps_item(&self, x: &[f64], alpha_bar: f64) -> Vec<f64> {
        self.eps_at(x, alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())
    }

    /// For `x_t = a·x0 + b·n`: each component's variance `v_k = a²s_k² + b²`
    /// and responsibility `r_k` for one sample `x` (length D).
    fn responsibilities(&self, x: &[f64], a: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim as f64;
        let vs: Vec<f64> = self.stds.iter().map(|s| a * a * s * s + b * b).collect();
        let logits: Vec<f64> = (0..vs.len())
            .map(|k| {
                let mu = self.mean(k);
                let dist2: f64 = x.iter().zip(mu).map(|(xi, m)| (xi - a * m).powi(2)).sum();
                self.log_weights[k]
                    - 0.5 * d * (2.0 * std::f64::consts::PI * vs[k]).ln()
                    - dist2 / (2.0 * vs[k])
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        (exps.iter().map(|e| e / total).collect(), vs)
    }

    fn mean(&self, k: usize) -> &[f64] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    /// The exact ε for one sample `x` of `x_t = a·x0 + b·n`:
    /// `ε = b·Σ_k r_k (x − a μ_k)/v_k`.
    pub fn eps_at(&self, x: &[f64], a: f64, b: f64) -> Vec<f64> {
        let (r, vs) = self.responsibilities(x, a, b);
        let mut eps = vec![0.0; self.dim];
        for (k, (rk, vk)) in r.iter().zip(&vs).enumerate() {
            for ((o, xi), m) in eps.iter_mut().zip(x).zip(self.mean(k)) {
                *o += b * rk * (xi - a * m) / vk;
            }
        }
        eps
    }

    /// The Jacobian of [`GmmDenoiser::eps_at`] applied to `v`: with
    /// `e_k = (x − aμ_k)/v_k` and `ē = Σ r_k e_k`,
    /// `J v = b·[(Σ_k r_k/v_k)·v + Σ_k r_k e_k (ē·v − e_k·v)]`. `J` is symmetric
    /// (ε is a scaled gradient of a log-density), so this is also the VJP `Jᵀv`.
    pub fn eps_jvp_at(&self, x: &[f64], a: f64, b: f64, v: &[f64]) -> Vec<f64> {
        let (r, vs) = self.responsibilities(x, a, b);
        let e: Vec<Vec<f64>> = (0..r.len())
            .map(|k| {
                x.iter()
                    .zip(self.mean(k))
                    .map(|(xi, m)| (xi - a * m) / vs[k])
                    .collect()
            })
            .collect();
        let ev: Vec<f64> = e
            .iter()
            .map(|ek| ek.iter().zip(v).map(|(p, q)| p * q).sum())
            .collect();
        let mean_ev: f64 = r.iter().zip(&ev).map(|(rk, evk)| rk * evk).sum();
        let diag: f64 = r.iter().zip(&vs).map(|(rk, vk)| rk / vk).sum();
        let mut out: Vec<f64> = v.iter().map(|vi| diag * vi).collect();
        for (k, ek) in e.iter().enumerate() {
            let c = r[k] * (mean_ev - ev[k]);
            for (o, eki) in out.iter_mut().zip(ek) {
                *o += c * eki;
            }
        }
        out.iter_mut().for_each(|o| *o *= b);
        out
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
