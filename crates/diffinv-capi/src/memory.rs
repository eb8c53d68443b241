//! Caller memory on either backend as tensors of the library's own: host
//! arrays on the CPU, device pointers (of the backend's context) on CUDA. The
//! guidance and DDS entries are generic over [`Caller`], so one body serves
//! both backends and runs the same code as the Rust API.

use std::ffi::c_void;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::cuda::CudaBackend;
use diffinv::ops::{GuidanceOps, KrylovOps};
use diffinv::{DType, Error, HostSlice, Shape, Tensor};

use crate::{device_tensor, host_tensor, invalid};

/// A backend whose callers hand it their own memory.
pub(crate) trait Caller: GuidanceOps + KrylovOps + Sized + 'static {
    /// A tensor of `shape` over the caller's `len` elements of `dtype` at `ptr`.
    ///
    /// # Safety
    /// `ptr` (checked non-null and aligned) is valid for `len` elements of
    /// `dtype` while the tensor lives, and not used otherwise meanwhile.
    unsafe fn wrap(
        &self,
        ptr: *mut c_void,
        len: usize,
        dtype: DType,
        shape: Shape,
        what: &'static str,
    ) -> Result<Tensor<Self>, Error>;
}

impl Caller for CpuBackend {
    unsafe fn wrap(
        &self,
        ptr: *mut c_void,
        len: usize,
        dtype: DType,
        shape: Shape,
        what: &'static str,
    ) -> Result<Tensor<Self>, Error> {
        // SAFETY: the caller's contract.
        unsafe { host_tensor(ptr, len, dtype, shape, what) }
    }
}

impl Caller for CudaBackend {
    unsafe fn wrap(
        &self,
        ptr: *mut c_void,
        len: usize,
        dtype: DType,
        shape: Shape,
        what: &'static str,
    ) -> Result<Tensor<Self>, Error> {
        // SAFETY: the caller's contract.
        unsafe { device_tensor(self, ptr, len, dtype, shape, what) }
    }
}

/// Copy `src` into the caller's `len` elements at `dst` (same shape and dtype).
///
/// # Safety
/// As [`Caller::wrap`], for writes of `dst`.
pub(crate) unsafe fn read_out<B: Caller>(
    backend: &B,
    src: &Tensor<B>,
    dst: *mut c_void,
    len: usize,
    what: &'static str,
) -> Result<(), Error> {
    // SAFETY: the caller's contract.
    let mut out = unsafe { backend.wrap(dst, len, src.dtype(), src.shape(), what)? };
    backend.copy(src.buffer(), out.buffer_mut())
}

/// Fill the caller's `len` elements at `dst` with the standard normal noise
/// the Rust samplers draw for `(seed, step)`: Philox by element index, the
/// same f64 values, rounded to `dtype` by the same upload.
///
/// # Safety
/// As [`Caller::wrap`], for writes of `dst`.
pub(crate) unsafe fn fill_noise<B: Caller>(
    backend: &B,
    seed: u64,
    step: u32,
    dst: *mut c_void,
    len: usize,
    dtype: DType,
) -> Result<(), Error> {
    let index_max = u32::MAX as usize;
    if len > index_max {
        return Err(invalid(
            "len",
            len as f64,
            "noise is indexed by u32 element numbers",
        ));
    }
    // SAFETY: the caller's contract.
    let mut out = unsafe { backend.wrap(dst, len, dtype, Shape::flat(len), "dst")? };
    let values: Vec<f64> = (0..len)
        .map(|i| diffinv::rng::normal_f64(seed, step, i as u32))
        .collect();
    out.upload(backend, HostSlice::F64(&values))
}
