//! Noise schedules and time grids, all in f64 on the host.
//!
//! Conventions follow docs/math.md §1: `ᾱ_k` includes index `k`; `α = √ᾱ`,
//! `σ = √(1 − ᾱ)`, half log-SNR `λ = ln α − ln σ`, VE noise level `s = σ/α`.
//! Integer spacings reproduce diffusers' `set_timesteps` exactly (numpy's
//! `linspace`/`arange` arithmetic and round-half-to-even).

use crate::error::{Error, Result};

/// The β sequence of a discrete VP schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// β_k linear from `start` to `end` (DDPM: 1e-4 .. 0.02).
    Linear { start: f64, end: f64 },
    /// √β_k linear from √start to √end (latent diffusion: 0.00085 .. 0.012).
    ScaledLinear { start: f64, end: f64 },
    /// Nichol–Dhariwal cosine (`squaredcos_cap_v2`), β capped at 0.999.
    SquaredCosCapV2,
}

impl BetaSchedule {
    /// DDPM's linear schedule, 1e-4 .. 0.02.
    pub const DDPM: BetaSchedule = BetaSchedule::Linear {
        start: 1e-4,
        end: 0.02,
    };

    /// Parse a diffusers `beta_schedule` name with its `beta_start`/`beta_end`.
    pub fn from_diffusers(name: &str, start: f64, end: f64) -> Result<Self> {
        match name {
            "linear" => Ok(BetaSchedule::Linear { start, end }),
            "scaled_linear" => Ok(BetaSchedule::ScaledLinear { start, end }),
            "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
            _ => Err(Error::InvalidParameter {
                name: "beta_schedule",
                value: f64::NAN,
                reason: "expected linear, scaled_linear or squaredcos_cap_v2",
            }),
        }
    }

    fn betas(&self, n: usize) -> Result<Vec<f64>> {
        let check = |name, v: f64| {
            if v.is_finite() && v > 0.0 && v < 1.0 {
                Ok(())
            } else {
                Err(Error::InvalidParameter {
                    name,
                    value: v,
                    reason: "must be in (0, 1)",
                })
            }
        };
        Ok(match *self {
            BetaSchedule::Linear { start, end } => {
                check("beta_start", start)?;
                check("beta_end", end)?;
                linspace(start, end, n)
            }
            BetaSchedule::ScaledLinear { start, end } => {
                check("beta_start", start)?;
                check("beta_end", end)?;
                linspace(start.sqrt(), end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                let f = |u: f64| {
                    (((u + 0.008) / 1.008) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|k| {
                        let (t1, t2) = (k as f64 / n as f64, (k + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999)
                    })
                    .collect()
            }
        })
    }
}

/// numpy.linspace(start, stop, num) with numpy's arithmetic: `start + k·step`,
/// last element exactly `stop`.
pub(crate) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|k| start + k as f64 * step).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// A discrete VP noise schedule: `ᾱ_k` for the training timesteps `k = 0..N`.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Build `ᾱ_k = ∏_{i≤k}(1 − β_i)` for `train_steps` training timesteps.
    pub fn new(betas: BetaSchedule, train_steps: usize) -> Result<Self> {
        if train_steps < 2 {
            return Err(Error::InvalidParameter {
                name: "train_steps",
                value: train_steps as f64,
                reason: "must be at least 2",
            });
        }
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .betas(train_steps)?
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(NoiseSchedule { alphas_cumprod })
    }

    /// DDPM linear betas over 1000 steps, the schedule of the fixtures.
    pub fn ddpm_linear() -> Self {
        // The constant betas are valid, so this cannot fail.
        let betas = BetaSchedule::DDPM.betas(1000).unwrap_or_default();
        let mut acc = 1.0;
        NoiseSchedule {
            alphas_cumprod: betas
                .into_iter()
                .map(|b| {
                    acc *= 1.0 - b;
                    acc
                })
                .collect(),
        }
    }

    /// Wrap a user-given `ᾱ` table (strictly decreasing, in (0, 1)).
    pub fn from_alphas_cumprod(alphas_cumprod: Vec<f64>) -> Result<Self> {
        for (i, &a) in alphas_cumprod.iter().enumerate() {
            let ok = a > 0.0 && a < 1.0 && (i == 0 || a < alphas_cumprod[i - 1]);
            if !ok {
                return Err(Error::InvalidParameter {
                    name: "alphas_cumprod",
                    value: a,
                    reason: "must be in (0, 1) and strictly decreasing",
                });
            }
        }
        if alphas_cumprod.len() < 2 {
            return Err(Error::InvalidParameter {
                name: "train_steps",
                value: alphas_cumprod.len() as f64,
                reason: "must be at least 2",
            });
        }
        Ok(NoiseSchedule { alphas_cumprod })
    }

    /// Number of training timesteps N.
    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// The `ᾱ` table.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `ᾱ` at a (possibly fractional) timestep, linearly interpolated; the
    /// caller guarantees `0 ≤ t ≤ N−1`.
    pub fn alpha_bar(&self, t: f64) -> f64 {
        let last = self.alphas_cumprod.len() - 1;
        let t = t.clamp(0.0, last as f64);
        let lo = t.floor() as usize;
        let hi = (lo + 1).min(last);
        let w = t - lo as f64;
        self.alphas_cumprod[lo] * (1.0 - w) + self.alphas_cumprod[hi] * w
    }

    /// Grid point at integer training timestep `k`.
    pub fn point(&self, k: usize) -> Point {
        Point::from_ve_sigma(k as f64, ve_sigma(self.alphas_cumprod[k]))
    }

    /// `ln s_k` table, ascending in k.
    fn log_sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ve_sigma(a).ln())
            .collect()
    }

    /// diffusers `_sigma_to_t`: fractional timestep whose `ln s` interpolates to `ln sigma`.
    fn sigma_to_t(&self, log_sigmas: &[f64], sigma: f64) -> f64 {
        let ls = sigma.ln();
        let last = log_sigmas.len() - 1;
        // Index of the last table entry ≤ ls, clipped so (low, low+1) is a valid pair.
        let low = log_sigmas
            .iter()
            .rposition(|&v| v <= ls)
            .unwrap_or(0)
            .min(last - 1);
        let (l, h) = (log_sigmas[low], log_sigmas[low + 1]);
        let w = ((l - ls) / (l - h)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }
}

