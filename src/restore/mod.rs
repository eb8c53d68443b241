//! The main job as a library call: restore one image with a diffusion prior —
//! degrade it with a task's operator, sample a restoration with one of the
//! conditional samplers, and score both the H⁺y baseline and the restoration
//! against the clean image. The `diffinv restore` command is this plus file
//! handling.
//!
//! ```no_run
//! use diffinv::backend::cpu::CpuBackend;
//! use diffinv::restore::{restore, Image, RestoreConfig};
//! use diffinv::unet::UNet;
//! use diffinv::DType;
//! # fn main() -> diffinv::Result<()> {
//! let mut net = UNet::load("assets/demo-unet", DType::F32)?;
//! let clean = Image::new(64, 64, vec![0.5; 3 * 64 * 64])?;
//! let out = restore(&CpuBackend::new(), &mut net, &clean, &RestoreConfig::default(), |_| {})?;
//! println!("PSNR {:.2} dB → {:.2} dB", out.baseline_psnr, out.restored_psnr);
//! # Ok(())
//! # }
//! ```

pub mod quality;
pub mod task;

use std::time::Instant;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::guidance::ModelPoint;
use crate::guidance::{CpgdmConfig, CpgdmPlan, PgdmDiscreteConfig, PgdmDiscretePlan};
use crate::ops::{Mode, Operator, Ops};
use crate::rng;
use crate::sampler::{
    dds_sample, dps_sample, guided_sample, DataConsistency, DdsConfig, DdsPlan, DpsConfig, DpsPlan,
    GuidedDenoiser, GuidedOptions, Jacobian, Progress,
};
use crate::tensor::{DType, HostSlice, Shape, Tensor};
pub use quality::{psnr, ssim};
pub use task::Task;

/// [`RestoreConfig::start`]'s default, τ0 = 400 (C-ΠGDM's official t = 0.4):
/// a sweep of τ0 ∈ {50 … 400} on the bundled photos at 5 steps (BENCHMARKS.md)
/// found no task that a lower start serves better for most methods.
pub const DEFAULT_START: usize = 400;

/// DPS's step size in `restore`: with 5–20 steps the official ζ = 0.5 (for
/// 1000 steps) leaves the sample unguided. Chosen by a small sweep on the
/// bundled astronaut (ζ ∈ {0.5, 5, 20, 60} × τ0 ∈ {100, 200, 400} at 5
/// steps, ζ ∈ {5, 20} at 20; BENCHMARKS.md; before the final projection):
/// with τ0 = 400, ζ = 20 keeps SR, both inpaintings and colorization within 0.2 dB
/// of H⁺y or above at 5 steps and gains most on random inpainting; no
/// setting brings deblurring up to H⁺y with the demo model.
pub const DPS_ZETA: f64 = 20.0;

/// The most posterior samples [`RestoreConfig::samples`] may average: they
/// run as one batch, so memory grows with the count.
pub const MAX_SAMPLES: usize = 64;

/// `a·u + b·v` (same shapes), through the host in f64: once per restore, for
/// the warm start `a·x_init + b·z` and the final projection.
fn mix<B: Backend>(
    backend: &B,
    (a, b): (f64, f64),
    u: &Tensor<B>,
    v: &Tensor<B>,
) -> Result<Tensor<B>> {
    let sum: Vec<f64> = u
        .to_f64(backend)?
        .iter()
        .zip(v.to_f64(backend)?)
        .map(|(u, v)| a * u + b * v)
        .collect();
    Tensor::from_host(backend, v.shape(), v.dtype(), HostSlice::F64(&sum))
}

/// `x + H⁺(y − Hx)`: x moved onto the measurements' consistent set (exactly
/// for inpainting, SR and colorization; within the truncated SVD for
/// deblurring), keeping x's component in H's null space — what the prior
/// filled in. A few steps leave the samplers' output slightly inconsistent
/// with y; the exact posterior of a noiseless measurement is not.
fn project<B: Ops>(
    backend: &B,
    op: &Operator<B>,
    y: &Tensor<B>,
    x: &Tensor<B>,
) -> Result<Tensor<B>> {
    let mut hx = Tensor::zeros(backend, y.shape(), y.dtype())?;
    op.apply(backend, Mode::Forward, x, &mut hx)?;
    let residual = mix(backend, (1.0, -1.0), y, &hx)?;
    let mut correction = Tensor::zeros(backend, x.shape(), x.dtype())?;
    op.apply(backend, Mode::PseudoInverse, &residual, &mut correction)?;
    mix(backend, (1.0, 1.0), x, &correction)
}

