//! Guidance host math: everything of the conditional samplers that is a scalar
//! per step, computed once in f64 (`docs/math.md` §6). No device code.
//!
//! - [`vp`]: the continuous variance-preserving SDE the conditional samplers
//!   run in (β linear in t);
//! - [`cpgdm`]: the C-ΠGDM plan — grid, network times, the conjugate map's
//!   κ₁, κ₂ and the integrals ΔΦ of every term over every step;
//! - [`quadrature`]: the adaptive Gauss–Kronrod rule those integrals use.

pub mod cpgdm;
pub mod pgdm;
pub mod quadrature;
pub mod vp;

pub use cpgdm::{CpgdmConfig, CpgdmPlan, CpgdmStep, Method, NetworkTime, Start};
pub use pgdm::{PgdmDiscreteConfig, PgdmDiscretePlan, PgdmStep};
pub use vp::VpSde;

use crate::error::{Error, Result};

/// `Error::StepOutOfRange` unless `n < len`.
fn check_step(n: usize, len: usize) -> Result<()> {
    if n < len {
        Ok(())
    } else {
        Err(Error::StepOutOfRange {
            step: n,
            steps: len,
        })
    }
}

/// The point a network call models: `x = a·x0 + b·noise` at network time `tau`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelPoint {
    pub tau: f64,
    pub a: f64,
    pub b: f64,
}

/// Coefficients of one fused guidance pass (`docs/math.md` §6.4; their
/// meaning per pass is in `backend::params::cpgdm_pass`).
pub type PassCoefficients = [f64; 12];

/// What a guided sampler's plan gives the fused passes: the network's model
/// point per step and every pass's f64 coefficients. The state is kept in
/// split coordinates `u = P x̄`, `v = (I − P) x̄` of the plan's map x̄ of x;
/// `q` is the operator's scale in `H⁺(H⁺)ᵀ = q·P`.
pub trait GuidancePlan {
    /// Network calls of a run.
    fn len(&self) -> usize;

    /// Whether the plan has no steps (never, for a validated plan).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The point the network models at step `n` (`Error::StepOutOfRange` past the end).
    fn model_point(&self, n: usize) -> Result<ModelPoint>;

    /// INIT: `x₀ = μ₀H⁺y + σ₀z` to the state, and the first network input.
    fn init_coefficients(&self, q: f64) -> PassCoefficients;

    /// RESIDUAL at step n: `m = H⁺y − P x̂0` from the state and Pε.
    fn residual_coefficients(&self, n: usize, q: f64) -> Result<PassCoefficients>;

    /// UPDATE at step n: the state at n + 1 and the next network input.
    fn update_coefficients(&self, n: usize, q: f64) -> Result<PassCoefficients>;

    /// Whether step n adds fresh noise z (then `update_coefficients[9]` is its
    /// coefficient); false past the end.
    fn step_noise(&self, _n: usize) -> bool {
        false
    }

    /// Whether the coefficients depend on `q` (the noisy variant's
    /// `Q = H⁺(H⁺)ᵀ = q·P`); operators without such a q cannot run such a plan.
    fn uses_gram_scale(&self) -> bool {
        false
    }
}
