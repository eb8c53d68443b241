//! Discrete ΠGDM (Song, Vahdat, Mardani, Kautz, *Pseudoinverse-Guided
//! Diffusion Models for Inverse Problems*, ICLR 2023) as the official C-ΠGDM
//! repository implements it (`docs/math.md` §6.7): DDIM(η) on the discrete
//! schedule driven by the conditional score, with the guidance term
//! `w·α_t·α_s·J_x̂0ᵀm` (its "adaptive weight").

use super::{check_step, GuidancePlan, ModelPoint, PassCoefficients};
use crate::error::{Error, Result};
use crate::schedule::NoiseSchedule;

/// Settings of a discrete ΠGDM run.
#[derive(Clone, Debug, PartialEq)]
pub struct PgdmDiscreteConfig {
    /// Network calls N; the grid is every ⌊N_train/N⌋-th training index.
    pub steps: usize,
    /// Guidance weight w ≥ 0.
    pub w: f64,
    /// DDIM's η ≥ 0 (1: the official default).
    pub eta: f64,
    pub schedule: NoiseSchedule,
    /// Start at training index τ0 (`α_τ0 H⁺y + σ_τ0 z`, as every ΠGDM run
    /// starts from H⁺y) with the steps spread evenly from τ0 down to 0
    /// ([`PgdmStep::grid`]), instead of the grid from the top of the
    /// schedule. Not in the official code.
    pub warm_start: Option<usize>,
    /// Measurement noise σ_y in [0, 1] image units (y carries 2σ_y·n in the
    /// network's [−1, 1] units, as C-ΠGDM's `sigma_y` states it); 0 is the
    /// official noiseless method. Noisy, the guidance is the paper's
    /// `Hᵀ(r_t²HHᵀ + (2σ_y)²I)⁻¹(y − Hx̂0)`, which for operators with
    /// `H⁺(H⁺)ᵀ = q·P` is the noiseless guidance times
    /// `r_t²/(r_t² + q(2σ_y)²)`, r_t² = 1 − ᾱ_t ([`PgdmStep::noise_factor`]).
    /// Not in the official code, whose ΠGDM is noiseless.
    pub sigma_y: f64,
}

impl Default for PgdmDiscreteConfig {
    /// The official defaults: 5 steps, w = 1, η = 1, DDPM's linear schedule.
    fn default() -> Self {
        PgdmDiscreteConfig {
            steps: 5,
            w: 1.0,
            eta: 1.0,
            schedule: NoiseSchedule::ddpm_linear(),
            warm_start: None,
            sigma_y: 0.0,
        }
    }
}

/// One step from training index t to s (s = −1: the clean end, ᾱ = 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PgdmStep {
    pub t: i64,
    pub s: i64,
    pub abar_t: f64,
    pub abar_s: f64,
}

impl PgdmStep {
    /// `(√ᾱ_t, √(1 − ᾱ_t))` of the first step of a `warm`-started run, whose
    /// start is `a·x_init + b·z`; `(0, 1)` (pure noise) otherwise.
    pub fn start_weights(steps: &[PgdmStep], warm: bool) -> (f64, f64) {
        match (warm, steps.first()) {
            (true, Some(s)) => (s.abar_t.sqrt(), (1.0 - s.abar_t).sqrt()),
            _ => (0.0, 1.0),
        }
    }

    /// Each training index of the descending grid `ts` paired with the next,
    /// the last with −1 (ᾱ = 1, the clean end).
    pub fn pairs(schedule: &NoiseSchedule, ts: &[i64]) -> Vec<PgdmStep> {
        let abar = |k: i64| {
            if k < 0 {
                1.0
            } else {
                schedule.alphas_cumprod()[k as usize]
            }
        };
        ts.iter()
            .enumerate()
            .map(|(i, &t)| {
                let s = ts.get(i + 1).copied().unwrap_or(-1);
                PgdmStep {
                    t,
                    s,
                    abar_t: abar(t),
                    abar_s: abar(s),
                }
            })
            .collect()
    }

