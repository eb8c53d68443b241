//! What the CUDA backend needs from a device, so the same host launcher code
//! drives a real GPU (through cudarc) and the CPU emulation harness used in tests.

use crate::error::Result;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// A device that stores bytes and launches the kernels of `kernels/*.cu` by name.
///
/// Arguments are packed exactly as `cuLaunchKernel`'s `kernelParams`: one
/// pointer per kernel parameter, pointing at the parameter's value (a params
/// struct, or a device address from [`CudaDevice::device_ptr`]).
pub trait CudaDevice: Send + Sync {
    /// Device memory of one buffer.
    type Mem: Send + Sync;

    /// Human-readable device name.
    fn name(&self) -> String;

    /// Allocate `bytes` zeroed bytes.
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Mem>;

    /// Copy `src` into the start of `mem`.
    fn write(&self, mem: &mut Self::Mem, src: &[u8]) -> Result<()>;

    /// Copy the start of `mem` into `dst` (waits for pending work).
    fn read(&self, mem: &Self::Mem, dst: &mut [u8]) -> Result<()>;

    /// The address kernels see for `mem`.
    fn device_ptr(&self, mem: &Self::Mem) -> u64;

    /// Launch `kernel` (an `extern "C"` entry point of `source`, a `kernels/*.cu` file
    /// named by `module`) with packed arguments.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in count, order and type, and
    /// every device address in it must point at a live buffer at least as long as
    /// the kernel reads or writes for the launch's params.
    unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        cfg: LaunchConfig,
        args: &mut [*mut std::ffi::c_void],
    ) -> Result<()>;

    /// Wait for all launched work.
    fn synchronize(&self) -> Result<()>;
}
