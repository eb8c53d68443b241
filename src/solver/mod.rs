//! Solvers as host-side plans: one [`SolverStep`] of f64 scalars per model call.
//!
//! DDIM (docs/math.md §2.1), DPM-Solver++ 1S/2M/3M (§2.2) and UniPC bh2 (§2.3)
//! differ only in how they turn the time grid into the scalars of the one
//! fused update described in [`SolverStep`]; the kernels never see which solver runs.

mod ddim;
mod dpmpp;
mod step;
mod unipc;

pub use step::{slot_stride, Corrector, CorrectorBase, SolverStep, StepLaunch};

use crate::error::{Error, Result};
use crate::schedule::{FinalSigma, GridSpec, NoiseSchedule, Point};

/// The second-order update rule of DPM-Solver++ (diffusers `solver_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecondOrder {
    #[default]
    Midpoint,
    Heun,
}

/// A sampling algorithm and its options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Solver {
    /// DDIM with stochasticity η ∈ [0, 1] (η = 0: deterministic, = DPM-Solver++ 1S).
    Ddim { eta: f64 },
    /// DPM-Solver++ multistep of `order` 1, 2 or 3 (diffusers' `DPMSolverMultistepScheduler`).
    DpmSolverPP {
        order: u8,
        second_order: SecondOrder,
        /// Lower the order of the last steps when fewer than 15 steps run (default true).
        lower_order_final: bool,
        /// Force a first-order last step (default false).
        euler_at_final: bool,
    },
    /// UniPC, bh2, order 2, data prediction, lower-order final step (diffusers defaults).
    UniPc,
}

impl Solver {
    /// DPM-Solver++ 2M with diffusers' defaults.
    pub const DPMPP_2M: Solver = Solver::DpmSolverPP {
        order: 2,
        second_order: SecondOrder::Midpoint,
        lower_order_final: true,
        euler_at_final: false,
    };

    /// DPM-Solver++ 3M with diffusers' defaults.
    pub const DPMPP_3M: Solver = Solver::DpmSolverPP {
        order: 3,
        second_order: SecondOrder::Midpoint,
        lower_order_final: true,
        euler_at_final: false,
    };
}

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Prediction {
    /// ε (noise) prediction.
    #[default]
    Epsilon,
    /// v-prediction: v = α·ε − σ·x0.
    V,
}

impl Prediction {
    /// Coefficients of `D = cx·x − ce·m` at a point.
    fn data_coefficients(self, p: &Point) -> (f64, f64) {
        match self {
            Prediction::Epsilon => (1.0 / p.alpha, p.sigma / p.alpha),
            Prediction::V => (p.alpha, p.sigma),
        }
    }
}

/// Everything that determines a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanConfig {
    pub solver: Solver,
    pub grid: GridSpec,
    /// Number of model calls.
    pub steps: usize,
    pub final_sigma: FinalSigma,
    pub prediction: Prediction,
}

impl Default for PlanConfig {
    /// DPM-Solver++ 2M, 20 steps, diffusers "leading" spacing, ε-prediction.
    fn default() -> Self {
        PlanConfig {
            solver: Solver::DPMPP_2M,
            grid: GridSpec::Diffusers {
                spacing: crate::schedule::Spacing::Leading,
                steps_offset: 0,
            },
            steps: 20,
            final_sigma: FinalSigma::Zero,
            prediction: Prediction::Epsilon,
        }
    }
}

/// One model call and the fused update that follows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanStep {
    /// Where the network is evaluated (its `tau` is the network's time input).
    pub point: Point,
    /// Where the update lands.
    pub target: Point,
    pub update: SolverStep,
}

/// The whole run: one step per model call, and the state slots it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    /// Slots of the state buffer (history ring + corrected sample).
    pub state_slots: u32,
}

impl Plan {
    /// Build the plan of `config` on `schedule`.
    pub fn new(schedule: &NoiseSchedule, config: &PlanConfig) -> Result<Plan> {
        let transitions = transitions(schedule, config)?;
        let mut steps = match config.solver {
            Solver::Ddim { eta } => ddim::plan(&transitions, eta)?,
            Solver::DpmSolverPP {
                order,
                second_order,
                lower_order_final,
                euler_at_final,
            } => {
                if !(1..=3).contains(&order) {
                    return Err(Error::InvalidParameter {
                        name: "order",
                        value: f64::from(order),
                        reason: "DPM-Solver++ order must be 1, 2 or 3",
                    });
                }
                let opts = dpmpp::Options {
                    order,
                    second_order,
                    lower_order_final,
                    euler_at_final,
                    final_zero: config.final_sigma == FinalSigma::Zero,
                };
                dpmpp::plan(&transitions, opts)
            }
            Solver::UniPc => unipc::plan(&transitions),
        };
        for s in &mut steps {
            let (cx, ce) = config.prediction.data_coefficients(&s.point);
            s.update.cx = cx;
            s.update.ce = ce;
        }
        let state_slots = steps
            .iter()
            .map(|s| s.update.slots_used())
            .max()
            .unwrap_or(0);
        Ok(Plan { steps, state_slots })
    }