    /// The descending training indices of a ΠGDM or DDS run of `steps`
    /// (1…N_train, checked by the caller) on a schedule of `n_train` steps:
    /// without a warm start `(0..steps)·⌊n_train/steps⌋` (the official grid);
    /// with one at τ0, the steps spread evenly from τ0 down to 0 (one step is
    /// just τ0), which needs τ0 < n_train and steps ≤ τ0 + 1 so that no index
    /// repeats — else an `InvalidParameter` named `name`.
    pub fn grid(
        steps: usize,
        n_train: usize,
        warm_start: Option<usize>,
        name: &'static str,
    ) -> Result<Vec<i64>> {
        match warm_start {
            None => Ok((0..steps)
                .rev()
                .map(|i| (i * (n_train / steps)) as i64)
                .collect()),
            Some(top) if steps == 1 && top < n_train => Ok(vec![top as i64]),
            Some(top) if top < n_train && steps <= top + 1 => Ok((0..steps)
                .rev()
                .map(|i| (i * top / (steps - 1)) as i64)
                .collect()),
            Some(top) => Err(Error::InvalidParameter {
                name,
                value: top as f64,
                reason: "must be below the schedule's training steps and ≥ steps − 1",
            }),
        }
    }

    /// The noisy ΠGDM's weight on the guidance at this step, `r²/(r² + q·σ²)`
    /// with r² = 1 − ᾱ_t (the paper's variance of x0 given x_t, for data of
    /// unit variance) and σ = 2σ_y the noise std in [−1, 1] units: how much
    /// of the residual `m` is still signal rather than noise. 1 when
    /// noiseless — exactly, so the noiseless coefficients are unchanged.
    pub fn noise_factor(&self, q: f64, sigma_y: f64) -> f64 {
        if sigma_y == 0.0 {
            return 1.0;
        }
        let r2 = 1.0 - self.abar_t;
        let noise = 2.0 * sigma_y;
        r2 / (r2 + q * noise * noise)
    }

    /// DDIM(η)'s split of the step t → s into fresh noise and ε:
    /// `x_s = α_s x̂0 + c1·z + c2·ε` with `c1 = η·√((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t))`,
    /// `c2 = √(1 − ᾱ_s − c1²)`; η = 1 is the DDPM ancestral step.
    pub fn ddim_split(&self, eta: f64) -> (f64, f64) {
        let (abar_t, abar_s) = (self.abar_t, self.abar_s);
        let c1 = eta * ((1.0 - abar_t / abar_s) * (1.0 - abar_s) / (1.0 - abar_t)).sqrt();
        // 1 − ᾱ_s − c1² ≥ 0 exactly; rounding must not make it a NaN.
        let c2 = (1.0 - abar_s - c1 * c1).max(0.0).sqrt();
        (c1, c2)
    }
}

/// The plan of a discrete ΠGDM run.
#[derive(Clone, Debug, PartialEq)]
pub struct PgdmDiscretePlan {
    pub config: PgdmDiscreteConfig,
    pub steps: Vec<PgdmStep>,
}

impl PgdmDiscretePlan {
    /// Validate (1 ≤ steps ≤ N_train, finite w ≥ 0, finite η ≥ 0) and lay out
    /// the pairs: t runs over `(0..steps)·⌊N_train/steps⌋` from the largest
    /// down (or evenly below a warm start, [`PgdmStep::grid`]), each paired with the next, the last
    /// with −1.
    pub fn new(config: PgdmDiscreteConfig) -> Result<Self> {
        let n_train = config.schedule.train_steps();
        if config.steps == 0 || config.steps > n_train {
            return Err(Error::InvalidSteps {
                steps: config.steps,
                train_steps: n_train,
            });
        }
        for (name, v) in [
            ("w", config.w),
            ("eta", config.eta),
            ("sigma_y", config.sigma_y),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::InvalidParameter {
                    name,
                    value: v,
                    reason: "must be finite and ≥ 0",
                });
            }
        }
        let ts = PgdmStep::grid(
            config.steps,
            n_train,
            config.warm_start,
            "ΠGDM warm start τ0",
        )?;
        let steps = PgdmStep::pairs(&config.schedule, &ts);
        Ok(PgdmDiscretePlan { config, steps })
    }

    /// DDIM's noise and ε coefficients `(c1, c2)` of step n.
    fn ddim(&self, n: usize) -> (f64, f64) {
        self.steps[n].ddim_split(self.config.eta)
    }
}

