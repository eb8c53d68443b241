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

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;
use half::slice::HalfFloatSliceExt;

pub use device::{CudaDevice, LaunchConfig};
pub use driver::DriverDevice;
pub use kernels::{compile_ptx, MODULES};

use super::params::SolverStepParams;
use super::{Backend, BackendKind};
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

/// Blocks for `work` items at `block` threads each, capped at `max_blocks`
/// (kernels loop grid-stride over the rest); at least one block.
pub fn launch_config(work: usize, block: u32, max_blocks: u32) -> LaunchConfig {
    let blocks = work.div_ceil(block as usize).clamp(1, max_blocks as usize) as u32;
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
        let max_blocks = device.multiprocessors().saturating_mul(16).clamp(1, 65_535);
        let mut b = Self::with_device(device);
        b.max_blocks = max_blocks;
        Ok(b)
    }
}

impl<D: CudaDevice> CudaBackend<D> {
    /// Drive an arbitrary device (e.g. the CPU emulation harness in tests).
    pub fn with_device(device: D) -> Self {
        CudaBackend {
            device,
            launches: AtomicU64::new(0),
            block_size: DEFAULT_BLOCK_SIZE,
            max_blocks: 65_535,
        }
    }

    /// The device this backend drives.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Threads per block: a multiple of 32 in 32..=1024, or any size in
    /// 1..=1024 for kernels without warp-level code (all current ones).
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

    /// Cap on blocks per launch (grid-stride beyond it).
    pub fn set_max_blocks(&mut self, max: u32) -> Result<()> {
        if !(1..=65_535).contains(&max) {
            return Err(Error::InvalidParameter {
                name: "max_blocks",
                value: f64::from(max),
                reason: "must be in 1..=65535",
            });
        }
        self.max_blocks = max;
        Ok(())
    }

    fn check_buffer(buf: &CudaBuffer<D::Mem>, dtype: DType) -> Result<()> {
        if buf.dtype != dtype {
            return Err(Error::DTypeMismatch {
                what: "cuda buffer",
                expected: dtype,
                got: buf.dtype,
            });
        }
        Ok(())
    }
}

fn unsupported(dtype: DType) -> Error {
    Error::UnsupportedDType {
        backend: "cuda",
        dtype,
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
        let mem = self.device.alloc_zeroed(len * dtype.size())?;
        Ok(CudaBuffer { mem, len, dtype })
    }

    fn write(&self, buf: &mut Self::Buffer, dtype: DType, data: HostSlice<'_>) -> Result<()> {
        Self::check_buffer(buf, dtype)?;
        if data.len() != buf.len {
            return Err(Error::LengthMismatch {
                what: "cuda write",
                expected: buf.len,
                got: data.len(),
            });
        }
        let bytes: Vec<u8> = match (dtype, data) {
            (DType::F32, HostSlice::F32(s)) => bytemuck::cast_slice(s).to_vec(),
            (DType::F32, HostSlice::F16(s)) => {
                let mut v = vec![0f32; s.len()];
                s.convert_to_f32_slice(&mut v);
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F32, HostSlice::F64(s)) => {
                let v: Vec<f32> = s.iter().map(|&x| x as f32).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F16, HostSlice::F16(s)) => bytemuck::cast_slice(s).to_vec(),
            (DType::F16, HostSlice::F32(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f32_slice(s);
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F16, HostSlice::F64(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f64_slice(s);
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F64, _) => return Err(unsupported(dtype)),
        };
        self.device.write(&mut buf.mem, &bytes)
    }

    fn read(&self, buf: &Self::Buffer, dtype: DType, len: usize) -> Result<HostVec> {
        Self::check_buffer(buf, dtype)?;
        if len > buf.len {
            return Err(Error::LengthMismatch {
                what: "cuda read",
                expected: buf.len,
                got: len,
            });
        }
        let mut bytes = vec![0u8; len * dtype.size()];
        self.device.read(&buf.mem, &mut bytes)?;
        Ok(match dtype {
            DType::F32 => HostVec::F32(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => HostVec::F16(bytemuck::pod_collect_to_vec(&bytes)),
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
        // n and stride fit u32: Shape::checked_len caps element counts at u32::MAX / 8.
        let mut params = SolverStepParams::new(step, launch, n as u32, stride as u32);
        let mut x_ptr = self.device.device_ptr(&x.mem);
        let mut m_ptr = self.device.device_ptr(&model_out.mem);
        let mut s_ptr = self.device.device_ptr(&state.mem);
        let mut args: [*mut c_void; 4] = [
            (&mut params as *mut SolverStepParams).cast(),
            (&mut x_ptr as *mut u64).cast(),
            (&mut m_ptr as *mut u64).cast(),
            (&mut s_ptr as *mut u64).cast(),
        ];
        let cfg = launch_config(work, self.block_size, self.max_blocks);
        // SAFETY: `backend::solver_step` checked that x and model_out hold n elements and
        // state holds slots_used·stride elements of `dtype`, which are exactly the ranges the
        // kernel touches for these params; the four args match the kernel's parameter list
        // (params by value, then three device pointers) and outlive the launch call.
        unsafe { self.device.launch("solver", kernel, cfg, &mut args)? };
        self.launches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
