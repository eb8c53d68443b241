//! Storage types of the CPU forward and the activation pool it runs from.
//!
//! A forward takes the same sequence of buffer sizes every time it runs on the
//! same (shape, dtype), so a pool keyed by exact length hands every buffer of
//! the second and later forwards back from the first: a sampling loop
//! allocates nothing after its first call. The pool counts allocations and the
//! peak of bytes in use, which is the activation memory a forward needs.

use std::collections::HashMap;

use half::f16;

/// A storage type of weights and activations: math happens in f32.
pub trait Store: Copy + Default + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Store for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Store for f16 {
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Free buffers of one element type by exact length.
struct Pool<T> {
    free: HashMap<usize, Vec<Vec<T>>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            free: HashMap::new(),
        }
    }
}

impl<T: Copy + Default> Pool<T> {
    /// A free buffer of `len` elements, or `None` if a new one is needed.
    fn take(&mut self, len: usize) -> Option<Vec<T>> {
        self.free.get_mut(&len).and_then(Vec::pop)
    }

    fn give(&mut self, v: Vec<T>) {
        self.free.entry(v.len()).or_default().push(v);
    }
}

/// The memory of a forward: activations in the storage type `S` and f32
/// scratch (time embedding, attention scores), with counters over both.
pub struct Arena<S> {
    act: Pool<S>,
    scratch: Pool<f32>,
    in_use: usize,
    peak: usize,
    allocations: u64,
}

impl<S> Default for Arena<S> {
    fn default() -> Self {
        Arena {
            act: Pool::default(),
            scratch: Pool::default(),
            in_use: 0,
            peak: 0,
            allocations: 0,
        }
    }
}

impl<S: Store> Arena<S> {
    fn taken<T: Copy + Default>(&mut self, len: usize, reused: Option<Vec<T>>) -> Vec<T> {
        self.in_use += len * std::mem::size_of::<T>();
        self.peak = self.peak.max(self.in_use);
        reused.unwrap_or_else(|| {
            self.allocations += 1;
            vec![T::default(); len]
        })
    }

    /// An activation buffer of `len` elements with unspecified contents.
    pub fn take(&mut self, len: usize) -> Vec<S> {
        let reused = self.act.take(len);
        self.taken(len, reused)
    }

    /// Return a buffer from [`Arena::take`].
    pub fn give(&mut self, v: Vec<S>) {
        self.in_use -= v.len() * std::mem::size_of::<S>();
        self.act.give(v);
    }

    /// An f32 scratch buffer of `len` elements with unspecified contents.
    pub fn take_f32(&mut self, len: usize) -> Vec<f32> {
        let reused = self.scratch.take(len);
        self.taken(len, reused)
    }

    /// Return a buffer from [`Arena::take_f32`].
    pub fn give_f32(&mut self, v: Vec<f32>) {
        self.in_use -= v.len() * 4;
        self.scratch.give(v);
    }

    /// Bytes of the most buffers ever taken at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// Buffers allocated so far (constant once every shape has run once).
    pub fn allocations(&self) -> u64 {
        self.allocations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_sequence_of_takes_allocates_once() {
        let mut arena = Arena::<f16>::default();
        for _ in 0..3 {
            let a = arena.take(10);
            let b = arena.take_f32(20);
            arena.give(a);
            let c = arena.take(10);
            arena.give_f32(b);
            arena.give(c);
        }
        assert_eq!(arena.allocations(), 2);
        assert_eq!(arena.peak_bytes(), 10 * 2 + 20 * 4);
    }
}
