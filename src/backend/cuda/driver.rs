//! [`CudaDevice`] on a real GPU through cudarc's driver API.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
};
use cudarc::nvrtc::Ptx;

use super::blas::Blas;
use super::cufft::Cufft;
use super::device::{CudaDevice, Fft2Batch, LaunchConfig, VendorConv, VendorGemm};
use super::dnn::Dnn;
use super::kernels::{self, KERNELS, MODULES};
use super::launch::{kernel_params, Arg, Kernel, KernelArgs};
use crate::error::{Error, Result};

/// A GPU: one context and one explicit (non-default) stream that every kernel,
/// cuFFT, cuBLAS and cuDNN run on; modules compiled by NVRTC
/// on first use; functions cached by kernel id.
pub struct DriverDevice {
    /// cuBLAS, opened at the first matmul; `None` when it does not load.
    /// First: fields drop in order, and the handle goes before the stream
    /// and context it uses.
    blas: OnceLock<Option<Blas>>,
    /// cuDNN, opened at the first f32 conv2d; `None` when it does not load
    /// (or `DIFFINV_CUDNN=0`). Before the stream and context, like `blas`.
    dnn: OnceLock<Option<Dnn>>,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// `sm_XY` of the device, the NVRTC target.
    arch: String,
    multiprocessors: u32,
    /// By module id.
    modules: Vec<OnceLock<Arc<CudaModule>>>,
    /// By kernel id: resolved once, then read without a lock or a lookup.
    functions: Vec<OnceLock<CudaFunction>>,
    /// Serialises first-use compilation (a module compiles once).
    loading: Mutex<()>,
    /// cuFFT's plans, when libcufft loaded (see [`super::cufft`]).
    cufft: Option<Cufft>,
}

fn driver_error(e: impl std::fmt::Display) -> Error {
    Error::Device {
        backend: "cuda",
        message: e.to_string(),
    }
}

/// `bytes` at `offset` must fit the device buffer of `cap` bytes (cudarc panics otherwise).
fn check_fits(what: &'static str, offset: usize, bytes: usize, cap: usize) -> Result<()> {
    if offset.checked_add(bytes).is_none_or(|end| end > cap) {
        return Err(Error::LengthMismatch {
            what,
            expected: cap,
            got: offset.saturating_add(bytes),
        });
    }
    Ok(())
}

/// Whether libcuda (the NVIDIA driver) loads in this process: without it every
/// way of opening the backend is [`Error::BackendUnavailable`].
pub fn driver_installed() -> bool {
    // SAFETY: only probes whether the shared library loads; no driver call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl DriverDevice {
    /// Open GPU `ordinal`, reporting a missing driver or device as
    /// [`Error::BackendUnavailable`] (cudarc panics if asked without a driver).
    pub fn open(ordinal: usize) -> Result<Self> {
        let unavailable = |reason: String| Error::BackendUnavailable {
            backend: "cuda",
            reason,
        };
        if !driver_installed() {
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
        // Not the legacy default stream: CUDA-graph capture rejects it, and it
        // serialises against every other stream of the process.
        let stream = ctx.new_stream().map_err(driver_error)?;
        Self::on_stream(stream)
    }

    /// The device of the caller's `stream` (and its context): every copy and
    /// launch is enqueued on that stream, in order with the caller's own work
    /// there; buffers this device allocates follow cudarc's event tracking
    /// when other streams use them.
    pub fn on_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = Arc::clone(stream.context());
        let (major, minor) = ctx.compute_capability().map_err(driver_error)?;
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver_error)?;
        let cufft = Cufft::load(&stream);
        Ok(DriverDevice {
            blas: OnceLock::new(),
            dnn: OnceLock::new(),
            ctx,
            cufft,
            stream,
            arch: format!("sm_{major}{minor}"),
            multiprocessors: multiprocessors.max(1) as u32,
            modules: MODULES.iter().map(|_| OnceLock::new()).collect(),
            functions: KERNELS.iter().map(|_| OnceLock::new()).collect(),
            loading: Mutex::new(()),
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

    /// The stream every operation of this device is ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The vendor library in `cell`, opened on this device's stream at the
    /// first call (`None` for good when it does not load), with the context
    /// bound to this thread for the library's calls.
    fn library<'a, T>(
        &'a self,
        cell: &'a OnceLock<Option<T>>,
        open: impl FnOnce(&Arc<CudaStream>) -> Option<T>,
    ) -> Result<Option<&'a T>> {
        let Some(library) = cell.get_or_init(|| open(&self.stream)) else {
            return Ok(None);
        };
        self.ctx.bind_to_thread().map_err(driver_error)?;
        Ok(Some(library))
    }

    /// The loaded function of `kernel`: compiled and loaded on first use, a
    /// plain index afterwards.
    fn function(&self, kernel: &'static Kernel) -> Result<&CudaFunction> {
        let slot = self
            .functions
            .get(kernel.id)
            .ok_or_else(|| driver_error(format!("kernel {} is not in KERNELS", kernel.name)))?;
        if let Some(f) = slot.get() {
            return Ok(f);
        }
        let _loading = self
            .loading
            .lock()
            .map_err(|_| driver_error("module loading poisoned"))?;
        let module = kernel.module;
        let m = match self.modules.get(module.id).and_then(OnceLock::get) {
            Some(m) => Arc::clone(m),
            None => {
                let cubin = kernels::compile_cubin(module, &self.arch)?;
                let m = self
                    .ctx
                    .load_module(Ptx::from_binary(cubin))
                    .map_err(driver_error)?;
                if let Some(cell) = self.modules.get(module.id) {
                    let _ = cell.set(Arc::clone(&m));
                }
                m
            }
        };
        let f = m.load_function(kernel.name).map_err(driver_error)?;
        Ok(slot.get_or_init(|| f))
    }
}

