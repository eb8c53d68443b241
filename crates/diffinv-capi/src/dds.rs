//! DDS (decomposed diffusion sampling) driven from C, step by step: per step
//! the network call at the run's model point, Tweedie's x̂0, the CG data
//! consistency and the re-noise — the [`DdsRun`] calls the Rust API's
//! `dds_sample` makes, in its order.

use std::ffi::c_void;

use diffinv::guidance::ModelPoint;
use diffinv::ops::{CgOptions, Operator};
use diffinv::sampler::{DataConsistency, DdsConfig, DdsPlan, DdsRun};
use diffinv::{Error, Tensor};

use crate::memory::{fill_noise, Caller};
use crate::run::{self, each, Buf, Runs, Sampler, Stepper};
use crate::{
    dtype_of, entry, free_handle, null, schedule, write_handle, write_out, DiffinvBackend,
    DiffinvModelPoint, DiffinvOperator, DiffinvScheduleConfig, DiffinvStatus,
};

/// Settings of a DDS plan (its schedule is a `DiffinvScheduleConfig`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiffinvDdsConfig {
    /// Network calls N, 1 ≤ N ≤ the schedule's training steps.
    pub steps: u32,
    /// CG iterations M per step, at least 1.
    pub cg_iterations: u32,
    /// Stop a sample's CG once ‖r‖ < this (0: always M iterations).
    pub cg_tolerance: f64,
    /// The share η ∈ [0, 1] of fresh noise in the re-noised variance.
    pub eta: f64,
    /// Solve (I + γAᵀA)x = x̂0 + γAᵀy with this γ ≥ 0 …
    pub gamma: f64,
    /// … or, when true, AᵀA x = Aᵀy warm-started at x̂0 (γ unused).
    pub normal_equations: bool,
    /// Start at τ0 = `warm_start_tau` from √ᾱ·x_init + √(1 − ᾱ)·z instead of
    /// pure noise (see `diffinv_dds_plan_start_weights`).
    pub warm_start: bool,
    pub warm_start_tau: u32,
}

/// A DDS plan: the validated grid and settings (opaque).
pub struct DiffinvDdsPlan {
    plan: DdsPlan,
}

/// A DDS run (opaque): x_t, x̂0, Aᵀy and the CG state for one batch,
/// allocated once. Borrows its backend, plan and operator: free it before them.
pub struct DiffinvDdsRun {
    on: Runs<Dds>,
}

/// DDS as a [`Sampler`]: the run is the crate's [`DdsRun`].
pub(crate) struct Dds;

impl Sampler for Dds {
    type Plan = DdsPlan;
    type Run<B: Caller> = DdsRun<'static, B>;

    fn steps(plan: &DdsPlan) -> usize {
        plan.steps.len()
    }

    fn start<B: Caller>(
        backend: &'static B,
        plan: &'static DdsPlan,
        op: &'static Operator<B>,
        y: &Tensor<B>,
        z: &Tensor<B>,
    ) -> Result<Self::Run<B>, Error> {
        DdsRun::new(backend, plan, op, y, z)
    }

    fn x<B: Caller>(run: &Self::Run<B>) -> &Tensor<B> {
        run.x()
    }

    fn point<B: Caller>(run: &Self::Run<B>) -> Option<ModelPoint> {
        run.model_point()
    }
}

/// Fill `out` with the official DDS settings: 50 steps, M = 5 without early
/// stop, η = 0.85, Tikhonov consistency with γ = 1, from pure noise.
///
/// # Safety
/// A non-null `out` points to writable memory for one `DiffinvDdsConfig`.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_config_default(out: *mut DiffinvDdsConfig) -> DiffinvStatus {
    entry(|| {
        let d = DdsConfig::default();
        let gamma = match d.consistency {
            DataConsistency::Tikhonov { gamma } => gamma,
            DataConsistency::NormalEquations => 1.0,
        };
        let config = DiffinvDdsConfig {
            steps: d.steps as u32,
            cg_iterations: d.cg.iterations as u32,
            cg_tolerance: d.cg.tolerance.unwrap_or(0.0),
            eta: d.eta,
            gamma,
            normal_equations: d.consistency == DataConsistency::NormalEquations,
            warm_start: d.warm_start.is_some(),
            warm_start_tau: d.warm_start.unwrap_or(0) as u32,
        };
        // SAFETY: the caller's contract.
        unsafe { write_out(out, "out", config) }
    })
}

