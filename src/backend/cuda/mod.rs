//! The CUDA backend: `kernels/*.cu` compiled at first use by NVRTC for the
//! device's architecture, launched through cudarc (libraries loaded at run time).
//!
//! The host launcher ([`CudaBackend`]) is generic over a [`CudaDevice`]: the
//! real driver ([`DriverDevice`]) or the CPU emulation harness the tests use,
//! so buffer sizing, launch configuration and argument packing are the same
//! code in both.

mod blas;
mod cufft;
pub mod device;
mod dnn;
mod driver;
mod external;
mod fft;
mod guidance;
pub mod kernels;
mod krylov;
pub mod launch;
mod nn;
mod operator;
mod raw_context;
mod solver;

use std::sync::atomic::{AtomicU64, Ordering};

pub use cufft::DISABLE_VAR as CUFFT_DISABLE_VAR;
pub use device::{CudaDevice, Fft2Batch, LaunchConfig, VendorConv, VendorGemm};
pub use dnn::DISABLE_VAR as CUDNN_DISABLE_VAR;
pub use driver::{driver_installed, DriverDevice, DriverMem};
pub use external::required_alignment;
pub use kernels::{compile_cubin, compile_ptx, KERNELS, MODULES};
pub use launch::{Arg, Kernel, KernelArgs, Module, Param};

use super::{Backend, BackendKind, BufferInfo, BufferPool, CheckedRange};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, HostVec};

/// Threads per block of every launch unless changed with [`CudaBackend::set_block_size`].
pub const DEFAULT_BLOCK_SIZE: u32 = 256;

/// A tensor's storage on a CUDA device.
pub struct CudaBuffer<M> {
    mem: M,
    len: usize,
    dtype: DType,
}

/// The CUDA backend over device `D`.
pub struct CudaBackend<D: CudaDevice = DriverDevice> {
    device: D,
    launches: AtomicU64,
    host_syncs: AtomicU64,
    block_size: u32,
    max_blocks: u32,
    /// Whether 2-D FFTs use the device's library (cuFFT) when it has one.
    library_fft: bool,
    /// Whether conv2d uses the device's convolution library (cuDNN) when it
    /// has one and it serves the call.
    library_conv: bool,
    pool: BufferPool<CudaBuffer<D::Mem>>,
}

/// Most blocks one launch may have (the x-dimension limit is higher on every
/// GPU since sm_30, but this keeps the emulation harness and old limits happy;
/// kernels loop grid-stride over the rest).
pub const MAX_GRID_BLOCKS: u32 = 65_535;

/// Largest element index range a launch may cover: kernels index with u32 and
/// step `i += blockDim·gridDim` (≤ 2^26), which must not wrap.
pub const MAX_LAUNCH_ELEMENTS: usize = (u32::MAX / 2) as usize;

/// The launch for `work` independent items at `block` threads per block:
/// `ceil(work / block)` blocks capped at `max_blocks` (kernels loop
/// grid-stride over the rest), at least one block. `block` and `max_blocks`
/// of 0 are treated as 1.
pub fn launch_config(work: usize, block: u32, max_blocks: u32) -> LaunchConfig {
    let block = block.max(1);
    let cap = max_blocks.max(1) as usize;
    let blocks = work.div_ceil(block as usize).clamp(1, cap) as u32;
    LaunchConfig {
        grid: (blocks, 1, 1),
        block: (block, 1, 1),
        shared_bytes: 0,
    }
}

impl CudaBackend<DriverDevice> {
    /// Open GPU `ordinal`. Without a driver, library or device this returns
    /// [`Error::BackendUnavailable`]; it never panics.
    pub fn new(ordinal: usize) -> Result<Self> {
        let device = DriverDevice::open(ordinal)?;
        // 16 blocks of 256 threads per SM fill it (2048 resident threads) with
        // room for the tail; more blocks only add scheduling work.
        let max_blocks = device
            .multiprocessors()
            .saturating_mul(16)
            .clamp(1, MAX_GRID_BLOCKS);
        let mut b = Self::with_device(device);
        b.max_blocks = max_blocks;
        Ok(b)
    }
}

