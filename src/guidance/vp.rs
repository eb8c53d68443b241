//! The continuous VP SDE with linear β (Song et al., *Score-Based Generative
//! Modeling through SDEs*, ICLR 2021): `β(t) = β₀ + (β₁ − β₀)t`,
//! `B(t) = ∫₀ᵗ β`, `μ(t) = e^{−B/2}`, `σ(t) = √(1 − μ²)` (`docs/math.md` §6.1).

/// β₀ and β₁ of a linear-β VP SDE on t ∈ [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VpSde {
    pub beta0: f64,
    pub beta1: f64,
}

impl Default for VpSde {
    /// β₀ = 0.1, β₁ = 20: the schedule DDPM's linear betas approximate.
    fn default() -> Self {
        VpSde {
            beta0: 0.1,
            beta1: 20.0,
        }
    }
}

impl VpSde {
    pub fn beta(&self, t: f64) -> f64 {
        self.beta0 + (self.beta1 - self.beta0) * t
    }

    /// `B(t) = β₀t + ½(β₁ − β₀)t²`.
    pub fn big_b(&self, t: f64) -> f64 {
        self.beta0 * t + 0.5 * (self.beta1 - self.beta0) * t * t
    }

    /// Signal scale `μ(t) = exp(−B(t)/2)`.
    pub fn mu(&self, t: f64) -> f64 {
        (-0.5 * self.big_b(t)).exp()
    }

    /// Noise scale `σ(t) = √(1 − μ(t)²)`, evaluated as `√(−expm1(−B))` so it
    /// stays accurate to the last digits as t → 0.
    pub fn sigma(&self, t: f64) -> f64 {
        (-(-self.big_b(t)).exp_m1()).sqrt()
    }
}
