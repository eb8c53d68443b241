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

/// `Error::NonFinite` if y holds a NaN or an infinity: one would spread through
/// H⁺y into every step of the run. One download of y, before any launch.
pub(crate) fn check_measurements<B: Backend>(backend: &B, y: &Tensor<B>) -> Result<()> {
    check_measurement_values(&y.to_f64(backend)?)
}

/// [`check_measurements`] on values already on the host.
pub(crate) fn check_measurement_values(values: &[f64]) -> Result<()> {
    let mut bad = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((index, &value)) = bad.next() {
        return Err(Error::NonFinite {
            what: "measurements y",
            step: 0,
            index,
            value: value as f32,
            count: 1 + bad.count(),
        });
    }
    Ok(())
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
///
/// With a separable operator (blur, bicubic SR) the run's state lives in the
/// operator's singular basis, where P is a 0/1 diagonal the passes apply
/// inline: network outputs are rotated in, and the network input and the
/// residual rotated out (two launches each; `docs/math.md` §6.8).
pub struct GuidedSampler<'r, B: GuidanceOps, P: GuidancePlan = CpgdmPlan> {
    plan: &'r P,
    op: &'r Operator<B>,
    spectral: Option<Spectral<B>>,
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

/// A run in a separable operator's singular basis: P there, and the
/// pixel-space twins of what the caller sees or gives.
struct Spectral<B: Backend> {
    mask: Operator<B>,
    /// The next network input and the residual, rotated out.
    x_pixel: Tensor<B>,
    m_pixel: Tensor<B>,
    /// The network output and Jacobian product, rotated in.
    eps: Tensor<B>,
    g: Tensor<B>,
}

/// The sampler of the C-ΠGDM plans (the default plan type).
pub type CpgdmSampler<'r, B> = GuidedSampler<'r, B, CpgdmPlan>;

impl<'r, B: GuidanceOps, P: GuidancePlan> GuidedSampler<'r, B, P> {
    /// Allocate a run's buffers for measurements `y` (`[B, …y_item]`, in the
    /// network dtype) and compute H⁺y.
    pub fn new(backend: &B, plan: &'r P, op: &'r Operator<B>, y: &Tensor<B>) -> Result<Self> {
        let dtype = y.dtype();
        if !backend.guidance_supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: backend.kind().name(),
                dtype,
            });
        }
        let mask = op.spectral_mask_operator(backend)?;
        if mask.is_some() && plan.uses_gram_scale() {
            return Err(Error::UnsupportedOperator {
                operator: op.kind().to_string(),
                reason: "noisy ΠGDM and C-ΠGDM need H⁺(H⁺)ᵀ = q·P, which a separable operator lacks (DPS and DDS take noisy separable measurements)",
            });
        }
        check_measurements(backend, y)?;
        let batch = y.shape().batch();
        let x_shape = Shape::from_dims(&[&[batch][..], op.x_item().dims()].concat())?;
        let zeros = || Tensor::zeros(backend, x_shape, dtype);
        let mut hy = zeros()?;
        op.apply(backend, Mode::PseudoInverse, y, &mut hy)?;
        let spectral = match mask {
            Some(mask) => {
                let mut s = Spectral {
                    mask,
                    x_pixel: zeros()?,
                    m_pixel: zeros()?,
                    eps: zeros()?,
                    g: zeros()?,
                };
                op.rotate(backend, true, &hy, &mut s.eps)?;
                std::mem::swap(&mut hy, &mut s.eps);
                Some(s)
            }
            None => None,
        };
        Ok(GuidedSampler {
            plan,
            op,
            spectral,
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

    /// H⁺y (in the singular basis for a separable operator).
    pub fn pinv_y(&self) -> &Tensor<B> {
        &self.hy
    }

    /// The current sample: the next network input during the run, the output
    /// after the last step.
    pub fn x(&self) -> &Tensor<B> {
        self.spectral.as_ref().map_or(&self.x, |s| &s.x_pixel)
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
    /// With a separable operator and `rotated`, the pass reads the rotated
    /// copies [`GuidedSampler::rotate_in`] made instead of `eps` and `g`.
    #[allow(clippy::too_many_arguments)]
    fn pass(
        &mut self,
        backend: &B,
        pass: u32,
        c: PassCoefficients,
        eps: &Tensor<B>,
        g: Option<&Tensor<B>>,
        use_z: bool,
        rotated: bool,
    ) -> Result<()> {
        let item = self.hy.shape().item_len();
        let (proj, eps, g) = match &self.spectral {
            Some(s) if rotated => (&s.mask, &s.eps, g.map(|_| &s.g)),
            Some(s) => (&s.mask, eps, g),
            None => (self.op, eps, g),
        };
        let (op, op_scalars) = proj.mode_params(Mode::Project, self.batch, item, item);
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
            table: proj.table_buffer(),
        })
    }

    /// `q` of the operator the passes project with (1 in a singular basis,
    /// which only noiseless plans use).
    fn gram_scale(&self) -> f64 {
        self.spectral
            .as_ref()
            .map_or(self.op.pinv_gram_scale(), |s| s.mask.pinv_gram_scale())
    }

    /// Start (or restart) from noise `z`: the state at the first step and the
    /// first network input. One launch (five for a separable operator: z
    /// rotated in, x out — so a given z gives the pixel-space algorithm's
    /// sample).
    pub fn init(&mut self, backend: &B, z: &Tensor<B>) -> Result<()> {
        self.check("noise", z)?;
        let c = self.plan.init_coefficients(self.gram_scale());
        self.rotate_in(backend, z, None)?;
        self.pass(backend, cpgdm_pass::INIT, c, z, None, false, true)?;
        self.rotate_out(backend, false)?;
        self.step = 0;
        Ok(())
    }

    /// `m = H⁺y − P x̂0` for the network output `eps` at the current step: the
    /// vector the Jacobian product is taken against. One launch (five for a
    /// separable operator: ε rotated in, m rotated out).
    pub fn residual(&mut self, backend: &B, eps: &Tensor<B>) -> Result<&Tensor<B>> {
        self.check("network output", eps)?;
        self.check_step()?;
        let c = self
            .plan
            .residual_coefficients(self.step, self.gram_scale())?;
        self.rotate_in(backend, eps, None)?;
        self.pass(backend, cpgdm_pass::RESIDUAL, c, eps, None, false, true)?;
        self.rotate_out(backend, true)?;
        Ok(self.residual_vector())
    }

    /// The sample, consuming the run (the output once every step has run).
    pub fn into_x(self) -> Tensor<B> {
        match self.spectral {
            Some(s) => s.x_pixel,
            None => self.x,
        }
    }

    /// The residual of the last [`GuidedSampler::residual`].
    pub fn residual_vector(&self) -> &Tensor<B> {
        self.spectral.as_ref().map_or(&self.m, |s| &s.m_pixel)
    }

    /// With a separable operator, rotate the network output (and the
    /// Jacobian product) into the singular basis, where the next pass reads them.
    fn rotate_in(&mut self, backend: &B, eps: &Tensor<B>, g: Option<&Tensor<B>>) -> Result<()> {
        let op = self.op;
        if let Some(s) = self.spectral.as_mut() {
            op.rotate(backend, true, eps, &mut s.eps)?;
            if let Some(g) = g {
                op.rotate(backend, true, g, &mut s.g)?;
            }
        }
        Ok(())
    }

    /// With a separable operator, rotate the run's x (or, with `residual`, m)
    /// out to pixel space, where the caller reads it.
    fn rotate_out(&mut self, backend: &B, residual: bool) -> Result<()> {
        let op = self.op;
        match self.spectral.as_mut() {
            Some(s) if residual => op.rotate(backend, false, &self.m, &mut s.m_pixel),
            Some(s) => op.rotate(backend, false, &self.x, &mut s.x_pixel),
            None => Ok(()),
        }
    }

    /// Advance one step with the network output `eps` and, unless the Jacobian
    /// is dropped, the product `g = J_εᵀm`; writes the next network input (the
    /// output after the last step). One launch (for a separable operator, plus
    /// two per tensor rotated: ε, g in, x out). A step that needs noise
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
                if self.spectral.is_some() {
                    self.op.rotate(backend, true, z, &mut self.m)?;
                } else {
                    backend.copy(&z.buf, &mut self.m.buf)?;
                }
            }
            (false, None) => {}
        }
        let c = self
            .plan
            .update_coefficients(self.step, self.gram_scale())?;
        self.rotate_in(backend, eps, g)?;
        let use_z = z.is_some() && noisy;
        self.pass(backend, cpgdm_pass::UPDATE, c, eps, g, use_z, true)?;
        self.rotate_out(backend, false)?;
        self.step += 1;
        Ok(())
    }
}
