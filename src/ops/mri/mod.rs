//! Cartesian MRI forward models on the centred orthonormal FFT
//! (`docs/math.md` §10.3), on every backend:
//!
//! - [`SingleCoil`]: `A x = M ⊙ F x`, `Aᴴ y = Fᴴ(M ⊙ y) = A⁺ y`, and the exact
//!   projector `P = Fᴴ M F` (`AᴴA = P`).
//! - [`MultiCoil`] with sensitivity maps `S_c`: `A x = [M ⊙ F(S_c ⊙ x)]_c`,
//!   `Aᴴ y = Σ_c conj(S_c) ⊙ Fᴴ(M ⊙ y_c)`, and `AᴴA x` (no projector: the DDS
//!   conjugate gradient applies `AᴴA`).
//!
//! Images are `[B, H, W, 2]` (interleaved re, im), multi-coil k-space
//! `[B, C, H, W, 2]`; the mask (one real per k-space pixel, 0 or 1) and the maps
//! (`[C, H, W, 2]`) are the problem's, shared by the batch, and go to the device
//! once, in the dtype the operator computes in (f32; f64 on the CPU oracle path).

pub mod mask;
mod normal;

use super::fft::{pointwise, Fft2, FftOps};
use crate::backend::params::{fft_pointwise, FftPointwiseParams};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, Shape, Temp, Tensor};

pub use mask::{ColumnMask, MaskKind};

/// The mask, its FFT and the plane shape shared by both operators.
struct Cartesian<B: Backend> {
    fft: Fft2<B>,
    /// `[H·W]` reals, 0 or 1.
    mask: Tensor<B>,
    dtype: DType,
}

impl<B: FftOps> Cartesian<B> {
    fn new(backend: &B, dtype: DType, height: usize, width: usize, mask: &[f64]) -> Result<Self> {
        if !backend.fft_supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: backend.kind().name(),
                dtype,
            });
        }
        let fft = Fft2::new(backend, height, width)?;
        if mask.len() != height * width {
            return Err(Error::LengthMismatch {
                what: "sampling mask (one entry per k-space pixel, H·W)",
                expected: height * width,
                got: mask.len(),
            });
        }
        if let Some(&bad) = mask.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(Error::InvalidParameter {
                name: "sampling mask entry",
                value: bad,
                reason: "must be 0 or 1 (P = FᴴMF is a projector only then)",
            });
        }
        let mask = Tensor::from_host(
            backend,
            Shape::flat(mask.len()),
            dtype,
            HostSlice::F64(mask),
        )?;
        Ok(Cartesian { fft, mask, dtype })
    }

    fn plane(&self) -> usize {
        self.fft.height() * self.fft.width()
    }

    /// `tensor` must be `dims` exactly.
    fn expect(&self, what: &'static str, tensor: &Tensor<B>, dims: &[usize]) -> Result<()> {
        let want = Shape::from_dims(dims)?;
        if tensor.shape() != want {
            return Err(Error::ShapeMismatch {
                what,
                expected: want,
                got: tensor.shape(),
            });
        }
        if tensor.dtype() != self.dtype {
            return Err(Error::DTypeMismatch {
                what,
                expected: self.dtype,
                got: tensor.dtype(),
            });
        }
        Ok(())
    }

    /// The batch of an image tensor `[B, H, W, 2]`.
    fn image_batch(&self, what: &'static str, x: &Tensor<B>) -> Result<usize> {
        let batch = x.shape().dims()[0];
        self.expect(what, x, &[batch, self.fft.height(), self.fft.width(), 2])?;
        Ok(batch)
    }

    /// `out ← M ⊙ input` for every plane (one launch).
    fn mask(&self, backend: &B, input: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        let params = FftPointwiseParams {
            n_out: (input.len() / 2) as u32,
            program: fft_pointwise::MASK,
            plane: self.plane() as u32,
            coils: 1,
        };
        pointwise(backend, params, input, out, &self.mask)
    }

    /// A pooled temporary of `dims` in the operator's dtype.
    fn temp<'b>(&self, backend: &'b B, dims: &[usize]) -> Result<Temp<'b, B>> {
        Temp::new(backend, Shape::from_dims(dims)?, self.dtype)
    }
}

/// Single-coil Cartesian MRI: `A = M F` on `[B, H, W, 2]` images and k-space.
pub struct SingleCoil<B: Backend> {
    cart: Cartesian<B>,
}

