//! CPU tensors over memory the caller owns (`docs/embedding.md`).
//!
//! An external buffer is one more [`CpuBuffer`] variant, so every kernel
//! family runs on it through the same `Element::slice` accessors as on the
//! crate's own vectors. What a plain variant cannot express is the borrow:
//! [`Tensor`] has no lifetime, so a safe constructor from `&'env mut [T]`
//! could let the tensor (or its buffer, by `mem::swap`) outlive the slice.
//! [`scope`] closes that hole the way `std::thread::scope` does: the tensors
//! live in the scope, the closure only gets `&mut` to them, and when it ends
//! the scope checks that each slot still holds one of its own external
//! buffers. A buffer that escaped (swapped out for another one) would dangle,
//! so that check aborts the process rather than return. Assigning a new
//! tensor to a slot looks the same to the check (the borrowed buffer is gone
//! from it) and aborts too: the check cannot tell a drop from an escape.
//!
//! Foreign-language bindings, which cannot use a closure scope, take the
//! unsafe [`CpuBuffer::from_raw_parts`] with the contract written down.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ptr::NonNull;

use half::f16;

use super::{CpuBackend, CpuBuffer, Element};
use crate::error::{Error, Result};
use crate::tensor::{DType, Shape, Tensor};

/// Host memory the caller owns: `len` elements of `dtype` at `ptr`.
#[derive(Debug)]
pub struct ExternalHost {
    ptr: NonNull<u8>,
    len: usize,
    dtype: DType,
}

// SAFETY: an ExternalHost stands for an exclusive borrow of `len` elements of a
// real float type (what `&mut [T]` is for T: Send + Sync); the constructors'
// contracts give it that exclusivity for its whole life.
unsafe impl Send for ExternalHost {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for ExternalHost {}

impl ExternalHost {
    pub(super) fn dtype(&self) -> DType {
        self.dtype
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The elements, if they are of type `T`.
    pub(super) fn slice<T: Element>(&self) -> Option<&[T]> {
        // SAFETY: the memory holds `len` initialised, aligned elements of `dtype`
        // (the constructors' contract) and `dtype` is T's.
        (self.dtype == T::DTYPE)
            .then(|| unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<T>(), self.len) })
    }

    pub(super) fn slice_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        // SAFETY: as in `slice`, and `&mut self` is the only access (exclusive borrow).
        (self.dtype == T::DTYPE).then(|| unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<T>(), self.len)
        })
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` elements of `dtype` are `len · size` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len * self.dtype.size()) }
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len * self.dtype.size()) }
    }

    /// A copy the crate owns: cloning a borrow must not duplicate the borrow.
    pub(super) fn to_owned_buffer(&self) -> CpuBuffer {
        let b = self.bytes();
        match self.dtype {
            DType::F16 => CpuBuffer::F16(bytemuck::pod_collect_to_vec(b)),
            DType::F32 => CpuBuffer::F32(bytemuck::pod_collect_to_vec(b)),
            DType::F64 => CpuBuffer::F64(bytemuck::pod_collect_to_vec(b)),
            DType::C64 => CpuBuffer::C64(bytemuck::pod_collect_to_vec(b)),
            DType::U32 => CpuBuffer::U32(bytemuck::pod_collect_to_vec(b)),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element types a caller's slice may hold: the real storage types the
/// kernels compute on.
pub trait HostElement: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The dtype of a buffer of these elements.
    const DTYPE: DType;
}

impl HostElement for f16 {
    const DTYPE: DType = DType::F16;
}
impl HostElement for f32 {
    const DTYPE: DType = DType::F32;
}
impl HostElement for f64 {
    const DTYPE: DType = DType::F64;
}

impl CpuBuffer {
    /// A buffer over `len` elements of `dtype` at `ptr`, which the caller owns
    /// (dropping the buffer does not free it; cloning it copies the data into
    /// a crate-owned buffer).
    ///
    /// # Safety
    /// For as long as the buffer (or a tensor made from it) exists:
    /// - `ptr` is non-null, aligned for `dtype` and valid for reads and writes
    ///   of `len · dtype.size()` bytes of initialised elements;
    /// - nothing else reads or writes that memory while a kernel runs on it,
    ///   and nothing else writes it while the crate reads it (the buffer is an
    ///   exclusive borrow, like `&mut [T]`);
    /// - `dtype` is a real float type (f16, f32, f64).
    ///
    /// A null `ptr` or a complex / integer `dtype` is reported as an error,
    /// not undefined behaviour.
    pub unsafe fn from_raw_parts(ptr: *mut u8, len: usize, dtype: DType) -> Result<CpuBuffer> {
        let ptr = NonNull::new(ptr).ok_or(Error::NullPointer { what: "host data" })?;
        if !dtype.is_real_float() {
            return Err(Error::UnsupportedDType {
                backend: "cpu (external memory)",
                dtype,
            });
        }
        Ok(CpuBuffer::External(ExternalHost { ptr, len, dtype }))
    }

    /// Whether this buffer is caller-owned memory.
    pub fn is_external(&self) -> bool {
        matches!(self, CpuBuffer::External(_))
    }
}

/// Tensors over the caller's slices, valid inside one [`scope`] call.
pub struct Scope<'scope, 'env: 'scope> {
    /// Tensors handed out, as raw pointers: the closure holds the only `&mut`
    /// to each until it returns, then the scope takes them back.
    slots: Slots,
    /// Invariant in both lifetimes, like `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// A tensor of `shape` over `data` (exactly `shape`'s element count, else
    /// [`crate::Error::LengthMismatch`]); the kernels read and write `data`
    /// in place.
    // Like an arena: each call hands out a distinct tensor, never one already lent.
    #[allow(clippy::mut_from_ref)]
    pub fn tensor<T: HostElement>(
        &'scope self,
        data: &'env mut [T],
        shape: Shape,
    ) -> Result<&'scope mut Tensor<CpuBackend>> {
        let len = shape.checked_len()?;
        if data.len() != len {
            return Err(Error::LengthMismatch {
                what: "host slice",
                expected: len,
                got: data.len(),
            });
        }
        let ptr = NonNull::from(&mut *data).cast::<u8>();
        // SAFETY: `data` is an exclusive borrow for 'env, which outlives the
        // scope, so the memory stays valid and unaliased for the tensor's life.
        let buf = unsafe { CpuBuffer::from_raw_parts(ptr.as_ptr(), len, T::DTYPE)? };
        let tensor = Tensor::from_buffer(buf, shape)?;
        let slot = NonNull::from(Box::leak(Box::new(tensor)));
        self.slots.borrow_mut().push((slot, ptr));
        // SAFETY: the box is live until the scope ends (after 'scope), and this
        // is the only reference made to it until then.
        Ok(unsafe { &mut *slot.as_ptr() })
    }
}

