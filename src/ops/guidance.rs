//! The guidance family: the fused passes of C-ΠGDM and the ΠGDM variants
//! (`docs/math.md` §6.4–6.7) and the sampler built on them.
//!
//! Outside the network a step is two launches — one before the Jacobian
//! product (the residual m) and one after (the update, which also writes the
//! next network input) — or one when the Jacobian is dropped. The projector P
//! of the elementwise and block-local operators is computed inside the passes
//! by the operator's own Project program. The conjugate state (u, v) is f32
//! (f64 on the CPU oracle path): its P-component grows by up to e^{wB/2}, far
//! past f16's range.

use crate::backend::params::{cpgdm_pass, CpgdmParams};
use crate::backend::Backend;
use crate::error::{Error, Result};
pub use crate::guidance::ModelPoint;
use crate::guidance::{CpgdmPlan, GuidancePlan, PassCoefficients};
use crate::ops::operator::{Mode, Operator, OperatorScalars};
use crate::ops::OperatorOps;
use crate::tensor::{DType, Shape, Tensor};

/// Backends that run the C-ΠGDM passes.
pub trait GuidanceOps: OperatorOps {
    /// Whether the passes compute with network tensors of `dtype` here.
    fn guidance_supports(&self, dtype: DType) -> bool;

    /// Launch one pass [`GuidedSampler`] has checked.
    fn cpgdm_pass_checked(&self, call: CpgdmCall<'_, Self>) -> Result<()>;
}

/// One validated pass: every buffer holds `params.op.n_out` elements; `u`, `v`
/// are of [`state_dtype`]`(dtype)`, the others of `dtype`; `table` is the
/// operator's. Only [`GuidedSampler`] makes one.
pub struct CpgdmCall<'a, B: Backend> {
    pub(crate) params: CpgdmParams,
    /// `params.c` before rounding to f32, and the operator's scalars (the CPU's
    /// f64 oracle path).
    pub(crate) coefficients: PassCoefficients,
    pub(crate) op_scalars: OperatorScalars,
    pub(crate) dtype: DType,
    pub(crate) u: &'a mut B::Buffer,
    pub(crate) v: &'a mut B::Buffer,
    pub(crate) x: &'a mut B::Buffer,
    pub(crate) m: &'a mut B::Buffer,
    /// ε (the noise z in the INIT pass).
    pub(crate) eps: &'a B::Buffer,
    /// The Jacobian product; `eps` stands in, unread, without one.
    pub(crate) g: &'a B::Buffer,
    pub(crate) hy: &'a B::Buffer,
    pub(crate) table: &'a B::Buffer,
}

/// The dtype of the conjugate state for network tensors of `dtype`.
pub fn state_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// The buffers and position of one guided run (C-ΠGDM, noisy C-ΠGDM,
/// continuous or discrete ΠGDM: whatever [`GuidancePlan`] drives it).
pub struct GuidedSampler<'r, B: GuidanceOps, P: GuidancePlan = CpgdmPlan> {
    plan: &'r P,
    op: &'r Operator<B>,
    dtype: DType,
    batch: usize,
    /// The next step to run (== plan length when done).
    step: usize,
    u: Tensor<B>,
    v: Tensor<B>,
    x: Tensor<B>,
    hy: Tensor<B>,
    /// The residual m; in an update with noise, the noise z.
    m: Tensor<B>,
}

/// The sampler of the C-ΠGDM plans (the default plan type).
pub type CpgdmSampler<'r, B> = GuidedSampler<'r, B, CpgdmPlan>;