/// The mean over the batch of `samples` equal-sized items stored one after
/// another.
fn batch_mean(values: &[f64], samples: usize) -> Vec<f64> {
    let len = values.len() / samples;
    (0..len)
        .map(|i| (0..samples).map(|k| values[k * len + i]).sum::<f64>() / samples as f64)
        .collect()
}

/// DDS's noisy γ for `op`: the official γ = 1 is for an MRI mask, whose
/// AᵀA has norm 1; an operator with AᵀA = P/q (SR's 4×4 pooling: q = 16,
/// colorization: q = 3) gets γ = q, so that `I + γAᵀA = I + P` weighs its
/// measurements as the mask's. The blur's AᵀA has norm ≈ 1 already.
fn unit_gram_gamma<B: Ops>(op: &Operator<B>) -> f64 {
    let q = op.pinv_gram_scale();
    if q.is_finite() {
        q
    } else {
        1.0
    }
}

/// An RGB image, channel-major (`[3, height, width]`), values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// Check that `data` holds 3·height·width values.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if height == 0 || width == 0 || data.len() != 3 * height * width {
            return Err(Error::LengthMismatch {
                what: "image data (3 × height × width, channel-major)",
                expected: 3 * height * width,
                got: data.len(),
            });
        }
        Ok(Image {
            height,
            width,
            data,
        })
    }

    /// The image with every value clamped to [0, 1] (NaN to 0).
    pub fn clamped(mut self) -> Self {
        self.data
            .iter_mut()
            .for_each(|v| *v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) });
        self
    }
}

/// Which conditional sampler restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// C-ΠGDM (noisy C-ΠGDM when the task has noise).
    Cpgdm,
    /// Discrete ΠGDM (DDIM, η = 1; noisy ΠGDM when the task has noise).
    Pgdm,
    /// Diffusion posterior sampling.
    Dps,
    /// The decomposed diffusion sampler (CG data consistency: the normal
    /// equations for noiseless y, Tikhonov for noisy y with γ = 1 per unit
    /// of ‖AᵀA‖).
    Dds,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Cpgdm, Method::Pgdm, Method::Dps, Method::Dds];

    pub fn name(self) -> &'static str {
        match self {
            Method::Cpgdm => "cpigdm",
            Method::Pgdm => "pigdm",
            Method::Dps => "dps",
            Method::Dds => "dds",
        }
    }
}

/// Settings of one restoration.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreConfig {
    pub task: Task,
    /// Measurement noise σ in image units ([0, 1]); y gets 2σ·n in the
    /// network's [−1, 1] units.
    pub noise: f64,
    pub method: Method,
    /// Sampler steps (network calls: twice as many with a finite-difference
    /// Jacobian, except DDS, which has none).
    pub steps: usize,
    /// The Jacobian mode of C-ΠGDM, ΠGDM and DPS (the UNet has no VJP).
    pub jacobian: Jacobian,
    /// Storage dtype of the sampler and the network.
    pub dtype: DType,
    /// Seeds the start noise, every step's noise and the random mask.
    pub seed: u64,
    /// The training index τ0 (2…999) where every method starts, from
    /// `√ᾱ_τ0·H⁺y + √(1 − ᾱ_τ0)·z` (not the official pure noise: a few
    /// steps from pure noise need a far stronger prior than the demo model).
    pub start: usize,
    /// End with `x + H⁺(y − Hx)`, the sample moved onto the measurements'
    /// consistent set. Right for noiseless y; with noise it copies y's noise
    /// into the result.
    pub project: bool,
    /// Posterior samples drawn (as one batch, 1…[`MAX_SAMPLES`]); the
    /// restoration is their mean. One sample is what the samplers are made
    /// for; the mean of several estimates the posterior mean, which is what
    /// PSNR rewards: a single sample's squared error is the posterior
    /// mean's plus the posterior's spread, so where the prior knows little
    /// (deblurring's fine detail) one sample can score below H⁺y while the
    /// mean scores above it.
    pub samples: usize,
}

impl Default for RestoreConfig {
    /// 4× super-resolution by C-ΠGDM in 5 steps, Jacobian dropped, f32.
    fn default() -> Self {
        RestoreConfig {
            task: Task::Sr4,
            noise: 0.0,
            method: Method::Cpgdm,
            steps: 5,
            jacobian: Jacobian::Dropped,
            dtype: DType::F32,
            seed: 0,
            start: DEFAULT_START,
            project: true,
            samples: 1,
        }
    }
}

