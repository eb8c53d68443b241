//! C-ΠGDM guided sampling driven from C, step by step: the plan (host math,
//! once), a run on a backend for one operator and measurement batch, and per
//! step the network input out, ε (and the Jacobian product) in — the same
//! [`GuidedSampler`] calls, in the same order, as the Rust API's
//! `guided_sample`.

use std::ffi::c_void;

use diffinv::guidance::{
    CpgdmConfig, CpgdmPlan, GuidancePlan, Method, ModelPoint, NetworkTime, Start, VpSde,
};
use diffinv::ops::{CpgdmSampler, GuidedSampler, Operator};
use diffinv::{Error, Tensor};

use crate::memory::{read_out, Caller};
use crate::run::{self, each, Buf, Runs, Sampler, Stepper};
use crate::{
    entry, free_handle, invalid, null, write_handle, write_out, DiffinvBackend, DiffinvModelPoint,
    DiffinvOperator, DiffinvStatus,
};

/// Network time τ = ⌊999·t⌋, the network modelling t = τ/999 (the official code).
pub const DIFFINV_NETWORK_TIME_FLOOR999: u32 = 0;
/// Network time τ = 999·t, the network modelling t itself.
pub const DIFFINV_NETWORK_TIME_CONTINUOUS: u32 = 1;

/// Guided method: C-ΠGDM, the projector-preconditioned conjugate integrator.
pub const DIFFINV_GUIDANCE_CPGDM: u32 = 0;
/// Guided method: continuous ΠGDM as the C-ΠGDM authors implement it.
pub const DIFFINV_GUIDANCE_PGDM_CONTINUOUS: u32 = 1;

/// Start: x = μ₀H⁺y + σ₀z (the official noiseless start).
pub const DIFFINV_START_PSEUDO_INVERSE: u32 = 0;
/// Start: x = z (the official noisy / continuous-ΠGDM start for inpainting).
pub const DIFFINV_START_PURE_NOISE: u32 = 1;

/// Settings of a C-ΠGDM plan on the linear-β VP SDE (`beta0`, `beta1`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiffinvGuidanceConfig {
    /// Network calls N, at least 1.
    pub steps: u32,
    /// Guidance weight w ≥ 0.
    pub w: f64,
    /// The conjugate map's λ.
    pub lambda: f64,
    /// Reverse time of the first grid point, in (0, 1).
    pub t_start: f64,
    /// Reverse time of the last grid point, in (t_start, 1).
    pub t_end: f64,
    /// ε added to σ in the 1/σ coefficients.
    pub eps_num: f64,
    /// Measurement noise σ_y (0: the noiseless method).
    pub sigma_y: f64,
    /// The VP SDE's β₀ and β₁ (0 < β₀ ≤ β₁).
    pub beta0: f64,
    pub beta1: f64,
    /// One of `DIFFINV_NETWORK_TIME_*`.
    pub network_time: u32,
    /// One of `DIFFINV_GUIDANCE_*`.
    pub method: u32,
    /// One of `DIFFINV_START_*`.
    pub start: u32,
}

/// A C-ΠGDM plan: every step's coefficients, computed once (opaque).
pub struct DiffinvGuidancePlan {
    plan: CpgdmPlan,
}

/// A guided run (opaque): the conjugate state, H⁺y and the next network
/// input for one batch, allocated once. Borrows its backend, plan and
/// operator: free it before them.
pub struct DiffinvGuidedRun {
    on: Runs<Guidance>,
}

/// C-ΠGDM as a [`Sampler`]: the run is the crate's [`GuidedSampler`].
pub(crate) struct Guidance;

impl Sampler for Guidance {
    type Plan = CpgdmPlan;
    type Run<B: Caller> = CpgdmSampler<'static, B>;

    fn steps(plan: &CpgdmPlan) -> usize {
        plan.len()
    }

    /// `GuidedSampler::new` (H⁺y), then `init` from z: `guided_sample`'s start.
    fn start<B: Caller>(
        backend: &'static B,
        plan: &'static CpgdmPlan,
        op: &'static Operator<B>,
        y: &Tensor<B>,
        z: &Tensor<B>,
    ) -> Result<Self::Run<B>, Error> {
        let mut run = GuidedSampler::new(backend, plan, op, y)?;
        run.init(backend, z)?;
        Ok(run)
    }

    fn x<B: Caller>(run: &Self::Run<B>) -> &Tensor<B> {
        run.x()
    }

    fn point<B: Caller>(run: &Self::Run<B>) -> Option<ModelPoint> {
        run.model_point().ok()
    }
}

fn choice<T: Copy>(
    name: &'static str,
    code: u32,
    options: &[T],
    reason: &'static str,
) -> Result<T, Error> {
    options
        .get(code as usize)
        .copied()
        .ok_or_else(|| invalid(name, f64::from(code), reason))
}

