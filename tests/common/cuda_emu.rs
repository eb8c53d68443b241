//! The CUDA backend on the CPU emulation harness (crates/cuda-emu,
//! tests/cuda_emu): the real host launcher (`CudaBackend`) driving an
//! emulated device that runs the unmodified `kernels/*.cu` on fibers.

use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use diffinv::backend::cuda::launch::{kernel_params, value_pointers};
use diffinv::backend::cuda::{
    Arg, CudaBackend, CudaDevice, Fft2Batch, Kernel, KernelArgs, LaunchConfig, Param,
};
use diffinv::{Error, Result};
use num_complex::Complex;
use rustfft::{FftDirection, FftPlanner};

use super::skip;

/// Bytes after every allocation that kernels must not write (checked after each launch).
const REDZONE: usize = 256;
const REDZONE_BYTE: u8 = 0xa5;
/// cudaMalloc's alignment, which the kernels rely on for vector loads.
const ALIGN: usize = 256;

fn device_error(message: String) -> Error {
    Error::Device {
        backend: "cuda",
        message,
    }
}

/// Host memory standing in for a device allocation: 256-byte aligned, zeroed,
/// followed by a red zone — or, without a layout, memory a caller owns
/// (`wrap_external`), which dropping leaves alone.
pub struct EmuMem {
    ptr: NonNull<u8>,
    bytes: usize,
    layout: Option<Layout>,
    live: Arc<Mutex<BTreeMap<usize, usize>>>,
}

// SAFETY: EmuMem owns its allocation; kernels only touch it during a launch,
// which the backend's borrows of the buffer cover.
unsafe impl Send for EmuMem {}
// SAFETY: as above; shared references only read the address.
unsafe impl Sync for EmuMem {}

impl EmuMem {
    fn check(&self, offset: usize, len: usize, what: &str) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes => Ok(()),
            _ => Err(device_error(format!(
                "{what} of {len} bytes at offset {offset} in a {}-byte buffer",
                self.bytes
            ))),
        }
    }
}

impl Drop for EmuMem {
    fn drop(&mut self) {
        let Some(layout) = self.layout else {
            return;
        };
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.ptr.as_ptr() as usize));
        // SAFETY: allocated in `alloc_zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// One launch as the device received it: kernel, configuration, and each
/// argument's kind with its value bytes or buffer address.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchRecord {
    pub kernel: &'static str,
    pub cfg: LaunchConfig,
    pub args: Vec<(Param, Vec<u8>, u64)>,
}

/// The emulated device: synchronous launches through `cuda_emu::launch`, an
/// out-of-bounds-write check on every live allocation after each launch, a
/// count of launches per kernel and the arguments of the last launch.
///
/// With the host FFT on ([`EmuDevice::set_host_fft`]), it also offers a library 2-D FFT: `rustfft` in f32 on the
/// emulated memory, computing what cuFFT's batched C2C computes (plain,
/// unscaled), so the backend's cuFFT path — its choice, the temporary, the
/// centring kernel, the launch count — runs here. Counted as
/// [`LIBRARY_FFT`] in [`EmuDevice::launched`].
#[derive(Default)]
pub struct EmuDevice {
    live: Arc<Mutex<BTreeMap<usize, usize>>>,
    launched: Mutex<HashMap<String, u64>>,
    last: Mutex<Option<LaunchRecord>>,
    host_fft: AtomicBool,
}

/// The name under which [`EmuDevice::launched`] counts library FFTs.
pub const LIBRARY_FFT: &str = "library_fft2";

impl EmuDevice {
    /// Offer (or stop offering) the host stand-in for cuFFT.
    pub fn set_host_fft(&self, on: bool) {
        self.host_fft.store(on, Ordering::Relaxed);
    }

    fn count(&self, name: &str) {
        *self
            .launched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default() += 1;
    }

