//! A pool of device buffers for temporaries, shared by every backend.
//!
//! Buffers are keyed by exact (element count, dtype): the families that take
//! temporaries ask for the same sizes every step, so exact keys reuse every
//! buffer after the first iteration without the waste of size classes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::Result;
use crate::tensor::DType;

/// Free buffers by (element count, dtype), and counters tests and benches read.
pub struct BufferPool<Buf> {
    free: Mutex<HashMap<(usize, DType), Vec<Buf>>>,
    allocations: AtomicU64,
    reuses: AtomicU64,
}

impl<Buf> Default for BufferPool<Buf> {
    fn default() -> Self {
        BufferPool {
            free: Mutex::new(HashMap::new()),
            allocations: AtomicU64::new(0),
            reuses: AtomicU64::new(0),
        }
    }
}

impl<Buf> BufferPool<Buf> {
    /// A free buffer of `len` elements of `dtype`, or a new one from `alloc`.
    pub fn take(
        &self,
        len: usize,
        dtype: DType,
        alloc: impl FnOnce() -> Result<Buf>,
    ) -> Result<Buf> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&(len, dtype))
            .and_then(Vec::pop);
        match reused {
            Some(buf) => {
                self.reuses.fetch_add(1, Ordering::Relaxed);
                Ok(buf)
            }
            None => {
                let buf = alloc()?;
                self.allocations.fetch_add(1, Ordering::Relaxed);
                Ok(buf)
            }
        }
    }

    /// Return a buffer taken with [`BufferPool::take`].
    pub fn give_back(&self, len: usize, dtype: DType, buf: Buf) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((len, dtype))
            .or_default()
            .push(buf);
    }

    /// Device allocations the pool has made.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    /// Loans served from a returned buffer.
    pub fn reuses(&self) -> u64 {
        self.reuses.load(Ordering::Relaxed)
    }

    /// Free every idle buffer (loans still out are unaffected).
    pub fn clear(&self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
