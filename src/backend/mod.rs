//! Backends: one trait, three implementations with identical semantics.
//!
//! - [`cpu::CpuBackend`]: the reference. It defines what every other backend computes.
//! - `cuda::CudaBackend` (feature `cuda`): cudarc, kernels from `kernels/*.cu` compiled by NVRTC.
//! - `wgpu::WgpuBackend` (feature `wgpu`): WGSL from `shaders/*.wgsl`.
//!
//! Selection: explicitly by constructing one, or by name / `DIFFINV_BACKEND`
//! through [`select`], which never fails silently: it returns why it chose.

mod any;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod params;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::fmt;

use crate::error::{Error, Result};
use crate::solver::{SolverStep, StepLaunch};
use crate::tensor::{DType, HostSlice, HostVec, Tensor};

pub use any::{AnyBackend, AnyBuffer};

/// Which implementation a backend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Cpu,
    Cuda,
    Wgpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compute backend. Kernel methods take already-validated arguments: the
/// public entry points ([`solver_step`]) check every length and dtype first.
pub trait Backend: Sized {
    /// Device memory of one tensor.
    type Buffer;

    fn kind(&self) -> BackendKind;

    /// Human-readable device description (adapter or GPU name).
    fn device_name(&self) -> String;

    /// Whether tensors of this dtype can be allocated and computed on.
    fn supports(&self, dtype: DType) -> bool;

    /// Allocate `len` zeroed elements of `dtype`.
    fn alloc(&self, len: usize, dtype: DType) -> Result<Self::Buffer>;

    /// Overwrite a buffer of `dtype` with host data of the same element count.
    fn write(&self, buf: &mut Self::Buffer, dtype: DType, data: HostSlice<'_>) -> Result<()>;

    /// Read `len` elements back in the storage dtype (waits for pending work).
    fn read(&self, buf: &Self::Buffer, dtype: DType, len: usize) -> Result<HostVec>;

    /// Wait until all submitted work has finished.
    fn synchronize(&self) -> Result<()>;

    /// Kernel launches (dispatches) issued so far; tests and benches read it
    /// to check "one launch per fused step".
    fn launch_count(&self) -> u64;

    /// The fused solver update on buffers: `x` and `model_out` hold at least
    /// `n` elements, `state` at least `slots·stride` elements, all of `dtype`
    /// (wrong buffers are typed errors). Unlike [`solver_step`] it does not
    /// validate the step: a slot named twice belongs to its first role in the
    /// order d, xc, h1, h2, and a corrector without its slot is off.
    #[allow(clippy::too_many_arguments)]
    fn solver_step_raw(
        &self,
        step: &SolverStep,
        launch: StepLaunch,
        dtype: DType,
        n: usize,
        stride: usize,
        x: &mut Self::Buffer,
        model_out: &Self::Buffer,
        state: &mut Self::Buffer,
    ) -> Result<()>;
}

/// Check that a tensor's dtype is supported by the backend.
pub(crate) fn check_supported<B: Backend>(backend: &B, dtype: DType) -> Result<()> {
    if backend.supports(dtype) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            backend: backend.kind().name(),
            dtype,
        })
    }
}

/// A buffer as [`check_raw_step`] sees it: its role, dtype and element count.
pub(crate) struct RawBuffer {
    pub what: &'static str,
    pub dtype: DType,
    pub len: usize,
}

impl RawBuffer {
    /// The buffer is of `dtype` and holds at least `len` elements.
    pub fn check(&self, dtype: DType, len: usize) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DTypeMismatch {
                what: self.what,
                expected: dtype,
                got: self.dtype,
            });
        }
        if self.len < len {
            return Err(Error::LengthMismatch {
                what: self.what,
                expected: len,
                got: self.len,
            });
        }
        Ok(())
    }
}