    /// The most recent launch.
    pub fn last_launch(&self) -> Option<LaunchRecord> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Launches so far of each kernel name.
    pub fn launched(&self) -> HashMap<String, u64> {
        self.launched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn check_redzones(&self, kernel: &str) -> Result<()> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for (&addr, &bytes) in live.iter() {
            // SAFETY: every entry is a live allocation of bytes + REDZONE bytes at addr.
            let zone = unsafe { std::slice::from_raw_parts((addr + bytes) as *const u8, REDZONE) };
            if let Some(k) = zone.iter().position(|&b| b != REDZONE_BYTE) {
                return Err(device_error(format!(
                    "emulated kernel {kernel} wrote past the end of a {bytes}-byte buffer (at byte {})",
                    bytes + k
                )));
            }
        }
        Ok(())
    }
}

impl CudaDevice for EmuDevice {
    type Mem = EmuMem;

    fn name(&self) -> String {
        "cuda-emu (CPU emulation of kernels/*.cu)".into()
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<EmuMem> {
        let too_large = || Error::TooLarge {
            backend: "cuda",
            bytes: bytes as u64,
            limit: isize::MAX as u64,
        };
        let total = bytes.checked_add(REDZONE).ok_or_else(too_large)?;
        let layout = Layout::from_size_align(total, ALIGN).map_err(|_| too_large())?;
        // SAFETY: layout has a non-zero size (REDZONE > 0).
        let ptr =
            NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or_else(too_large)?;
        // SAFETY: the red zone lies inside the allocation just made.
        unsafe { std::ptr::write_bytes(ptr.as_ptr().add(bytes), REDZONE_BYTE, REDZONE) };
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ptr.as_ptr() as usize, bytes);
        Ok(EmuMem {
            ptr,
            bytes,
            layout: Some(layout),
            live: self.live.clone(),
        })
    }

    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<EmuMem> {
        let ptr = NonNull::new(ptr as *mut u8)
            .ok_or_else(|| device_error("null external address".into()))?;
        // Not entered in `live`: the owner's allocation (with its red zone) is.
        Ok(EmuMem {
            ptr,
            bytes,
            layout: None,
            live: self.live.clone(),
        })
    }

