//! diffinv: fused fp16 kernels for diffusion-model solvers of linear inverse problems.
//!
//! Layers (each only calls the one below): [`sampler`] loops → [`schedule`] and
//! [`solver`] host math (f64 plans) → [`backend`] kernels (CPU reference, CUDA, wgpu).

pub mod backend;
pub mod error;
pub mod gmm;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod solver;
pub mod tensor;

pub use backend::{select, AnyBackend, Backend, BackendKind, Selection};
pub use error::{Error, Result};
pub use gmm::GmmDenoiser;
pub use sampler::{sample, Denoiser, Progress, SamplerOptions, SolverRun};
pub use schedule::{BetaSchedule, FinalSigma, GridSpec, NoiseSchedule, Spacing};
pub use solver::{Plan, PlanConfig, Prediction, SecondOrder, Solver};
pub use tensor::{DType, HostSlice, HostVec, Shape, Tensor};
