//! Guided sampling: the loop that drives a [`GuidedSampler`] run — the network
//! call, the Jacobian product the chosen [`Jacobian`] mode asks for, and the
//! fused guidance passes — for any [`GuidancePlan`] (C-ΠGDM, noisy C-ΠGDM,
//! continuous or discrete ΠGDM).

use super::{Progress, StepControl};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::guidance::{CpgdmPlan, GuidancePlan, ModelPoint};
use crate::ops::guidance::{GuidanceOps, GuidedSampler};
use crate::ops::Operator;
use crate::tensor::{DType, HostSlice, Shape, Temp, Tensor};

/// Options of a guided run that are not part of its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuidedOptions {
    pub jacobian: Jacobian,
    /// Seed of the per-step noise of plans that draw some (discrete ΠGDM, η > 0).
    pub seed: u64,
}

impl Default for GuidedOptions {
    /// The exact Jacobian product, seed 0.
    fn default() -> Self {
        GuidedOptions {
            jacobian: Jacobian::Exact,
            seed: 0,
        }
    }
}

/// δ of [`Jacobian::FiniteDifference`] relative to ‖x‖/‖m‖ (`docs/math.md`
/// §3.4): small enough that the difference's O(δ) bias is far below the
/// guidance's own error, large enough that f32 rounding of ε stays below it.
pub const FD_RELATIVE_STEP: f64 = 1e-3;

/// A noise-predicting network the conditional samplers can call: ε at a model
/// point and, where it has one, its exact vector-Jacobian product.
pub trait GuidedDenoiser<B: Backend> {
    /// `out ← ε(x)` at `point`.
    fn eps(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        out: &mut Tensor<B>,
    ) -> Result<()>;

    /// `out ← J_ε(x)ᵀ·m` at `point`; `Ok(false)` if the denoiser has no exact
    /// product (then [`Jacobian::Exact`] is an error) — this default, for
    /// networks without a backward pass.
    fn vjp(
        &mut self,
        _backend: &B,
        _x: &Tensor<B>,
        _point: ModelPoint,
        _m: &Tensor<B>,
        _out: &mut Tensor<B>,
    ) -> Result<bool> {
        Ok(false)
    }
}

/// How the sampler gets the Jacobian product g = J_εᵀ m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jacobian {
    /// The denoiser's own VJP (one backward pass; the analytic GMM's is exact).
    Exact,
    /// A forward difference `[ε(x + δm) − ε(x)]/δ` (`docs/math.md` §3.4): one
    /// extra network call, no backward pass. J_ε is symmetric for an MMSE
    /// denoiser, so this J·m stands in for Jᵀ·m. Both calls run in f32 or
    /// wider (f32 for f16 runs), with δ = [`FD_RELATIVE_STEP`]·‖x‖/‖m‖ per
    /// sample; in f16 the difference would be rounding noise.
    FiniteDifference,
    /// g = 0: one network call and one launch per step; the linear part of the
    /// update stays exact.
    Dropped,
}

/// Run every step of `plan` from noise `z` and return the sample: per step one
/// network call, plus one VJP with [`Jacobian::Exact`] or a second network
/// call with [`Jacobian::FiniteDifference`] (the residual pass then runs
/// first). Steps that add fresh noise draw it from Philox keyed by
/// (`seed`, step, element) (`docs/math.md` §3). `progress` hears of every
/// finished step (σ: the next call's noise level, 0 at the end) and can stop
/// the run ([`StepControl`]): it then returns the next network input.
/// Temporaries come from the backend's pool.
#[allow(clippy::too_many_arguments)]
pub fn guided_sample<B, P, D, R>(
    backend: &B,
    plan: &P,
    op: &Operator<B>,
    y: &Tensor<B>,
    z: &Tensor<B>,
    denoiser: &mut D,
    options: GuidedOptions,
    mut progress: impl FnMut(Progress) -> R,
) -> Result<Tensor<B>>
where
    B: GuidanceOps,
    P: GuidancePlan,
    D: GuidedDenoiser<B>,
    R: StepControl,
{
    let GuidedOptions { jacobian, seed } = options;
    let mut run = GuidedSampler::new(backend, plan, op, y)?;
    run.init(backend, z)?;
    let (shape, dtype) = (run.x_shape(), run.dtype());
    let mut eps = Temp::new(backend, shape, dtype)?;
    let mut g = Temp::new(backend, shape, dtype)?;
    let mut noise = Temp::new(backend, shape, dtype)?;
    let mut difference = match jacobian {
        Jacobian::FiniteDifference => Some(ForwardDifference::new(backend, shape, dtype)?),
        _ => None,
    };
    for n in 0..plan.len() {
        let point = run.model_point()?;
        let product = match (jacobian, difference.as_mut()) {
            (Jacobian::FiniteDifference, Some(fd)) => {
                fd.base(backend, denoiser, run.x(), point, &mut eps)?;
                run.residual(backend, &eps)?;
                fd.product(backend, denoiser, run.residual_vector(), point, &mut g)?;
                Some(&*g)
            }
            (Jacobian::Exact, _) => {
                denoiser.eps(backend, run.x(), point, &mut eps)?;
                run.residual(backend, &eps)?;
                if !denoiser.vjp(backend, run.x(), point, run.residual_vector(), &mut g)? {
                    return Err(Error::InvalidParameter {
                        name: "jacobian",
                        value: f64::NAN,
                        reason: "Jacobian::Exact needs a denoiser with a VJP",
                    });
                }
                Some(&*g)
            }
            _ => {
                denoiser.eps(backend, run.x(), point, &mut eps)?;
                None
            }
        };
        if run.needs_noise() {
            let values: Vec<f64> = (0..shape.checked_len()?)
                .map(|i| crate::rng::normal_f64(seed, n as u32, i as u32))
                .collect();
            noise.upload(backend, HostSlice::F64(&values))?;
            run.update_with_noise(backend, &eps, product, &noise)?;
        } else {
            run.update(backend, &eps, product)?;
        }
        let control = progress(Progress {
            step: n,
            steps: plan.len(),
            tau: point.tau,
            sigma: plan.model_point(n + 1).map_or(0.0, |p| p.b),
        });
        if control.stop() {
            break;
        }
    }
    Ok(run.into_x())
}

