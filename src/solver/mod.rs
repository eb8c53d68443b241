//! Solvers as host-side plans: one [`SolverStep`] of f64 scalars per model call.
//!
//! DDIM (MATH.md §2.1), DPM-Solver++ 1S/2M/3M (§2.2) and UniPC bh2 (§2.3)
//! differ only in how they turn the time grid into the scalars of the one
//! fused update described in [`step`]; the kernels never see which solver runs.

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
        let state_slots = steps.iter().map(|s| s.update.slots_used()).max().unwrap_or(0);
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
    if let (Solver::Ddim { .. }, GridSpec::Diffusers { spacing, steps_offset }) = (config.solver, &config.grid) {
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