impl<D: CudaDevice> CudaBackend<D> {
    /// Drive an arbitrary device (e.g. the CPU emulation harness in tests),
    /// with [`DEFAULT_BLOCK_SIZE`] threads per block and at most
    /// [`MAX_GRID_BLOCKS`] blocks per launch.
    pub fn with_device(device: D) -> Self {
        CudaBackend {
            device,
            launches: AtomicU64::new(0),
            host_syncs: AtomicU64::new(0),
            block_size: DEFAULT_BLOCK_SIZE,
            max_blocks: MAX_GRID_BLOCKS,
            library_fft: true,
            library_conv: true,
            pool: BufferPool::default(),
        }
    }

    /// The device this backend drives.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Threads per block of every launch.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Set the threads per block, any size in 1..=1024: no current kernel uses
    /// warp-level code, so sizes that are not multiples of 32 (or powers of
    /// two) are valid too — the emulation tests run one to prove it.
    pub fn set_block_size(&mut self, block: u32) -> Result<()> {
        if !(1..=1024).contains(&block) {
            return Err(Error::InvalidParameter {
                name: "block_size",
                value: f64::from(block),
                reason: "must be in 1..=1024",
            });
        }
        self.block_size = block;
        Ok(())
    }

    /// Cap on blocks per launch (kernels loop grid-stride beyond it).
    pub fn max_blocks(&self) -> u32 {
        self.max_blocks
    }

    /// Set the cap on blocks per launch, in `1..=MAX_GRID_BLOCKS`; a small cap
    /// makes tests exercise the grid-stride loops.
    pub fn set_max_blocks(&mut self, max: u32) -> Result<()> {
        if !(1..=MAX_GRID_BLOCKS).contains(&max) {
            return Err(Error::InvalidParameter {
                name: "max_blocks",
                value: f64::from(max),
                reason: "must be in 1..=65535",
            });
        }
        self.max_blocks = max;
        Ok(())
    }

    /// Whether 2-D FFTs may run through the device's FFT library (cuFFT on a
    /// GPU where libcufft loads; the default) or always on the crate's own
    /// kernels (`false`), e.g. to compare the two.
    /// [`crate::ops::FftOps::fft_path`] says which one runs.
    pub fn set_library_fft(&mut self, allowed: bool) {
        self.library_fft = allowed;
    }

    /// Whether f32 convolutions may run through the device's convolution
    /// library (cuDNN on a GPU where libcudnn loads; the default) or always
    /// on the crate's own kernel (`false`), e.g. to compare the two in one
    /// process. `DIFFINV_CUDNN=0` ([`CUDNN_DISABLE_VAR`]) keeps cuDNN
    /// unloaded altogether.
    pub fn set_library_conv(&mut self, allowed: bool) {
        self.library_conv = allowed;
    }

    /// The launch this backend issues for `work` items.
    pub fn launch_config(&self, work: usize) -> LaunchConfig {
        launch_config(work, self.block_size, self.max_blocks)
    }

    /// Launch `kernel` over `work` independent items (grid-stride beyond the
    /// block cap) after checking `args` against its declared signature.
    ///
    /// # Safety
    /// Every buffer in `args` must hold what the kernel touches for `work`
    /// items and the params block it is given.
    pub(crate) unsafe fn launch(
        &self,
        kernel: &'static Kernel,
        work: usize,
        args: KernelArgs<'_, D::Mem>,
    ) -> Result<()> {
        args.check(kernel)?;
        if work > MAX_LAUNCH_ELEMENTS {
            return Err(Error::TooManyWorkItems {
                backend: "cuda",
                items: work as u64,
                limit: MAX_LAUNCH_ELEMENTS as u64,
            });
        }
        let cfg = self.launch_config(work);
        // SAFETY: forwarded from the caller's contract; the signature was checked.
        unsafe { self.launch_with(kernel, cfg, args) }
    }