/// [`guided_sample`] for a C-ΠGDM plan (no step adds noise).
pub fn cpgdm_sample<B: GuidanceOps, D: GuidedDenoiser<B>>(
    backend: &B,
    plan: &CpgdmPlan,
    op: &Operator<B>,
    y: &Tensor<B>,
    z: &Tensor<B>,
    denoiser: &mut D,
    jacobian: Jacobian,
) -> Result<Tensor<B>> {
    let options = GuidedOptions { jacobian, seed: 0 };
    guided_sample(backend, plan, op, y, z, denoiser, options, |_| {})
}

/// The forward-difference Jacobian product of one step, in `wide` (f32 for
/// f16 runs, else the run's dtype): the base call is made in `wide` too, so
/// both terms of the difference carry the same rounding.
pub(crate) struct ForwardDifference<'b, B: Backend> {
    wide: DType,
    x: Temp<'b, B>,
    eps: Temp<'b, B>,
    shifted_eps: Temp<'b, B>,
    /// x and ε of the base call, per element, for the host-side difference.
    x_host: Vec<f64>,
    eps_host: Vec<f64>,
}

impl<'b, B: Backend> ForwardDifference<'b, B> {
    pub(crate) fn new(backend: &'b B, shape: Shape, dtype: DType) -> Result<Self> {
        let wide = if dtype == DType::F16 {
            DType::F32
        } else {
            dtype
        };
        Ok(ForwardDifference {
            wide,
            x: Temp::new(backend, shape, wide)?,
            eps: Temp::new(backend, shape, wide)?,
            shifted_eps: Temp::new(backend, shape, wide)?,
            x_host: Vec::new(),
            eps_host: Vec::new(),
        })
    }

    /// The step's network call ε(x), made in `wide`; `eps` gets it in the run's dtype.
    pub(crate) fn base<D: GuidedDenoiser<B>>(
        &mut self,
        backend: &B,
        denoiser: &mut D,
        x: &Tensor<B>,
        point: ModelPoint,
        eps: &mut Tensor<B>,
    ) -> Result<()> {
        self.x_host = x.to_f64(backend)?;
        self.x.upload(backend, HostSlice::F64(&self.x_host))?;
        denoiser.eps(backend, &self.x, point, &mut self.eps)?;
        self.eps_host = self.eps.to_f64(backend)?;
        if eps.dtype() == self.wide {
            backend.copy(self.eps.buffer(), eps.buffer_mut())
        } else {
            eps.upload(backend, HostSlice::F64(&self.eps_host))
        }
    }

    /// `g = [ε(x + δm) − ε(x)]/δ` per sample (g = 0 where m = 0).
    pub(crate) fn product<D: GuidedDenoiser<B>>(
        &mut self,
        backend: &B,
        denoiser: &mut D,
        m: &Tensor<B>,
        point: ModelPoint,
        g: &mut Tensor<B>,
    ) -> Result<()> {
        let item = m.shape().item_len();
        let m_host = m.to_f64(backend)?;
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let deltas: Vec<f64> = self
            .x_host
            .chunks(item)
            .zip(m_host.chunks(item))
            .map(|(x, m)| {
                let (nx, nm) = (norm(x), norm(m));
                if nm > 0.0 {
                    FD_RELATIVE_STEP * nx.max(f64::MIN_POSITIVE) / nm
                } else {
                    0.0
                }
            })
            .collect();
        let shifted: Vec<f64> = self
            .x_host
            .iter()
            .zip(&m_host)
            .enumerate()
            .map(|(i, (x, m))| x + deltas[i / item] * m)
            .collect();
        self.x.upload(backend, HostSlice::F64(&shifted))?;
        denoiser.eps(backend, &self.x, point, &mut self.shifted_eps)?;
        let product: Vec<f64> = self
            .shifted_eps
            .to_f64(backend)?
            .iter()
            .zip(&self.eps_host)
            .enumerate()
            .map(|(i, (e1, e0))| {
                let delta = deltas[i / item];
                if delta > 0.0 {
                    (e1 - e0) / delta
                } else {
                    0.0
                }
            })
            .collect();
        g.upload(backend, HostSlice::F64(&product))
    }
}
