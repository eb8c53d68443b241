//! The CPU reference backend: host memory, and the definition of every kernel
//! family as plain loops (`cpu/<family>.rs`), parallel over chunks with rayon.

mod solver;

use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;

use super::{Backend, BackendKind, BufferInfo, BufferPool, CheckedRange};
use crate::error::Result;
use crate::tensor::{Complex32, DType, HostSlice, HostVec};

/// Storage of one CPU tensor.
#[derive(Clone, Debug)]
pub enum CpuBuffer {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    C64(Vec<Complex32>),
    U32(Vec<u32>),
}

/// The reference backend.
#[derive(Default)]
pub struct CpuBackend {
    launches: AtomicU64,
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

impl CpuBuffer {
    fn dtype(&self) -> DType {
        match self {
            CpuBuffer::F16(_) => DType::F16,
            CpuBuffer::F32(_) => DType::F32,
            CpuBuffer::F64(_) => DType::F64,
            CpuBuffer::C64(_) => DType::C64,
            CpuBuffer::U32(_) => DType::U32,
        }
    }

    fn len(&self) -> usize {
        match self {
            CpuBuffer::F16(v) => v.len(),
            CpuBuffer::F32(v) => v.len(),
            CpuBuffer::F64(v) => v.len(),
            CpuBuffer::C64(v) => v.len(),
            CpuBuffer::U32(v) => v.len(),
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
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            CpuBuffer::F16(v) => bytemuck::cast_slice(v),
            CpuBuffer::F32(v) => bytemuck::cast_slice(v),
            CpuBuffer::F64(v) => bytemuck::cast_slice(v),
            CpuBuffer::C64(v) => bytemuck::cast_slice(v),
            CpuBuffer::U32(v) => bytemuck::cast_slice(v),
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
        Ok(HostVec::from_storage_bytes(
            range.dtype(),
            &buf.bytes()[range.bytes()],
        ))
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn pool(&self) -> &BufferPool<CpuBuffer> {
        &self.pool
    }
}
