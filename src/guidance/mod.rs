//! Guidance host math: everything of the conditional samplers that is a scalar
//! per step, computed once in f64 (`docs/math.md` §6). No device code.
//!
//! - [`vp`]: the continuous variance-preserving SDE the conditional samplers
//!   run in (β linear in t);
//! - [`cpgdm`]: the C-ΠGDM plan — grid, network times, the conjugate map's
//!   κ₁, κ₂ and the integrals ΔΦ of every term over every step;
//! - [`quadrature`]: the adaptive Gauss–Kronrod rule those integrals use.

pub mod cpgdm;
pub mod quadrature;
pub mod vp;

pub use cpgdm::{CpgdmConfig, CpgdmPlan, CpgdmStep, Method, NetworkTime};
pub use vp::VpSde;