/// VE noise level `s = √((1 − ᾱ)/ᾱ)`.
fn ve_sigma(alpha_bar: f64) -> f64 {
    ((1.0 - alpha_bar) / alpha_bar).sqrt()
}

/// One point of a time grid: the network's time input and the VP coefficients there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Time input of the network (training-timestep units; integer for diffusers grids).
    pub tau: f64,
    /// Signal scale α (1 at the clean end).
    pub alpha: f64,
    /// Noise scale σ (0 at the clean end).
    pub sigma: f64,
}

impl Point {
    /// The clean end: α = 1, σ = 0 (λ = +∞).
    pub const CLEAN: Point = Point {
        tau: -1.0,
        alpha: 1.0,
        sigma: 0.0,
    };

    /// From a VE sigma `s`, as diffusers does: α = 1/√(s²+1), σ = s·α.
    pub fn from_ve_sigma(tau: f64, s: f64) -> Self {
        let alpha = 1.0 / (s * s + 1.0).sqrt();
        Point {
            tau,
            alpha,
            sigma: s * alpha,
        }
    }

    /// From `ᾱ` directly (α = √ᾱ, σ = √(1 − ᾱ)), as DDIM does.
    pub fn from_alpha_bar(tau: f64, alpha_bar: f64) -> Self {
        Point {
            tau,
            alpha: alpha_bar.sqrt(),
            sigma: (1.0 - alpha_bar).sqrt(),
        }
    }

    /// Half log-SNR λ = ln α − ln σ (+∞ at the clean end).
    pub fn lambda(&self) -> f64 {
        self.alpha.ln() - self.sigma.ln()
    }

    pub fn is_clean(&self) -> bool {
        self.sigma == 0.0
    }
}

/// diffusers' integer timestep spacings (`timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            _ => Err(Error::InvalidParameter {
                name: "timestep_spacing",
                value: f64::NAN,
                reason: "expected leading, trailing or linspace",
            }),
        }
    }
}