/// Device memory of one buffer: an allocation of the crate's (freed when
/// dropped) or the caller's (left alone). Reads as the cudarc slice.
pub struct DriverMem {
    slice: ManuallyDrop<CudaSlice<u8>>,
    owned: bool,
}

impl DriverMem {
    fn owned(slice: CudaSlice<u8>) -> Self {
        DriverMem {
            slice: ManuallyDrop::new(slice),
            owned: true,
        }
    }

    /// Whether the memory belongs to the caller.
    pub fn is_external(&self) -> bool {
        !self.owned
    }
}

impl Deref for DriverMem {
    type Target = CudaSlice<u8>;
    fn deref(&self) -> &CudaSlice<u8> {
        &self.slice
    }
}

impl DerefMut for DriverMem {
    fn deref_mut(&mut self) -> &mut CudaSlice<u8> {
        &mut self.slice
    }
}

impl Drop for DriverMem {
    fn drop(&mut self) {
        // SAFETY: taken exactly once, here.
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        if self.owned {
            drop(slice);
        } else {
            // Waits for our pending work on it, then forgets the address.
            slice.leak();
        }
    }
}

impl CudaDevice for DriverDevice {
    type Mem = DriverMem;

    fn name(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        format!("{name} ({})", self.arch)
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<DriverMem> {
        self.stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map(DriverMem::owned)
            .map_err(driver_error)
    }

    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<DriverMem> {
        let stream = &self.stream;
        // cudarc unwraps the creation of the slice's tracking events: a failure
        // there is a device error, not a panic across the caller's code.
        let slice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: the caller's contract: `bytes` bytes of this context's
            // memory at `ptr`, valid while the DriverMem lives.
            unsafe { stream.upgrade_device_ptr::<u8>(ptr, bytes) }
        }))
        .map_err(|_| driver_error("creating the events of an external buffer"))?;
        Ok(DriverMem {
            slice: ManuallyDrop::new(slice),
            owned: false,
        })
    }

    fn write(&self, mem: &mut DriverMem, offset: usize, src: &[u8]) -> Result<()> {
        check_fits("cuda device write", offset, src.len(), mem.len())?;
        let mut view = mem.slice_mut(offset..offset + src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(driver_error)
    }

    fn read(&self, mem: &DriverMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        check_fits("cuda device read", offset, dst.len(), mem.len())?;
        let view = mem.slice(offset..offset + dst.len());
        self.stream.memcpy_dtoh(&view, dst).map_err(driver_error)
    }

    fn zero(&self, mem: &mut DriverMem) -> Result<()> {
        self.stream.memset_zeros(&mut **mem).map_err(driver_error)
    }

    fn copy(&self, src: &DriverMem, dst: &mut DriverMem, bytes: usize) -> Result<()> {
        check_fits("cuda device copy source", 0, bytes, src.len())?;
        check_fits("cuda device copy destination", 0, bytes, dst.len())?;
        let from = src.slice(..bytes);
        let mut to = dst.slice_mut(..bytes);
        self.stream
            .memcpy_dtod(&from, &mut to)
            .map_err(driver_error)
    }

    fn device_ptr(&self, mem: &DriverMem) -> u64 {
        let (ptr, _record) = mem.device_ptr(&self.stream);
        ptr
    }

    unsafe fn launch(
        &self,
        kernel: &'static Kernel,
        cfg: LaunchConfig,
        mut args: KernelArgs<'_, DriverMem>,
    ) -> Result<()> {
        let f = self.function(kernel)?.cu_function();
        // The raw launch does not make the context current (cudarc's safe calls do):
        // without this, a launch from a thread that has not touched the context fails.
        self.ctx.bind_to_thread().map_err(driver_error)?;
        let stream = &*self.stream;
        // Taking each address makes the stream wait for the buffer's last write
        // (and, for outputs, its last reads); the guards record this launch as
        // the new reader / writer when they drop, after the launch.
        let mut records = Vec::with_capacity(args.as_slice().len());
        let mut values = Vec::with_capacity(args.as_slice().len());
        let mut addresses: Vec<u64> = args
            .as_mut_slice()
            .iter_mut()
            .map(|arg| match arg {
                Arg::Value(bytes) => {
                    values.push(Some(bytes.as_ptr()));
                    0
                }
                Arg::In(mem) => {
                    let (ptr, record) = mem.device_ptr(stream);
                    records.push(record);
                    values.push(None);
                    ptr
                }
                Arg::Out(mem) => {
                    let (ptr, record) = mem.device_ptr_mut(stream);
                    records.push(record);
                    values.push(None);
                    ptr
                }
            })
            .collect();
        let mut params = kernel_params(&values, &mut addresses);
        // SAFETY: the arguments match the kernel's declared signature (checked by
        // the backend) and every buffer is as long as the caller's contract says.
        let launched = unsafe {
            cudarc::driver::result::launch_kernel(
                f,
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                stream.cu_stream(),
                &mut params,
            )
        };
        drop(records);
        launched.map_err(driver_error)
    }

    unsafe fn vendor_gemm(
        &self,
        gemm: &VendorGemm,
        a: &DriverMem,
        b: &DriverMem,
        c: &mut DriverMem,
    ) -> Result<bool> {
        let Some(blas) = self.library(&self.blas, |s| Blas::open(s))? else {
            return Ok(false);
        };
        let stream = &self.stream;
        // As for a launch: the stream waits for the operands' last writes
        // (and c's reads); the records mark this GEMM when they drop.
        let (a_ptr, a_record) = a.device_ptr(stream);
        let (b_ptr, b_record) = b.device_ptr(stream);
        let (c_ptr, c_record) = c.device_ptr_mut(stream);
        // SAFETY: the caller's contract on the buffer lengths; the handle
        // runs on `stream`, where the addresses were just taken.
        let ran = unsafe { blas.gemm(gemm, a_ptr, b_ptr, c_ptr) };
        drop((a_record, b_record, c_record));
        ran
    }

    unsafe fn vendor_conv(
        &self,
        conv: &VendorConv,
        x: &DriverMem,
        w: &DriverMem,
        bias: Option<&DriverMem>,
        out: &mut DriverMem,
    ) -> Result<bool> {
        let Some(dnn) = self.library(&self.dnn, Dnn::open)? else {
            return Ok(false);
        };
        let stream = &self.stream;
        // As for a launch: the stream waits for the inputs' last writes and
        // the output's last reads; the records mark this call when they drop.
        let (x_ptr, x_record) = x.device_ptr(stream);
        let (w_ptr, w_record) = w.device_ptr(stream);
        let (bias_ptr, bias_record) = bias.map(|b| b.device_ptr(stream)).unzip();
        let (out_ptr, out_record) = out.device_ptr_mut(stream);
        // SAFETY: the caller's contract on the buffer lengths (`out` is a
        // `&mut`, so it aliases no input); the handle runs on `stream`,
        // where the addresses were just taken.
        let ran = unsafe { dnn.conv2d(conv, x_ptr, w_ptr, bias_ptr, out_ptr) };
        drop((x_record, w_record, bias_record, out_record));
        ran
    }

    fn has_library_conv(&self) -> bool {
        matches!(self.library(&self.dnn, Dnn::open), Ok(Some(_)))
    }

    fn has_library_fft(&self) -> bool {
        self.cufft.is_some()
    }

    unsafe fn library_fft2(
        &self,
        input: &DriverMem,
        output: &mut DriverMem,
        batch: Fft2Batch,
        inverse: bool,
    ) -> Result<()> {
        let Some(cufft) = &self.cufft else {
            return Err(driver_error("cuFFT is not loaded"));
        };
        // As for a launch: the stream waits for the buffers' last writes (and
        // the output's last reads); the guards record the transform on drop.
        let (from, _read) = input.device_ptr(&self.stream);
        let (to, _write) = output.device_ptr_mut(&self.stream);
        // SAFETY: the caller's contract (sizes, alignment, distinct buffers);
        // both are memory of this stream's context and outlive the guards.
        unsafe { cufft.c2c(from, to, batch, inverse) }
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_error)
    }
}
