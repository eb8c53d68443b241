//! An analytic denoiser: the exact ε of a Gaussian mixture prior.
//!
//! With `p(x0) = Σ_k w_k N(μ_k, s_k² I)` and `x_t = a·x0 + b·ε` the optimal
//! prediction is `ε*(x) = b·Σ_k r_k (x − a μ_k)/v_k` with `v_k = a²s_k² + b²`
//! and responsibilities `r = softmax_k(ln w_k − (D/2) ln(2π v_k) − |x − aμ_k|²/(2v_k))`.
//! It makes full sampling loops testable against diffusers without a network.

use crate::backend::Backend;
use crate::error::{Error, Result};
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
        let a = alpha_bar.sqrt();
        let b = (1.0 - alpha_bar).sqrt();
        let d = self.dim as f64;
        let vs: Vec<f64> = self.stds.iter().map(|s| a * a * s * s + b * b).collect();
        let logits: Vec<f64> = (0..vs.len())
            .map(|k| {
                let mu = &self.means[k * self.dim..(k + 1) * self.dim];
                let dist2: f64 = x.iter().zip(mu).map(|(xi, m)| (xi - a * m).powi(2)).sum();
                self.log_weights[k]
                    - 0.5 * d * (2.0 * std::f64::consts::PI * vs[k]).ln()
                    - dist2 / (2.0 * vs[k])
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        let mut eps = vec![0.0; self.dim];
        for (k, e) in exps.iter().enumerate() {
            let r = e / total;
            let mu = &self.means[k * self.dim..(k + 1) * self.dim];
            for ((o, xi), m) in eps.iter_mut().zip(x).zip(mu) {
                *o += b * r * (xi - a * m) / vs[k];
            }
        }
        eps
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
