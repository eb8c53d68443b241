//! Device tensors: a backend buffer plus an N-d shape and a storage dtype;
//! views into one buffer (offset + shape) without a copy; pooled temporaries.

use std::borrow::Cow;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

use half::f16;
use half::slice::HalfFloatSliceExt;
pub use num_complex::Complex32;

use crate::backend::{Backend, BufferPool};
use crate::error::{Error, Result};

/// Storage type of a tensor. Math is f32 for `F16`/`F32`/`C64` on every backend
/// and f64 for `F64`, which only the CPU backend offers (the oracle path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    F32,
    F64,
    /// Interleaved complex64: (re, im) as two f32, one element per pair — the
    /// layout of k-space data and complex images (MRI).
    C64,
    /// Unsigned 32-bit integers: index tables (kept-pixel lists, ranks) that
    /// kernels read. Stored, never computed on.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 => 4,
            DType::F64 | DType::C64 => 8,
        }
    }

    /// Whether elements are complex numbers.
    pub fn is_complex(self) -> bool {
        self == DType::C64
    }

    /// Whether elements are real floating-point numbers (what real kernels compute on).
    pub fn is_real_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32 | DType::F64)
    }
}

/// Most dimensions a [`Shape`] has.
pub const MAX_RANK: usize = 5;

/// An N-d shape (rank 1 to [`MAX_RANK`]), row-major. Images are `[B, C, H, W]`
/// ([`Shape::new`]); flat buffers are rank 1 ([`Shape::flat`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

/// Largest element count a kernel indexes: indices are u32 on the devices and
/// the solver state buffer holds several slots of this many elements.
pub const MAX_ELEMENTS: usize = (u32::MAX as usize) / 8;

impl Shape {
    /// An image batch `[batch, channels, height, width]`.
    pub fn new(b: usize, c: usize, h: usize, w: usize) -> Self {
        Self::of(&[b, c, h, w])
    }

    /// A flat shape `[n]`, for element-wise buffers.
    pub fn flat(n: usize) -> Self {
        Self::of(&[n])
    }

    /// Any rank from 1 to [`MAX_RANK`]; other ranks are [`Error::InvalidRank`].
    pub fn from_dims(dims: &[usize]) -> Result<Self> {
        if dims.is_empty() || dims.len() > MAX_RANK {
            return Err(Error::InvalidRank {
                rank: dims.len(),
                max: MAX_RANK,
            });
        }
        Ok(Self::of(dims))
    }

    /// `dims` has 1..=MAX_RANK entries (callers above guarantee it).
    fn of(dims: &[usize]) -> Self {
        let mut d = [1; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: d,
            rank: dims.len() as u8,
        }
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }

    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Batch size: the first dimension of a shape of rank ≥ 2; a rank-1 shape
    /// is one item.
    pub fn batch(&self) -> usize {
        if self.rank >= 2 {
            self.dims[0]
        } else {
            1
        }
    }

    /// Elements per batch item (for `[B, C, H, W]`: `C·H·W`).
    pub fn item_len(&self) -> usize {
        let inner = if self.rank >= 2 { 1 } else { 0 };
        self.dims()[inner..].iter().product()
    }

    /// The shape of one batch item (the dimensions after the first; a rank-1
    /// shape is its own item).
    pub fn item(&self) -> Shape {
        match self.rank {
            1 => *self,
            _ => Self::of(&self.dims()[1..]),
        }
    }

    /// Total element count, or an error if it overflows, is zero or exceeds
    /// what a kernel can index.
    pub fn checked_len(&self) -> Result<usize> {
        let len = self
            .dims()
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
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shape{:?}", self.dims())
    }
}

