//! Diffusion posterior sampling (Chung et al., ICLR 2023; `docs/math.md` §3.4)
//! as a baseline for the guided samplers: DDPM's ancestral step (DDIM η = 1 on
//! a strided grid) minus `ζ·∇_x ‖y − H x̂0(x)‖`.
//!
//! The gradient is `−(∂x̂0/∂x)ᵀHᵀr/‖r‖` with `r = y − Hx̂0` and
//! `(∂x̂0/∂x)ᵀv = (v − σ_t J_εᵀv)/α_t`: one Jacobian product per step in the
//! run's [`Jacobian`] mode (dropped: `J_ε = 0`). Unlike the official code the
//! norm is taken per sample, so samples of a batch stay independent (a batch
//! of one is the official rule). H and Hᵀ run on the device; the vector
//! arithmetic of the step runs on the host in f64 — DPS is the reference
//! point the fused samplers are measured against, not a kernel of its own.

use super::guided::{ForwardDifference, GuidedDenoiser, GuidedOptions, Jacobian};
use crate::error::{Error, Result};
use crate::guidance::{ModelPoint, PgdmStep};
use crate::ops::{Operator, OperatorOps};
use crate::rng;
use crate::schedule::NoiseSchedule;
use crate::tensor::{HostSlice, Shape, Temp, Tensor};

/// Settings of a DPS run.
#[derive(Clone, Debug, PartialEq)]
pub struct DpsConfig {
    /// Steps N on the grid `t_i = ⌊(N − i)·N_train/N⌋ − 1` (starts at the last
    /// training index, where the run starts from pure noise).
    pub steps: usize,
    /// Step size ζ ≥ 0 of the gradient (the official FFHQ configs: 0.3–0.5 at
    /// 1000 steps; fewer steps need a larger one).
    pub zeta: f64,
    pub schedule: NoiseSchedule,
    /// Start at training index τ0 from `√ᾱ_τ0·x_init + √(1 − ᾱ_τ0)·z` (the
    /// caller mixes the start, with [`DpsPlan::start_weights`]) instead of
    /// from pure noise at the last training index; the grid then spaces the
    /// steps below τ0 as it does below N_train. Not in the official code.
    pub warm_start: Option<usize>,
}

impl Default for DpsConfig {
    /// 1000 steps, ζ = 0.5 (the official inpainting setting), DDPM's schedule.
    fn default() -> Self {
        DpsConfig {
            steps: 1000,
            zeta: 0.5,
            schedule: NoiseSchedule::ddpm_linear(),
            warm_start: None,
        }
    }
}

/// The validated grid of a DPS run.
#[derive(Clone, Debug, PartialEq)]
pub struct DpsPlan {
    pub config: DpsConfig,
    pub steps: Vec<PgdmStep>,
}

impl DpsPlan {
    /// Validate (1 ≤ steps ≤ τ0 + 1, τ0 < N_train, finite ζ ≥ 0) and lay out
    /// the grid.
    pub fn new(config: DpsConfig) -> Result<Self> {
        let n_train = config.schedule.train_steps();
        let top = match config.warm_start {
            None => n_train - 1,
            Some(top) if top < n_train => top,
            Some(top) => {
                return Err(Error::InvalidParameter {
                    name: "DPS warm start τ0",
                    value: top as f64,
                    reason: "must be below the schedule's training steps",
                })
            }
        };
        if config.steps == 0 || config.steps > top + 1 {
            return Err(Error::InvalidSteps {
                steps: config.steps,
                train_steps: top + 1,
            });
        }
        if !(config.zeta.is_finite() && config.zeta >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "zeta",
                value: config.zeta,
                reason: "must be finite and ≥ 0",
            });
        }
        let n = config.steps;
        let ts: Vec<i64> = (0..n)
            .map(|i| ((n - i) * (top + 1) / n) as i64 - 1)
            .collect();
        let steps = PgdmStep::pairs(&config.schedule, &ts);
        Ok(DpsPlan { config, steps })
    }

    /// `(√ᾱ_τ0, √(1 − ᾱ_τ0))` of the first step: the start is
    /// `a·x_init + b·z` with a warm start, and pure z otherwise.
    pub fn start_weights(&self) -> (f64, f64) {
        PgdmStep::start_weights(&self.steps, self.config.warm_start.is_some())
    }

    /// Network calls of a run: one per step, two with a Jacobian product.
    pub fn nfe(&self, jacobian: Jacobian) -> usize {
        match jacobian {
            Jacobian::Dropped => self.steps.len(),
            _ => 2 * self.steps.len(),
        }
    }
}

