//! The decomposed diffusion sampler (DDS; Chung, Lee and Ye, ICLR 2024;
//! `docs/math.md` §9.3): per step Tweedie's x̂0, a few conjugate-gradient
//! iterations of data consistency on it, and a re-noise that splits the
//! variance between fresh noise (η²) and the network's ε (1 − η²).
//!
//! Outside the network a step is 2M + 3 launches for block-local operators:
//! Tweedie, the CG residual, two per CG iteration, and the re-noise — with no
//! host round trip (the CG scalars stay on the device).

use super::{Progress, StepControl};
use crate::error::{Error, Result};
use crate::guidance::{ModelPoint, PgdmStep};
use crate::ops::guidance::check_measurement_values;
use crate::ops::krylov::{cg_state_dtype, dds_renoise, dds_tweedie};
use crate::ops::{CgOptions, ConjugateGradient, KrylovOps, NormalMap, NormalSystem};
use crate::rng;
use crate::sampler::guided::GuidedDenoiser;
use crate::schedule::NoiseSchedule;
use crate::tensor::{DType, HostSlice, Shape, Temp, Tensor};

/// Which system the CG step solves (`docs/math.md` §9.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataConsistency {
    /// `(I + γAᵀA) x = x̂0 + γAᵀy`: the official branch for σ_y > 0 (and the
    /// one its demos run).
    Tikhonov { gamma: f64 },
    /// `AᵀA x = Aᵀy` warm-started at x̂0: the official branch for σ_y = 0.
    NormalEquations,
}

impl DataConsistency {
    /// K and the right-hand side's weights (of x̂0, of Aᵀy).
    fn system(&self) -> (NormalSystem, f64, f64) {
        match *self {
            DataConsistency::Tikhonov { gamma } => (NormalSystem::tikhonov(gamma), 1.0, gamma),
            DataConsistency::NormalEquations => (NormalSystem::normal_equations(), 0.0, 1.0),
        }
    }
}

/// Settings of a DDS run.
#[derive(Clone, Debug, PartialEq)]
pub struct DdsConfig {
    /// Network calls N: the grid is τ = (N − 1)·skip, …, skip, 0 with
    /// skip = ⌊N_train / N⌋, then −1 (the clean end).
    pub steps: usize,
    /// CG iterations M per step and the optional early stop.
    pub cg: CgOptions,
    /// DDS's η ∈ [0, 1]: the share of fresh noise in the re-noised variance.
    pub eta: f64,
    pub consistency: DataConsistency,
    pub schedule: NoiseSchedule,
    /// `None`: the official grid, from pure noise. `Some(τ0)`: a warm start —
    /// the grid runs τ0 … 0 in equal steps, and the caller starts from
    /// `√ᾱ_τ0·x_init + √(1 − ᾱ_τ0)·z` ([`DdsPlan::start_weights`]) for an
    /// estimate x_init such as H⁺y, like C-ΠGDM's start at t = 0.4. Not in the
    /// official code.
    pub warm_start: Option<usize>,
}

impl Default for DdsConfig {
    /// The official defaults: 50 steps, M = 5, η = 0.85, γ = 1, DDPM's
    /// linear schedule.
    fn default() -> Self {
        DdsConfig {
            steps: 50,
            cg: CgOptions::default(),
            eta: 0.85,
            consistency: DataConsistency::Tikhonov { gamma: 1.0 },
            schedule: NoiseSchedule::ddpm_linear(),
            warm_start: None,
        }
    }
}

/// The validated grid of a DDS run.
#[derive(Clone, Debug, PartialEq)]
pub struct DdsPlan {
    pub config: DdsConfig,
    pub steps: Vec<PgdmStep>,
}

impl DdsPlan {
    /// Validate (1 ≤ steps ≤ N_train, η ∈ [0, 1], γ finite ≥ 0, M ≥ 1) and
    /// lay out the grid.
    pub fn new(config: DdsConfig) -> Result<Self> {
        let n_train = config.schedule.train_steps();
        if config.steps == 0 || config.steps > n_train {
            return Err(Error::InvalidSteps {
                steps: config.steps,
                train_steps: n_train,
            });
        }
        if !(0.0..=1.0).contains(&config.eta) {
            return Err(Error::InvalidParameter {
                name: "DDS eta",
                value: config.eta,
                reason: "must be in [0, 1]",
            });
        }
        if let DataConsistency::Tikhonov { gamma } = config.consistency {
            if !(gamma.is_finite() && gamma >= 0.0) {
                return Err(Error::InvalidParameter {
                    name: "DDS gamma",
                    value: gamma,
                    reason: "must be finite and ≥ 0",
                });
            }
        }
        if config.cg.iterations == 0 {
            return Err(Error::InvalidParameter {
                name: "CG iterations M",
                value: 0.0,
                reason: "must be ≥ 1",
            });
        }
        let ts = PgdmStep::grid(
            config.steps,
            n_train,
            config.warm_start,
            "DDS warm start τ0",
        )?;
        let steps = PgdmStep::pairs(&config.schedule, &ts);
        Ok(DdsPlan { config, steps })
    }