/// Takes a scope's tensors back when its closure has returned (or unwound);
/// aborts if one no longer holds the scope's memory.
struct Reclaim<'a>(&'a Slots);

type Slots = RefCell<Vec<(NonNull<Tensor<CpuBackend>>, NonNull<u8>)>>;

impl Drop for Reclaim<'_> {
    fn drop(&mut self) {
        let slots = std::mem::take(&mut *self.0.borrow_mut());
        let ours: Vec<NonNull<u8>> = slots.iter().map(|&(_, p)| p).collect();
        let mut seen = Vec::with_capacity(ours.len());
        for (slot, _) in slots {
            // SAFETY: leaked in `Scope::tensor`, reclaimed once; no reference
            // survives the closure (they are bounded by its 'scope).
            let tensor = unsafe { Box::from_raw(slot.as_ptr()) };
            let held = match tensor.buffer() {
                CpuBuffer::External(e) => Some(e.ptr),
                _ => None,
            };
            match held {
                Some(p) if ours.contains(&p) && !seen.contains(&p) => seen.push(p),
                // The borrowed buffer was moved out of the scope's tensor: it
                // would outlive the caller's slice. Nothing safe remains to do.
                _ => {
                    eprintln!(
                        "diffinv: a tensor over a borrowed slice escaped its cpu::scope; aborting"
                    );
                    std::process::abort();
                }
            }
        }
    }
}

/// Run `f` with a [`Scope`] that makes tensors over the caller's slices
/// (zero copy: kernels read and write the slices in place).
///
/// ```
/// use diffinv::backend::cpu::{self, CpuBackend};
/// use diffinv::Shape;
/// let mut x = vec![1.0f32; 8];
/// let backend = CpuBackend::new();
/// cpu::scope(|s| -> diffinv::Result<()> {
///     let t = s.tensor(&mut x, Shape::flat(8))?;
///     t.fill_zero(&backend)
/// })
/// .unwrap();
/// assert_eq!(x, vec![0.0; 8]);
/// ```
///
/// A slice must outlive the scope, so a tensor cannot borrow memory that is
/// freed while the scope still holds it:
///
/// ```compile_fail
/// use diffinv::backend::cpu;
/// use diffinv::Shape;
/// cpu::scope(|s| {
///     let mut inner = vec![0.0f32; 4];
///     let _t = s.tensor(&mut inner, Shape::flat(4));
/// });
/// ```
pub fn scope<'env, R>(f: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R) -> R {
    let scope = Scope {
        slots: RefCell::new(Vec::new()),
        scope: PhantomData,
        env: PhantomData,
    };
    // Declared after `scope`, so dropped first; runs when `f` unwinds too.
    let _reclaim = Reclaim(&scope.slots);
    f(&scope)
}
