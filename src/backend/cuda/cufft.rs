//! cuFFT for [`super::DriverDevice`]: libcufft loaded at run time (cudarc's
//! `dynamic-loading`), one batched C2C plan per [`Fft2Batch`], made on first
//! use, bound to the device's stream and kept until the device drops.
//!
//! The raw `cufft::result` calls are used rather than cudarc's `CudaFft`:
//! its `Drop` unwraps `cufftDestroy`, and nothing here may panic.

use std::collections::HashMap;
use std::ffi::c_int;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use cudarc::cufft::{result, sys, FftDirection};
use cudarc::driver::CudaStream;

use super::device::Fft2Batch;
use crate::error::{Error, Result};

/// Set to `0` to keep cuFFT unloaded: the backend then runs its own kernels.
pub const DISABLE_VAR: &str = "DIFFINV_CUFFT";

fn cufft_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device {
        backend: "cuda",
        message: format!("cuFFT {what}: {e}"),
    }
}

/// One cuFFT plan handle, destroyed once (a failure there is ignored: the
/// context may already be gone at process exit).
struct Plan(sys::cufftHandle);

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: the handle came from cufftPlanMany and is destroyed only here.
        let _ = unsafe { result::destroy(self.0) };
    }
}

/// The plans of one device's stream.
pub(super) struct Cufft {
    stream: Arc<CudaStream>,
    /// Held while a plan is made or executed: a plan's work area serves one
    /// transform at a time.
    plans: Mutex<HashMap<Fft2Batch, Plan>>,
}

impl Cufft {
    /// cuFFT on `stream`, if libcufft loads and [`DISABLE_VAR`] is not `0`.
    pub(super) fn load(stream: &Arc<CudaStream>) -> Option<Self> {
        if std::env::var(DISABLE_VAR).is_ok_and(|v| v.trim() == "0") {
            return None;
        }
        // SAFETY: only probes whether the shared library loads.
        if !unsafe { sys::is_culib_present() } {
            return None;
        }
        Some(Cufft {
            stream: Arc::clone(stream),
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// `output ← DFT(input)` for every plane of `batch` (unscaled; `inverse`:
    /// the `e^{+2πi…}` transform), enqueued on the stream.
    ///
    /// # Safety
    /// `input` and `output` are device addresses of this stream's context,
    /// distinct, 8-byte aligned, each holding `planes·height·width` complex
    /// f32, and stay valid until the stream has run the transform.
    pub(super) unsafe fn c2c(
        &self,
        input: u64,
        output: u64,
        batch: Fft2Batch,
        inverse: bool,
    ) -> Result<()> {
        let ctx = self.stream.context();
        ctx.bind_to_thread()
            .map_err(|e| cufft_error("binding the context", e))?;
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| cufft_error("plan cache", "poisoned"))?;
        let handle = match plans.get(&batch) {
            Some(plan) => plan.0,
            None => {
                let plan = self.plan(batch)?;
                let handle = plan.0;
                plans.insert(batch, plan);
                handle
            }
        };
        let direction = if inverse {
            FftDirection::Inverse
        } else {
            FftDirection::Forward
        };
        // cudarc resolves each cuFFT symbol on first call and panics if the
        // library lacks it (an older libcufft): an error here, not a crash.
        let executed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the caller's contract: both addresses hold the plan's
            // planes·H·W complex f32 and do not overlap. cuFFT's out-of-place
            // C2C reads `input` only (its documentation names out-of-place
            // complex-to-real transforms as the ones that overwrite their input).
            unsafe {
                result::exec_c2c(
                    handle,
                    input as *mut sys::cufftComplex,
                    output as *mut sys::cufftComplex,
                    direction as c_int,
                )
            }
        }));
        match executed {
            Ok(r) => r.map_err(|e| cufft_error("exec", e)),
            Err(_) => Err(cufft_error("exec", "libcufft lacks cufftExecC2C")),
        }
    }

    /// A plan for `batch`: `planes` contiguous row-major `H × W` planes
    /// (default layout: no embedding, unit stride, distance H·W), C2C, on
    /// the stream.
    fn plan(&self, batch: Fft2Batch) -> Result<Plan> {
        let int = |v: usize| {
            c_int::try_from(v).map_err(|_| Error::TooLarge {
                backend: "cuda",
                bytes: v as u64,
                limit: c_int::MAX as u64,
            })
        };
        let mut dims = [int(batch.height)?, int(batch.width)?];
        let (planes, plane) = (int(batch.planes)?, int(batch.height * batch.width)?);
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `dims` holds the rank-2 sizes; null embeddings select
            // the default contiguous layout (stride and distance then ignored).
            let handle = unsafe {
                result::plan_many(
                    2,
                    dims.as_mut_ptr(),
                    std::ptr::null_mut(),
                    1,
                    plane,
                    std::ptr::null_mut(),
                    1,
                    plane,
                    sys::cufftType::CUFFT_C2C,
                    planes,
                )
            }?;
            let plan = Plan(handle);
            // SAFETY: a live plan and the device's live stream.
            unsafe { result::set_stream(plan.0, self.stream.cu_stream() as sys::cudaStream_t) }?;
            Ok(plan)
        }));
        match made {
            Ok(r) => r.map_err(|e: result::CufftError| cufft_error("plan", e)),
            Err(_) => Err(cufft_error("plan", "libcufft lacks a planning symbol")),
        }
    }
}