    /// Number of model calls.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// (model point, target point) of every step. DDIM on a diffusers spacing
/// reproduces diffusers' `t − N/steps` targets; everything else steps to the
/// next grid point.
fn transitions(schedule: &NoiseSchedule, config: &PlanConfig) -> Result<Vec<(Point, Point)>> {
    if let (
        Solver::Ddim { .. },
        GridSpec::Diffusers {
            spacing,
            steps_offset,
        },
    ) = (config.solver, &config.grid)
    {
        return schedule.ddim_transitions(*spacing, config.steps, *steps_offset);
    }
    let grid = schedule.grid(&config.grid, config.steps, config.final_sigma)?;
    Ok(grid.points.windows(2).map(|w| (w[0], w[1])).collect())
}

/// A step with no history, no corrector and no noise: `x' = a·x + b0·D`.
fn simple_step(a: f64, b0: f64) -> SolverStep {
    SolverStep {
        cx: 0.0,
        ce: 0.0,
        d_slot: None,
        h1: None,
        h2: None,
        xc_slot: None,
        corrector: None,
        a,
        b: [b0, 0.0, 0.0],
        noise: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Spacing;

    fn plan_of(solver: Solver, spacing: Spacing, steps: usize) -> Plan {
        let config = PlanConfig {
            solver,
            grid: GridSpec::Diffusers {
                spacing,
                steps_offset: 0,
            },
            steps,
            ..PlanConfig::default()
        };
        Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap()
    }

    #[test]
    fn unipc_coefficients_match_the_reference_table() {
        // The table of docs/math.md §2.3: (UniC a, UniC c, UniP a, UniP b) per step.
        let p = plan_of(Solver::UniPc, Spacing::Leading, 5);
        let close = |a: f64, b: f64| (a - b).abs() < 5e-6;
        let want_pred = [
            (0.994800, [0.076059, 0.0]),
            (0.964947, [0.251242, -0.071990]),
            (0.858943, [0.460752, -0.136382]),
            (0.611626, [0.795120, -0.277869]),
            (0.0, [1.0, 0.0]),
        ];
        for (k, (a, b)) in want_pred.iter().enumerate() {
            let u = &p.steps[k].update;
            assert!(
                close(u.a, *a) && close(u.b[0], b[0]) && close(u.b[1], b[1]),
                "step {k}: {u:?}"
            );
        }
        let want_corr = [
            (0.994800, [0.038029, 0.038029, 0.0]),
            (0.964947, [0.091392, 0.098370, -0.010511]),
            (0.858943, [0.160494, 0.184395, -0.020520]),
        ];
        for (k, (a, c)) in want_corr.iter().enumerate() {
            let corr = p.steps[k + 1].update.corrector.unwrap();
            assert_eq!(corr.base, CorrectorBase::Slot);
            assert!(
                close(corr.a, *a) && (0..3).all(|j| close(corr.c[j], c[j])),
                "step {}: {corr:?}",
                k + 1
            );
        }
        // Step 0 seeds x^c with x̃_0; the last step's corrector is dead work (σ_N = 0).
        assert_eq!(p.steps[0].update.corrector.unwrap().base, CorrectorBase::X);
        assert!(p.steps[4].update.corrector.is_none());
        assert_eq!(p.state_slots, 4);
    }

    #[test]
    fn every_step_integrates_a_constant_exactly() {
        // Σb (+ Σc for the corrector) = α_t(1 − e^{−h}) for every order.
        for solver in [
            Solver::DPMPP_2M,
            Solver::DPMPP_3M,
            Solver::UniPc,
            Solver::Ddim { eta: 0.0 },
        ] {
            let p = plan_of(solver, Spacing::Trailing, 12);
            for s in &p.steps[..p.len() - 1] {
                let (from, to) = (s.point, s.target);
                let h = to.lambda() - from.lambda();
                let want = to.alpha * -(-h).exp_m1();
                let got: f64 = s.update.b.iter().sum();
                assert!((got - want).abs() < 1e-12, "{solver:?}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn every_planned_step_passes_validation() {
        // Distinct slots per step, a slot for every corrector, finite scalars.
        for solver in [
            Solver::DPMPP_2M,
            Solver::DPMPP_3M,
            Solver::UniPc,
            Solver::Ddim { eta: 1.0 },
        ] {
            for spacing in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
                for steps in [1, 2, 3, 5, 20] {
                    for s in plan_of(solver, spacing, steps).steps {
                        s.update.validate().unwrap_or_else(|e| {
                            panic!("{solver:?} {spacing:?} {steps} steps: {e}: {:?}", s.update)
                        });
                    }
                }
            }
        }
    }

    #[test]
    fn v_prediction_uses_alpha_and_sigma() {
        let config = PlanConfig {
            prediction: Prediction::V,
            steps: 4,
            ..PlanConfig::default()
        };
        let p = Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap();
        let s = &p.steps[1];
        assert_eq!((s.update.cx, s.update.ce), (s.point.alpha, s.point.sigma));
    }
}
