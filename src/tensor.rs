//! Device tensors: a backend buffer plus its `[B, C, H, W]` shape and storage dtype.

use std::fmt;

use half::f16;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Storage type of a tensor. Math is f32 for `F16`/`F32` on every backend and
/// f64 for `F64`, which only the CPU backend offers (the oracle path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

/// Shape `[batch, channels, height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape(pub [usize; 4]);

/// Largest element count a kernel indexes: indices are u32 on the devices and
/// the state buffer holds several slots of this many elements.
pub const MAX_ELEMENTS: usize = (u32::MAX as usize) / 8;

impl Shape {
    pub fn new(b: usize, c: usize, h: usize, w: usize) -> Self {
        Shape([b, c, h, w])
    }

    /// A flat shape `[1, 1, 1, n]`, for element-wise buffers.
    pub fn flat(n: usize) -> Self {
        Shape([1, 1, 1, n])
    }

    pub fn batch(&self) -> usize {
        self.0[0]
    }

    /// Elements per batch item (`C·H·W`).
    pub fn item_len(&self) -> usize {
        self.0[1] * self.0[2] * self.0[3]
    }

    /// Total element count, or an error if it overflows or is zero.
    pub fn checked_len(&self) -> Result<usize> {
        let len = self
            .0
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::InvalidShape {
                shape: *self,
                reason: "element count overflows usize",
            })?;
        if len == 0 {
            return Err(Error::InvalidShape {
                shape: *self,
                reason: "every dimension must be at least 1",
            });
        }
        if len > MAX_ELEMENTS {
            return Err(Error::InvalidShape {
                shape: *self,
                reason: "more elements than a kernel can index (u32::MAX / 8)",
            });
        }
        Ok(len)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [b, c, h, w] = self.0;
        write!(f, "[{b}, {c}, {h}, {w}]")
    }
}

/// Host data to upload, in any storage type; the backend converts it to the
/// tensor's dtype.
#[derive(Clone, Copy, Debug)]
pub enum HostSlice<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl HostSlice<'_> {
    pub fn len(&self) -> usize {
        match self {
            HostSlice::F16(s) => s.len(),
            HostSlice::F32(s) => s.len(),
            HostSlice::F64(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Host data downloaded from a tensor, in the tensor's storage type.
#[derive(Clone, Debug, PartialEq)]
pub enum HostVec {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostVec {
    pub fn len(&self) -> usize {
        match self {
            HostVec::F16(v) => v.len(),
            HostVec::F32(v) => v.len(),
            HostVec::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Widen to f32 (exact for F16 and F32; rounds F64).
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            HostVec::F16(v) => {
                let mut out = vec![0.0f32; v.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[..], &mut out);
                out
            }
            HostVec::F32(v) => v,
            HostVec::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Widen to f64 (exact for every storage type).
    pub fn into_f64(self) -> Vec<f64> {
        match self {
            HostVec::F16(v) => {
                let mut out = vec![0.0f64; v.len()];
                half::slice::HalfFloatSliceExt::convert_to_f64_slice(&v[..], &mut out);
                out
            }
            HostVec::F32(v) => v.into_iter().map(f64::from).collect(),
            HostVec::F64(v) => v,
        }
    }
}

/// A tensor living on backend `B`.
pub struct Tensor<B: Backend> {
    pub(crate) buf: B::Buffer,
    shape: Shape,
    dtype: DType,
    len: usize,
}

impl<B: Backend> Tensor<B> {
    /// Allocate a zero-filled tensor.
    pub fn zeros(backend: &B, shape: Shape, dtype: DType) -> Result<Self> {
        let len = shape.checked_len()?;
        let buf = backend.alloc(len, dtype)?;
        Ok(Tensor {
            buf,
            shape,
            dtype,
            len,
        })
    }

    /// Allocate and upload `data`, converting to `dtype`.
    pub fn from_host(backend: &B, shape: Shape, dtype: DType, data: HostSlice<'_>) -> Result<Self> {
        let mut t = Self::zeros(backend, shape, dtype)?;
        t.upload(backend, data)?;
        Ok(t)
    }

    /// Overwrite the contents with `data` (same element count), converting to the dtype.
    pub fn upload(&mut self, backend: &B, data: HostSlice<'_>) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::LengthMismatch {
                what: "upload",
                expected: self.len,
                got: data.len(),
            });
        }
        backend.write(&mut self.buf, self.dtype, data)
    }

    /// Download the contents in the storage dtype.
    pub fn download(&self, backend: &B) -> Result<HostVec> {
        backend.read(&self.buf, self.dtype, self.len)
    }

    /// Download and widen to f32.
    pub fn to_f32(&self, backend: &B) -> Result<Vec<f32>> {
        Ok(self.download(backend)?.into_f32())
    }

    /// Download and widen to f64.
    pub fn to_f64(&self, backend: &B) -> Result<Vec<f64>> {
        Ok(self.download(backend)?.into_f64())
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: shapes with a zero dimension are rejected at allocation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend buffer, for backend-specific interop (e.g. a custom denoiser).
    pub fn buffer(&self) -> &B::Buffer {
        &self.buf
    }

    /// Mutable access to the backend buffer.
    pub fn buffer_mut(&mut self) -> &mut B::Buffer {
        &mut self.buf
    }
}
