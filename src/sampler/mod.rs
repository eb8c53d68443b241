//! The sampling loop: model call, then one fused update, per planned step.
//!
//! Generic over the backend and over the network ([`Denoiser`]). All device
//! memory of a run (model output and the solver state) is allocated once in
//! [`SolverRun::new`]; the loop itself allocates nothing.

pub mod dds;
pub mod dps;
pub mod guided;

pub use dds::{dds_sample, DataConsistency, DdsConfig, DdsPlan, DdsRun};
pub use dps::{dps_sample, DpsConfig, DpsPlan};
pub use guided::{
    cpgdm_sample, guided_sample, GuidedDenoiser, GuidedOptions, Jacobian, FD_RELATIVE_STEP,
};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::{solver_step, SolverOps};
use crate::solver::{slot_stride, Plan, StepLaunch};
use crate::tensor::{DType, HostVec, Shape, Tensor};

/// A network: writes its prediction (ε or v, as the plan's [`crate::Prediction`]
/// says) for a batch `x` at network time `tau` into `out` (same shape and dtype).
pub trait Denoiser<B: Backend> {
    fn predict(&mut self, backend: &B, x: &Tensor<B>, tau: f64, out: &mut Tensor<B>) -> Result<()>;
}

impl<B, F> Denoiser<B> for F
where
    B: Backend,
    F: FnMut(&B, &Tensor<B>, f64, &mut Tensor<B>) -> Result<()>,
{
    fn predict(&mut self, backend: &B, x: &Tensor<B>, tau: f64, out: &mut Tensor<B>) -> Result<()> {
        self(backend, x, tau, out)
    }
}

/// Reported to the progress callback after each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Index of the step just finished (0-based).
    pub step: usize,
    /// Total number of steps.
    pub steps: usize,
    /// Network time of the step's model call.
    pub tau: f64,
    /// Noise level σ the step landed on.
    pub sigma: f64,
}

/// What a progress callback returns: `()` to go on, or a
/// [`ControlFlow`](std::ops::ControlFlow) whose `Break` stops the run after
/// the step it reports. A stopped run returns `Ok` with the state after that
/// step (the sample so far), so a caller can cancel, or stop at a target noise
/// level, without an error path.
pub trait StepControl {
    /// Whether the run stops here.
    fn stop(&self) -> bool;
}

impl StepControl for () {
    fn stop(&self) -> bool {
        false
    }
}

impl StepControl for std::ops::ControlFlow<()> {
    fn stop(&self) -> bool {
        self.is_break()
    }
}

/// Options of a run that are not part of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SamplerOptions {
    /// Seed of the in-kernel noise (DDIM η > 0).
    pub seed: u64,
    /// Download and scan every model output for NaN/Inf and fail with
    /// [`Error::NonFinite`] (costs one device→host copy per step).
    pub check_finite: bool,
}

/// The buffers and position of one run of a plan.
pub struct SolverRun<'p, B: Backend> {
    plan: &'p Plan,
    model_out: Tensor<B>,
    state: Tensor<B>,
    options: SamplerOptions,
}

impl<'p, B: SolverOps> SolverRun<'p, B> {
    /// Allocate the run's buffers for samples of `shape` and `dtype`.
    pub fn new(
        backend: &B,
        plan: &'p Plan,
        shape: Shape,
        dtype: DType,
        options: SamplerOptions,
    ) -> Result<Self> {
        let n = shape.checked_len()?;
        let model_out = Tensor::zeros(backend, shape, dtype)?;
        // At least one slot so a backend never sees a zero-sized buffer.
        let slots = plan.state_slots.max(1) as usize;
        let state = Tensor::zeros(backend, Shape::flat(slots * slot_stride(n)), dtype)?;
        Ok(SolverRun {
            plan,
            model_out,
            state,
            options,
        })
    }

    /// The model-output buffer the next [`SolverRun::step`] consumes.
    pub fn model_out_mut(&mut self) -> &mut Tensor<B> {
        &mut self.model_out
    }