impl<B: FftOps> SingleCoil<B> {
    /// The operator on `height × width` images with the k-space `mask`
    /// (row-major `H·W`, 0 or 1; [`ColumnMask::plane`]), computing in `dtype`.
    pub fn new(
        backend: &B,
        dtype: DType,
        height: usize,
        width: usize,
        mask: &[f64],
    ) -> Result<Self> {
        Ok(SingleCoil {
            cart: Cartesian::new(backend, dtype, height, width, mask)?,
        })
    }

    /// Launches of [`SingleCoil::forward`] and of [`SingleCoil::adjoint`].
    pub const LAUNCHES_FORWARD: u64 = 3;
    /// Launches of [`SingleCoil::project`] (= [`SingleCoil::normal`]).
    pub const LAUNCHES_PROJECT: u64 = 5;

    /// `y ← M ⊙ F x`; x and y are `[B, H, W, 2]`.
    pub fn forward(&self, backend: &B, x: &Tensor<B>, y: &mut Tensor<B>) -> Result<()> {
        let c = &self.cart;
        let batch = c.image_batch("single-coil image x", x)?;
        c.expect("single-coil k-space y", y, x.shape().dims())?;
        let mut k = c.temp(backend, &[batch, c.fft.height(), c.fft.width(), 2])?;
        c.fft.forward(backend, x, &mut k)?;
        c.mask(backend, &k, y)
    }

    /// `x ← Fᴴ(M ⊙ y)`, which is also `A⁺ y` (`AAᴴ = diag(M)`).
    pub fn adjoint(&self, backend: &B, y: &Tensor<B>, x: &mut Tensor<B>) -> Result<()> {
        let c = &self.cart;
        let batch = c.image_batch("single-coil k-space y", y)?;
        c.expect("single-coil image x", x, y.shape().dims())?;
        let mut k = c.temp(backend, &[batch, c.fft.height(), c.fft.width(), 2])?;
        c.mask(backend, y, &mut k)?;
        c.fft.inverse(backend, &k, x)
    }

    /// `x ← A⁺ y = Aᴴ y`.
    pub fn pseudo_inverse(&self, backend: &B, y: &Tensor<B>, x: &mut Tensor<B>) -> Result<()> {
        self.adjoint(backend, y, x)
    }

    /// `out ← P x = Fᴴ M F x`, the orthogonal projector onto the row space of A.
    pub fn project(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        let c = &self.cart;
        let batch = c.image_batch("single-coil image x", x)?;
        c.expect("projected image", out, x.shape().dims())?;
        let dims = [batch, c.fft.height(), c.fft.width(), 2];
        let (mut k, mut masked) = (c.temp(backend, &dims)?, c.temp(backend, &dims)?);
        c.fft.forward(backend, x, &mut k)?;
        c.mask(backend, &k, &mut masked)?;
        c.fft.inverse(backend, &masked, out)
    }

    /// `out ← AᴴA x`, which is `P x` here.
    pub fn normal(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        self.project(backend, x, out)
    }

    pub fn height(&self) -> usize {
        self.cart.fft.height()
    }

    pub fn width(&self) -> usize {
        self.cart.fft.width()
    }
}

/// Multi-coil Cartesian MRI with sensitivity maps: `A x = [M ⊙ F(S_c ⊙ x)]_c`
/// from `[B, H, W, 2]` images to `[B, C, H, W, 2]` k-space.
pub struct MultiCoil<B: Backend> {
    cart: Cartesian<B>,
    /// `[C, H, W, 2]`.
    maps: Tensor<B>,
    coils: usize,
}

