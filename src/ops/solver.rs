//! The solver family: the fused multistep update (`docs/math.md` §2), one
//! launch per sampler step.

use crate::backend::{check_supported, Backend};
use crate::error::{Error, Result};
use crate::solver::{slot_stride, SolverStep, StepLaunch};
use crate::tensor::{DType, Tensor};

/// Backends that run the fused solver update.
pub trait SolverOps: Backend {
    /// Whether the fused update computes in `dtype` here.
    fn solver_supports(&self, dtype: DType) -> bool;

    /// Launch one update on buffers [`solver_step_raw`] has checked.
    fn solver_step_checked(&self, call: SolverStepCall<'_, Self>) -> Result<()>;
}

/// One validated update: `x` and `model_out` hold at least `n` elements,
/// `state` at least `state_len = slots_used·stride` elements, all of `dtype`,
/// and `stride` is a positive multiple of 64 that is at least `n`. Only
/// [`solver_step_raw`] makes one.
pub struct SolverStepCall<'a, B: Backend> {
    pub(crate) step: &'a SolverStep,
    pub(crate) launch: StepLaunch,
    pub(crate) dtype: DType,
    pub(crate) n: usize,
    pub(crate) stride: usize,
    pub(crate) state_len: usize,
    pub(crate) x: &'a mut B::Buffer,
    pub(crate) model_out: &'a B::Buffer,
    pub(crate) state: &'a mut B::Buffer,
}

/// The fused solver update on buffers: `x` and `model_out` hold at least `n`
/// elements, `state` at least `slots·stride` elements, all of `dtype` (wrong
/// buffers, dtypes or strides are typed errors, and nothing launches).
///
/// Unlike [`solver_step`] it does not validate the step: a slot named twice
/// belongs to its first role in the order d, xc, h1, h2, and a corrector
/// without its slot is off — on every backend alike.
#[allow(clippy::too_many_arguments)]
pub fn solver_step_raw<B: SolverOps>(
    backend: &B,
    step: &SolverStep,
    launch: StepLaunch,
    dtype: DType,
    n: usize,
    stride: usize,
    x: &mut B::Buffer,
    model_out: &B::Buffer,
    state: &mut B::Buffer,
) -> Result<()> {
    if !backend.solver_supports(dtype) {
        return Err(Error::UnsupportedDType {
            backend: backend.kind().name(),
            dtype,
        });
    }
    // Multiples of 64 keep f16 pairs (and vector loads) inside one slot.
    if stride == 0 || stride < n || !stride.is_multiple_of(64) {
        return Err(Error::InvalidParameter {
            name: "slot stride",
            value: stride as f64,
            reason: "must be a positive multiple of 64 elements and at least n",
        });
    }
    let state_len =
        (step.slots_used() as usize)
            .checked_mul(stride)
            .ok_or(Error::InvalidParameter {
                name: "slot stride",
                value: stride as f64,
                reason: "slots × stride overflows",
            })?;
    B::buffer_info(x).check("x", dtype, n)?;
    B::buffer_info(model_out).check("model output", dtype, n)?;
    B::buffer_info(state).check("solver state", dtype, state_len)?;
    backend.solver_step_checked(SolverStepCall {
        step,
        launch,
        dtype,
        n,
        stride,
        state_len,
        x,
        model_out,
        state,
    })
}

/// Run one fused solver update: `x ← x'` and the state slots it names.
///
/// Validates the step ([`SolverStep::validate`]), shapes, dtypes and the state
/// length before any launch.
pub fn solver_step<B: SolverOps>(
    backend: &B,
    step: &SolverStep,
    launch: StepLaunch,
    x: &mut Tensor<B>,
    model_out: &Tensor<B>,
    state: &mut Tensor<B>,
) -> Result<()> {
    step.validate()?;
    let dtype = x.dtype();
    check_supported(backend, dtype)?;
    if model_out.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            what: "model output",
            expected: x.shape(),
            got: model_out.shape(),
        });
    }
    for (what, t) in [
        ("model output", model_out.dtype()),
        ("state", state.dtype()),
    ] {
        if t != dtype {
            return Err(Error::DTypeMismatch {
                what,
                expected: dtype,
                got: t,
            });
        }
    }
    let n = x.len();
    let stride = slot_stride(n);
    let needed = step.slots_used() as usize * stride;
    if state.len() < needed {
        return Err(Error::LengthMismatch {
            what: "solver state",
            expected: needed,
            got: state.len(),
        });
    }
    solver_step_raw(
        backend,
        step,
        launch,
        dtype,
        n,
        stride,
        &mut x.buf,
        &model_out.buf,
        &mut state.buf,
    )
}