impl GuidancePlan for PgdmDiscretePlan {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn model_point(&self, n: usize) -> Result<ModelPoint> {
        check_step(n, self.steps.len())?;
        let s = self.steps[n];
        Ok(ModelPoint {
            tau: s.t as f64,
            a: s.abar_t.sqrt(),
            b: (1.0 - s.abar_t).sqrt(),
        })
    }

    /// The state is x itself (u = P x, v = (I − P) x): `x₀ = α H⁺y + σ z` at
    /// the first index.
    fn init_coefficients(&self, _q: f64) -> PassCoefficients {
        // A validated plan has at least one step.
        let first = self.steps[0].abar_t;
        let p = ModelPoint {
            tau: 0.0,
            a: first.sqrt(),
            b: (1.0 - first).sqrt(),
        };
        let mut c = [0.0; 12];
        c[..5].copy_from_slice(&[p.a, p.b, p.b, p.a, p.b]);
        c
    }

    /// `m = H⁺y − (P x − σ_t Pε)/α_t`.
    fn residual_coefficients(&self, n: usize, _q: f64) -> Result<PassCoefficients> {
        let p = self.model_point(n)?;
        let mut c = [0.0; 12];
        (c[0], c[1]) = (1.0 / p.a, p.b / p.a);
        Ok(c)
    }

    /// `x_s = α_s x̂0 + c1·z + c2·ε + w α_t α_s·J_x̂0ᵀm` with
    /// `x̂0 = (x − σ_t ε)/α_t`, `J_x̂0ᵀm = (m − σ_t g)/α_t` and m as in the
    /// residual, split into u = P x and v; noisy, the guidance term is
    /// scaled by [`PgdmStep::noise_factor`].
    fn update_coefficients(&self, n: usize, q: f64) -> Result<PassCoefficients> {
        let p = self.model_point(n)?;
        let (at, st) = (p.a, p.b);
        let step = self.steps[n];
        let a_s = step.abar_s.sqrt();
        let (c1, c2) = self.ddim(n);
        let coeff = self.config.w * at * a_s * step.noise_factor(q, self.config.sigma_y);
        let on_eps = c2 - a_s * st / at;
        let on_g = -coeff * st / at;
        Ok([
            a_s / at - coeff / (at * at),
            coeff / at,
            on_eps + coeff * st / (at * at),
            on_g,
            on_eps,
            on_g,
            1.0,
            1.0,
            a_s / at,
            c1,
            0.0,
            0.0,
        ])
    }

    fn step_noise(&self, n: usize) -> bool {
        n < self.steps.len() && self.ddim(n).0 != 0.0
    }