impl<B: FftOps> MultiCoil<B> {
    /// The operator on `height × width` images with the k-space `mask` (as
    /// for [`SingleCoil::new`]) and `coils` sensitivity maps, row-major
    /// `[C, H, W, 2]` (finite), computing in `dtype`.
    pub fn new(
        backend: &B,
        dtype: DType,
        height: usize,
        width: usize,
        mask: &[f64],
        maps: &[f64],
        coils: usize,
    ) -> Result<Self> {
        let cart = Cartesian::new(backend, dtype, height, width, mask)?;
        let want = coils.saturating_mul(2 * cart.plane());
        if coils == 0 || maps.len() != want {
            return Err(Error::LengthMismatch {
                what: "coil sensitivity maps ([C, H, W, 2], C ≥ 1)",
                expected: want,
                got: maps.len(),
            });
        }
        if let Some(&bad) = maps.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "coil sensitivity",
                value: bad,
                reason: "must be finite",
            });
        }
        let shape = Shape::from_dims(&[coils, height, width, 2])?;
        let maps = Tensor::from_host(backend, shape, dtype, HostSlice::F64(maps))?;
        Ok(MultiCoil { cart, maps, coils })
    }

    /// Launches of [`MultiCoil::forward`] and of [`MultiCoil::adjoint`].
    pub const LAUNCHES_FORWARD: u64 = 4;
    /// Launches of [`MultiCoil::normal`].
    pub const LAUNCHES_NORMAL: u64 = 7;

    pub fn coils(&self) -> usize {
        self.coils
    }

    pub fn height(&self) -> usize {
        self.cart.fft.height()
    }

    pub fn width(&self) -> usize {
        self.cart.fft.width()
    }

    fn kspace_dims(&self, batch: usize) -> [usize; 5] {
        let f = &self.cart.fft;
        [batch, self.coils, f.height(), f.width(), 2]
    }

    /// `coil ← S_c ⊙ x` for every coil (one launch).
    fn expand(&self, backend: &B, x: &Tensor<B>, coil: &mut Tensor<B>) -> Result<()> {
        let params = FftPointwiseParams {
            n_out: (coil.len() / 2) as u32,
            program: fft_pointwise::COIL_EXPAND,
            plane: self.cart.plane() as u32,
            coils: self.coils as u32,
        };
        pointwise(backend, params, x, coil, &self.maps)
    }

    /// `x ← Σ_c conj(S_c) ⊙ coil_c` (one launch).
    fn combine(&self, backend: &B, coil: &Tensor<B>, x: &mut Tensor<B>) -> Result<()> {
        let params = FftPointwiseParams {
            n_out: (x.len() / 2) as u32,
            program: fft_pointwise::COIL_COMBINE,
            plane: self.cart.plane() as u32,
            coils: self.coils as u32,
        };
        pointwise(backend, params, coil, x, &self.maps)
    }

    /// `y ← [M ⊙ F(S_c ⊙ x)]_c`; x is `[B, H, W, 2]`, y `[B, C, H, W, 2]`.
    pub fn forward(&self, backend: &B, x: &Tensor<B>, y: &mut Tensor<B>) -> Result<()> {
        let c = &self.cart;
        let batch = c.image_batch("multi-coil image x", x)?;
        let dims = self.kspace_dims(batch);
        c.expect("multi-coil k-space y", y, &dims)?;
        let (mut coil, mut k) = (c.temp(backend, &dims)?, c.temp(backend, &dims)?);
        self.expand(backend, x, &mut coil)?;
        c.fft.forward(backend, &coil, &mut k)?;
        c.mask(backend, &k, y)
    }

    /// `x ← Σ_c conj(S_c) ⊙ Fᴴ(M ⊙ y_c)`.
    pub fn adjoint(&self, backend: &B, y: &Tensor<B>, x: &mut Tensor<B>) -> Result<()> {
        let c = &self.cart;
        let batch = y.shape().dims()[0];
        let dims = self.kspace_dims(batch);
        c.expect("multi-coil k-space y", y, &dims)?;
        c.expect("multi-coil image x", x, &[batch, dims[2], dims[3], 2])?;
        let (mut k, mut coil) = (c.temp(backend, &dims)?, c.temp(backend, &dims)?);
        c.mask(backend, y, &mut k)?;
        c.fft.inverse(backend, &k, &mut coil)?;
        self.combine(backend, &coil, x)
    }

    /// `out ← AᴴA x = Σ_c conj(S_c) ⊙ Fᴴ M F(S_c ⊙ x)`; x and out are
    /// `[B, H, W, 2]`. Seven launches, two coil-sized temporaries.
    pub fn normal(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        let c = &self.cart;
        let batch = c.image_batch("multi-coil image x", x)?;
        c.expect("AᴴA x", out, x.shape().dims())?;
        let dims = self.kspace_dims(batch);
        let (mut a, mut b) = (c.temp(backend, &dims)?, c.temp(backend, &dims)?);
        self.expand(backend, x, &mut a)?;
        c.fft.forward(backend, &a, &mut b)?;
        c.mask(backend, &b, &mut a)?;
        c.fft.inverse(backend, &a, &mut b)?;
        self.combine(backend, &b, out)
    }
}