fn cpgdm_config(c: &DiffinvGuidanceConfig) -> Result<CpgdmConfig, Error> {
    Ok(CpgdmConfig {
        steps: c.steps as usize,
        w: c.w,
        lambda: c.lambda,
        t_start: c.t_start,
        t_end: c.t_end,
        eps_num: c.eps_num,
        sigma_y: c.sigma_y,
        sde: VpSde {
            beta0: c.beta0,
            beta1: c.beta1,
        },
        network_time: choice(
            "network_time",
            c.network_time,
            &[NetworkTime::Floor999, NetworkTime::Continuous],
            "must be one of DIFFINV_NETWORK_TIME_*",
        )?,
        method: choice(
            "method",
            c.method,
            &[Method::Cpgdm, Method::PgdmContinuous],
            "must be one of DIFFINV_GUIDANCE_*",
        )?,
        start: choice(
            "start",
            c.start,
            &[Start::PseudoInverse, Start::PureNoise],
            "must be one of DIFFINV_START_*",
        )?,
    })
}

/// Fill `out` with the official noiseless C-ΠGDM settings: 5 steps, w = 15,
/// λ = 0, t from 0.6 to 0.999, ε_num = 1e-6, σ_y = 0, β 0.1 … 20, τ =
/// ⌊999·t⌋, the pseudo-inverse start.
///
/// # Safety
/// A non-null `out` points to writable memory for one `DiffinvGuidanceConfig`.
#[no_mangle]
pub unsafe extern "C" fn diffinv_guidance_config_default(
    out: *mut DiffinvGuidanceConfig,
) -> DiffinvStatus {
    entry(|| {
        let d = CpgdmConfig::default();
        // The codes are the positions in cpgdm_config's option lists.
        let config = DiffinvGuidanceConfig {
            steps: d.steps as u32,
            w: d.w,
            lambda: d.lambda,
            t_start: d.t_start,
            t_end: d.t_end,
            eps_num: d.eps_num,
            sigma_y: d.sigma_y,
            beta0: d.sde.beta0,
            beta1: d.sde.beta1,
            network_time: DIFFINV_NETWORK_TIME_FLOOR999,
            method: DIFFINV_GUIDANCE_CPGDM,
            start: DIFFINV_START_PSEUDO_INVERSE,
        };
        // SAFETY: the caller's contract.
        unsafe { write_out(out, "out", config) }
    })
}

/// Build the C-ΠGDM plan of `config` into `*out` (free with
/// `diffinv_guidance_plan_free`).
///
/// # Safety
/// Non-null pointers are valid (`out` writable for one pointer).
#[no_mangle]
pub unsafe extern "C" fn diffinv_guidance_plan_new(
    config: *const DiffinvGuidanceConfig,
    out: *mut *mut DiffinvGuidancePlan,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(null("config"))?;
        if out.is_null() {
            return Err(null("out"));
        }
        let plan = CpgdmPlan::new(cpgdm_config(config)?)?;
        // SAFETY: the caller's contract.
        unsafe { write_handle(out, DiffinvGuidancePlan { plan }) }
    })
}

/// Free a guidance plan (null: nothing). Every run of it must be freed first.
///
/// # Safety
/// `plan` is null or a handle from `diffinv_guidance_plan_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn diffinv_guidance_plan_free(plan: *mut DiffinvGuidancePlan) {
    // SAFETY: the caller's contract.
    unsafe { free_handle(plan) }
}

/// The number of network calls (steps) of a guidance plan, into `*out`.
///
/// # Safety
/// Non-null pointers are valid (`plan` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_guidance_plan_steps(
    plan: *const DiffinvGuidancePlan,
    out: *mut usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let plan = unsafe { plan.as_ref() }.ok_or(null("plan"))?;
        // SAFETY: the caller's contract.
        unsafe { write_out(out, "out", plan.plan.len()) }
    })
}

impl<B: Caller> Stepper<B, Guidance> {
    /// # Safety
    /// `eps` readable and `m` writable for their lengths.
    unsafe fn residual(&mut self, eps: Buf, m: (*mut c_void, usize)) -> Result<(), Error> {
        if m.0.is_null() {
            return Err(null("m"));
        }
        {
            // SAFETY: the caller's contract. Dropped before m is wrapped, so
            // the two caller buffers are never held at once.
            let eps = unsafe { self.required(eps, "eps")? };
            self.run.residual(self.backend, &eps)?;
        }
        // SAFETY: the caller's contract.
        unsafe { read_out(self.backend, self.run.residual_vector(), m.0, m.1, "m") }
    }

    /// # Safety
    /// `eps` and a non-null `g` readable for their lengths.
    unsafe fn update(&mut self, eps: Buf, g: Buf) -> Result<(), Error> {
        // SAFETY: the caller's contract.
        let (eps, g) = unsafe { (self.required(eps, "eps")?, self.input(g, "g", true)?) };
        self.run.update(self.backend, &eps, g.as_ref())?;
        self.step = self.run.step();
        Ok(())
    }
}

