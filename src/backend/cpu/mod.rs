//! The CPU reference backend: host memory, and the definition of every kernel
//! family as plain loops (`cpu/<family>.rs`), parallel over chunks with rayon.

/// The body of a family's checked launch on the CPU: `$body::<S>(call)` for
/// the call's real storage dtype (`None` if a buffer is not of it, which the
/// checked call rules out), then one launch counted.
macro_rules! launch_on_storage {
    ($backend:expr, $dtype:expr, $body:ident($($arg:expr),*)) => {{
        let dtype = $dtype;
        match dtype {
            DType::F16 => $body::<half::f16>($($arg),*),
            DType::F32 => $body::<f32>($($arg),*),
            DType::F64 => $body::<f64>($($arg),*),
            DType::C64 | DType::U32 => None,
        }
        .ok_or(Error::UnsupportedDType {
            backend: "cpu",
            dtype,
        })?;
        $backend.count_launch();
        Ok(())
    }};
}

mod external;
mod fft;
mod guidance;
mod krylov;
mod nn;
mod operator;
mod solver;

use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;

use super::{Backend, BackendKind, BufferInfo, BufferPool, CheckedRange};
use crate::error::Result;
use crate::rng;
use crate::tensor::{Complex32, DType, HostSlice, HostVec};

pub use external::{scope, ExternalHost, HostElement, Scope};

/// Storage of one CPU tensor.
#[derive(Debug)]
pub enum CpuBuffer {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    C64(Vec<Complex32>),
    U32(Vec<u32>),
    /// Memory the caller owns ([`scope`], [`CpuBuffer::from_raw_parts`]).
    External(ExternalHost),
}

/// A clone owns its data: cloning an external buffer copies the caller's
/// memory instead of duplicating the borrow.
impl Clone for CpuBuffer {
    fn clone(&self) -> Self {
        match self {
            CpuBuffer::F16(v) => CpuBuffer::F16(v.clone()),
            CpuBuffer::F32(v) => CpuBuffer::F32(v.clone()),
            CpuBuffer::F64(v) => CpuBuffer::F64(v.clone()),
            CpuBuffer::C64(v) => CpuBuffer::C64(v.clone()),
            CpuBuffer::U32(v) => CpuBuffer::U32(v.clone()),
            CpuBuffer::External(e) => e.to_owned_buffer(),
        }
    }
}

