//! What the conditional runs (C-ΠGDM, DDS) share at the boundary: the
//! operator a run is made with, the model point the caller's network is
//! called at, and [`Stepper`] — a run on one backend with the shape and dtype
//! its caller's tensors must have. Each sampler says how it starts and where
//! its network calls are ([`Sampler`]); the entries that do the same for both
//! (start, point, read x) are written once here.

use std::ffi::c_void;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::cuda::CudaBackend;
use diffinv::guidance::ModelPoint;
use diffinv::ops::Operator;
use diffinv::{DType, Error, Shape, Tensor};

use crate::memory::{read_out, Caller};
use crate::{dtype_of, invalid, null, DiffinvBackend};

/// Where the next network call is: the step about to run, the plan's step
/// count, the network's timestep τ, and the point x = α·x0 + σ·noise the
/// network models there.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiffinvModelPoint {
    pub step: usize,
    pub steps: usize,
    pub tau: f64,
    pub alpha: f64,
    pub sigma: f64,
}

/// A degradation operator H on one backend (opaque). Runs borrow it: free it
/// after every run that uses it, and before its backend.
pub struct DiffinvOperator {
    /// The backend handle it was made on; runs must be on the same one.
    pub(crate) backend: *const DiffinvBackend,
    pub(crate) on: On<Operator<CpuBackend>, Operator<CudaBackend>>,
}

/// A value per backend kind: an operator or a run's state on the CPU or on CUDA.
pub(crate) enum On<C, G> {
    Cpu(C),
    Cuda(G),
}

/// `$body` with `$r` bound to whichever backend's value `$on` holds: one
/// generic body, type-checked once per backend.
macro_rules! each {
    ($on:expr, $r:ident => $body:expr) => {
        match $on {
            $crate::run::On::Cpu($r) => $body,
            $crate::run::On::Cuda($r) => $body,
        }
    };
}
pub(crate) use each;

/// A conditional sampler the C ABI drives step by step.
pub(crate) trait Sampler {
    type Plan: 'static;
    type Run<B: Caller>;

    fn steps(plan: &Self::Plan) -> usize;

    /// A run for measurements `y` from `z` (both only read here).
    fn start<B: Caller>(
        backend: &'static B,
        plan: &'static Self::Plan,
        op: &'static Operator<B>,
        y: &Tensor<B>,
        z: &Tensor<B>,
    ) -> Result<Self::Run<B>, Error>;

    /// The next network input (the sample once the run is done).
    fn x<B: Caller>(run: &Self::Run<B>) -> &Tensor<B>;

    /// Where the next network call is; `None` once the run is done.
    fn point<B: Caller>(run: &Self::Run<B>) -> Option<ModelPoint>;
}

/// A run on one backend. The `'static` borrows point into the caller's
/// handles, which outlive the run (the contract of the `*_run_new` entries).
pub(crate) struct Stepper<B: Caller, S: Sampler> {
    pub(crate) backend: &'static B,
    pub(crate) run: S::Run<B>,
    dtype: DType,
    x_shape: Shape,
    /// The step about to run (== `steps` when done).
    pub(crate) step: usize,
    steps: usize,
}

/// A run on whichever backend its handles are on.
pub(crate) type Runs<S> = On<Stepper<CpuBackend, S>, Stepper<CudaBackend, S>>;

/// A caller's buffer: pointer and element count.
pub(crate) type Buf = (*const c_void, usize);

impl<B: Caller, S: Sampler> Stepper<B, S> {
    /// # Safety
    /// `y` and `z` are readable for their lengths (used during this call only).
    unsafe fn start(
        backend: &'static B,
        plan: &'static S::Plan,
        op: &'static Operator<B>,
        (y, z): (Buf, Buf),
        dtype: DType,
        batch: usize,
    ) -> Result<Self, Error> {
        let batched = |item: Shape| Shape::from_dims(&[&[batch][..], item.dims()].concat());
        let (x_shape, y_shape) = (batched(op.x_item())?, batched(op.y_item())?);
        // SAFETY: the caller's contract; both only read, while the tensors live.
        let (yt, zt) = unsafe {
            (
                backend.wrap(y.0.cast_mut(), y.1, dtype, y_shape, "y")?,
                backend.wrap(z.0.cast_mut(), z.1, dtype, x_shape, "z")?,
            )
        };
        Ok(Stepper {
            backend,
            run: S::start(backend, plan, op, &yt, &zt)?,
            dtype,
            x_shape,
            step: 0,
            steps: S::steps(plan),
        })
    }

