//! Activation buffers of the device forward: buffers of the network's storage
//! type (f32 or f16) by exact length,
//! taken and given back as the forward walks the network, so a second
//! forward of the same shape allocates nothing; the high-water mark of the
//! bytes out on loan is the forward's peak activation memory.

use crate::backend::{Backend, BufferPool};
use crate::error::Result;
use crate::tensor::DType;

pub struct DeviceArena<B: Backend> {
    dtype: DType,
    pool: BufferPool<B::Buffer>,
    live_bytes: usize,
    peak_bytes: usize,
}

impl<B: Backend> DeviceArena<B> {
    /// An empty arena lending buffers of `dtype`.
    pub fn new(dtype: DType) -> Self {
        DeviceArena {
            dtype,
            pool: BufferPool::default(),
            live_bytes: 0,
            peak_bytes: 0,
        }
    }

    /// The storage type of the buffers [`DeviceArena::take`] lends.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Start a forward: nothing is on loan. (A forward that failed dropped
    /// the buffers it held instead of giving them back.)
    pub fn begin(&mut self) {
        self.live_bytes = 0;
    }

    /// A buffer of `len` values of the arena's type; its contents are
    /// whatever the last user left (every op of the forward writes its whole
    /// output).
    pub fn take(&mut self, backend: &B, len: usize) -> Result<B::Buffer> {
        self.take_as(backend, len, self.dtype)
    }

    /// [`DeviceArena::take`] in another type (the f32 timesteps).
    pub fn take_as(&mut self, backend: &B, len: usize, dtype: DType) -> Result<B::Buffer> {
        let buf = self.pool.take(len, dtype, || backend.alloc(len, dtype))?;
        self.live_bytes += dtype.size() * len;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        Ok(buf)
    }

    /// Return a buffer the arena lent.
    pub fn give(&mut self, buf: B::Buffer) {
        let info = B::buffer_info(&buf);
        self.live_bytes = self.live_bytes.saturating_sub(info.dtype.size() * info.len);
        self.pool.give_back(info.len, info.dtype, buf);
    }

    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    pub fn allocations(&self) -> u64 {
        self.pool.allocations()
    }
}