fn dds_config(s: &DiffinvScheduleConfig, c: &DiffinvDdsConfig) -> Result<DdsConfig, Error> {
    Ok(DdsConfig {
        steps: c.steps as usize,
        cg: CgOptions {
            iterations: c.cg_iterations as usize,
            tolerance: (c.cg_tolerance != 0.0).then_some(c.cg_tolerance),
        },
        eta: c.eta,
        consistency: if c.normal_equations {
            DataConsistency::NormalEquations
        } else {
            DataConsistency::Tikhonov { gamma: c.gamma }
        },
        schedule: schedule(s)?,
        warm_start: c.warm_start.then_some(c.warm_start_tau as usize),
    })
}

/// Build the DDS plan of `config` on the discrete `schedule` into `*out`
/// (free with `diffinv_dds_plan_free`).
///
/// # Safety
/// Non-null pointers are valid (`out` writable for one pointer).
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_plan_new(
    schedule_config: *const DiffinvScheduleConfig,
    config: *const DiffinvDdsConfig,
    out: *mut *mut DiffinvDdsPlan,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let (s, c) = unsafe { (schedule_config.as_ref(), config.as_ref()) };
        let s = s.ok_or(null("schedule_config"))?;
        let c = c.ok_or(null("config"))?;
        if out.is_null() {
            return Err(null("out"));
        }
        let plan = DdsPlan::new(dds_config(s, c)?)?;
        // SAFETY: the caller's contract.
        unsafe { write_handle(out, DiffinvDdsPlan { plan }) }
    })
}

/// Free a DDS plan (null: nothing). Every run of it must be freed first.
///
/// # Safety
/// `plan` is null or a handle from `diffinv_dds_plan_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_plan_free(plan: *mut DiffinvDdsPlan) {
    // SAFETY: the caller's contract.
    unsafe { free_handle(plan) }
}

/// The number of network calls (steps) of a DDS plan, into `*out`.
///
/// # Safety
/// Non-null pointers are valid (`plan` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_plan_steps(
    plan: *const DiffinvDdsPlan,
    out: *mut usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let plan = unsafe { plan.as_ref() }.ok_or(null("plan"))?;
        // SAFETY: the caller's contract.
        unsafe { write_out(out, "out", plan.plan.steps.len()) }
    })
}

/// The weights (a, b) of the start a·x_init + b·z: with a warm start √ᾱ_τ0
/// and √(1 − ᾱ_τ0), and (0, 1) — pure z — otherwise.
///
/// # Safety
/// Non-null pointers are valid (`plan` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_plan_start_weights(
    plan: *const DiffinvDdsPlan,
    a: *mut f64,
    b: *mut f64,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let plan = unsafe { plan.as_ref() }.ok_or(null("plan"))?;
        if a.is_null() || b.is_null() {
            return Err(null(if a.is_null() { "a" } else { "b" }));
        }
        let (wa, wb) = plan.plan.start_weights();
        // SAFETY: the caller's contract (both checked non-null).
        unsafe {
            write_out(a, "a", wa)?;
            write_out(b, "b", wb)
        }
    })
}

// `DdsRun` indexes its plan by the step it is at: each entry checks the
// step first, so a call past the end is an error, not a panic.
impl<B: Caller> Stepper<B, Dds> {
    /// # Safety
    /// `eps` readable for its length.
    unsafe fn tweedie(&mut self, eps: Buf) -> Result<(), Error> {
        self.check_step()?;
        // SAFETY: the caller's contract.
        let eps = unsafe { self.required(eps, "eps")? };
        self.run.tweedie(self.backend, &eps)
    }

    fn consistency(&mut self) -> Result<(), Error> {
        self.check_step()?;
        self.run.consistency(self.backend)
    }

    /// # Safety
    /// `eps` and a non-null `z` readable for their lengths.
    unsafe fn renoise(&mut self, eps: Buf, z: Buf) -> Result<(), Error> {
        self.check_step()?;
        // SAFETY: the caller's contract.
        let (eps, z) = unsafe { (self.required(eps, "eps")?, self.input(z, "z", true)?) };
        self.run.renoise(self.backend, &eps, z.as_ref())?;
        self.step += 1;
        Ok(())
    }
}

/// Start a DDS run of `plan` with operator `op` on `backend` (the operator's
/// own) for `batch` samples of dtype `DIFFINV_DTYPE_*`: measurements `y`
/// (`y_len` = batch·y item elements, finite) and the start `z` (`z_len` =
/// batch·x item elements: pure noise, or the warm start's mix), in the
/// backend's memory and read during this call only. Free with
/// `diffinv_dds_run_free`.
///
/// # Safety
/// Non-null pointers are valid for their lengths. `backend`, `plan` and `op`
/// stay alive (not freed) until the run is freed. On CUDA the inputs must be
/// ready on the backend's stream.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_new(
    backend: *const DiffinvBackend,
    plan: *const DiffinvDdsPlan,
    op: *const DiffinvOperator,
    y: *const c_void,
    y_len: usize,
    z: *const c_void,
    z_len: usize,
    dtype: u32,
    batch: usize,
    out: *mut *mut DiffinvDdsRun,
) -> DiffinvStatus {
    entry(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: the caller's contract: live handles that outlive the run.
        let plan = unsafe { plan.as_ref() }.map(|p| &p.plan);
        let inputs = ((y, y_len), (z, z_len));
        // SAFETY: the caller's contract.
        let on = unsafe { run::new_run::<Dds>(backend, plan, op, inputs, dtype, batch)? };
        // SAFETY: the caller's contract.
        unsafe { write_handle(out, DiffinvDdsRun { on }) }
    })
}