    /// Launch `kernel` on an explicit `grid` of blocks of the backend's block
    /// size (kernels that own a fixed slice of the data per block, such as the
    /// CG reductions), after checking `args` against its signature.
    ///
    /// # Safety
    /// Every buffer in `args` must hold what the kernel touches on that grid.
    pub(crate) unsafe fn launch_grid(
        &self,
        kernel: &'static Kernel,
        grid: (u32, u32, u32),
        args: KernelArgs<'_, D::Mem>,
    ) -> Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.launch_blocks(kernel, grid, self.block_size, args) }
    }

    /// Launch `kernel` on an explicit `grid` of blocks of `block` threads
    /// whatever the backend's block size: kernels whose thread layout is
    /// fixed (the GEMM tiles of the nn family), after checking `args`
    /// against its signature.
    ///
    /// # Safety
    /// Every buffer in `args` must hold what the kernel touches on that grid.
    pub(crate) unsafe fn launch_blocks(
        &self,
        kernel: &'static Kernel,
        grid: (u32, u32, u32),
        block: u32,
        args: KernelArgs<'_, D::Mem>,
    ) -> Result<()> {
        args.check(kernel)?;
        let cfg = LaunchConfig {
            grid,
            block: (block, 1, 1),
            shared_bytes: 0,
        };
        // SAFETY: forwarded from the caller's contract; the signature was checked.
        unsafe { self.launch_with(kernel, cfg, args) }
    }

    /// # Safety
    /// As [`CudaBackend::launch`], for `cfg`.
    unsafe fn launch_with(
        &self,
        kernel: &'static Kernel,
        cfg: LaunchConfig,
        args: KernelArgs<'_, D::Mem>,
    ) -> Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.device.launch(kernel, cfg, args)? };
        self.count_launch();
        Ok(())
    }

    /// One more launch on the counter: a kernel, or a vendor library call
    /// that stands in for one.
    fn count_launch(&self) {
        self.launches.fetch_add(1, Ordering::Relaxed);
    }
}

impl<M> CudaBuffer<M> {
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }
}

fn unsupported(dtype: DType) -> Error {
    Error::UnsupportedDType {
        backend: "cuda",
        dtype,
    }
}

fn too_large(elements: usize, dtype: DType, limit_elements: usize) -> Error {
    let bytes = |n: usize| (n as u64).saturating_mul(dtype.size() as u64);
    Error::TooLarge {
        backend: "cuda",
        bytes: bytes(elements),
        limit: bytes(limit_elements),
    }
}

impl<D: CudaDevice> Backend for CudaBackend<D> {
    type Buffer = CudaBuffer<D::Mem>;

    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn device_name(&self) -> String {
        self.device.name()
    }

    fn supports(&self, dtype: DType) -> bool {
        dtype != DType::F64
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<Self::Buffer> {
        if !self.supports(dtype) {
            return Err(unsupported(dtype));
        }
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| too_large(len, dtype, usize::MAX / dtype.size()))?;
        let mem = self.device.alloc_zeroed(bytes)?;
        Ok(CudaBuffer { mem, len, dtype })
    }

    fn buffer_info(buf: &Self::Buffer) -> BufferInfo {
        BufferInfo {
            dtype: buf.dtype,
            len: buf.len,
        }
    }

    fn zero(&self, buf: &mut Self::Buffer) -> Result<()> {
        self.device.zero(&mut buf.mem)
    }

    fn copy_checked(&self, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<()> {
        self.device
            .copy(&src.mem, &mut dst.mem, src.len * src.dtype.size())
    }

    fn write_checked(
        &self,
        buf: &mut Self::Buffer,
        range: CheckedRange,
        data: HostSlice<'_>,
    ) -> Result<()> {
        // Same dtype: upload the caller's slice as is; otherwise convert once.
        let bytes = data.storage_bytes(range.dtype())?;
        self.device.write(&mut buf.mem, range.bytes().start, &bytes)
    }

    fn read_checked(&self, buf: &Self::Buffer, range: CheckedRange) -> Result<HostVec> {
        self.host_syncs.fetch_add(1, Ordering::Relaxed);
        // Read straight into the typed vector's bytes.
        let mut out = HostVec::zeroed(range.dtype(), range.len());
        self.device
            .read(&buf.mem, range.bytes().start, out.bytes_mut())?;
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        self.host_syncs.fetch_add(1, Ordering::Relaxed);
        self.device.synchronize()
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn host_sync_count(&self) -> u64 {
        self.host_syncs.load(Ordering::Relaxed)
    }

    fn pool(&self) -> &BufferPool<Self::Buffer> {
        &self.pool
    }
}
