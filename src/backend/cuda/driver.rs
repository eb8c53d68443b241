//! [`CudaDevice`] on a real GPU through cudarc's driver API.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::Ptx;

use super::device::{CudaDevice, LaunchConfig};
use super::kernels;
use crate::error::{Error, Result};

/// A GPU: one context and stream; modules compiled by NVRTC on first use and cached.
pub struct DriverDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// `sm_XY` of the device, the NVRTC target.
    arch: String,
    multiprocessors: u32,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Entry points by (module, kernel).
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
}

fn driver_error(e: impl std::fmt::Display) -> Error {
    Error::Device {
        backend: "cuda",
        message: e.to_string(),
    }
}

/// A host slice of `bytes` must fit the device buffer of `cap` bytes (cudarc panics otherwise).
fn check_fits(what: &'static str, bytes: usize, cap: usize) -> Result<()> {
    if bytes > cap {
        return Err(Error::LengthMismatch {
            what,
            expected: cap,
            got: bytes,
        });
    }
    Ok(())
}

impl DriverDevice {
    /// Open GPU `ordinal`, reporting a missing driver or device as
    /// [`Error::BackendUnavailable`] (cudarc panics if asked without a driver).
    pub fn open(ordinal: usize) -> Result<Self> {
        let unavailable = |reason: String| Error::BackendUnavailable {
            backend: "cuda",
            reason,
        };
        // SAFETY: only probes whether libcuda loads.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable(
                "libcuda (the NVIDIA driver) is not installed".into(),
            ));
        }
        // cudarc also panics when the driver lacks a symbol it resolves lazily
        // (a driver older than the CUDA version it was built for): that too is
        // an unavailable backend, not a crash.
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| unavailable("the CUDA driver is too old for this build".into()))?
            .map_err(|e| unavailable(format!("device {ordinal}: {e}")))?;
        let (major, minor) = ctx.compute_capability().map_err(driver_error)?;
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver_error)?;
        let stream = ctx.default_stream();
        Ok(DriverDevice {
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            multiprocessors: multiprocessors.max(1) as u32,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// Streaming multiprocessors of the device.
    pub fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// The device's architecture, `sm_XY`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The entry point `kernel` of `module`, compiling and loading the module
    /// on first use (both cached for the device's lifetime).
    fn function(&self, module: &'static str, kernel: &str) -> Result<CudaFunction> {
        let mut functions = self
            .functions
            .lock()
            .map_err(|_| driver_error("function cache poisoned"))?;
        if let Some(f) = functions.get(&(module, kernel.to_string())) {
            return Ok(f.clone());
        }
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| driver_error("module cache poisoned"))?;
        let m = match modules.get(module) {
            Some(m) => Arc::clone(m),
            None => {
                let cubin = kernels::compile_cubin(module, &self.arch)?;
                let m = self
                    .ctx
                    .load_module(Ptx::from_binary(cubin))
                    .map_err(driver_error)?;
                modules.insert(module, Arc::clone(&m));
                m
            }
        };
        let f = m.load_function(kernel).map_err(driver_error)?;
        functions.insert((module, kernel.to_string()), f.clone());
        Ok(f)
    }
}

impl CudaDevice for DriverDevice {
    type Mem = CudaSlice<u8>;

    fn name(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        format!("{name} ({})", self.arch)
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        self.stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(driver_error)
    }

    fn write(&self, mem: &mut CudaSlice<u8>, src: &[u8]) -> Result<()> {
        check_fits("cuda device write", src.len(), mem.len())?;
        let mut view = mem.slice_mut(..src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(driver_error)
    }

    fn read(&self, mem: &CudaSlice<u8>, dst: &mut [u8]) -> Result<()> {
        check_fits("cuda device read", dst.len(), mem.len())?;
        let view = mem.slice(..dst.len());
        self.stream.memcpy_dtoh(&view, dst).map_err(driver_error)
    }

    fn device_ptr(&self, mem: &CudaSlice<u8>) -> u64 {
        let (ptr, _sync) = mem.device_ptr(&self.stream);
        ptr
    }

    unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        cfg: LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        let f = self.function(module, kernel)?;
        // The raw launch does not make the context current (cudarc's safe calls do):
        // without this, a launch from a thread that has not touched the context fails.
        self.ctx.bind_to_thread().map_err(driver_error)?;
        // SAFETY: forwarded from the caller's contract (argument list and buffer lengths).
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                self.stream.cu_stream(),
                args,
            )
        }
        .map_err(driver_error)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_error)
    }
}