/// Host data to upload, in any storage type; the backend converts real data to
/// the tensor's real dtype. Complex data goes only to complex tensors.
#[derive(Clone, Copy, Debug)]
pub enum HostSlice<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    C64(&'a [Complex32]),
    U32(&'a [u32]),
}

impl HostSlice<'_> {
    pub fn len(&self) -> usize {
        match self {
            HostSlice::F16(s) => s.len(),
            HostSlice::F32(s) => s.len(),
            HostSlice::F64(s) => s.len(),
            HostSlice::C64(s) => s.len(),
            HostSlice::U32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of the host data itself.
    pub fn dtype(&self) -> DType {
        match self {
            HostSlice::F16(_) => DType::F16,
            HostSlice::F32(_) => DType::F32,
            HostSlice::F64(_) => DType::F64,
            HostSlice::C64(_) => DType::C64,
            HostSlice::U32(_) => DType::U32,
        }
    }

    /// The bytes of a `dtype` buffer holding this data: borrowed when the
    /// types agree, converted once otherwise (F16C-accelerated for f16 ↔ f32).
    /// Real ↔ complex and anything ↔ integer are [`Error::DTypeMismatch`]: no
    /// implicit imaginary part, no rounding to indices.
    pub fn storage_bytes(&self, dtype: DType) -> Result<Cow<'_, [u8]>> {
        fn owned<T: bytemuck::Pod>(v: Vec<T>) -> Cow<'static, [u8]> {
            Cow::Owned(bytemuck::cast_slice(&v).to_vec())
        }
        Ok(match (dtype, *self) {
            (DType::F16, HostSlice::F16(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::F32, HostSlice::F32(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::F64, HostSlice::F64(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::C64, HostSlice::C64(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::U32, HostSlice::U32(s)) => Cow::Borrowed(bytemuck::cast_slice(s)),
            (DType::F16, HostSlice::F32(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f32_slice(s);
                owned(v)
            }
            (DType::F16, HostSlice::F64(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f64_slice(s);
                owned(v)
            }
            (DType::F32, HostSlice::F16(s)) => {
                let mut v = vec![0f32; s.len()];
                s.convert_to_f32_slice(&mut v);
                owned(v)
            }
            (DType::F32, HostSlice::F64(s)) => owned(s.iter().map(|&x| x as f32).collect()),
            (DType::F64, HostSlice::F16(s)) => {
                let mut v = vec![0f64; s.len()];
                s.convert_to_f64_slice(&mut v);
                owned(v)
            }
            (DType::F64, HostSlice::F32(s)) => owned(s.iter().map(|&x| f64::from(x)).collect()),
            (expected, got) => {
                return Err(Error::DTypeMismatch {
                    what: "host data (only real floats convert into each other)",
                    expected,
                    got: got.dtype(),
                })
            }
        })
    }
}

/// Host data downloaded from a tensor, in the tensor's storage type.
#[derive(Clone, Debug, PartialEq)]
pub enum HostVec {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    C64(Vec<Complex32>),
    U32(Vec<u32>),
}

impl HostVec {
    /// Elements of `dtype` stored in `bytes` (a whole number of elements).
    pub(crate) fn from_storage_bytes(dtype: DType, bytes: &[u8]) -> HostVec {
        match dtype {
            DType::F16 => HostVec::F16(bytemuck::pod_collect_to_vec(bytes)),
            DType::F32 => HostVec::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F64 => HostVec::F64(bytemuck::pod_collect_to_vec(bytes)),
            DType::C64 => HostVec::C64(bytemuck::pod_collect_to_vec(bytes)),
            DType::U32 => HostVec::U32(bytemuck::pod_collect_to_vec(bytes)),
        }
    }

    /// `len` zeros of `dtype`, to read device data into ([`HostVec::bytes_mut`]).
    pub(crate) fn zeroed(dtype: DType, len: usize) -> HostVec {
        match dtype {
            DType::F16 => HostVec::F16(vec![f16::ZERO; len]),
            DType::F32 => HostVec::F32(vec![0.0; len]),
            DType::F64 => HostVec::F64(vec![0.0; len]),
            DType::C64 => HostVec::C64(vec![Complex32::new(0.0, 0.0); len]),
            DType::U32 => HostVec::U32(vec![0; len]),
        }
    }

    /// The storage bytes of the elements.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            HostVec::F16(v) => bytemuck::cast_slice_mut(v),
            HostVec::F32(v) => bytemuck::cast_slice_mut(v),
            HostVec::F64(v) => bytemuck::cast_slice_mut(v),
            HostVec::C64(v) => bytemuck::cast_slice_mut(v),
            HostVec::U32(v) => bytemuck::cast_slice_mut(v),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostVec::F16(v) => v.len(),
            HostVec::F32(v) => v.len(),
            HostVec::F64(v) => v.len(),
            HostVec::C64(v) => v.len(),
            HostVec::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Widen to f32 (exact for F16 and F32; rounds F64). Complex data comes
    /// back interleaved, `[re0, im0, re1, im1, …]` (twice the length); integers
    /// are converted by value (exact below 2²⁴).
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            HostVec::F16(v) => {
                let mut out = vec![0.0f32; v.len()];
                v.convert_to_f32_slice(&mut out);
                out
            }
            HostVec::F32(v) => v,
            HostVec::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            HostVec::C64(v) => bytemuck::cast_slice(&v).to_vec(),
            HostVec::U32(v) => v.into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Widen to f64 (exact for every storage type); complex data interleaved
    /// as in [`HostVec::into_f32`].
    pub fn into_f64(self) -> Vec<f64> {
        match self {
            HostVec::F16(v) => {
                let mut out = vec![0.0f64; v.len()];
                v.convert_to_f64_slice(&mut out);
                out
            }
            HostVec::F32(v) => v.into_iter().map(f64::from).collect(),
            HostVec::F64(v) => v,
            c @ HostVec::C64(_) => c.into_f32().into_iter().map(f64::from).collect(),
            HostVec::U32(v) => v.into_iter().map(f64::from).collect(),
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

    /// `batch` f32 values, one per sample: the per-sample scalars (step sizes,
    /// residual norms) that kernels read and write on the device, without a
    /// host round trip. Zero-initialised.
    pub fn per_sample(backend: &B, batch: usize) -> Result<Self> {
        Self::zeros(backend, Shape::flat(batch), DType::F32)
    }

    /// Overwrite the contents with `data` (same element count), converting to the dtype.
    pub fn upload(&mut self, backend: &B, data: HostSlice<'_>) -> Result<()> {
        self.view_mut(0, self.shape)?.upload(backend, data)
    }

    /// Download the contents in the storage dtype.
    pub fn download(&self, backend: &B) -> Result<HostVec> {
        backend.read(&self.buf, self.dtype, 0, self.len)
    }

    /// Download and widen to f32.
    pub fn to_f32(&self, backend: &B) -> Result<Vec<f32>> {
        Ok(self.download(backend)?.into_f32())
    }

    /// Download and widen to f64.
    pub fn to_f64(&self, backend: &B) -> Result<Vec<f64>> {
        Ok(self.download(backend)?.into_f64())
    }

    /// Set every element to zero, on the device.
    pub fn fill_zero(&mut self, backend: &B) -> Result<()> {
        backend.zero(&mut self.buf)
    }

    /// `shape.checked_len()` elements starting at element `offset`.
    fn range(&self, offset: usize, shape: Shape) -> Result<usize> {
        let len = shape.checked_len()?;
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(len),
            _ => Err(Error::ViewOutOfRange {
                offset,
                len,
                tensor_len: self.len,
            }),
        }
    }

    /// A read-only view of `shape` starting at element `offset`: no copy.
    pub fn view(&self, offset: usize, shape: Shape) -> Result<TensorView<'_, B>> {
        let len = self.range(offset, shape)?;
        Ok(View {
            tensor: self,
            offset,
            shape,
            len,
        })
    }

    /// A writable view of `shape` starting at element `offset`: no copy.
    pub fn view_mut(&mut self, offset: usize, shape: Shape) -> Result<TensorViewMut<'_, B>> {
        let len = self.range(offset, shape)?;
        Ok(View {
            tensor: self,
            offset,
            shape,
            len,
        })
    }

    /// Batch item `i` as a view (see [`Shape::batch`]).
    pub fn item(&self, i: usize) -> Result<TensorView<'_, B>> {
        let item = self.shape.item_len();
        self.view(i.saturating_mul(item), self.shape.item())
    }

    /// Batch item `i` as a writable view.
    pub fn item_mut(&mut self, i: usize) -> Result<TensorViewMut<'_, B>> {
        let (item, shape) = (self.shape.item_len(), self.shape.item());
        self.view_mut(i.saturating_mul(item), shape)
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

/// A window of one tensor — elements `offset..offset + len` with their own
/// shape — through a shared (`TensorView`) or exclusive (`TensorViewMut`)
/// borrow of the tensor. No data is copied.
pub struct View<R> {
    tensor: R,
    offset: usize,
    shape: Shape,
    len: usize,
}

/// A read-only window of one tensor.
pub type TensorView<'a, B> = View<&'a Tensor<B>>;

/// A writable window of one tensor.
pub type TensorViewMut<'a, B> = View<&'a mut Tensor<B>>;

impl<B: Backend, R: Deref<Target = Tensor<B>>> View<R> {
    /// Download the window in the storage dtype.
    pub fn download(&self, backend: &B) -> Result<HostVec> {
        backend.read(&self.tensor.buf, self.tensor.dtype, self.offset, self.len)
    }

    /// First element of the window in the tensor.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty shapes are rejected.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: Backend, R: DerefMut<Target = Tensor<B>>> View<R> {
    /// Overwrite the window with `data` (exactly its element count).
    pub fn upload(&mut self, backend: &B, data: HostSlice<'_>) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::LengthMismatch {
                what: "upload",
                expected: self.len,
                got: data.len(),
            });
        }
        let dtype = self.tensor.dtype;
        backend.write(&mut self.tensor.buf, dtype, self.offset, data)
    }
}

/// A tensor on loan from the backend's [`BufferPool`]: its buffer goes back to
/// the pool on drop, so a loop that takes the same temporaries every iteration
/// allocates only in the first. Contents start unspecified (whatever the last
/// user left); call [`Tensor::fill_zero`] where zeros matter.
pub struct Temp<'b, B: Backend> {
    pool: &'b BufferPool<B::Buffer>,
    /// Taken out exactly once, in `drop`.
    tensor: ManuallyDrop<Tensor<B>>,
}

impl<'b, B: Backend> Temp<'b, B> {
    /// A temporary of `shape` and `dtype` from `backend`'s pool.
    pub fn new(backend: &'b B, shape: Shape, dtype: DType) -> Result<Self> {
        let len = shape.checked_len()?;
        let pool = backend.pool();
        let buf = pool.take(len, dtype, || backend.alloc(len, dtype))?;
        Ok(Temp {
            pool,
            tensor: ManuallyDrop::new(Tensor {
                buf,
                shape,
                dtype,
                len,
            }),
        })
    }
}

impl<B: Backend> Deref for Temp<'_, B> {
    type Target = Tensor<B>;
    fn deref(&self) -> &Tensor<B> {
        &self.tensor
    }
}

