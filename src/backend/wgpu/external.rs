//! wgpu tensors over buffers the caller created (`docs/embedding.md`).
//!
//! A `wgpu::Buffer` is reference-counted, so wrapping one is a clone of the
//! handle: the caller keeps using its buffer, nothing is copied, and the
//! memory lives as long as either side holds it — no lifetime contract.

use super::{byte_size, WgpuBackend, WgpuBuffer};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Usages every tensor buffer needs: bound as storage by the kernels, the
/// source of reads (copied to a staging buffer) and the destination of
/// uploads, clears and copies.
pub const REQUIRED_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl WgpuBackend {
    /// A tensor buffer over elements `0..len` of `dtype` in the caller's
    /// `buffer`, which must belong to this backend's device (see
    /// [`WgpuBackend::from_device`]; a buffer of another device fails at the
    /// first submission with [`Error::Device`]). Checked here: the usages
    /// ([`REQUIRED_USAGES`], else [`Error::MissingBufferUsage`]), the size
    /// (`len` elements rounded up to 4 bytes, else [`Error::BufferTooSmall`];
    /// an odd-length f16 tensor may write the padding half after its last
    /// element, as kernels store f16 in pairs) and the binding limit
    /// ([`Error::TooLarge`]) and the dtype ([`Error::UnsupportedDType`]).
    pub fn wrap_buffer(
        &self,
        buffer: &wgpu::Buffer,
        len: usize,
        dtype: DType,
    ) -> Result<WgpuBuffer> {
        if !self.supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: "wgpu",
                dtype,
            });
        }
        let missing = REQUIRED_USAGES.difference(buffer.usage());
        if !missing.is_empty() {
            return Err(Error::MissingBufferUsage {
                what: "tensor buffer",
                missing: format!("{missing:?}"),
            });
        }
        let needed = len
            .checked_mul(dtype.size())
            .map(|_| byte_size(len, dtype))
            .ok_or(Error::TooLarge {
                backend: "wgpu",
                bytes: u64::MAX,
                limit: self.max_buffer_bytes(),
            })?;
        if buffer.size() < needed {
            return Err(Error::BufferTooSmall {
                what: "wgpu buffer",
                expected: needed,
                got: buffer.size(),
            });
        }
        // Kernels bind the whole buffer.
        let max = self.max_buffer_bytes();
        if buffer.size() > max {
            return Err(Error::TooLarge {
                backend: "wgpu",
                bytes: buffer.size(),
                limit: max,
            });
        }
        Ok(WgpuBuffer {
            buffer: buffer.clone(),
            len,
            dtype,
        })
    }
}
