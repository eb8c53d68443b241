//! The CUDA backend on the CPU emulation harness (crates/cuda-emu,
//! tests/cuda_emu): the real host launcher (`CudaBackend`) driving an
//! emulated device that runs the unmodified `kernels/*.cu` on fibers.

use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock};

use diffinv::backend::cuda::{CudaBackend, CudaDevice, LaunchConfig};
use diffinv::{Error, Result};

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
/// followed by a red zone.
pub struct EmuMem {
    ptr: NonNull<u8>,
    bytes: usize,
    layout: Layout,
    live: Arc<Mutex<BTreeMap<usize, usize>>>,
}

// SAFETY: EmuMem owns its allocation; kernels only touch it during a launch,
// which the backend's borrows of the buffer cover.
unsafe impl Send for EmuMem {}
// SAFETY: as above; shared references only read the address.
unsafe impl Sync for EmuMem {}

impl Drop for EmuMem {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.ptr.as_ptr() as usize));
        // SAFETY: allocated in `alloc_zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The emulated device: synchronous launches through `cuda_emu::launch`, an
/// out-of-bounds-write check on every live allocation after each launch, and
/// a count of launches per kernel.
#[derive(Default)]
pub struct EmuDevice {
    live: Arc<Mutex<BTreeMap<usize, usize>>>,
    launched: Mutex<HashMap<String, u64>>,
}

impl EmuDevice {
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
            layout,
            live: self.live.clone(),
        })
    }

    fn write(&self, mem: &mut EmuMem, src: &[u8]) -> Result<()> {
        if src.len() > mem.bytes {
            return Err(device_error(format!(
                "write of {} bytes into a {}-byte buffer",
                src.len(),
                mem.bytes
            )));
        }
        // SAFETY: the allocation holds mem.bytes ≥ src.len() bytes and does not overlap src.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), mem.ptr.as_ptr(), src.len()) };
        Ok(())
    }

    fn read(&self, mem: &EmuMem, dst: &mut [u8]) -> Result<()> {
        if dst.len() > mem.bytes {
            return Err(device_error(format!(
                "read of {} bytes from a {}-byte buffer",
                dst.len(),
                mem.bytes
            )));
        }
        // SAFETY: the allocation holds mem.bytes ≥ dst.len() bytes and does not overlap dst.
        unsafe { std::ptr::copy_nonoverlapping(mem.ptr.as_ptr(), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn device_ptr(&self, mem: &EmuMem) -> u64 {
        mem.ptr.as_ptr() as u64
    }

    unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        cfg: LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        // SAFETY: forwarded from the caller's contract (args match the kernel,
        // addresses are live EmuMem allocations of sufficient length).
        unsafe { cuda_emu::launch(module, kernel, cfg.grid, cfg.block, cfg.shared_bytes, args) }
            .map_err(|e| device_error(format!("emulated launch: {e}")))?;
        *self
            .launched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kernel.to_string())
            .or_default() += 1;
        self.check_redzones(kernel)
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
