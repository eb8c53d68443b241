//! The CUDA backend: `kernels/*.cu` compiled at first use by NVRTC for the
//! device's architecture, launched through cudarc (libraries loaded at run time).
//!
//! The host launcher ([`CudaBackend`]) is generic over a [`CudaDevice`]: the
//! real driver ([`DriverDevice`]) or the CPU emulation harness the tests use,
//! so buffer sizing, launch configuration and argument packing are the same
//! code in both.

pub mod device;
mod driver;
pub mod kernels;

use std::borrow::Cow;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;
use half::slice::HalfFloatSliceExt;

pub use device::{CudaDevice, LaunchConfig};
pub use driver::DriverDevice;
pub use kernels::{compile_cubin, compile_ptx, MODULES};

use super::params::SolverStepParams;
use super::{check_raw_step, Backend, BackendKind, RawBuffer};
use crate::error::{Error, Result};
use crate::solver::{SolverStep, StepLaunch};
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
    block_size: u32,
    max_blocks: u32,
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
            block_size: DEFAULT_BLOCK_SIZE,
            max_blocks: MAX_GRID_BLOCKS,
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

    /// The launch this backend issues for `work` items.
    pub fn launch_config(&self, work: usize) -> LaunchConfig {
        launch_config(work, self.block_size, self.max_blocks)
    }

    /// A buffer of `dtype` with at least `len` elements.
    fn check_buffer(
        what: &'static str,
        buf: &CudaBuffer<D::Mem>,
        dtype: DType,
        len: usize,
    ) -> Result<()> {
        buf.describe(what).check(dtype, len)
    }
}

impl<M> CudaBuffer<M> {
    fn describe(&self, what: &'static str) -> RawBuffer {
        RawBuffer {
            what,
            dtype: self.dtype,
            len: self.len,
        }
    }

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
        if dtype == DType::F64 {
            return Err(unsupported(dtype));
        }
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| too_large(len, dtype, usize::MAX / dtype.size()))?;
        let mem = self.device.alloc_zeroed(bytes)?;
        Ok(CudaBuffer { mem, len, dtype })
    }

    fn write(&self, buf: &mut Self::Buffer, dtype: DType, data: HostSlice<'_>) -> Result<()> {
        Self::check_buffer("cuda write", buf, dtype, 0)?;
        if data.len() != buf.len {
            return Err(Error::LengthMismatch {
                what: "cuda write",
                expected: buf.len,
                got: data.len(),
            });
        }
        // Same dtype: upload the caller's slice as is; otherwise convert once
        // (F16C-accelerated for f16 ↔ f32 in `half`).
        let bytes: Cow<'_, [u8]> = match (dtype, data) {
            (DType::F32, HostSlice::F32(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::F32, HostSlice::F16(s)) => {
                let mut v = vec![0f32; s.len()];
                s.convert_to_f32_slice(&mut v);
                Cow::Owned(bytemuck::cast_slice(&v).to_vec())
            }
            (DType::F32, HostSlice::F64(s)) => {
                let v: Vec<f32> = s.iter().map(|&x| x as f32).collect();
                Cow::Owned(bytemuck::cast_slice(&v).to_vec())
            }
            (DType::F16, HostSlice::F16(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::F16, HostSlice::F32(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f32_slice(s);
                Cow::Owned(bytemuck::cast_slice(&v).to_vec())
            }
            (DType::F16, HostSlice::F64(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f64_slice(s);
                Cow::Owned(bytemuck::cast_slice(&v).to_vec())
            }
            (DType::F64, _) => return Err(unsupported(dtype)),
        };
        self.device.write(&mut buf.mem, &bytes)
    }

    fn read(&self, buf: &Self::Buffer, dtype: DType, len: usize) -> Result<HostVec> {
        Self::check_buffer("cuda read", buf, dtype, len)?;
        // Read straight into the typed vector's bytes.
        Ok(match dtype {
            DType::F32 => {
                let mut v = vec![0f32; len];
                self.device
                    .read(&buf.mem, bytemuck::cast_slice_mut(&mut v))?;
                HostVec::F32(v)
            }
            DType::F16 => {
                let mut v = vec![f16::ZERO; len];
                self.device
                    .read(&buf.mem, bytemuck::cast_slice_mut(&mut v))?;
                HostVec::F16(v)
            }
            DType::F64 => return Err(unsupported(dtype)),
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.device.synchronize()
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn solver_step_raw(
        &self,
        step: &SolverStep,
        launch: StepLaunch,
        dtype: DType,
        n: usize,
        stride: usize,
        x: &mut Self::Buffer,
        model_out: &Self::Buffer,
        state: &mut Self::Buffer,
    ) -> Result<()> {
        let (kernel, work) = match dtype {
            // One thread per f16 pair (plus the odd tail element, done by thread 0).
            DType::F16 => ("solver_step_f16", n.div_ceil(2)),
            DType::F32 => ("solver_step_f32", n),
            DType::F64 => return Err(unsupported(dtype)),
        };
        let state_len = check_raw_step(
            step,
            dtype,
            n,
            stride,
            [
                x.describe("x"),
                model_out.describe("model output"),
                state.describe("solver state"),
            ],
        )?;
        for len in [n, state_len] {
            if len > MAX_LAUNCH_ELEMENTS {
                return Err(too_large(len, dtype, MAX_LAUNCH_ELEMENTS));
            }
        }

        // Both fit u32: checked against MAX_LAUNCH_ELEMENTS above.
        let mut params = SolverStepParams::new(step, launch, n as u32, stride as u32);
        let mut x_ptr = self.device.device_ptr(&x.mem);
        let mut m_ptr = self.device.device_ptr(&model_out.mem);
        let mut s_ptr = self.device.device_ptr(&state.mem);
        // cuLaunchKernel's kernelParams: one pointer per parameter, at its value.
        let mut args: [*mut c_void; 4] = [
            (&mut params as *mut SolverStepParams).cast(),
            (&mut x_ptr as *mut u64).cast(),
            (&mut m_ptr as *mut u64).cast(),
            (&mut s_ptr as *mut u64).cast(),
        ];
        let cfg = self.launch_config(work);
        // SAFETY: checked just above: x and model_out hold ≥ n elements of `dtype`,
        // state holds ≥ slots_used·stride elements with stride ≥ n and a multiple of
        // 64 (so f16 pairs are 4-byte aligned in every slot), and `SolverStepParams::new`
        // names only slots < slots_used. The kernel touches element i < n of x, of
        // model_out and of each named slot, nothing else. The four args match
        // `solver_step_{f16,f32}(SolverStepParams, T*, const T*, T*)` and outlive
        // the call; x and state are exclusively borrowed for it, and model_out is
        // a distinct buffer (the borrows guarantee no aliasing).
        unsafe { self.device.launch("solver", kernel, cfg, &mut args)? };
        self.launches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
