//! The guidance family: the fused passes of noiseless C-ΠGDM (`docs/math.md`
//! §6.4) and the sampler built on them.
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
use crate::guidance::{CpgdmPlan, Method};
use crate::ops::operator::{Mode, Operator, OperatorScalars};
use crate::ops::OperatorOps;
use crate::tensor::{DType, Shape, Tensor};

/// Backends that run the C-ΠGDM passes.
pub trait GuidanceOps: OperatorOps {
    /// Whether the passes compute with network tensors of `dtype` here.
    fn guidance_supports(&self, dtype: DType) -> bool;

    /// Launch one pass [`CpgdmSampler`] has checked.
    fn cpgdm_pass_checked(&self, call: CpgdmCall<'_, Self>) -> Result<()>;
}

/// One validated pass: every buffer holds `params.op.n_out` elements; `u`, `v`
/// are of [`state_dtype`]`(dtype)`, the others of `dtype`; `table` is the
/// operator's. Only [`CpgdmSampler`] makes one.
pub struct CpgdmCall<'a, B: Backend> {
    pub(crate) params: CpgdmParams,
    /// `params.c` before rounding to f32, and the operator's scalars (the CPU's
    /// f64 oracle path).
    pub(crate) coefficients: [f64; 12],
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

/// The point a network call models: `x = a·x0 + b·noise` at network time `tau`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelPoint {
    pub tau: f64,
    pub a: f64,
    pub b: f64,
}

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
    /// product (then [`Jacobian::Exact`] is an error).
    fn vjp(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        m: &Tensor<B>,
        out: &mut Tensor<B>,
    ) -> Result<bool>;
}

/// How the sampler gets the Jacobian product g = J_εᵀ m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jacobian {
    /// The denoiser's own VJP (one backward pass; the analytic GMM's is exact).
    Exact,
    /// g = 0: one network call and one launch per step; the linear part of the
    /// update stays exact.
    Dropped,
}

/// The buffers and position of one noiseless C-ΠGDM run.
pub struct CpgdmSampler<'r, B: GuidanceOps> {
    plan: &'r CpgdmPlan,
    op: &'r Operator<B>,
    dtype: DType,
    batch: usize,
    /// The next step to run (== steps when done).
    step: usize,
    u: Tensor<B>,
    v: Tensor<B>,
    x: Tensor<B>,
    hy: Tensor<B>,
    m: Tensor<B>,
}