    /// `Error::StepOutOfRange` once every step has run.
    pub(crate) fn check_step(&self) -> Result<(), Error> {
        if self.step >= self.steps {
            return Err(Error::StepOutOfRange {
                step: self.step,
                steps: self.steps,
            });
        }
        Ok(())
    }

    fn point(&self) -> Result<DiffinvModelPoint, Error> {
        self.check_step()?;
        let p = S::point(&self.run).ok_or(Error::StepOutOfRange {
            step: self.step,
            steps: self.steps,
        })?;
        Ok(DiffinvModelPoint {
            step: self.step,
            steps: self.steps,
            tau: p.tau,
            alpha: p.a,
            sigma: p.b,
        })
    }

    /// A read-only input of the run's shape and dtype over the caller's
    /// memory; a null pointer is `None` where `optional`.
    ///
    /// # Safety
    /// As [`Caller::wrap`]; the tensor is only read.
    pub(crate) unsafe fn input(
        &self,
        (ptr, len): Buf,
        what: &'static str,
        optional: bool,
    ) -> Result<Option<Tensor<B>>, Error> {
        if optional && ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: the caller's contract.
        let t = unsafe {
            (self
                .backend
                .wrap(ptr.cast_mut(), len, self.dtype, self.x_shape, what))?
        };
        Ok(Some(t))
    }

    /// The input the step cannot do without.
    ///
    /// # Safety
    /// As [`Stepper::input`].
    pub(crate) unsafe fn required(&self, buf: Buf, what: &'static str) -> Result<Tensor<B>, Error> {
        // SAFETY: the caller's contract.
        unsafe { self.input(buf, what, false) }?.ok_or(null(what))
    }
}

/// A backend and an operator of one kind, typed.
type Typed<'a, B> = (&'a B, &'a Operator<B>);

/// The typed backend and operator of a run: both of one backend handle (the
/// operator's tables live in its memory).
fn pair<'a>(
    backend: &'a DiffinvBackend,
    op: &'a DiffinvOperator,
) -> Result<On<Typed<'a, CpuBackend>, Typed<'a, CudaBackend>>, Error> {
    if !std::ptr::eq(op.backend, backend) {
        return Err(invalid(
            "operator",
            0.0,
            "was made on another backend handle than the run's",
        ));
    }
    match (backend, &op.on) {
        (DiffinvBackend::Cpu(b), On::Cpu(o)) => Ok(On::Cpu((b, o))),
        (DiffinvBackend::Cuda(b), On::Cuda(o)) => Ok(On::Cuda((&**b, o))),
        _ => Err(invalid(
            "operator",
            0.0,
            "belongs to a backend of another kind",
        )),
    }
}

/// Start a run of `plan` with `op` on `backend` for `batch` samples of dtype
/// code `dtype`, from the caller's `y` and `z`.
///
/// # Safety
/// Non-null pointers are valid; `backend`, `plan` and `op` outlive the run
/// (which is what the `'static` borrows stand for); `y`, `z` are readable.
pub(crate) unsafe fn new_run<S: Sampler>(
    backend: *const DiffinvBackend,
    plan: Option<&'static S::Plan>,
    op: *const DiffinvOperator,
    inputs: (Buf, Buf),
    dtype: u32,
    batch: usize,
) -> Result<Runs<S>, Error> {
    // SAFETY: the caller's contract.
    let (backend, op) = unsafe { (backend.as_ref(), op.as_ref()) };
    let backend: &'static DiffinvBackend = backend.ok_or(null("backend"))?;
    let plan = plan.ok_or(null("plan"))?;
    let op: &'static DiffinvOperator = op.ok_or(null("op"))?;
    let dtype = dtype_of(dtype)?;
    // SAFETY: the caller's contract.
    unsafe {
        Ok(match pair(backend, op)? {
            On::Cpu((b, o)) => On::Cpu(Stepper::start(b, plan, o, inputs, dtype, batch)?),
            On::Cuda((b, o)) => On::Cuda(Stepper::start(b, plan, o, inputs, dtype, batch)?),
        })
    }
}

/// The model point of a run's next step.
pub(crate) fn point<S: Sampler>(runs: &Runs<S>) -> Result<DiffinvModelPoint, Error> {
    each!(runs, r => r.point())
}

/// Copy a run's x into the caller's `len` elements at `dst`.
///
/// # Safety
/// `dst` is writable for `len` elements of the run's dtype.
pub(crate) unsafe fn read_x<S: Sampler>(
    runs: &Runs<S>,
    dst: *mut c_void,
    len: usize,
) -> Result<(), Error> {
    // SAFETY: the caller's contract.
    each!(runs, r => unsafe { read_out(r.backend, S::x(&r.run), dst, len, "dst") })
}
