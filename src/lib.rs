//! diffinv: fused fp16 kernels for diffusion-model solvers of linear inverse problems.
//!
//! Layers (each only calls the one below): [`sampler`] loops → [`schedule`] and
//! [`solver`] host math (f64 plans) → [`ops`] kernel families (checked entry
//! points) → [`backend`] implementations (CPU reference, CUDA, wgpu).
//! The formulas are in `docs/math.md`.
//!
//! ```
//! use diffinv::backend::cpu::CpuBackend;
//! use diffinv::*;
//!
//! # fn main() -> diffinv::Result<()> {
//! let backend = CpuBackend::new(); // any `B: Ops`; or select(None)?.backend.run(…)
//! let schedule = NoiseSchedule::ddpm_linear();
//! let config = PlanConfig { solver: Solver::DPMPP_2M, steps: 10, ..PlanConfig::default() };
//! let plan = Plan::new(&schedule, &config)?;
//! let shape = Shape::new(1, 3, 8, 8);
//! let noise = rng::normal_vec(7, shape.checked_len()?);
//! let mut x = Tensor::from_host(&backend, shape, DType::F16, HostSlice::F32(&noise))?;
//! // Any network: write ε for `x` at network time `tau` into `eps`.
//! let mut net = |b: &CpuBackend, x: &Tensor<CpuBackend>, _tau: f64, eps: &mut Tensor<CpuBackend>| {
//!     let v: Vec<f32> = x.to_f32(b)?.iter().map(|v| 0.5 * v).collect();
//!     eps.upload(b, HostSlice::F32(&v))
//! };
//! sample(&backend, &plan, &mut net, &mut x, SamplerOptions::default(), |p| {
//!     assert!(p.step < p.steps);
//! })?;
//! assert_eq!(backend.launch_count(), 10); // one fused kernel launch per step
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod error;
pub mod gmm;
pub mod guidance;
pub mod ops;
pub mod restore;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod solver;
pub mod tensor;
pub mod unet;

pub use backend::{select, AnyBackend, Backend, BackendFn, BackendKind, Selection};
pub use error::{Error, Result};
pub use gmm::{GmmComponent, GmmDenoiser};
pub use ops::{solver_step, Ops, SolverOps};
pub use sampler::{sample, Denoiser, Progress, SamplerOptions, SolverRun};
pub use schedule::{BetaSchedule, FinalSigma, GridSpec, NoiseSchedule, Spacing};
pub use solver::{Plan, PlanConfig, Prediction, SecondOrder, Solver};
pub use tensor::{
    Complex32, DType, HostSlice, HostVec, Shape, Temp, Tensor, TensorView, TensorViewMut,
};
