//! DDIM(η) on (x, D): docs/math.md §2.1.

use super::{simple_step, PlanStep};
use crate::error::{Error, Result};
use crate::schedule::Point;

pub(super) fn plan(transitions: &[(Point, Point)], eta: f64) -> Result<Vec<PlanStep>> {
    if !(0.0..=1.0).contains(&eta) {
        return Err(Error::InvalidParameter {
            name: "eta",
            value: eta,
            reason: "DDIM eta must be in [0, 1]",
        });
    }
    Ok(transitions
        .iter()
        .map(|&(s, t)| {
            // σ_η² = η²·(σ_t²/σ_s²)·(1 − ᾱ_s/ᾱ_t)
            let var = (t.sigma * t.sigma / (s.sigma * s.sigma))
                * (1.0 - (s.alpha * s.alpha) / (t.alpha * t.alpha));
            let sigma_eta = eta * var.max(0.0).sqrt();
            // Direction coefficient √(1 − ᾱ_t − σ_η²) on ε = (x − α_s D)/σ_s.
            let dir = (t.sigma * t.sigma - sigma_eta * sigma_eta).max(0.0).sqrt();
            let a = dir / s.sigma;
            let mut update = simple_step(a, t.alpha - a * s.alpha);
            update.noise = sigma_eta;
            PlanStep {
                point: s,
                target: t,
                update,
            }
        })
        .collect())
}