/// Which diffusers scheduler's variant of a spacing to reproduce: DDIM and the
/// multistep schedulers (DPM-Solver++, UniPC) round "leading" and "linspace" differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpacingFlavor {
    Ddim,
    Multistep,
}

/// How the sigma after the last model call is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FinalSigma {
    /// Step to σ = 0 (diffusers `final_sigmas_type="zero"`, the default).
    #[default]
    Zero,
    /// Stop at the smallest training sigma `s_0` (`"sigma_min"`).
    SigmaMin,
}

/// How the model-call times of a run are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum GridSpec {
    /// A diffusers integer spacing with `steps_offset`.
    Diffusers {
        spacing: Spacing,
        steps_offset: usize,
    },
    /// Karras/EDM sigmas with exponent ρ (7 in the paper), integer τ for the net.
    Karras { rho: f64 },
    /// Uniform in log-SNR (diffusers `use_lu_lambdas`), integer τ for the net.
    LogSnr,
    /// User-given training timesteps, strictly decreasing, in `0..N`.
    Custom(Vec<f64>),
}

/// The model-call points of a run plus the final point after the last call.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// `points[i]` is where the network is called at step i; `points[steps]` is the target of the last step.
    pub points: Vec<Point>,
}

impl Grid {
    pub fn steps(&self) -> usize {
        self.points.len() - 1
    }
}

fn round_half_even(v: f64) -> f64 {
    v.round_ties_even()
}

fn check_steps(steps: usize, train_steps: usize) -> Result<()> {
    if steps == 0 || steps > train_steps {
        Err(Error::InvalidSteps { steps, train_steps })
    } else {
        Ok(())
    }
}