impl<B: Backend> DerefMut for Temp<'_, B> {
    fn deref_mut(&mut self) -> &mut Tensor<B> {
        &mut self.tensor
    }
}

impl<B: Backend> Drop for Temp<'_, B> {
    fn drop(&mut self) {
        // SAFETY: `tensor` is never used again after this take (we are in drop).
        let t = unsafe { ManuallyDrop::take(&mut self.tensor) };
        self.pool.give_back(t.len, t.dtype, t.buf);
    }
}

/// Tensors over buffers made elsewhere — the external-memory constructors of
/// each backend (`docs/embedding.md`) — so every family runs on them unchanged.
impl<B: Backend> Tensor<B> {
    /// A tensor of `shape` over `buf`, whose dtype it takes; `buf` must hold
    /// at least `shape`'s element count ([`Error::LengthMismatch`] otherwise).
    pub fn from_buffer(buf: B::Buffer, shape: Shape) -> Result<Self> {
        let len = shape.checked_len()?;
        let info = B::buffer_info(&buf);
        if info.len < len {
            return Err(Error::LengthMismatch {
                what: "tensor over an existing buffer",
                expected: len,
                got: info.len,
            });
        }
        Ok(Tensor {
            buf,
            shape,
            dtype: info.dtype,
            len,
        })
    }
}
