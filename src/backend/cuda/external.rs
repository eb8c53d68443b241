//! CUDA tensors over device memory the caller owns, and the backend on the
//! caller's stream (`docs/embedding.md`).
//!
//! The buffer type stays [`CudaBuffer`]; only its memory changes hands: each
//! [`CudaDevice`] makes a `Mem` over an address it does not free
//! ([`CudaDevice::wrap_external`]), so launches, copies and the checked
//! entry points are the same code as for the crate's own allocations.

use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::{unsupported, CudaBackend, CudaBuffer, CudaDevice, DriverDevice, MAX_GRID_BLOCKS};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::DType;

impl CudaBackend<DriverDevice> {
    /// The backend on the caller's stream (and its context): launches and
    /// copies are enqueued there, in order with the caller's own work on it.
    pub fn on_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let device = DriverDevice::on_stream(stream)?;
        // As in `CudaBackend::new`: 16 blocks per SM fill the device.
        let max_blocks = device
            .multiprocessors()
            .saturating_mul(16)
            .clamp(1, MAX_GRID_BLOCKS);
        let mut b = Self::with_device(device);
        b.max_blocks = max_blocks;
        Ok(b)
    }
}

/// Alignment an external address must have: the dtype's own, and at least 4
/// bytes because f16 kernels load and store element pairs as `__half2`.
pub fn required_alignment(dtype: DType) -> u64 {
    dtype.size().max(4) as u64
}

impl<D: CudaDevice> CudaBackend<D> {
    /// A tensor buffer over `len` elements of `dtype` at device address `ptr`,
    /// which the caller owns: kernels read and write it in place, and
    /// dropping the buffer does not free it.
    ///
    /// Checked here (typed errors, nothing wrapped): a null `ptr`
    /// ([`Error::NullPointer`]), a dtype the backend does not hold
    /// ([`Error::UnsupportedDType`]), an address not aligned to
    /// [`required_alignment`] ([`Error::Misaligned`]), a byte size that
    /// overflows ([`Error::TooLarge`]).
    ///
    /// # Safety
    /// The contract the crate cannot check:
    /// - **extent**: `ptr .. ptr + len · dtype.size()` is device memory of this
    ///   backend's context (for [`DriverDevice::on_stream`], the stream's);
    /// - **lifetime**: the memory stays allocated while the buffer (or a tensor
    ///   over it) exists;
    /// - **stream ordering**: this backend enqueues on its own stream only.
    ///   Work of the caller that writes the memory on another stream must be
    ///   complete, or ordered before ours (an event the backend's stream waits
    ///   on), before a call that uses the buffer; the caller's later work on
    ///   another stream must wait for ours ([`Backend::synchronize`], or an
    ///   event recorded on our stream). On the backend's own stream, order is
    ///   the stream's.
    pub unsafe fn wrap_device_ptr(
        &self,
        ptr: u64,
        len: usize,
        dtype: DType,
    ) -> Result<CudaBuffer<D::Mem>> {
        if ptr == 0 {
            return Err(Error::NullPointer {
                what: "cuda device memory",
            });
        }
        if !self.supports(dtype) {
            return Err(unsupported(dtype));
        }
        let align = required_alignment(dtype);
        if !ptr.is_multiple_of(align) {
            return Err(Error::Misaligned {
                what: "cuda device memory",
                address: ptr,
                align,
            });
        }
        let bytes = len.checked_mul(dtype.size()).ok_or(Error::TooLarge {
            backend: "cuda",
            bytes: u64::MAX,
            limit: usize::MAX as u64,
        })?;
        // SAFETY: non-null (checked); extent and lifetime are the caller's contract.
        let mem = unsafe { self.device.wrap_external(ptr, bytes)? };
        Ok(CudaBuffer { mem, len, dtype })
    }
}
