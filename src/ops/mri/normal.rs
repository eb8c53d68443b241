//! The MRI operators as CG data consistency sees them ([`NormalMap`]): the
//! image item `[H, W, 2]`, the adjoint, and AᴴA from their own kernels (the
//! CG passes treat the interleaved pairs as reals: `docs/math.md` §9.1).

use super::{MultiCoil, SingleCoil};
use crate::error::Result;
use crate::ops::fft::FftOps;
use crate::ops::krylov::NormalMap;
use crate::ops::OperatorOps;
use crate::tensor::{Shape, Tensor};

impl<B: FftOps + OperatorOps> NormalMap<B> for SingleCoil<B> {
    fn x_item(&self) -> Shape {
        Shape::new(1, self.height(), self.width(), 2).item()
    }

    fn y_item(&self) -> Shape {
        self.x_item()
    }

    fn adjoint(&self, backend: &B, y: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        SingleCoil::adjoint(self, backend, y, out)
    }

    /// AᴴA = P = FᴴMF.
    fn normal(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        SingleCoil::normal(self, backend, x, out)
    }

    fn launches_per_normal(&self) -> u64 {
        Self::LAUNCHES_PROJECT
    }
}

impl<B: FftOps + OperatorOps> NormalMap<B> for MultiCoil<B> {
    fn x_item(&self) -> Shape {
        Shape::new(1, self.height(), self.width(), 2).item()
    }

    fn y_item(&self) -> Shape {
        Shape::new(self.coils(), self.height(), self.width(), 2)
    }

    fn adjoint(&self, backend: &B, y: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        MultiCoil::adjoint(self, backend, y, out)
    }

    fn normal(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        MultiCoil::normal(self, backend, x, out)
    }

    fn launches_per_normal(&self) -> u64 {
        Self::LAUNCHES_NORMAL
    }
}