/// Start a guided run of `plan` with operator `op` on `backend` (the
/// operator's own) for `batch` samples of dtype `DIFFINV_DTYPE_*`:
/// measurements `y` (`y_len` = batch·y item elements, finite) and noise `z`
/// (`z_len` = batch·x item elements), both in the backend's memory (host
/// arrays on the CPU; device pointers on CUDA) and read during this call
/// only. Computes H⁺y and the first network input; free with
/// `diffinv_guided_run_free`.
///
/// # Safety
/// Non-null pointers are valid for their lengths. `backend`, `plan` and `op`
/// stay alive (not freed) until the run is freed. On CUDA the inputs must be
/// ready on the backend's stream.
#[no_mangle]
pub unsafe extern "C" fn diffinv_guided_run_new(
    backend: *const DiffinvBackend,
    plan: *const DiffinvGuidancePlan,
    op: *const DiffinvOperator,
    y: *const c_void,
    y_len: usize,
    z: *const c_void,
    z_len: usize,
    dtype: u32,
    batch: usize,
    out: *mut *mut DiffinvGuidedRun,
) -> DiffinvStatus {
    entry(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: the caller's contract: live handles that outlive the run.
        let plan = unsafe { plan.as_ref() }.map(|p| &p.plan);
        let inputs = ((y, y_len), (z, z_len));
        // SAFETY: the caller's contract.
        let on = unsafe { run::new_run::<Guidance>(backend, plan, op, inputs, dtype, batch)? };
        // SAFETY: the caller's contract.
        unsafe { write_handle(out, DiffinvGuidedRun { on }) }
    })
}

/// Free a guided run (null: nothing).
///
/// # Safety
/// `run` is null or a handle from `diffinv_guided_run_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn diffinv_guided_run_free(run: *mut DiffinvGuidedRun) {
    // SAFETY: the caller's contract.
    unsafe { free_handle(run) }
}

/// Where the next step calls the network, into `*out`; an error once every
/// step has run.
///
/// # Safety
/// Non-null pointers are valid (`run` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_guided_run_point(
    run: *const DiffinvGuidedRun,
    out: *mut DiffinvModelPoint,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_ref() }.ok_or(null("run"))?;
        let point = run::point(&run.on)?;
        // SAFETY: the caller's contract.
        unsafe { write_out(out, "out", point) }
    })
}

/// Copy the run's x into `dst` (`len` = batch·x item elements, the run's
/// dtype): the next network input during the run, the sample after the last
/// step. On CUDA the copy is enqueued on the backend's stream.
///
/// # Safety
/// `run` is a live handle; `dst` is valid for writes of `len` elements.
#[no_mangle]
pub unsafe extern "C" fn diffinv_guided_run_read_x(
    run: *const DiffinvGuidedRun,
    dst: *mut c_void,
    len: usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_ref() }.ok_or(null("run"))?;
        // SAFETY: the caller's contract.
        unsafe { run::read_x(&run.on, dst, len) }
    })
}

/// For a Jacobian product: the residual m = H⁺y − P·x̂0 of the current step
/// for the network output `eps` (at the input `diffinv_guided_run_read_x`
/// gave), copied into `m`. The caller then computes g = J_εᵀ·m (or J_ε·m by a
/// forward difference) and passes it to `diffinv_guided_run_update`. All
/// buffers hold batch·x item elements of the run's dtype.
///
/// # Safety
/// `run` is a live handle; `eps` readable and `m` writable for their lengths;
/// they do not overlap.
#[no_mangle]
pub unsafe extern "C" fn diffinv_guided_run_residual(
    run: *mut DiffinvGuidedRun,
    eps: *const c_void,
    eps_len: usize,
    m: *mut c_void,
    m_len: usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_mut() }.ok_or(null("run"))?;
        // SAFETY: the caller's contract.
        each!(&mut run.on, r => unsafe { r.residual((eps, eps_len), (m, m_len)) })
    })
}

/// Advance one step with the network output `eps` and the Jacobian product
/// `g` (null: the Jacobian dropped, g = 0); writes the next network input
/// (the sample after the last step). Past the last step: an error.
///
/// # Safety
/// `run` is a live handle; `eps` and a non-null `g` are readable for their
/// lengths (batch·x item elements of the run's dtype).
#[no_mangle]
pub unsafe extern "C" fn diffinv_guided_run_update(
    run: *mut DiffinvGuidedRun,
    eps: *const c_void,
    eps_len: usize,
    g: *const c_void,
    g_len: usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_mut() }.ok_or(null("run"))?;
        // SAFETY: the caller's contract.
        each!(&mut run.on, r => unsafe { r.update((eps, eps_len), (g, g_len)) })
    })
}
