//! Backends: a small core trait (memory, synchronisation, launch counts) that
//! each kernel family extends with a trait of its own ([`crate::ops`]).
//!
//! - [`cpu::CpuBackend`]: the reference. It defines what every other backend computes.
//! - `cuda::CudaBackend` (feature `cuda`): cudarc, kernels from `kernels/*.cu` compiled by NVRTC.
//! - `wgpu::WgpuBackend` (feature `wgpu`): WGSL from `shaders/*.wgsl`.
//!
//! Selection: explicitly by constructing one, or at run time by name /
//! `DIFFINV_BACKEND` through [`select`], which returns an [`AnyBackend`] and
//! why it chose; [`AnyBackend::run`] turns that choice into one call of a
//! function generic over the backend, so no operation is dispatched by hand.

mod any;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod params;
mod pool;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::fmt;

use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, HostVec};

pub use any::{select, AnyBackend, BackendFn, Selection};
pub use pool::BufferPool;

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

/// What every buffer knows about itself: its dtype and element count. The
/// checked entry points validate calls against it, once, for every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferInfo {
    pub dtype: DType,
    pub len: usize,
}

impl BufferInfo {
    /// The buffer (in the role `what`) is of `dtype` and holds at least `len` elements.
    pub fn check(&self, what: &'static str, dtype: DType, len: usize) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DTypeMismatch {
                what,
                expected: dtype,
                got: self.dtype,
            });
        }
        if self.len < len {
            return Err(Error::LengthMismatch {
                what,
                expected: len,
                got: self.len,
            });
        }
        Ok(())
    }
}

/// Elements `offset..offset + len` of a buffer of `dtype`, checked against the
/// buffer by [`Backend::read`] / [`Backend::write`]: only this module makes one,
/// so a backend's `*_checked` methods can index without checking again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedRange {
    offset: usize,
    len: usize,
    dtype: DType,
}

impl CheckedRange {
    fn new(
        info: BufferInfo,
        what: &'static str,
        dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        info.check(what, dtype, 0)?;
        match offset.checked_add(len) {
            Some(end) if end <= info.len => Ok(CheckedRange { offset, len, dtype }),
            _ => Err(Error::ViewOutOfRange {
                offset,
                len,
                tensor_len: info.len,
            }),
        }
    }

    /// First element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Element count.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Byte range inside the buffer.
    pub fn bytes(&self) -> std::ops::Range<usize> {
        let size = self.dtype.size();
        self.offset * size..(self.offset + self.len) * size
    }
}

/// The core of a compute backend: memory, synchronisation and counters. Kernel
/// families add their operations as traits on top ([`crate::ops::Ops`]).
pub trait Backend: Sized + Send + Sync {
    /// Device memory of one tensor.
    type Buffer: Send + Sync + 'static;

    fn kind(&self) -> BackendKind;

    /// Human-readable device description (adapter or GPU name).
    fn device_name(&self) -> String;

    /// Whether buffers of this dtype can be allocated (a family may compute on
    /// fewer dtypes; its entry point says so).
    fn supports(&self, dtype: DType) -> bool;

    /// Allocate `len` zeroed elements of `dtype`.
    fn alloc(&self, len: usize, dtype: DType) -> Result<Self::Buffer>;

    /// Dtype and element count of a buffer this backend allocated.
    fn buffer_info(buf: &Self::Buffer) -> BufferInfo;

    /// Set every element of a buffer to zero (ordered after earlier work).
    fn zero(&self, buf: &mut Self::Buffer) -> Result<()>;

    /// Copy `src` into `dst`, which [`Backend::copy`] checked are of one dtype
    /// and length; on the device, ordered after earlier work.
    fn copy_checked(&self, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<()>;

    /// Copy every element of `src` into `dst` (same dtype and length).
    fn copy(&self, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<()> {
        let (s, d) = (Self::buffer_info(src), Self::buffer_info(dst));
        d.check("copy destination", s.dtype, s.len)?;
        if d.len != s.len {
            return Err(Error::LengthMismatch {
                what: "copy destination",
                expected: s.len,
                got: d.len,
            });
        }
        self.copy_checked(src, dst)
    }

    /// Wait until all submitted work has finished.
    fn synchronize(&self) -> Result<()>;

    /// Kernel launches (dispatches) issued so far; tests and benches read it
    /// to check "one launch per fused step".
    fn launch_count(&self) -> u64;

    /// Times the host has waited for the device so far (reads back to the
    /// host, [`Backend::synchronize`]); tests and benches read it to check
    /// that a loop runs with no host round trip.
    fn host_sync_count(&self) -> u64;

    /// The pool temporaries ([`crate::tensor::Temp`]) come from.
    fn pool(&self) -> &BufferPool<Self::Buffer>;

    /// Write `data` (converted to the buffer's dtype) to the range the checked
    /// entry [`Backend::write`] validated.
    fn write_checked(
        &self,
        buf: &mut Self::Buffer,
        range: CheckedRange,
        data: HostSlice<'_>,
    ) -> Result<()>;

    /// Read the range [`Backend::read`] validated, in the storage dtype (waits
    /// for pending work).
    fn read_checked(&self, buf: &Self::Buffer, range: CheckedRange) -> Result<HostVec>;

    /// Overwrite elements `offset..offset + data.len()` of a buffer of `dtype`.
    fn write(
        &self,
        buf: &mut Self::Buffer,
        dtype: DType,
        offset: usize,
        data: HostSlice<'_>,
    ) -> Result<()> {
        let range = CheckedRange::new(Self::buffer_info(buf), "write", dtype, offset, data.len())?;
        self.write_checked(buf, range, data)
    }

    /// Read elements `offset..offset + len` of a buffer of `dtype`.
    fn read(&self, buf: &Self::Buffer, dtype: DType, offset: usize, len: usize) -> Result<HostVec> {
        let range = CheckedRange::new(Self::buffer_info(buf), "read", dtype, offset, len)?;
        self.read_checked(buf, range)
    }
}

/// Check that a backend can store `dtype`.
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