    fn uses_gram_scale(&self) -> bool {
        self.config.sigma_y > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_follows_the_official_code() {
        let plan = PgdmDiscretePlan::new(PgdmDiscreteConfig::default()).unwrap();
        let pairs: Vec<(i64, i64)> = plan.steps.iter().map(|s| (s.t, s.s)).collect();
        assert_eq!(
            pairs,
            vec![(800, 600), (600, 400), (400, 200), (200, 0), (0, -1)]
        );
        assert_eq!(plan.steps[4].abar_s, 1.0);
        // The last pair draws no noise (c1 = 0) but still guides.
        assert!(!plan.step_noise(4) && plan.step_noise(0));
        let c = plan.update_coefficients(4, 1.0).unwrap();
        assert!(c[1] > 0.0 && c[9] == 0.0);
    }

    /// A warm start at τ0 spreads the steps from τ0 down to 0; it must stay
    /// below the schedule and leave every step its own index.
    #[test]
    fn a_warm_start_grids_below_tau0() {
        let warm = |steps, top| {
            PgdmDiscretePlan::new(PgdmDiscreteConfig {
                steps,
                warm_start: Some(top),
                ..Default::default()
            })
        };
        let ts = |plan: PgdmDiscretePlan| plan.steps.iter().map(|s| s.t).collect::<Vec<_>>();
        assert_eq!(ts(warm(5, 200).unwrap()), vec![200, 150, 100, 50, 0]);
        assert_eq!(ts(warm(4, 10).unwrap()), vec![10, 6, 3, 0]);
        assert_eq!(ts(warm(1, 300).unwrap()), vec![300]);
        assert_eq!(ts(warm(3, 2).unwrap()), vec![2, 1, 0]);
        for (steps, top) in [(4, 2), (5, 1000), (5, usize::MAX)] {
            assert!(
                matches!(warm(steps, top), Err(Error::InvalidParameter { .. })),
                "{steps} steps from {top}"
            );
        }
    }

    /// w = 0: the update is DDIM(η) on x (x̂0 and ε recombined).
    #[test]
    fn without_guidance_the_update_is_ddim() {
        let plan = PgdmDiscretePlan::new(PgdmDiscreteConfig {
            w: 0.0,
            ..Default::default()
        })
        .unwrap();
        for n in 0..plan.len() {
            let c = plan.update_coefficients(n, 1.0).unwrap();
            let (at, a_s) = (plan.steps[n].abar_t.sqrt(), plan.steps[n].abar_s.sqrt());
            assert_eq!((c[0], c[8], c[1], c[3]), (a_s / at, a_s / at, 0.0, 0.0));
        }
    }

    /// Noisy ΠGDM scales the guidance by r²/(r² + q(2σ_y)²), r² = 1 − ᾱ_t,
    /// and leaves everything else as the noiseless update.
    #[test]
    fn noise_scales_the_guidance_by_the_signal_share() {
        let plan = |sigma_y| {
            PgdmDiscretePlan::new(PgdmDiscreteConfig {
                sigma_y,
                ..Default::default()
            })
            .unwrap()
        };
        let (clean, noisy) = (plan(0.0), plan(0.05));
        assert!(!clean.uses_gram_scale() && noisy.uses_gram_scale());
        let q = 16.0;
        for n in 0..noisy.len() {
            let step = noisy.steps[n];
            let r2 = 1.0 - step.abar_t;
            let share = r2 / (r2 + q * 0.1 * 0.1);
            assert!((step.noise_factor(q, 0.05) - share).abs() <= 1e-15 * share);
            assert_eq!(step.noise_factor(q, 0.0), 1.0);
            let (c, d) = (
                clean.update_coefficients(n, q).unwrap(),
                noisy.update_coefficients(n, q).unwrap(),
            );
            // c[1] = coeff/α_t and c[3] = −coeff·σ_t/α_t carry the guidance alone.
            for i in [1, 3, 5] {
                assert!((d[i] - share * c[i]).abs() <= 1e-12 * c[i].abs(), "{n} {i}");
            }
            // The fresh noise and the x̂0 path of v do not depend on it.
            assert_eq!((d[8], d[9]), (c[8], c[9]));
        }
        // The last step (t = 0, r² = 1e-4) almost ignores a residual that is
        // mostly noise; the first (t = 800) keeps most of it.
        let last = noisy.steps[noisy.len() - 1].noise_factor(q, 0.05);
        let first = noisy.steps[0].noise_factor(q, 0.05);
        assert!(last < 1e-3 && first > 0.5, "{first} {last}");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let plan = PgdmDiscretePlan::new(PgdmDiscreteConfig::default()).unwrap();
        assert!(matches!(
            plan.update_coefficients(5, 1.0),
            Err(Error::StepOutOfRange { step: 5, steps: 5 })
        ));
        assert!(matches!(
            plan.model_point(9),
            Err(Error::StepOutOfRange { .. })
        ));
        assert!(!plan.step_noise(5));
        let d = PgdmDiscreteConfig::default();
        assert!(matches!(
            PgdmDiscretePlan::new(PgdmDiscreteConfig {
                steps: 0,
                ..d.clone()
            }),
            Err(Error::InvalidSteps { .. })
        ));
        assert!(matches!(
            PgdmDiscretePlan::new(PgdmDiscreteConfig {
                steps: 1001,
                ..d.clone()
            }),
            Err(Error::InvalidSteps { .. })
        ));
        assert!(matches!(
            PgdmDiscretePlan::new(PgdmDiscreteConfig {
                w: -1.0,
                ..d.clone()
            }),
            Err(Error::InvalidParameter { name: "w", .. })
        ));
        assert!(matches!(
            PgdmDiscretePlan::new(PgdmDiscreteConfig {
                eta: f64::NAN,
                ..d.clone()
            }),
            Err(Error::InvalidParameter { name: "eta", .. })
        ));
        for sigma_y in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                PgdmDiscretePlan::new(PgdmDiscreteConfig {
                    sigma_y,
                    ..d.clone()
                }),
                Err(Error::InvalidParameter {
                    name: "sigma_y",
                    ..
                })
            ));
        }
    }
}