impl<'r, B: GuidanceOps> CpgdmSampler<'r, B> {
    /// Allocate a run's buffers for measurements `y` (`[B, …y_item]`, in the
    /// network dtype) and compute H⁺y.
    pub fn new(
        backend: &B,
        plan: &'r CpgdmPlan,
        op: &'r Operator<B>,
        y: &Tensor<B>,
    ) -> Result<Self> {
        let dtype = y.dtype();
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
        Ok(CpgdmSampler {
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

    /// The model point of the next network call.
    pub fn model_point(&self) -> Result<ModelPoint> {
        let s = self
            .plan
            .steps
            .get(self.step)
            .ok_or(Error::StepOutOfRange {
                step: self.step,
                steps: self.plan.steps.len(),
            })?;
        Ok(ModelPoint {
            tau: s.tau,
            a: s.model_a,
            b: s.model_b,
        })
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
        c: [f64; 12],
        eps: &Tensor<B>,
        g: Option<&Tensor<B>>,
    ) -> Result<()> {
        let item = self.hy.shape().item_len();
        let (op, op_scalars) = self.op.mode_params(Mode::Project, self.batch, item, item);
        let params = CpgdmParams {
            op,
            pass,
            use_g: u32::from(g.is_some()),
            _pad: [0; 2],
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

    /// `a = κ₃·q·e^{−κ₁−κ₂}` at grid point `n`: the first-order correction the
    /// noisy variant's state map applies to the P-component (0 when noiseless).
    fn noisy_correction(&self, n: usize) -> f64 {
        let p = self.plan.points[n];
        p.k3 * self.op.pinv_gram_scale() * (-p.k1 - p.k2).exp()
    }

    /// The coefficient of u in x at grid point `n`: `e^{−κ₁−κ₂}(1 − a)` (the
    /// official first-order inverse of Ā = A + κ₃Q; exact A⁻¹ when noiseless).
    fn to_u(&self, n: usize) -> f64 {
        let p = self.plan.points[n];
        (-p.k1 - p.k2).exp() * (1.0 - self.noisy_correction(n))
    }

    /// Start (or restart) from noise `z`: `x₀ = μ₀H⁺y + σ₀z` mapped to the
    /// state at the first grid point, and the first network input (x₀ itself
    /// when noiseless; the noisy variant's first-order inverse of its map
    /// otherwise, as the official code does). One launch.
    pub fn init(&mut self, backend: &B, z: &Tensor<B>) -> Result<()> {
        self.check("noise", z)?;
        let p = self.plan.points[0];
        let a = self.noisy_correction(0);
        // u₀ = (e^{κ₁+κ₂} + κ₃q)·P x₀, v₀ = e^{κ₁}σ(z − Pz); the network input
        // e^{−κ₁}v₀ + to_u·u₀ = T·μH⁺y + σz + (T − 1)σPz with T = 1 − a².
        let scale_u = (p.k1 + p.k2).exp() * (1.0 + a);
        let t = 1.0 - a * a;
        let c = [
            scale_u * p.mu,
            scale_u * p.sigma,
            p.k1.exp() * p.sigma,
            t * p.mu,
            p.sigma,
            (t - 1.0) * p.sigma,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        self.pass(backend, cpgdm_pass::INIT, c, z, None)?;
        self.step = 0;
        Ok(())
    }

    /// `m = H⁺y − P x̂0` for the network output `eps` at the current step: the
    /// vector the Jacobian product is taken against. One launch.
    pub fn residual(&mut self, backend: &B, eps: &Tensor<B>) -> Result<&Tensor<B>> {
        self.check("network output", eps)?;
        self.model_point()?;
        let p = self.plan.points[self.step];
        let mut c = [0.0; 12];
        (c[0], c[1]) = (self.to_u(self.step) / p.mu, p.sigma / p.mu);
        self.pass(backend, cpgdm_pass::RESIDUAL, c, eps, None)?;
        Ok(&self.m)
    }

    /// Advance one step with the network output `eps` and, unless the Jacobian
    /// is dropped, the product `g = J_εᵀm`; writes the next network input (the
    /// output after the last step). One launch.
    pub fn update(&mut self, backend: &B, eps: &Tensor<B>, g: Option<&Tensor<B>>) -> Result<()> {
        self.check("network output", eps)?;
        if let Some(g) = g {
            self.check("Jacobian product", g)?;
        }
        self.model_point()?;
        let s = self.plan.steps[self.step];
        let next = self.plan.points[self.step + 1];
        let (d, keep) = (s.d_phi, 1.0 - self.plan.config.lambda * s.dr);
        let (to_x_v, to_x_u) = ((-next.k1).exp(), self.to_u(self.step + 1));
        let c = match self.plan.config.method {
            Method::Cpgdm => {
                // Q = q·P, and P H⁺ = H⁺: the noisy terms join the P-component.
                let q = self.op.pinv_gram_scale();
                [
                    keep,
                    d.y + q * d.yc,
                    d.s1 + d.s2 + q * d.sc,
                    d.j1 + d.j2 + q * d.jc,
                    d.s1,
                    d.j1,
                    to_x_v,
                    to_x_u,
                    keep,
                    0.0,
                    0.0,
                    0.0,
                ]
            }
            Method::PgdmContinuous => {
                // x̄ += ΔΦ ε + e·J_x̂0ᵀm with J_x̂0ᵀm = (m − σg)/μ and
                // m = H⁺y − (e^{−κ₁}u − σPε)/μ, split into u = P x̄ and v.
                let p = self.plan.points[self.step];
                let (e, mu, sig) = (s.euler_guidance, p.mu, p.sigma);
                let on_g = -e * sig / mu;
                [
                    keep - e * (-p.k1).exp() / (mu * mu),
                    e / mu,
                    d.s1 + e * sig / (mu * mu),
                    on_g,
                    d.s1,
                    on_g,
                    to_x_v,
                    to_x_u,
                    keep,
                    0.0,
                    0.0,
                    0.0,
                ]
            }
        };
        self.pass(backend, cpgdm_pass::UPDATE, c, eps, g)?;
        self.step += 1;
        Ok(())
    }
}

/// Run every step of `plan` from noise `z` and return the sample: per step one
/// network call, plus one VJP with [`Jacobian::Exact`] (the residual pass then
/// runs first). Temporaries come from the backend's pool.
pub fn cpgdm_sample<B: GuidanceOps, D: GuidedDenoiser<B>>(
    backend: &B,
    plan: &CpgdmPlan,
    op: &Operator<B>,
    y: &Tensor<B>,
    z: &Tensor<B>,
    denoiser: &mut D,
    jacobian: Jacobian,
) -> Result<Tensor<B>> {
    let mut run = CpgdmSampler::new(backend, plan, op, y)?;
    run.init(backend, z)?;
    let (shape, dtype) = (run.x_shape(), run.dtype());
    let mut eps = crate::tensor::Temp::new(backend, shape, dtype)?;
    let mut g = crate::tensor::Temp::new(backend, shape, dtype)?;
    for _ in 0..plan.steps.len() {
        let point = run.model_point()?;
        denoiser.eps(backend, run.x(), point, &mut eps)?;
        let product = match jacobian {
            Jacobian::Dropped => None,
            Jacobian::Exact => {
                run.residual(backend, &eps)?;
                if !denoiser.vjp(backend, run.x(), point, &run.m, &mut g)? {
                    return Err(Error::InvalidParameter {
                        name: "jacobian",
                        value: f64::NAN,
                        reason: "Jacobian::Exact needs a denoiser with a VJP",
                    });
                }
                Some(&*g)
            }
        };
        run.update(backend, &eps, product)?;
    }
    Ok(run.x)
}