    /// `(√ᾱ_τ0, √(1 − ᾱ_τ0))` of the first step: the start is
    /// `a·x_init + b·z` with a warm start, and pure z otherwise.
    pub fn start_weights(&self) -> (f64, f64) {
        PgdmStep::start_weights(&self.steps, self.config.warm_start.is_some())
    }

    /// Where step `n` calls the network.
    pub fn model_point(&self, n: usize) -> Option<ModelPoint> {
        self.steps.get(n).map(|s| ModelPoint {
            tau: s.t as f64,
            a: s.abar_t.sqrt(),
            b: (1.0 - s.abar_t).sqrt(),
        })
    }

    /// The re-noise of step `n`, `x_s = c0·x̂0′ + c1·z + c2·ε`: √ᾱ_s,
    /// √(1−ᾱ_s)·η, √(1−ᾱ_s)·√(1−η²). The pair that lands on s = 0 writes x̂0′
    /// itself (1, 0, 0), as the official code does; the last pair (0, −1) has
    /// ᾱ_s = 1, so it returns x̂0′ too (the official code draws z there and
    /// multiplies it by 0).
    pub fn renoise(&self, n: usize) -> [f64; 3] {
        let step = &self.steps[n];
        if step.s == 0 {
            return [1.0, 0.0, 0.0];
        }
        let sigma = (1.0 - step.abar_s).max(0.0).sqrt();
        let eta = self.config.eta;
        [
            step.abar_s.sqrt(),
            sigma * eta,
            sigma * (1.0 - eta * eta).sqrt(),
        ]
    }
}

/// The buffers and position of one DDS run: the network input x_t, x̂0 (the
/// CG state, f32 or f64) and the CG solver with Aᵀy.
pub struct DdsRun<'r, B: KrylovOps> {
    plan: &'r DdsPlan,
    cg: ConjugateGradient<'r, B>,
    rhs: (f64, f64),
    aty: Tensor<B>,
    x0: Tensor<B>,
    x: Tensor<B>,
    step: usize,
}