/// What [`restore`] returns: the three images and their scores.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The measurement y as a picture (`Task::picture`).
    pub degraded: Image,
    /// H⁺y.
    pub baseline: Image,
    /// The mean of the [`RestoreConfig::samples`] posterior samples.
    pub restored: Image,
    pub baseline_psnr: f64,
    pub restored_psnr: f64,
    pub baseline_ssim: f64,
    pub restored_ssim: f64,
    /// Network calls (each on the whole batch of samples).
    pub nfe: usize,
    /// Wall time of the sampler (network calls included).
    pub seconds: f64,
    /// The part of `seconds` spent inside the network's calls; the rest is
    /// this crate's kernels and the host work around them.
    pub network_seconds: f64,
}

/// A network whose calls are timed.
struct Clocked<'n, D> {
    net: &'n mut D,
    seconds: f64,
}

impl<B: Backend, D: GuidedDenoiser<B>> GuidedDenoiser<B> for Clocked<'_, D> {
    fn eps(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        out: &mut Tensor<B>,
    ) -> Result<()> {
        let start = Instant::now();
        let result = self.net.eps(backend, x, point, out);
        self.seconds += start.elapsed().as_secs_f64();
        result
    }

    fn vjp(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        m: &Tensor<B>,
        out: &mut Tensor<B>,
    ) -> Result<bool> {
        let start = Instant::now();
        let result = self.net.vjp(backend, x, point, m, out);
        self.seconds += start.elapsed().as_secs_f64();
        result
    }
}

