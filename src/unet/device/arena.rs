//! Activation buffers of the device forward: f32 buffers by exact length,
//! taken and given back as the forward walks the network, so a second
//! forward of the same shape allocates nothing; the high-water mark of the
//! bytes out on loan is the forward's peak activation memory.

use crate::backend::{Backend, BufferPool};
use crate::error::Result;
use crate::tensor::DType;

pub struct DeviceArena<B: Backend> {
    pool: BufferPool<B::Buffer>,
    live_bytes: usize,
    peak_bytes: usize,
}

impl<B: Backend> Default for DeviceArena<B> {
    fn default() -> Self {
        DeviceArena {
            pool: BufferPool::default(),
            live_bytes: 0,
            peak_bytes: 0,
        }
    }
}

impl<B: Backend> DeviceArena<B> {
    /// Start a forward: nothing is on loan. (A forward that failed dropped
    /// the buffers it held instead of giving them back.)
    pub fn begin(&mut self) {
        self.live_bytes = 0;
    }

    /// A buffer of `len` f32 values; its contents are whatever the last
    /// user left (every op of the forward writes its whole output).
    pub fn take(&mut self, backend: &B, len: usize) -> Result<B::Buffer> {
        let buf = self
            .pool
            .take(len, DType::F32, || backend.alloc(len, DType::F32))?;
        self.live_bytes += 4 * len;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        Ok(buf)
    }

    /// Return a buffer [`DeviceArena::take`] lent.
    pub fn give(&mut self, buf: B::Buffer) {
        let len = B::buffer_info(&buf).len;
        self.live_bytes = self.live_bytes.saturating_sub(4 * len);
        self.pool.give_back(len, DType::F32, buf);
    }

    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    pub fn allocations(&self) -> u64 {
        self.pool.allocations()
    }
}