/// Free a DDS run (null: nothing).
///
/// # Safety
/// `run` is null or a handle from `diffinv_dds_run_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_free(run: *mut DiffinvDdsRun) {
    // SAFETY: the caller's contract.
    unsafe { free_handle(run) }
}

/// Where the next step calls the network, into `*out`; an error once every
/// step has run.
///
/// # Safety
/// Non-null pointers are valid (`run` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_point(
    run: *const DiffinvDdsRun,
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

/// Whether this step's re-noise needs fresh noise z, into `*out` (false
/// once every step has run).
///
/// # Safety
/// Non-null pointers are valid (`run` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_needs_noise(
    run: *const DiffinvDdsRun,
    out: *mut bool,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_ref() }.ok_or(null("run"))?;
        let needs = each!(&run.on, r => r.run.needs_noise());
        // SAFETY: the caller's contract.
        unsafe { write_out(out, "out", needs) }
    })
}

/// Copy the run's x into `dst` (`len` = batch·x item elements, the run's
/// dtype): the next network input during the run, the sample after the last
/// step. On CUDA the copy is enqueued on the backend's stream.
///
/// # Safety
/// `run` is a live handle; `dst` is valid for writes of `len` elements.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_read_x(
    run: *const DiffinvDdsRun,
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

/// Tweedie's x̂0 = (x − σ·ε)/α from the network output `eps` at the
/// current point (batch·x item elements of the run's dtype).
///
/// # Safety
/// `run` is a live handle; `eps` is readable for `eps_len` elements.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_tweedie(
    run: *mut DiffinvDdsRun,
    eps: *const c_void,
    eps_len: usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_mut() }.ok_or(null("run"))?;
        // SAFETY: the caller's contract.
        each!(&mut run.on, r => unsafe { r.tweedie((eps, eps_len)) })
    })
}

/// M conjugate-gradient iterations of data consistency on x̂0.
///
/// # Safety
/// `run` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_consistency(run: *mut DiffinvDdsRun) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_mut() }.ok_or(null("run"))?;
        each!(&mut run.on, r => r.consistency())
    })
}

/// End the step: the next network input from x̂0, `eps` and the fresh noise
/// `z` (required when `diffinv_dds_run_needs_noise` says so; may be null
/// otherwise). Past the last step: an error.
///
/// # Safety
/// `run` is a live handle; `eps` and a non-null `z` are readable for their
/// lengths (batch·x item elements of the run's dtype).
#[no_mangle]
pub unsafe extern "C" fn diffinv_dds_run_renoise(
    run: *mut DiffinvDdsRun,
    eps: *const c_void,
    eps_len: usize,
    z: *const c_void,
    z_len: usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let run = unsafe { run.as_mut() }.ok_or(null("run"))?;
        // SAFETY: the caller's contract.
        each!(&mut run.on, r => unsafe { r.renoise((eps, eps_len), (z, z_len)) })
    })
}

/// Fill `dst` (`len` elements of dtype `DIFFINV_DTYPE_*` in the backend's
/// memory) with the standard normal noise the Rust samplers draw at `step`
/// for `seed` (Philox, keyed by seed, step and element index) — with it a C
/// loop re-noises exactly as `dds_sample` does.
///
/// # Safety
/// Non-null pointers are valid (`backend` a live handle, `dst` writable for
/// `len` elements).
#[no_mangle]
pub unsafe extern "C" fn diffinv_normal_noise(
    backend: *const DiffinvBackend,
    seed: u64,
    step: u32,
    dst: *mut c_void,
    len: usize,
    dtype: u32,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let backend = unsafe { backend.as_ref() }.ok_or(null("backend"))?;
        let dtype = dtype_of(dtype)?;
        // SAFETY: the caller's contract.
        unsafe {
            match backend {
                DiffinvBackend::Cpu(b) => fill_noise(b, seed, step, dst, len, dtype),
                DiffinvBackend::Cuda(b) => fill_noise(&**b, seed, step, dst, len, dtype),
            }
        }
    })
}
