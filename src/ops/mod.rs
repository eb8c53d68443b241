//! Kernel families as traits on top of the core [`Backend`], the way burn
//! composes `Backend: FloatTensorOps + ModuleOps + …`.
//!
//! Each family lives in one module here: its trait, whose one required method
//! takes a call that only this module can construct (so every launch has been
//! validated), and its checked public entry points, the one place that checks
//! shapes, dtypes, lengths and strides for every backend.
//!
//! [`Ops`] gathers every family; code above the backends is generic over
//! `B: Ops`, and [`crate::AnyBackend::run`] reaches it from a run-time choice.
//! Adding a family adds its trait here and to `Ops`'s supertraits — nothing
//! else dispatches on it. `docs/adding-a-kernel-family.md` walks through it.

pub mod fft;
pub mod guidance;
pub mod krylov;
pub mod mri;
pub mod nn;
pub mod operator;
pub mod solver;

use crate::backend::Backend;

pub use fft::{to_interleaved, to_planar, Direction, Fft2, FftOps, FftPath};
pub use guidance::{CpgdmSampler, GuidanceOps, GuidedSampler, ModelPoint};
pub use krylov::{CgOptions, ConjugateGradient, KrylovOps, NormalMap, NormalSystem};
pub use nn::NnOps;
pub use operator::{Mode, Operator, OperatorCall, OperatorKind, OperatorOps};
pub use solver::{solver_step, solver_step_raw, SolverOps, SolverStepCall};

/// Every kernel family: what a backend must implement to run everything.
pub trait Ops:
    Backend + SolverOps + OperatorOps + GuidanceOps + KrylovOps + FftOps + NnOps
{
}

impl<B: Backend + SolverOps + OperatorOps + GuidanceOps + KrylovOps + FftOps + NnOps> Ops for B {}