/// diffusers' integer model timesteps for `steps` steps (descending).
pub fn diffusers_timesteps(
    spacing: Spacing,
    flavor: SpacingFlavor,
    steps: usize,
    train_steps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    check_steps(steps, train_steps)?;
    let n = train_steps;
    // diffusers adds steps_offset only for "leading".
    let ts: Vec<f64> = match (spacing, flavor) {
        (Spacing::Linspace, SpacingFlavor::Ddim) => linspace(0.0, (n - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(round_half_even)
            .collect(),
        (Spacing::Linspace, SpacingFlavor::Multistep) => {
            let mut v: Vec<f64> = linspace(0.0, (n - 1) as f64, steps + 1)
                .into_iter()
                .map(round_half_even)
                .rev()
                .collect();
            v.pop();
            v
        }
        (Spacing::Leading, SpacingFlavor::Ddim) => {
            let ratio = n / steps;
            (0..steps)
                .rev()
                .map(|k| (k * ratio + steps_offset) as f64)
                .collect()
        }
        (Spacing::Leading, SpacingFlavor::Multistep) => {
            let ratio = n / (steps + 1);
            (1..=steps)
                .rev()
                .map(|k| (k * ratio + steps_offset) as f64)
                .collect()
        }
        (Spacing::Trailing, _) => {
            // numpy.arange(n, 0, -n/steps): length ceil(n / (n/steps)), values n − k·step.
            let step = n as f64 / steps as f64;
            let len = ((0.0 - n as f64) / -step).ceil() as usize;
            (0..len)
                .map(|k| round_half_even(n as f64 + k as f64 * -step) - 1.0)
                .collect()
        }
    };
    ts.iter()
        .enumerate()
        .map(|(i, &t)| {
            if t >= 0.0 && (t as usize) < n {
                Ok(t as usize)
            } else {
                Err(Error::InvalidTimesteps {
                    index: i,
                    value: t,
                    reason: "outside 0..train_steps (steps_offset too large?)",
                })
            }
        })
        .collect()
}

/// Validate user-given timesteps: finite, strictly decreasing, in `[0, N−1]`.
pub fn validate_custom(timesteps: &[f64], train_steps: usize) -> Result<()> {
    check_steps(timesteps.len(), train_steps)?;
    for (i, &t) in timesteps.iter().enumerate() {
        if !t.is_finite() || t < 0.0 || t > (train_steps - 1) as f64 {
            return Err(Error::InvalidTimesteps {
                index: i,
                value: t,
                reason: "must be finite and within [0, train_steps − 1]",
            });
        }
        if i > 0 && t >= timesteps[i - 1] {
            return Err(Error::InvalidTimesteps {
                index: i,
                value: t,
                reason: "timesteps must be strictly decreasing",
            });
        }
    }
    Ok(())
}

impl NoiseSchedule {
    /// The multistep (DPM-Solver++/UniPC) grid of `steps` model calls plus the final point.
    pub fn grid(&self, spec: &GridSpec, steps: usize, final_sigma: FinalSigma) -> Result<Grid> {
        let n = self.train_steps();
        check_steps(steps, n)?;
        let mut points: Vec<Point> = match spec {
            GridSpec::Diffusers {
                spacing,
                steps_offset,
            } => diffusers_timesteps(*spacing, SpacingFlavor::Multistep, steps, n, *steps_offset)?
                .into_iter()
                .map(|k| self.point(k))
                .collect(),
            GridSpec::Custom(ts) => {
                validate_custom(ts, n)?;
                if ts.len() != steps {
                    return Err(Error::InvalidParameter {
                        name: "steps",
                        value: steps as f64,
                        reason: "must equal the number of custom timesteps",
                    });
                }
                ts.iter()
                    .map(|&t| Point::from_ve_sigma(t, ve_sigma(self.alpha_bar(t))))
                    .collect()
            }
            GridSpec::Karras { rho } => {
                if !(rho.is_finite() && *rho > 0.0) {
                    return Err(Error::InvalidParameter {
                        name: "rho",
                        value: *rho,
                        reason: "must be finite and positive",
                    });
                }
                let (s_min, s_max) = self.sigma_range();
                let (lo, hi) = (s_min.powf(1.0 / rho), s_max.powf(1.0 / rho));
                let sigmas: Vec<f64> = (0..steps)
                    .map(|i| {
                        let r = if steps == 1 {
                            0.0
                        } else {
                            i as f64 / (steps - 1) as f64
                        };
                        (hi + r * (lo - hi)).powf(*rho)
                    })
                    .collect();
                self.points_at_sigmas(&sigmas)
            }
            GridSpec::LogSnr => {
                let (s_min, s_max) = self.sigma_range();
                let sigmas: Vec<f64> = linspace(s_max.ln(), s_min.ln(), steps)
                    .into_iter()
                    .map(f64::exp)
                    .collect();
                self.points_at_sigmas(&sigmas)
            }
        };
        points.push(match final_sigma {
            FinalSigma::Zero => Point::CLEAN,
            FinalSigma::SigmaMin => self.point(0),
        });
        Ok(Grid { points })
    }

    /// diffusers DDIM transitions: model call at τ_i, step to `τ_i − N/steps`
    /// (ᾱ = 1 below 0), which is not always the next listed timestep.
    pub fn ddim_transitions(
        &self,
        spacing: Spacing,
        steps: usize,
        steps_offset: usize,
    ) -> Result<Vec<(Point, Point)>> {
        let n = self.train_steps();
        let ts = diffusers_timesteps(spacing, SpacingFlavor::Ddim, steps, n, steps_offset)?;
        let ratio = n / steps;
        Ok(ts
            .into_iter()
            .map(|t| {
                let from = Point::from_alpha_bar(t as f64, self.alphas_cumprod[t]);
                let to = match t.checked_sub(ratio) {
                    Some(p) => Point::from_alpha_bar(p as f64, self.alphas_cumprod[p]),
                    None => Point::CLEAN,
                };
                (from, to)
            })
            .collect())
    }

    fn sigma_range(&self) -> (f64, f64) {
        let first = ve_sigma(self.alphas_cumprod[0]);
        let last = ve_sigma(self.alphas_cumprod[self.train_steps() - 1]);
        (first, last)
    }

    /// Points at exact VE sigmas, with the network time rounded as diffusers does.
    fn points_at_sigmas(&self, sigmas: &[f64]) -> Vec<Point> {
        let log_sigmas = self.log_sigmas();
        sigmas
            .iter()
            .map(|&s| Point::from_ve_sigma(round_half_even(self.sigma_to_t(&log_sigmas, s)), s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddpm() -> NoiseSchedule {
        NoiseSchedule::ddpm_linear()
    }

    #[test]
    fn linear_schedule_reference_values() {
        let s = ddpm();
        let a = s.alphas_cumprod();
        assert!((a[0] - 0.9999).abs() < 1e-15);
        assert!((a[999] - 4.0358e-5).abs() < 1e-8);
        assert!((s.point(0).lambda() - 4.6051).abs() < 1e-4);
        assert!((s.point(999).lambda() + 5.0588).abs() < 1e-4);
    }

    #[test]
    fn diffusers_spacings_match_math_md() {
        let ms = |sp, n| diffusers_timesteps(sp, SpacingFlavor::Multistep, n, 1000, 0).unwrap();
        assert_eq!(ms(Spacing::Linspace, 5), [999, 799, 599, 400, 200]);
        assert_eq!(
            ms(Spacing::Linspace, 10),
            [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
        assert_eq!(ms(Spacing::Leading, 5), [830, 664, 498, 332, 166]);
        assert_eq!(ms(Spacing::Trailing, 5), [999, 799, 599, 399, 199]);
        let ddim = |sp, n| diffusers_timesteps(sp, SpacingFlavor::Ddim, n, 1000, 1).unwrap();
        assert_eq!(ddim(Spacing::Leading, 5), [801, 601, 401, 201, 1]);
        // Trailing with a step that is not an integer (1000/7) keeps exactly 7 steps.
        assert_eq!(ms(Spacing::Trailing, 7).len(), 7);
    }

    #[test]
    fn ddim_targets_step_by_train_over_steps() {
        let t = ddpm().ddim_transitions(Spacing::Linspace, 5, 0).unwrap();
        let taus: Vec<(f64, f64)> = t.iter().map(|(a, b)| (a.tau, b.tau)).collect();
        // diffusers steps to t − 200, not to the next listed timestep (749).
        assert_eq!(taus[0], (999.0, 799.0));
        assert!(t[4].1.is_clean());
    }

    #[test]
    fn karras_grid_is_decreasing_and_spans_the_table() {
        let s = ddpm();
        let g = s
            .grid(&GridSpec::Karras { rho: 7.0 }, 10, FinalSigma::Zero)
            .unwrap();
        let ve: Vec<f64> = g.points.iter().map(|p| p.sigma / p.alpha).collect();
        let (lo, hi) = s.sigma_range();
        assert!((ve[0] - hi).abs() < 1e-9 * hi && (ve[9] - lo).abs() < 1e-12);
        assert!(ve.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(g.points[0].tau, 999.0);
        assert_eq!(g.points[9].tau, 0.0);
        assert!(g.points[10].is_clean());
    }

    #[test]
    fn log_snr_grid_is_uniform_in_lambda() {
        let g = ddpm()
            .grid(&GridSpec::LogSnr, 6, FinalSigma::SigmaMin)
            .unwrap();
        let l: Vec<f64> = g.points[..6].iter().map(Point::lambda).collect();
        let d: Vec<f64> = l.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(d.iter().all(|x| (x - d[0]).abs() < 1e-9 && *x > 0.0));
        assert!(!g.points[6].is_clean());
    }

    #[test]
    fn other_beta_schedules_are_valid() {
        for b in [
            BetaSchedule::ScaledLinear {
                start: 0.00085,
                end: 0.012,
            },
            BetaSchedule::SquaredCosCapV2,
        ] {
            let s = NoiseSchedule::new(b, 1000).unwrap();
            let a = s.alphas_cumprod();
            assert!(a.windows(2).all(|w| w[1] < w[0] && w[1] > 0.0), "{b:?}");
        }
        let cos = NoiseSchedule::new(BetaSchedule::SquaredCosCapV2, 1000).unwrap();
        // ᾱ_0 = f(1/N)/f(0) for the cosine schedule.
        let f = |u: f64| {
            (((u + 0.008) / 1.008) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        assert!((cos.alphas_cumprod()[0] - f(0.001) / f(0.0)).abs() < 1e-15);
    }
}
