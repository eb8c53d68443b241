//! The one fused update every solver step is expressed as.
//!
//! For element `i` (all scalars are host-computed f64 and rounded once to the
//! math type of the storage; `H[s]` is history slot `s` of the state buffer):
//!
//! ```text
//! D      = cx·x − ce·m                                   m = model output (ε or v)
//! H[d]   = D                                             if d_slot is set
//! xc     = ac·(from_x ? x : H[xc]) + c0·D + c1·H[h1] + c2·H[h2]   if a corrector is set
//! H[xc]  = xc
//! base   = corrector ? xc : x
//! x'     = a·base + b0·D + b1·H[h1] + b2·H[h2] + noise·z  z = Philox normal(seed, step, i)
//! ```
//!
//! DDIM, DPM-Solver++ 1S/2M/3M and UniPC (predictor + corrector) are all this
//! update with different scalars, so every backend implements exactly one
//! kernel per storage type and cannot disagree on the math, only on rounding.

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
    /// Coefficients on (D, H[h1], H[h2]).
    pub c: [f64; 3],
}

/// Scalars and slot indices of one fused step (see the module docs).
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
