//! The one fused update every solver step is expressed as.
//!
//! See [`SolverStep`] for the update itself.

use crate::error::{Error, Result};

/// Where the corrector (UniPC's UniC) reads its previous sample from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CorrectorBase {
    /// The corrected-sample slot of the state buffer (`x^c_{k−1}`).
    Slot,
    /// The incoming sample `x` itself (first step: `x^c_0 = x̃_0`).
    X,
}

/// A corrector pass fused before the predictor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Corrector {
    pub base: CorrectorBase,
    /// Coefficient on the corrector's base sample.
    pub a: f64,
    /// Coefficients on (`D`, `H[h1]`, `H[h2]`).
    pub c: [f64; 3],
}

/// Scalars and slot indices of one fused step.
///
/// For element `i` (all scalars are host-computed f64 and rounded once to the
/// math type of the storage; `H[s]` is history slot `s` of the state buffer):
///
/// ```text
/// D      = cx·x − ce·m                                   m = model output (ε or v)
/// H[d]   = D                                             if d_slot is set
/// xc     = ac·(from_x ? x : H[xc]) + c0·D + c1·H[h1] + c2·H[h2]   if a corrector is set
/// H[xc]  = xc
/// base   = corrector ? xc : x
/// x'     = a·base + b0·D + b1·H[h1] + b2·H[h2] + noise·z  z = Philox normal(seed, step, i)
/// ```
///
/// DDIM, DPM-Solver++ 1S/2M/3M and UniPC (predictor + corrector) are all this
/// update with different scalars, so every backend implements exactly one
/// kernel per storage type and cannot disagree on the math, only on rounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolverStep {
    /// `D = cx·x − ce·m`.
    pub cx: f64,
    pub ce: f64,
    /// History slot receiving the new data prediction, if later steps need it.
    pub d_slot: Option<u32>,
    /// History slots of the two previous data predictions (newest first).
    pub h1: Option<u32>,
    pub h2: Option<u32>,
    /// State slot of the corrected sample (UniPC only).
    pub xc_slot: Option<u32>,
    pub corrector: Option<Corrector>,
    /// Predictor: `x' = a·base + b0·D + b1·H[h1] + b2·H[h2]`.
    pub a: f64,
    pub b: [f64; 3],
    /// Standard deviation of the fresh Gaussian noise added (DDIM η > 0).
    pub noise: f64,
}

impl SolverStep {
    /// Check what the fused kernels assume of a step: finite scalars, no slot
    /// named for two roles (one would overwrite what the other reads), and a
    /// corrector only together with the slot its result goes to.
    ///
    /// Plans built by [`crate::Plan`] always pass; this guards hand-made steps,
    /// and [`crate::ops::solver_step`] calls it before every launch.
    pub fn validate(&self) -> Result<()> {
        let (ac, c) = self.corrector.map_or((0.0, [0.0; 3]), |k| (k.a, k.c));
        let scalars = [
            ("cx", self.cx),
            ("ce", self.ce),
            ("a", self.a),
            ("b0", self.b[0]),
            ("b1", self.b[1]),
            ("b2", self.b[2]),
            ("noise", self.noise),
            ("corrector a", ac),
            ("corrector c0", c[0]),
            ("corrector c1", c[1]),
            ("corrector c2", c[2]),
        ];
        for (name, value) in scalars {
            if !value.is_finite() {
                return Err(Error::InvalidParameter {
                    name,
                    value,
                    reason: "step coefficients must be finite",
                });
            }
        }
        if self.noise < 0.0 {
            return Err(Error::InvalidParameter {
                name: "noise",
                value: self.noise,
                reason: "a standard deviation cannot be negative",
            });
        }
        if self.corrector.is_some() && self.xc_slot.is_none() {
            return Err(Error::InvalidStep {
                reason: "a corrector needs xc_slot to store the corrected sample".into(),
            });
        }
        let roles = [
            ("d_slot", self.d_slot),
            ("xc_slot", self.xc_slot),
            ("h1", self.h1),
            ("h2", self.h2),
        ];
        for (i, (first, a)) in roles.iter().enumerate() {
            for (second, b) in &roles[i + 1..] {
                if let (Some(a), Some(b)) = (a, b) {
                    if a == b {
                        return Err(Error::InvalidStep {
                            reason: format!("{first} and {second} both name state slot {a}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Highest state slot the step touches plus one (0 if none).
    pub fn slots_used(&self) -> u32 {
        [self.d_slot, self.h1, self.h2, self.xc_slot]
            .into_iter()
            .flatten()
            .map(|s| s + 1)
            .max()
            .unwrap_or(0)
    }
}

/// Per-launch values that are not solver scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepLaunch {
    /// Step index (keys the noise together with the seed).
    pub step: u32,
    /// Seed of the counter-based RNG.
    pub seed: u64,
}

/// Elements between consecutive slots of a state buffer holding tensors of
/// `n` elements: rounded up to 64 so every slot starts 128-byte aligned for
/// f16 (vector loads, packed-half pairs never straddle two slots).
pub fn slot_stride(n: usize) -> usize {
    n.div_ceil(64) * 64
}
