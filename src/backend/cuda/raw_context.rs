//! The CUDA backend on a raw `CUcontext` and `CUstream` another runtime made
//! (a C or C++ engine, the C ABI's callers): the handles are borrowed, never
//! destroyed (`docs/embedding.md`).
//!
//! cudarc can wrap both — `CudaContext::from_raw_context`,
//! `CudaContext::wrap_borrowed_stream` — but its context wrapper destroys the
//! context when its last reference drops. So a primary context (what the
//! runtime API and PyTorch use) is opened as cudarc's own retain of it, which
//! the driver reference-counts, and any other context is wrapped once with a
//! reference that is never dropped.

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::sys::{CUcontext, CUdevice, CUstream};
use cudarc::driver::{result, sys, CudaContext};

use super::{driver_installed, CudaBackend, DriverDevice};
use crate::error::{Error, Result};

fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable {
        backend: "cuda",
        reason,
    }
}

fn context_error(e: impl std::fmt::Display) -> Error {
    Error::Device {
        backend: "cuda",
        message: format!("the caller's CUcontext: {e}"),
    }
}

impl CudaBackend<DriverDevice> {
    /// The backend on the caller's `context` and `stream` (null: the
    /// context's legacy default stream): every copy, launch and cuFFT call is
    /// enqueued on `stream`, in order with the caller's own work there.
    ///
    /// Checked (typed errors, nothing borrowed): a null `context`
    /// ([`Error::NullPointer`]); no driver ([`Error::BackendUnavailable`]);
    /// a context the driver rejects ([`Error::Device`]).
    ///
    /// # Safety
    /// - `context` is a live CUDA context and `stream` null or a live stream
    ///   created in it;
    /// - both stay alive (not destroyed) while the backend, or any buffer or
    ///   tensor made with it, exists;
    /// - stream ordering is the caller's, as for [`CudaBackend::wrap_device_ptr`]:
    ///   the backend enqueues on `stream` only;
    /// - cudarc makes `context` current on the threads that call the backend.
    pub unsafe fn from_raw(context: CUcontext, stream: CUstream) -> Result<Self> {
        if context.is_null() {
            return Err(Error::NullPointer {
                what: "CUDA context",
            });
        }
        if !driver_installed() {
            return Err(unavailable(
                "libcuda (the NVIDIA driver) is not installed".into(),
            ));
        }
        // cudarc panics when the driver lacks a symbol it resolves lazily.
        let ctx = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the caller's contract: a live context.
            unsafe { borrow_context(context) }
        }))
        .map_err(|_| unavailable("the CUDA driver is too old for this build".into()))??;
        // SAFETY: the caller's contract: `stream` belongs to the context and
        // outlives the backend; the wrapper never destroys it.
        let stream = unsafe { ctx.wrap_borrowed_stream(stream) };
        Self::on_stream(stream)
    }
}

/// cudarc's context over the caller's `raw`, which it will never destroy.
///
/// # Safety
/// `raw` is a live context that outlives the returned value.
unsafe fn borrow_context(raw: CUcontext) -> Result<Arc<CudaContext>> {
    result::init().map_err(|e| unavailable(format!("cuInit: {e}")))?;
    // SAFETY: a live context (the caller's contract); pushed for the query
    // only, so the thread's current context is restored.
    let device = unsafe { device_of(raw) }?;
    let count = result::device::get_count().map_err(context_error)?;
    let ordinal = (0..count)
        .find(|&i| result::device::get(i).is_ok_and(|d| d == device))
        .ok_or_else(|| context_error("its device is not among the driver's devices"))?;
    if is_primary(device, raw)? {
        // Retained again, released when the backend's last reference drops.
        return CudaContext::new(ordinal as usize).map_err(context_error);
    }
    // SAFETY: a live context of `device` (above); ownership stays with the
    // caller because the extra reference below is never dropped.
    let ctx = unsafe { CudaContext::from_raw_context(ordinal as usize, device, raw) }
        .map_err(context_error)?;
    // Leaks one reference-count, so cudarc's `Drop` (cuCtxDestroy) never runs.
    std::mem::forget(Arc::clone(&ctx));
    Ok(ctx)
}

/// The device of context `raw`.
///
/// # Safety
/// `raw` is a live context.
unsafe fn device_of(raw: CUcontext) -> Result<CUdevice> {
    // SAFETY: a live context; popped again below whatever the query returns.
    unsafe { sys::cuCtxPushCurrent_v2(raw) }
        .result()
        .map_err(context_error)?;
    let mut device = MaybeUninit::uninit();
    // SAFETY: `raw` is current; the driver writes one CUdevice.
    let got = unsafe { sys::cuCtxGetDevice(device.as_mut_ptr()) }.result();
    let mut popped: CUcontext = std::ptr::null_mut();
    // SAFETY: pops the context pushed above.
    unsafe { sys::cuCtxPopCurrent_v2(&mut popped) }
        .result()
        .map_err(context_error)?;
    got.map_err(context_error)?;
    // SAFETY: written by a successful cuCtxGetDevice.
    Ok(unsafe { device.assume_init() })
}

/// Whether `raw` is `device`'s primary context. An inactive primary context
/// cannot be it, and is not retained (which would create one).
fn is_primary(device: CUdevice, raw: CUcontext) -> Result<bool> {
    let (mut flags, mut active) = (0, 0);
    // SAFETY: a device the driver listed; the driver writes both values.
    unsafe { sys::cuDevicePrimaryCtxGetState(device, &mut flags, &mut active) }
        .result()
        .map_err(context_error)?;
    if active == 0 {
        return Ok(false);
    }
    // SAFETY: a device the driver listed; the retain is released at once
    // (the context is active, so this neither creates nor destroys it).
    let primary = unsafe { result::primary_ctx::retain(device) }.map_err(context_error)?;
    // SAFETY: balances the retain above.
    unsafe { result::primary_ctx::release(device) }.map_err(context_error)?;
    Ok(primary == raw)
}
