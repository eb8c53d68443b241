//! CPU emulation of diffinv's CUDA kernels, for tests on machines without a GPU.
//!
//! The build script compiles the unmodified `kernels/*.cu` (and the harness's
//! own `tests/cuda_emu/selftest.cu`) with g++ against a CUDA shim
//! (`tests/cuda_emu/include`). [`launch`] runs one kernel synchronously: every
//! CUDA thread is a fiber, blocks run one after another, and a barrier or
//! full-mask warp operation that some threads can never reach — or a shuffle
//! reading a lane that does not exist — fails the launch with a message naming
//! the kernel, the block and the source line.
//!
//! Without the toolchain (g++ with C++20 and `_Float16`, boost.context) the
//! crate still builds and [`unavailable`] says why.

use std::ffi::{c_void, CString};
use std::fmt;

/// A failed emulated launch: bad configuration, unknown kernel, deadlock,
/// unsupported warp operation, or the harness being unavailable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuError {
    pub message: String,
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EmuError {}

fn err(message: impl Into<String>) -> EmuError {
    EmuError {
        message: message.into(),
    }
}

/// One kernel the harness can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// File stem of the `.cu` file (`solver` for `kernels/solver.cu`).
    pub module: String,
    pub name: String,
    /// Number of kernel parameters (the length `launch` expects of `args`).
    pub params: usize,
}

/// Why the harness was not built on this machine, or `None` when it was.
pub fn unavailable() -> Option<&'static str> {
    #[cfg(cuda_emu_unavailable)]
    return Some(env!("CUDA_EMU_UNAVAILABLE"));
    #[cfg(not(cuda_emu_unavailable))]
    None
}

#[cfg(not(cuda_emu_unavailable))]
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};
    extern "C" {
        pub fn cuda_emu_launch(
            module: *const c_char,
            kernel: *const c_char,
            grid: *const c_uint,
            block: *const c_uint,
            shared_bytes: c_uint,
            args: *mut *mut c_void,
            nargs: usize,
            err: *mut c_char,
            err_cap: usize,
        ) -> c_int;
        pub fn cuda_emu_kernel_count() -> usize;
        pub fn cuda_emu_kernel_info(
            i: usize,
            module: *mut *const c_char,
            kernel: *mut *const c_char,
            nparams: *mut usize,
        ) -> c_int;
    }
}

/// Every kernel compiled into the harness (empty when it is unavailable).
pub fn kernels() -> Vec<KernelInfo> {
    #[cfg(cuda_emu_unavailable)]
    return Vec::new();
    #[cfg(not(cuda_emu_unavailable))]
    {
        // SAFETY: the registry is static; the count and the indices below it are valid,
        // and the returned names are NUL-terminated static strings.
        unsafe {
            (0..ffi::cuda_emu_kernel_count())
                .filter_map(|i| {
                    let (mut m, mut k, mut n) = (std::ptr::null(), std::ptr::null(), 0usize);
                    if ffi::cuda_emu_kernel_info(i, &mut m, &mut k, &mut n) != 0 {
                        return None;
                    }
                    Some(KernelInfo {
                        module: std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned(),
                        name: std::ffi::CStr::from_ptr(k).to_string_lossy().into_owned(),
                        params: n,
                    })
                })
                .collect()
        }
    }
}

/// Run `kernel` of `module` (`kernels/<module>.cu`) on the CPU, synchronously.
///
/// `args` is packed like `cuLaunchKernel`'s `kernelParams`: one pointer per
/// kernel parameter, pointing at its value; pointer parameters hold host
/// addresses. Blocks run in x, y, z order, each to completion.
///
/// # Safety
/// `args` must match the kernel's parameter list in order and type (the count
/// is checked), and every address in it must point at memory valid for all
/// the reads and writes the kernel makes for these arguments.
pub unsafe fn launch(
    module: &str,
    kernel: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_bytes: u32,
    args: &mut [*mut c_void],
) -> Result<(), EmuError> {
    if let Some(reason) = unavailable() {
        return Err(err(format!("cuda-emu unavailable: {reason}")));
    }
    let c_module = CString::new(module).map_err(|_| err("module name contains NUL"))?;
    let c_kernel = CString::new(kernel).map_err(|_| err("kernel name contains NUL"))?;
    let grid = [grid.0, grid.1, grid.2];
    let block = [block.0, block.1, block.2];
    #[cfg(cuda_emu_unavailable)]
    {
        let _ = (c_module, c_kernel, grid, block, shared_bytes, args);
        Err(err("cuda-emu unavailable"))
    }
    #[cfg(not(cuda_emu_unavailable))]
    {
        let mut msg = vec![0u8; 4096];
        // SAFETY: names are NUL-terminated, grid/block hold 3 values, args has
        // args.len() entries whose validity the caller guarantees, and msg has room
        // for msg.len() bytes including the terminating NUL.
        let rc = unsafe {
            ffi::cuda_emu_launch(
                c_module.as_ptr(),
                c_kernel.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                shared_bytes,
                args.as_mut_ptr(),
                args.len(),
                msg.as_mut_ptr().cast(),
                msg.len(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
        Err(err(String::from_utf8_lossy(&msg[..end]).into_owned()))
    }
}