/// Restore `clean` degraded by `config.task`: y = H x (+ 2σ·n), then the
/// sampler from seeded noise with `net` as the prior. `progress` hears of
/// every step (DPS, which has no per-step hook, reports once at the end). The image's sides must suit both the network and the task
/// ([`Task::side_multiple`]).
pub fn restore<B, D>(
    backend: &B,
    net: &mut D,
    clean: &Image,
    config: &RestoreConfig,
    mut progress: impl FnMut(Progress),
) -> Result<Restored>
where
    B: Ops,
    D: GuidedDenoiser<B>,
{
    if config.steps == 0 {
        return Err(Error::InvalidSteps {
            steps: 0,
            train_steps: 1000,
        });
    }
    if !(config.noise.is_finite() && config.noise >= 0.0) {
        return Err(Error::InvalidParameter {
            name: "noise σ",
            value: config.noise,
            reason: "must be finite and ≥ 0",
        });
    }
    let start = config.start;
    if !(2..=999).contains(&start) || config.steps > start + 1 {
        return Err(Error::InvalidParameter {
            name: "start τ0",
            value: start as f64,
            reason: "must be a training index in 2…999 and ≥ steps − 1",
        });
    }
    let samples = config.samples;
    if !(1..=MAX_SAMPLES).contains(&samples) {
        return Err(Error::InvalidParameter {
            name: "samples",
            value: samples as f64,
            reason: "must be at least 1 and at most restore::MAX_SAMPLES (they run as one batch)",
        });
    }
    let (h, w, dtype) = (clean.height, clean.width, config.dtype);
    let item = Shape::from_dims(&[3, h, w])?;
    // y comes from the task's operator; the baseline and the samplers invert
    // one whose truncation suits the noise (the same one when noiseless).
    let measure = config.task.operator(backend, item, config.seed)?;
    let op = config
        .task
        .inverse_operator(backend, item, config.noise, config.seed)?;
    // Every sample of the batch sees the same clean image and the same y.
    let x_shape = Shape::new(samples, 3, h, w);
    let y_shape = Shape::from_dims(&[&[samples][..], op.y_item().dims()].concat())?;
    let to_model: Vec<f64> = (0..samples)
        .flat_map(|_| clean.data.iter().map(|&v| 2.0 * f64::from(v) - 1.0))
        .collect();
    let x = Tensor::from_host(backend, x_shape, dtype, HostSlice::F64(&to_model))?;
    // y = H x in the run's dtype, plus seeded noise (indexed within one
    // measurement, so that the batch's copies of y are equal).
    let mut y = Tensor::zeros(backend, y_shape, x.dtype())?;
    measure.apply(backend, Mode::Forward, &x, &mut y)?;
    let y_len = op.y_item().checked_len()?;
    let noisy: Vec<f64> = y
        .to_f64(backend)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = rng::normal_f64(config.seed, 1_000_001, (i % y_len) as u32);
            v + 2.0 * config.noise * n
        })
        .collect();
    let y = Tensor::from_host(backend, y_shape, dtype, HostSlice::F64(&noisy))?;
    let mut baseline = Tensor::zeros(backend, x_shape, dtype)?;
    op.apply(backend, Mode::PseudoInverse, &y, &mut baseline)?;
    // The first sample's noise is a single-sample run's: `samples = 1`
    // reproduces it exactly.
    let z: Vec<f64> = (0..x_shape.checked_len()?)
        .map(|i| rng::normal_f64(config.seed, 1_000_000, i as u32))
        .collect();
    let z = Tensor::from_host(backend, x_shape, dtype, HostSlice::F64(&z))?;

    let started = Instant::now();
    let net = &mut Clocked { net, seconds: 0.0 };
    let options = GuidedOptions {
        jacobian: config.jacobian,
        seed: config.seed,
    };
    let per_step = match (config.method, config.jacobian) {
        (Method::Dds, _) | (_, Jacobian::Dropped) => 1,
        _ => 2,
    };
    let x = match config.method {
        Method::Cpgdm => {
            let plan = CpgdmPlan::new(CpgdmConfig {
                steps: config.steps,
                // Reverse time: τ0 = 400 is t = 0.6.
                t_start: 1.0 - start as f64 / 1000.0,
                sigma_y: config.noise,
                lambda: if config.noise > 0.0 { -0.15 } else { 0.0 },
                w: if config.noise > 0.0 { 2.0 } else { 15.0 },
                ..CpgdmConfig::default()
            })?;
            guided_sample(backend, &plan, &op, &y, &z, net, options, &mut progress)?
        }
        Method::Pgdm => {
            let plan = PgdmDiscretePlan::new(PgdmDiscreteConfig {
                steps: config.steps,
                warm_start: Some(start),
                sigma_y: config.noise,
                ..PgdmDiscreteConfig::default()
            })?;
            guided_sample(backend, &plan, &op, &y, &z, net, options, &mut progress)?
        }
        Method::Dps => {
            let plan = DpsPlan::new(DpsConfig {
                steps: config.steps,
                zeta: DPS_ZETA,
                warm_start: Some(start),
                ..DpsConfig::default()
            })?;
            let start = mix(backend, plan.start_weights(), &baseline, &z)?;
            let out = dps_sample(backend, &plan, &op, &y, &start, net, options)?;
            progress(Progress {
                step: config.steps - 1,
                steps: config.steps,
                tau: 0.0,
                sigma: 0.0,
            });
            out
        }
        Method::Dds => {
            let plan = DdsPlan::new(DdsConfig {
                steps: config.steps,
                warm_start: Some(start),
                // The official branches: the normal equations for noiseless
                // y (since the CG stall rule, safe at a fixed M), Tikhonov
                // for noisy y — the official γ = 1 per unit of ‖AᵀA‖.
                consistency: if config.noise > 0.0 {
                    DataConsistency::Tikhonov {
                        gamma: unit_gram_gamma(&op),
                    }
                } else {
                    DataConsistency::NormalEquations
                },
                ..DdsConfig::default()
            })?;
            let start = mix(backend, plan.start_weights(), &baseline, &z)?;
            dds_sample(
                backend,
                &plan,
                &op,
                &y,
                &start,
                net,
                config.seed,
                &mut progress,
            )?
        }
    };
    let x = if config.project {
        project(backend, &op, &y, &x)?
    } else {
        x
    };
    backend.synchronize()?;
    let seconds = started.elapsed().as_secs_f64();
    let network_seconds = net.seconds;

    let x_len = item.checked_len()?;
    let picture = |values: Vec<f64>| -> Result<Image> {
        let data = values.iter().map(|v| (0.5 * (v + 1.0)) as f32).collect();
        Ok(Image::new(h, w, data)?.clamped())
    };
    let first = |t: &Tensor<B>, len: usize| -> Result<Vec<f64>> {
        let mut values = t.to_f64(backend)?;
        values.truncate(len);
        Ok(values)
    };
    let baseline = picture(first(&baseline, x_len)?)?;
    let restored = picture(batch_mean(&x.to_f64(backend)?, samples))?;
    let degraded = config.task.picture(&first(&y, y_len)?, h, w)?;
    Ok(Restored {
        baseline_psnr: psnr(&baseline, clean)?,
        restored_psnr: psnr(&restored, clean)?,
        baseline_ssim: ssim(&baseline, clean)?,
        restored_ssim: ssim(&restored, clean)?,
        degraded,
        baseline,
        restored,
        nfe: config.steps * per_step,
        seconds,
        network_seconds,
    })
}