impl<'r, B: GuidanceOps, P: GuidancePlan> GuidedSampler<'r, B, P> {
    /// Allocate a run's buffers for measurements `y` (`[B, …y_item]`, in the
    /// network dtype) and compute H⁺y.
    pub fn new(backend: &B, plan: &'r P, op: &'r Operator<B>, y: &Tensor<B>) -> Result<Self> {
        let dtype = y.dtype();
        if !op.kind().is_block_local() {
            return Err(Error::UnsupportedOperator {
                operator: format!("{:?}", op.kind()),
                reason: "the fused guidance passes apply P inline: elementwise and block-local operators only",
            });
        }
        if !backend.guidance_supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: backend.kind().name(),
                dtype,
            });
        }
        let batch = y.shape().batch();
        let x_shape = Shape::from_dims(&[&[batch][..], op.x_item().dims()].concat())?;
        let mut hy = Tensor::zeros(backend, x_shape, dtype)?;
        op.apply(backend, Mode::PseudoInverse, y, &mut hy)?;
        Ok(GuidedSampler {
            plan,
            op,
            dtype,
            batch,
            step: 0,
            u: Tensor::zeros(backend, x_shape, state_dtype(dtype))?,
            v: Tensor::zeros(backend, x_shape, state_dtype(dtype))?,
            x: Tensor::zeros(backend, x_shape, dtype)?,
            m: Tensor::zeros(backend, x_shape, dtype)?,
            hy,
        })
    }

    /// The shape of x, z, ε and g: `[B, …x_item]`.
    pub fn x_shape(&self) -> Shape {
        self.hy.shape()
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// H⁺y.
    pub fn pinv_y(&self) -> &Tensor<B> {
        &self.hy
    }

    /// The current sample: the next network input during the run, the output
    /// after the last step.
    pub fn x(&self) -> &Tensor<B> {
        &self.x
    }

    /// The next step to run; equal to the plan's length once the run is done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Whether the next step adds fresh noise ([`GuidedSampler::update_with_noise`]).
    pub fn needs_noise(&self) -> bool {
        self.step < self.plan.len() && self.plan.step_noise(self.step)
    }

    /// The model point of the next network call.
    pub fn model_point(&self) -> Result<ModelPoint> {
        self.plan.model_point(self.step)
    }

    fn check_step(&self) -> Result<()> {
        if self.step >= self.plan.len() {
            return Err(Error::StepOutOfRange {
                step: self.step,
                steps: self.plan.len(),
            });
        }
        Ok(())
    }

    fn check(&self, what: &'static str, t: &Tensor<B>) -> Result<()> {
        if t.shape().batch() != self.batch || t.shape().item_len() != self.hy.shape().item_len() {
            return Err(Error::ShapeMismatch {
                what,
                expected: self.x_shape(),
                got: t.shape(),
            });
        }
        if t.dtype() != self.dtype {
            return Err(Error::DTypeMismatch {
                what,
                expected: self.dtype,
                got: t.dtype(),
            });
        }
        Ok(())
    }

    /// Launch `pass` with coefficients `c` (f64, rounded once for the kernels).
    fn pass(
        &mut self,
        backend: &B,
        pass: u32,
        c: PassCoefficients,
        eps: &Tensor<B>,
        g: Option<&Tensor<B>>,
        use_z: bool,
    ) -> Result<()> {
        let item = self.hy.shape().item_len();
        let (op, op_scalars) = self.op.mode_params(Mode::Project, self.batch, item, item);
        let params = CpgdmParams {
            op,
            pass,
            use_g: u32::from(g.is_some()),
            use_z: u32::from(use_z),
            _pad: 0,
            c: c.map(|v| v as f32),
        };
        backend.cpgdm_pass_checked(CpgdmCall {
            params,
            coefficients: c,
            op_scalars,
            dtype: self.dtype,
            u: &mut self.u.buf,
            v: &mut self.v.buf,
            x: &mut self.x.buf,
            m: &mut self.m.buf,
            eps: &eps.buf,
            g: &g.unwrap_or(eps).buf,
            hy: &self.hy.buf,
            table: self.op.table_buffer(),
        })
    }

    /// Start (or restart) from noise `z`: the state at the first step and the
    /// first network input. One launch.
    pub fn init(&mut self, backend: &B, z: &Tensor<B>) -> Result<()> {
        self.check("noise", z)?;
        let c = self.plan.init_coefficients(self.op.pinv_gram_scale());
        self.pass(backend, cpgdm_pass::INIT, c, z, None, false)?;
        self.step = 0;
        Ok(())
    }

    /// `m = H⁺y − P x̂0` for the network output `eps` at the current step: the
    /// vector the Jacobian product is taken against. One launch.
    pub fn residual(&mut self, backend: &B, eps: &Tensor<B>) -> Result<&Tensor<B>> {
        self.check("network output", eps)?;
        self.check_step()?;
        let c = self
            .plan
            .residual_coefficients(self.step, self.op.pinv_gram_scale())?;
        self.pass(backend, cpgdm_pass::RESIDUAL, c, eps, None, false)?;
        Ok(&self.m)
    }

    /// The sample, consuming the run (the output once every step has run).
    pub fn into_x(self) -> Tensor<B> {
        self.x
    }

    /// The residual of the last [`GuidedSampler::residual`].
    pub fn residual_vector(&self) -> &Tensor<B> {
        &self.m
    }

    /// Advance one step with the network output `eps` and, unless the Jacobian
    /// is dropped, the product `g = J_εᵀm`; writes the next network input (the
    /// output after the last step). One launch. A step that needs noise
    /// ([`GuidedSampler::needs_noise`]) is an error here.
    pub fn update(&mut self, backend: &B, eps: &Tensor<B>, g: Option<&Tensor<B>>) -> Result<()> {
        self.update_inner(backend, eps, g, None)
    }

    /// [`GuidedSampler::update`] with the fresh noise `z` of a step that
    /// takes some (discrete ΠGDM with η > 0). `z` is copied into the run
    /// (the residual's buffer, free by now); then one launch.
    pub fn update_with_noise(
        &mut self,
        backend: &B,
        eps: &Tensor<B>,
        g: Option<&Tensor<B>>,
        z: &Tensor<B>,
    ) -> Result<()> {
        self.update_inner(backend, eps, g, Some(z))
    }

    fn update_inner(
        &mut self,
        backend: &B,
        eps: &Tensor<B>,
        g: Option<&Tensor<B>>,
        z: Option<&Tensor<B>>,
    ) -> Result<()> {
        self.check("network output", eps)?;
        if let Some(g) = g {
            self.check("Jacobian product", g)?;
        }
        self.check_step()?;
        let noisy = self.plan.step_noise(self.step);
        match (noisy, z) {
            (true, None) => {
                return Err(Error::InvalidStep {
                    reason: format!("step {} adds fresh noise: use update_with_noise", self.step),
                })
            }
            (_, Some(z)) => {
                self.check("noise", z)?;
                backend.copy(&z.buf, &mut self.m.buf)?;
            }
            (false, None) => {}
        }
        let c = self
            .plan
            .update_coefficients(self.step, self.op.pinv_gram_scale())?;
        self.pass(backend, cpgdm_pass::UPDATE, c, eps, g, z.is_some() && noisy)?;
        self.step += 1;
        Ok(())
    }
}