/// The reference backend.
#[derive(Default)]
pub struct CpuBackend {
    launches: AtomicU64,
    host_syncs: AtomicU64,
    pool: BufferPool<CpuBuffer>,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// One kernel (fused pass) has run.
    fn count_launch(&self) {
        self.launches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Elements per row of the generic path's scratch (and of the zero row that
/// stands in for an absent history slot): the rows of one piece stay in L1/L2.
pub(super) const ROW: usize = 4096;

/// The arithmetic type a storage type computes in.
pub(super) trait Math:
    'static
    + Copy
    + Send
    + Sync
    + PartialEq
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Div<Output = Self>
    + PartialOrd
{
    const ZERO: Self;
    /// A row of zeros, read where a history slot is absent (the kernels read 0 there).
    const ZERO_ROW: &'static [Self; ROW];
    fn from_f64(v: f64) -> Self;
    fn normal(seed: u64, step: u32, index: u32) -> Self;
}

impl Math for f32 {
    const ZERO: Self = 0.0;
    const ZERO_ROW: &'static [Self; ROW] = &[0.0; ROW];
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn normal(seed: u64, step: u32, index: u32) -> Self {
        rng::normal_f32(seed, step, index)
    }
}

impl Math for f64 {
    const ZERO: Self = 0.0;
    const ZERO_ROW: &'static [Self; ROW] = &[0.0; ROW];
    fn from_f64(v: f64) -> Self {
        v
    }
    fn normal(seed: u64, step: u32, index: u32) -> Self {
        rng::normal_f64(seed, step, index)
    }
}

/// `Element::slice` / `slice_mut` for the `CpuBuffer` variant holding `Self`.
macro_rules! buffer_variant {
    ($variant:ident) => {
        fn slice(buf: &CpuBuffer) -> Option<&[Self]> {
            match buf {
                CpuBuffer::$variant(v) => Some(v),
                CpuBuffer::External(e) => e.slice(),
                _ => None,
            }
        }
        fn slice_mut(buf: &mut CpuBuffer) -> Option<&mut [Self]> {
            match buf {
                CpuBuffer::$variant(v) => Some(v),
                CpuBuffer::External(e) => e.slice_mut(),
                _ => None,
            }
        }
    };
}

/// A real storage element of a CPU buffer and the type it computes in: f32 for
/// f16 and f32 storage, f64 for f64 (the oracle path).
pub(super) trait Element: Copy + Send + Sync {
    type M: Math;
    /// The dtype of buffers of `Self`.
    const DTYPE: DType;
    /// The buffer's elements, if it stores `Self`.
    fn slice(buf: &CpuBuffer) -> Option<&[Self]>;
    fn slice_mut(buf: &mut CpuBuffer) -> Option<&mut [Self]>;
    fn to_math(self) -> Self::M;
    /// Round to the storage type (nearest even, like the devices).
    fn from_math(v: Self::M) -> Self;
}

impl Element for f16 {
    type M = f32;
    const DTYPE: DType = DType::F16;
    buffer_variant!(F16);
    fn to_math(self) -> f32 {
        self.to_f32()
    }
    fn from_math(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for f32 {
    type M = f32;
    const DTYPE: DType = DType::F32;
    buffer_variant!(F32);
    fn to_math(self) -> f32 {
        self
    }
    fn from_math(v: f32) -> Self {
        v
    }
}

impl Element for f64 {
    type M = f64;
    const DTYPE: DType = DType::F64;
    buffer_variant!(F64);
    fn to_math(self) -> f64 {
        self
    }
    fn from_math(v: f64) -> Self {
        v
    }
}

impl CpuBuffer {
    fn dtype(&self) -> DType {
        match self {
            CpuBuffer::F16(_) => DType::F16,
            CpuBuffer::F32(_) => DType::F32,
            CpuBuffer::F64(_) => DType::F64,
            CpuBuffer::C64(_) => DType::C64,
            CpuBuffer::U32(_) => DType::U32,
            CpuBuffer::External(e) => e.dtype(),
        }
    }

    fn len(&self) -> usize {
        match self {
            CpuBuffer::F16(v) => v.len(),
            CpuBuffer::F32(v) => v.len(),
            CpuBuffer::F64(v) => v.len(),
            CpuBuffer::C64(v) => v.len(),
            CpuBuffer::U32(v) => v.len(),
            CpuBuffer::External(e) => e.len(),
        }
    }

    /// The storage bytes of the whole buffer.
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            CpuBuffer::F16(v) => bytemuck::cast_slice_mut(v),
            CpuBuffer::F32(v) => bytemuck::cast_slice_mut(v),
            CpuBuffer::F64(v) => bytemuck::cast_slice_mut(v),
            CpuBuffer::C64(v) => bytemuck::cast_slice_mut(v),
            CpuBuffer::U32(v) => bytemuck::cast_slice_mut(v),
            CpuBuffer::External(e) => e.bytes_mut(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            CpuBuffer::F16(v) => bytemuck::cast_slice(v),
            CpuBuffer::F32(v) => bytemuck::cast_slice(v),
            CpuBuffer::F64(v) => bytemuck::cast_slice(v),
            CpuBuffer::C64(v) => bytemuck::cast_slice(v),
            CpuBuffer::U32(v) => bytemuck::cast_slice(v),
            CpuBuffer::External(e) => e.bytes(),
        }
    }
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device_name(&self) -> String {
        format!("host CPU ({} threads)", rayon::current_num_threads())
    }

    fn supports(&self, _dtype: DType) -> bool {
        true
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<CpuBuffer> {
        Ok(match dtype {
            DType::F16 => CpuBuffer::F16(vec![f16::ZERO; len]),
            DType::F32 => CpuBuffer::F32(vec![0.0; len]),
            DType::F64 => CpuBuffer::F64(vec![0.0; len]),
            DType::C64 => CpuBuffer::C64(vec![Complex32::new(0.0, 0.0); len]),
            DType::U32 => CpuBuffer::U32(vec![0; len]),
        })
    }

    fn buffer_info(buf: &CpuBuffer) -> BufferInfo {
        BufferInfo {
            dtype: buf.dtype(),
            len: buf.len(),
        }
    }

    fn zero(&self, buf: &mut CpuBuffer) -> Result<()> {
        // All-zero bits are +0.0 in every storage type.
        buf.bytes_mut().fill(0);
        Ok(())
    }

    fn copy_checked(&self, src: &CpuBuffer, dst: &mut CpuBuffer) -> Result<()> {
        dst.bytes_mut().copy_from_slice(src.bytes());
        Ok(())
    }

    fn write_checked(
        &self,
        buf: &mut CpuBuffer,
        range: CheckedRange,
        data: HostSlice<'_>,
    ) -> Result<()> {
        let bytes = data.storage_bytes(range.dtype())?;
        buf.bytes_mut()[range.bytes()].copy_from_slice(&bytes);
        Ok(())
    }

    fn read_checked(&self, buf: &CpuBuffer, range: CheckedRange) -> Result<HostVec> {
        self.host_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(HostVec::from_storage_bytes(
            range.dtype(),
            &buf.bytes()[range.bytes()],
        ))
    }

    fn synchronize(&self) -> Result<()> {
        self.host_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn host_sync_count(&self) -> u64 {
        self.host_syncs.load(Ordering::Relaxed)
    }

    fn pool(&self) -> &BufferPool<CpuBuffer> {
        &self.pool
    }
}