impl<'r, B: KrylovOps> DdsRun<'r, B> {
    /// A run for measurements `y` (`[B, …y_item]`, or any shape with B items
    /// of as many elements) from the start `z` (`[B, …x_item]` likewise, the
    /// pure noise x_T; its dtype is the network's).
    pub fn new(
        backend: &B,
        plan: &'r DdsPlan,
        op: &'r dyn NormalMap<B>,
        y: &Tensor<B>,
        z: &Tensor<B>,
    ) -> Result<Self> {
        let (dtype, batch) = (z.dtype(), z.shape().batch());
        let x_shape = Shape::from_dims(&[&[batch][..], op.x_item().dims()].concat())?;
        let y_shape = Shape::from_dims(&[&[batch][..], op.y_item().dims()].concat())?;
        // Any layout of a sample's elements will do (y flat or [C, h, w]).
        for (what, t, want) in [
            ("DDS start z", z, x_shape),
            ("DDS measurements y", y, y_shape),
        ] {
            if t.shape().batch() != want.batch() || t.shape().item_len() != want.item_len() {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: want,
                    got: t.shape(),
                });
            }
        }
        if !backend.dds_supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: backend.kind().name(),
                dtype,
            });
        }
        // y comes to the host once: checked, then uploaded in the CG dtype.
        let y_host = y.to_f64(backend)?;
        check_measurement_values(&y_host)?;
        let state = cg_state_dtype(dtype);
        let (system, rhs_x, rhs_d) = plan.config.consistency.system();
        let cg = ConjugateGradient::new(backend, op, batch, state, system, plan.config.cg)?;
        // Aᵀy once per run, in the CG state's dtype (y goes up once in it).
        let y_state = Tensor::from_host(backend, y_shape, state, HostSlice::F64(&y_host))?;
        let mut aty = Tensor::zeros(backend, x_shape, state)?;
        op.adjoint(backend, &y_state, &mut aty)?;
        let mut x = Tensor::zeros(backend, x_shape, dtype)?;
        backend.copy(z.buffer(), x.buffer_mut())?;
        Ok(DdsRun {
            plan,
            cg,
            rhs: (rhs_x, rhs_d),
            aty,
            x0: Tensor::zeros(backend, x_shape, state)?,
            x,
            step: 0,
        })
    }

    /// The next network input (the sample, once every step has run).
    pub fn x(&self) -> &Tensor<B> {
        &self.x
    }

    /// x̂0 of the current step: Tweedie's after [`DdsRun::tweedie`], the CG
    /// result after [`DdsRun::consistency`].
    pub fn x0(&self) -> &Tensor<B> {
        &self.x0
    }

    /// The CG solver (iteration counts and residuals of the last step).
    pub fn cg(&self) -> &ConjugateGradient<'r, B> {
        &self.cg
    }

    /// Where the next step calls the network; `None` when the run is done.
    pub fn model_point(&self) -> Option<ModelPoint> {
        self.plan.model_point(self.step)
    }

    /// Whether the next step's re-noise draws fresh noise.
    pub fn needs_noise(&self) -> bool {
        self.step < self.plan.steps.len() && self.plan.renoise(self.step)[1] != 0.0
    }

    /// x̂0 ← (x_t − σ_t ε)/α_t from the network's ε at [`DdsRun::model_point`].
    pub fn tweedie(&mut self, backend: &B, eps: &Tensor<B>) -> Result<()> {
        let point = self.model_point().ok_or(Error::InvalidParameter {
            name: "DDS step",
            value: self.step as f64,
            reason: "the run has no steps left",
        })?;
        dds_tweedie(backend, &self.x, eps, point.a, point.b, &mut self.x0)
    }

    /// x̂0 ← M CG iterations of data consistency from x̂0.
    pub fn consistency(&mut self, backend: &B) -> Result<()> {
        let (rhs_x, rhs_d) = self.rhs;
        self.cg
            .solve(backend, &mut self.x0, &self.aty, rhs_x, rhs_d)
    }

    /// The next network input from x̂0, ε and the noise `z` (needed when
    /// [`DdsRun::needs_noise`]; ignored, and may be `None`, otherwise); ends
    /// the step.
    pub fn renoise(&mut self, backend: &B, eps: &Tensor<B>, z: Option<&Tensor<B>>) -> Result<()> {
        let c = self.plan.renoise(self.step);
        let z = match z {
            Some(z) => z,
            None if c[1] == 0.0 => eps,
            None => {
                return Err(Error::InvalidParameter {
                    name: "DDS noise z",
                    value: self.step as f64,
                    reason: "this step re-noises with fresh noise: pass z",
                })
            }
        };
        dds_renoise(backend, &self.x0, eps, z, c, &mut self.x)?;
        self.step += 1;
        Ok(())
    }

    /// The sample.
    pub fn into_x(self) -> Tensor<B> {
        self.x
    }
}

/// Run DDS from the pure noise `z` for measurements `y`: per step one network
/// call (N in all; the last, at τ = 0, refines the clean image once more, as
/// the official code does), Tweedie, M CG iterations and the re-noise, whose
/// fresh noise is Philox-keyed by (`seed`, step, element). `progress` can stop
/// the run ([`StepControl`]); it then returns the next network input.
#[allow(clippy::too_many_arguments)]
pub fn dds_sample<B, D, R>(
    backend: &B,
    plan: &DdsPlan,
    op: &dyn NormalMap<B>,
    y: &Tensor<B>,
    z: &Tensor<B>,
    denoiser: &mut D,
    seed: u64,
    mut progress: impl FnMut(Progress) -> R,
) -> Result<Tensor<B>>
where
    B: KrylovOps,
    D: GuidedDenoiser<B>,
    R: StepControl,
{
    let mut run = DdsRun::new(backend, plan, op, y, z)?;
    let (shape, dtype): (Shape, DType) = (z.shape(), z.dtype());
    let mut eps = Temp::new(backend, shape, dtype)?;
    let mut noise = Temp::new(backend, shape, dtype)?;
    for n in 0..plan.steps.len() {
        let point = plan.model_point(n).ok_or(Error::InvalidSteps {
            steps: n,
            train_steps: plan.steps.len(),
        })?;
        denoiser.eps(backend, run.x(), point, &mut eps)?;
        run.tweedie(backend, &eps)?;
        run.consistency(backend)?;
        let z = if run.needs_noise() {
            let values: Vec<f64> = (0..shape.checked_len()?)
                .map(|i| rng::normal_f64(seed, n as u32, i as u32))
                .collect();
            noise.upload(backend, HostSlice::F64(&values))?;
            Some(&*noise)
        } else {
            None
        };
        run.renoise(backend, &eps, z)?;
        let s = plan.steps[n].s;
        let control = progress(Progress {
            step: n,
            steps: plan.steps.len(),
            tau: point.tau,
            sigma: if s > 0 {
                (1.0 - plan.steps[n].abar_s).sqrt()
            } else {
                0.0
            },
        });
        if control.stop() {
            break;
        }
    }
    Ok(run.into_x())
}