    fn write(&self, mem: &mut EmuMem, offset: usize, src: &[u8]) -> Result<()> {
        mem.check(offset, src.len(), "write")?;
        // SAFETY: the allocation holds offset + src.len() ≤ mem.bytes bytes and does not overlap src.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), mem.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    fn read(&self, mem: &EmuMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        mem.check(offset, dst.len(), "read")?;
        // SAFETY: the allocation holds offset + dst.len() ≤ mem.bytes bytes and does not overlap dst.
        unsafe {
            std::ptr::copy_nonoverlapping(mem.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    fn copy(&self, src: &EmuMem, dst: &mut EmuMem, bytes: usize) -> Result<()> {
        src.check(0, bytes, "copy")?;
        dst.check(0, bytes, "copy")?;
        // SAFETY: both allocations hold ≥ bytes bytes; distinct allocations never overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr.as_ptr(), dst.ptr.as_ptr(), bytes) };
        Ok(())
    }

    fn zero(&self, mem: &mut EmuMem) -> Result<()> {
        // SAFETY: the allocation holds mem.bytes bytes.
        unsafe { std::ptr::write_bytes(mem.ptr.as_ptr(), 0, mem.bytes) };
        Ok(())
    }

    fn device_ptr(&self, mem: &EmuMem) -> u64 {
        mem.ptr.as_ptr() as u64
    }

    unsafe fn launch(
        &self,
        kernel: &'static Kernel,
        cfg: LaunchConfig,
        args: KernelArgs<'_, EmuMem>,
    ) -> Result<()> {
        let args = args.as_slice();
        let mut addresses: Vec<u64> = args
            .iter()
            .map(|a| match a {
                Arg::Value(_) => 0,
                Arg::In(m) => self.device_ptr(m),
                Arg::Out(m) => self.device_ptr(m),
            })
            .collect();
        let record = LaunchRecord {
            kernel: kernel.name,
            cfg,
            args: args
                .iter()
                .zip(&addresses)
                .map(|(a, &addr)| match a {
                    Arg::Value(b) => (a.param(), b.to_vec(), 0),
                    _ => (a.param(), Vec::new(), addr),
                })
                .collect(),
        };
        let mut params = kernel_params(&value_pointers(args), &mut addresses);
        // SAFETY: forwarded from the caller's contract (args match the kernel,
        // addresses are live EmuMem allocations of sufficient length).
        unsafe {
            cuda_emu::launch(
                kernel.module.name,
                kernel.name,
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                &mut params,
            )
        }
        .map_err(|e| device_error(format!("emulated launch: {e}")))?;
        self.count(kernel.name);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
        self.check_redzones(kernel.name)
    }

    fn has_library_fft(&self) -> bool {
        self.host_fft.load(Ordering::Relaxed)
    }

    unsafe fn library_fft2(
        &self,
        input: &EmuMem,
        output: &mut EmuMem,
        batch: Fft2Batch,
        inverse: bool,
    ) -> Result<()> {
        if !self.has_library_fft() {
            return Err(device_error(
                "no library FFT on this emulated device".into(),
            ));
        }
        // cuFFT's requirement, which the backend promises to check first.
        if !self.device_ptr(input).is_multiple_of(8) {
            return Err(device_error("library FFT input not 8-byte aligned".into()));
        }
        let (h, w) = (batch.height, batch.width);
        let mut data = vec![Complex::<f32>::default(); batch.planes * h * w];
        self.read(input, 0, bytemuck::cast_slice_mut(&mut data))?;
        let direction = if inverse {
            FftDirection::Inverse
        } else {
            FftDirection::Forward
        };
        let mut planner = FftPlanner::<f32>::new();
        let (rows, cols) = (
            planner.plan_fft(w, direction),
            planner.plan_fft(h, direction),
        );
        let mut column = vec![Complex::default(); h];
        for plane in data.chunks_mut(h * w) {
            rows.process(plane);
            for j in 0..w {
                for (i, c) in column.iter_mut().enumerate() {
                    *c = plane[i * w + j];
                }
                cols.process(&mut column);
                for (i, c) in column.iter().enumerate() {
                    plane[i * w + j] = *c;
                }
            }
        }
        self.write(output, 0, bytemuck::cast_slice(&data))?;
        self.count(LIBRARY_FFT);
        self.check_redzones(LIBRARY_FFT)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// A fresh emulated CUDA backend at the launcher's default block size, or
/// `None` after a printed skip when the harness was not built here.
pub fn new_cuda_emu() -> Option<CudaBackend<EmuDevice>> {
    match cuda_emu::unavailable() {
        Some(reason) => {
            skip("cuda-emu", reason);
            None
        }
        None => Some(CudaBackend::with_device(EmuDevice::default())),
    }
}

/// A fresh emulated backend whose device offers the host stand-in for cuFFT
/// ([`EmuDevice::set_host_fft`]), or `None` after a printed skip.
pub fn new_cuda_emu_host_fft() -> Option<CudaBackend<EmuDevice>> {
    let b = new_cuda_emu()?;
    b.device().set_host_fft(true);
    Some(b)
}

/// A fresh emulated backend with `block` threads per block and at most
/// `max_blocks` blocks (kernels grid-stride over the rest).
pub fn new_cuda_emu_with(block: u32, max_blocks: u32) -> Option<CudaBackend<EmuDevice>> {
    let mut b = new_cuda_emu()?;
    b.set_block_size(block).expect("valid block size");
    b.set_max_blocks(max_blocks).expect("valid block cap");
    Some(b)
}

/// The shared emulated backend at the launcher's default configuration.
pub fn cuda_emu() -> Option<&'static CudaBackend<EmuDevice>> {
    static B: OnceLock<Option<CudaBackend<EmuDevice>>> = OnceLock::new();
    B.get_or_init(new_cuda_emu).as_ref()
}

/// The shared emulated backend at a block size that is not a power of two
/// (96) with few blocks, so every grid-stride loop wraps several times.
pub fn cuda_emu_block_96() -> Option<&'static CudaBackend<EmuDevice>> {
    static B: OnceLock<Option<CudaBackend<EmuDevice>>> = OnceLock::new();
    B.get_or_init(|| new_cuda_emu_with(96, 5)).as_ref()
}