/// Run DPS from the noise `z` (`[B, …x_item]`, the start x_T) for measurements
/// `y` (`[B, …y_item]`, same dtype); each step's fresh noise is Philox-keyed by
/// (`options.seed`, step, element).
pub fn dps_sample<B: OperatorOps, D: GuidedDenoiser<B>>(
    backend: &B,
    plan: &DpsPlan,
    op: &Operator<B>,
    y: &Tensor<B>,
    z: &Tensor<B>,
    denoiser: &mut D,
    options: GuidedOptions,
) -> Result<Tensor<B>> {
    let GuidedOptions { jacobian, seed } = options;
    let (shape, dtype) = (z.shape(), z.dtype());
    let batch = shape.batch();
    let x_shape = Shape::from_dims(&[&[batch][..], op.x_item().dims()].concat())?;
    let y_shape = Shape::from_dims(&[&[batch][..], op.y_item().dims()].concat())?;
    if shape != x_shape || y.shape() != y_shape {
        return Err(Error::ShapeMismatch {
            what: "DPS noise (x) or measurements (y) for the operator",
            expected: if shape != x_shape { x_shape } else { y_shape },
            got: if shape != x_shape { shape } else { y.shape() },
        });
    }
    let (item, m_item) = (x_shape.item_len(), y_shape.item_len());
    let y_host = y.to_f64(backend)?;
    crate::ops::guidance::check_measurement_values(&y_host)?;
    let mut x = Tensor::zeros(backend, x_shape, dtype)?;
    backend.copy(z.buffer(), x.buffer_mut())?;
    let mut eps = Temp::new(backend, x_shape, dtype)?;
    let mut x0 = Temp::new(backend, x_shape, dtype)?;
    let mut hx0 = Temp::new(backend, y_shape, dtype)?;
    let mut g = Temp::new(backend, x_shape, dtype)?;
    let mut difference = match jacobian {
        Jacobian::FiniteDifference => Some(ForwardDifference::new(backend, x_shape, dtype)?),
        _ => None,
    };
    for (n, step) in plan.steps.iter().enumerate() {
        let (a, b) = (step.abar_t.sqrt(), (1.0 - step.abar_t).sqrt());
        let point = ModelPoint {
            tau: step.t as f64,
            a,
            b,
        };
        match difference.as_mut() {
            Some(fd) => fd.base(backend, denoiser, &x, point, &mut eps)?,
            None => denoiser.eps(backend, &x, point, &mut eps)?,
        }
        let x_host = x.to_f64(backend)?;
        let eps_host = eps.to_f64(backend)?;
        let x0_host: Vec<f64> = x_host
            .iter()
            .zip(&eps_host)
            .map(|(xi, ei)| (xi - b * ei) / a)
            .collect();
        x0.upload(backend, HostSlice::F64(&x0_host))?;
        op.forward(backend, &x0, &mut hx0)?;
        let r: Vec<f64> = y_host
            .iter()
            .zip(hx0.to_f64(backend)?)
            .map(|(yi, h)| yi - h)
            .collect();
        let norms: Vec<f64> = r
            .chunks(m_item)
            .map(|ri| ri.iter().map(|v| v * v).sum::<f64>().sqrt())
            .collect();
        // Hᵀr goes through the same buffer as x̂0, then g holds J_εᵀHᵀr.
        hx0.upload(backend, HostSlice::F64(&r))?;
        op.adjoint(backend, &hx0, &mut x0)?;
        let v = x0.to_f64(backend)?;
        let jv = match jacobian {
            Jacobian::Dropped => vec![0.0; v.len()],
            Jacobian::Exact => {
                if !denoiser.vjp(backend, &x, point, &x0, &mut g)? {
                    return Err(Error::InvalidParameter {
                        name: "jacobian",
                        value: f64::NAN,
                        reason: "Jacobian::Exact needs a denoiser with a VJP",
                    });
                }
                g.to_f64(backend)?
            }
            Jacobian::FiniteDifference => {
                if let Some(fd) = difference.as_mut() {
                    fd.product(backend, denoiser, &x0, point, &mut g)?;
                }
                g.to_f64(backend)?
            }
        };
        let (c1, c2) = step.ddim_split(1.0);
        let a_s = step.abar_s.sqrt();
        let zeta = plan.config.zeta;
        let next: Vec<f64> = (0..x_host.len())
            .map(|i| {
                let norm = norms[i / item];
                // ∇‖r‖ = −(v − σJᵀv)/(α‖r‖); zero where the residual vanishes.
                let grad = if norm > 0.0 {
                    -(v[i] - b * jv[i]) / (a * norm)
                } else {
                    0.0
                };
                let noise = if c1 > 0.0 {
                    c1 * rng::normal_f64(seed, n as u32, i as u32)
                } else {
                    0.0
                };
                a_s * x0_host[i] + noise + c2 * eps_host[i] - zeta * grad
            })
            .collect();
        x.upload(backend, HostSlice::F64(&next))?;
    }
    Ok(x)
}