/// Checks every backend's `solver_step_raw` makes on the buffers it is given
/// before touching them: the method is safe to call directly, so a wrong
/// length, dtype or stride must be a typed error, never a panic or an access
/// outside a buffer. Returns the state elements the step may touch.
pub(crate) fn check_raw_step(
    step: &SolverStep,
    dtype: DType,
    n: usize,
    stride: usize,
    [x, model_out, state]: [RawBuffer; 3],
) -> Result<usize> {
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
    for (buf, len) in [(x, n), (model_out, n), (state, state_len)] {
        buf.check(dtype, len)?;
    }
    Ok(state_len)
}

/// Run one fused solver update: `x ← x'` and the state slots it names.
///
/// Validates the step ([`SolverStep::validate`]), shapes, dtypes and the state
/// length before any launch.
pub fn solver_step<B: Backend>(
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
    let stride = crate::solver::slot_stride(n);
    let needed = step.slots_used() as usize * stride;
    if state.len() < needed {
        return Err(Error::LengthMismatch {
            what: "solver state",
            expected: needed,
            got: state.len(),
        });
    }
    backend.solver_step_raw(
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

/// What [`select`] chose and why.
pub struct Selection {
    pub backend: AnyBackend,
    /// One line per candidate considered, ending with the chosen one.
    pub reason: String,
}

/// Choose a backend by name: `cpu`, `wgpu`, `cuda` or `auto`. `None` reads
/// `DIFFINV_BACKEND` and defaults to `auto`.
///
/// `auto` picks CUDA if a device opens, else a wgpu adapter that is not a CPU
/// (software) adapter, else the CPU reference; the returned reason says what
/// was tried and why each candidate was skipped.
pub fn select(name: Option<&str>) -> Result<Selection> {
    let env = std::env::var("DIFFINV_BACKEND").ok();
    let name = name
        .map(str::to_owned)
        .or(env)
        .unwrap_or_else(|| "auto".into());
    match name.trim().to_ascii_lowercase().as_str() {
        "cpu" => Ok(Selection {
            backend: AnyBackend::Cpu(cpu::CpuBackend::new()),
            reason: "cpu: requested".into(),
        }),
        "cuda" => open_cuda().map(|b| Selection {
            backend: b,
            reason: "cuda: requested".into(),
        }),
        "wgpu" => open_wgpu(true).map(|b| Selection {
            backend: b,
            reason: "wgpu: requested".into(),
        }),
        "auto" => Ok(select_auto()),
        _ => Err(Error::UnknownBackend { name }),
    }
}

fn select_auto() -> Selection {
    let mut log = Vec::new();
    match open_cuda() {
        Ok(b) => {
            log.push("cuda: device opened".to_string());
            return Selection {
                backend: b,
                reason: log.join("; "),
            };
        }
        Err(e) => log.push(format!("cuda skipped ({e})")),
    }
    match open_wgpu(false) {
        Ok(b) => {
            log.push("wgpu: hardware adapter found".to_string());
            return Selection {
                backend: b,
                reason: log.join("; "),
            };
        }
        Err(e) => log.push(format!("wgpu skipped ({e})")),
    }
    log.push("cpu: reference backend".to_string());
    Selection {
        backend: AnyBackend::Cpu(cpu::CpuBackend::new()),
        reason: log.join("; "),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<AnyBackend> {
    cuda::CudaBackend::new(0).map(AnyBackend::Cuda)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<AnyBackend> {
    Err(Error::BackendUnavailable {
        backend: "cuda",
        reason: "built without the `cuda` feature".into(),
    })
}

#[cfg(feature = "wgpu")]
fn open_wgpu(allow_software: bool) -> Result<AnyBackend> {
    let b = wgpu::WgpuBackend::new()?;
    if !allow_software && b.is_software() {
        return Err(Error::BackendUnavailable {
            backend: "wgpu",
            reason: format!(
                "only a CPU (software) adapter is present: {}",
                b.device_name()
            ),
        });
    }
    Ok(AnyBackend::Wgpu(b))
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(_allow_software: bool) -> Result<AnyBackend> {
    Err(Error::BackendUnavailable {
        backend: "wgpu",
        reason: "built without the `wgpu` feature".into(),
    })
}
