//! A backend chosen at run time, usable wherever a [`Backend`] is.
//!
//! Each call dispatches to the wrapped backend; a buffer allocated by another
//! kind of backend is rejected with [`Error::Device`] rather than misread.

use super::{cpu, Backend, BackendKind};
use crate::error::{Error, Result};
use crate::solver::{SolverStep, StepLaunch};
use crate::tensor::{DType, HostSlice, HostVec};

/// One of the compiled-in backends.
// One value per process: boxing the larger variants would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum AnyBackend {
    Cpu(cpu::CpuBackend),
    #[cfg(feature = "cuda")]
    Cuda(super::cuda::CudaBackend),
    #[cfg(feature = "wgpu")]
    Wgpu(super::wgpu::WgpuBackend),
}

/// A buffer of whichever backend allocated it.
pub enum AnyBuffer {
    Cpu(<cpu::CpuBackend as Backend>::Buffer),
    #[cfg(feature = "cuda")]
    Cuda(<super::cuda::CudaBackend as Backend>::Buffer),
    #[cfg(feature = "wgpu")]
    Wgpu(<super::wgpu::WgpuBackend as Backend>::Buffer),
}

/// `match` over the backend only.
macro_rules! on_backend {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            AnyBackend::Cpu($b) => $e,
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda($b) => $e,
            #[cfg(feature = "wgpu")]
            AnyBackend::Wgpu($b) => $e,
        }
    };
}

fn foreign(kind: BackendKind) -> Error {
    Error::Device {
        backend: kind.name(),
        message: "buffer was allocated by a different backend".into(),
    }
}

impl Backend for AnyBackend {
    type Buffer = AnyBuffer;

    fn kind(&self) -> BackendKind {
        on_backend!(self, b => b.kind())
    }

    fn device_name(&self) -> String {
        on_backend!(self, b => b.device_name())
    }

    fn supports(&self, dtype: DType) -> bool {
        on_backend!(self, b => b.supports(dtype))
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<AnyBuffer> {
        Ok(match self {
            AnyBackend::Cpu(b) => AnyBuffer::Cpu(b.alloc(len, dtype)?),
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda(b) => AnyBuffer::Cuda(b.alloc(len, dtype)?),
            #[cfg(feature = "wgpu")]
            AnyBackend::Wgpu(b) => AnyBuffer::Wgpu(b.alloc(len, dtype)?),
        })
    }

    fn write(&self, buf: &mut AnyBuffer, dtype: DType, data: HostSlice<'_>) -> Result<()> {
        match (self, buf) {
            (AnyBackend::Cpu(b), AnyBuffer::Cpu(m)) => b.write(m, dtype, data),
            #[cfg(feature = "cuda")]
            (AnyBackend::Cuda(b), AnyBuffer::Cuda(m)) => b.write(m, dtype, data),
            #[cfg(feature = "wgpu")]
            (AnyBackend::Wgpu(b), AnyBuffer::Wgpu(m)) => b.write(m, dtype, data),
            #[allow(unreachable_patterns)]
            _ => Err(foreign(self.kind())),
        }
    }

    fn read(&self, buf: &AnyBuffer, dtype: DType, len: usize) -> Result<HostVec> {
        match (self, buf) {
            (AnyBackend::Cpu(b), AnyBuffer::Cpu(m)) => b.read(m, dtype, len),
            #[cfg(feature = "cuda")]
            (AnyBackend::Cuda(b), AnyBuffer::Cuda(m)) => b.read(m, dtype, len),
            #[cfg(feature = "wgpu")]
            (AnyBackend::Wgpu(b), AnyBuffer::Wgpu(m)) => b.read(m, dtype, len),
            #[allow(unreachable_patterns)]
            _ => Err(foreign(self.kind())),
        }
    }

    fn synchronize(&self) -> Result<()> {
        on_backend!(self, b => b.synchronize())
    }

    fn launch_count(&self) -> u64 {
        on_backend!(self, b => b.launch_count())
    }

    fn solver_step_raw(
        &self,
        step: &SolverStep,
        launch: StepLaunch,
        dtype: DType,
        n: usize,
        stride: usize,
        x: &mut AnyBuffer,
        model_out: &AnyBuffer,
        state: &mut AnyBuffer,
    ) -> Result<()> {
        match (self, x, model_out, state) {
            (AnyBackend::Cpu(b), AnyBuffer::Cpu(x), AnyBuffer::Cpu(m), AnyBuffer::Cpu(s)) => {
                b.solver_step_raw(step, launch, dtype, n, stride, x, m, s)
            }
            #[cfg(feature = "cuda")]
            (AnyBackend::Cuda(b), AnyBuffer::Cuda(x), AnyBuffer::Cuda(m), AnyBuffer::Cuda(s)) => {
                b.solver_step_raw(step, launch, dtype, n, stride, x, m, s)
            }
            #[cfg(feature = "wgpu")]
            (AnyBackend::Wgpu(b), AnyBuffer::Wgpu(x), AnyBuffer::Wgpu(m), AnyBuffer::Wgpu(s)) => {
                b.solver_step_raw(step, launch, dtype, n, stride, x, m, s)
            }
            #[allow(unreachable_patterns)]
            _ => Err(foreign(self.kind())),
        }
    }
}