    /// Apply the fused update of step `k` to `x`, with the model output
    /// already in [`SolverRun::model_out_mut`]. Steps must run in order.
    pub fn step(&mut self, backend: &B, k: usize, x: &mut Tensor<B>) -> Result<()> {
        let SolverRun {
            plan,
            model_out,
            state,
            options,
        } = self;
        Self::step_on(plan, options, state, backend, k, x, model_out)
    }

    /// Apply the fused update of step `k` to `x` with a model output the
    /// caller holds (e.g. a tensor over its own network's buffer), instead of
    /// [`SolverRun::model_out_mut`]; same shape and dtype as the run's.
    pub fn step_with(
        &mut self,
        backend: &B,
        k: usize,
        x: &mut Tensor<B>,
        model_out: &Tensor<B>,
    ) -> Result<()> {
        if model_out.shape() != self.model_out.shape() {
            return Err(Error::ShapeMismatch {
                what: "model output",
                expected: self.model_out.shape(),
                got: model_out.shape(),
            });
        }
        Self::step_on(
            self.plan,
            &self.options,
            &mut self.state,
            backend,
            k,
            x,
            model_out,
        )
    }

    fn step_on(
        plan: &Plan,
        options: &SamplerOptions,
        state: &mut Tensor<B>,
        backend: &B,
        k: usize,
        x: &mut Tensor<B>,
        model_out: &Tensor<B>,
    ) -> Result<()> {
        let planned = plan.steps.get(k).ok_or(Error::StepOutOfRange {
            step: k,
            steps: plan.len(),
        })?;
        if options.check_finite {
            check_finite(backend, model_out, k)?;
        }
        let launch = StepLaunch {
            step: k as u32,
            seed: options.seed,
        };
        solver_step(backend, &planned.update, launch, x, model_out, state)
    }

    /// Call the denoiser at step `k`'s point, then apply the update.
    pub fn predict_and_step<D: Denoiser<B>>(
        &mut self,
        backend: &B,
        k: usize,
        denoiser: &mut D,
        x: &mut Tensor<B>,
    ) -> Result<()> {
        let tau = self
            .plan
            .steps
            .get(k)
            .map(|s| s.point.tau)
            .ok_or(Error::StepOutOfRange {
                step: k,
                steps: self.plan.len(),
            })?;
        if x.shape() != self.model_out.shape() {
            return Err(Error::ShapeMismatch {
                what: "sample",
                expected: self.model_out.shape(),
                got: x.shape(),
            });
        }
        if x.dtype() != self.model_out.dtype() {
            return Err(Error::DTypeMismatch {
                what: "sample",
                expected: self.model_out.dtype(),
                got: x.dtype(),
            });
        }
        denoiser.predict(backend, x, tau, &mut self.model_out)?;
        self.step(backend, k, x)
    }
}

fn check_finite<B: Backend>(backend: &B, t: &Tensor<B>, step: usize) -> Result<()> {
    let values = match t.download(backend)? {
        HostVec::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        other => other.into_f32(),
    };
    let mut bad = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((index, &value)) = bad.next() {
        return Err(Error::NonFinite {
            what: "model output",
            step,
            index,
            value,
            count: 1 + bad.count(),
        });
    }
    Ok(())
}

/// Run every step of `plan` on `x` in place (`x` holds x_T on entry and the
/// sample on return), reporting progress after each step; the callback can
/// stop the run early ([`StepControl`]).
pub fn sample<B: SolverOps, D: Denoiser<B>, R: StepControl>(
    backend: &B,
    plan: &Plan,
    denoiser: &mut D,
    x: &mut Tensor<B>,
    options: SamplerOptions,
    mut progress: impl FnMut(Progress) -> R,
) -> Result<()> {
    let mut run = SolverRun::new(backend, plan, x.shape(), x.dtype(), options)?;
    for (k, s) in plan.steps.iter().enumerate() {
        run.predict_and_step(backend, k, denoiser, x)?;
        let control = progress(Progress {
            step: k,
            steps: plan.len(),
            tau: s.point.tau,
            sigma: s.target.sigma,
        });
        if control.stop() {
            break;
        }
    }
    Ok(())
}
