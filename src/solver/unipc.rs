//! UniPC bh2, order 2, data prediction (diffusers defaults): docs/math.md §2.3.
//!
//! Step k fuses the corrector of step k−1 (UniC, once ε_k is known) with the
//! predictor of step k (UniP). History slots hold D[k] at `k mod 3`; slot 3
//! holds the corrected sample x^c.

use super::{simple_step, Corrector, CorrectorBase, PlanStep};
use crate::schedule::Point;

const XC_SLOT: u32 = 3;

fn slot(k: usize) -> u32 {
    (k % 3) as u32
}

/// Predictor order: warm-up, order 2, lower order on the last step.
fn predictor_order(k: usize, n: usize) -> usize {
    2.min(n - k).min(k + 1)
}

/// bh2's β_1 and β_2 for a step of size h (B_h = φ = expm1(−h)).
fn betas(h: f64) -> (f64, f64) {
    let phi = (-h).exp_m1();
    let g1 = -phi / h - 1.0;
    let g2 = -g1 / h - 0.5;
    (g1 / phi, 2.0 * g2 / phi)
}

pub(super) fn plan(transitions: &[(Point, Point)]) -> Vec<PlanStep> {
    let n = transitions.len();
    // Points 0..=n: model points, then the final target.
    let points: Vec<Point> = transitions
        .iter()
        .map(|t| t.0)
        .chain(transitions.last().map(|t| t.1))
        .collect();
    let lambda: Vec<f64> = points.iter().map(Point::lambda).collect();
    let final_clean = points[n].is_clean();
    // UniC at step j redoes step j−1; it is dead work when the last step lands on σ = 0.
    let corrector_runs = |j: usize| j >= 1 && j < n && !(j + 1 == n && final_clean);

    (0..n)
        .map(|k| {
            let (p, target) = (points[k], points[k + 1]);
            let mut update = if target.is_clean() {
                simple_step(0.0, 1.0)
            } else {
                let h = lambda[k + 1] - lambda[k];
                let phi = (-h).exp_m1();
                let at = target.alpha;
                let mut u = simple_step(target.sigma / p.sigma, -at * phi);
                if predictor_order(k, n) == 2 {
                    let r = (lambda[k - 1] - lambda[k]) / h;
                    u.b = [-at * phi * (1.0 - 0.5 / r), -at * phi * 0.5 / r, 0.0];
                    u.h1 = Some(slot(k - 1));
                }
                u
            };

            if corrector_runs(k) {
                let h = lambda[k] - lambda[k - 1];
                let phi = (-h).exp_m1();
                let ak = p.alpha;
                let c = if predictor_order(k - 1, n) == 1 {
                    // Order 1, ρ = ½: the trapezoid rule.
                    [-ak * phi * 0.5, -ak * phi * 0.5, 0.0]
                } else {
                    let r = (lambda[k - 2] - lambda[k - 1]) / h;
                    let (b1, b2) = betas(h);
                    let rho0 = (b1 - b2) / (1.0 - r);
                    let rho1 = (b2 - r * b1) / (1.0 - r);
                    update.h2 = Some(slot(k - 2));
                    [
                        -ak * phi * rho1,
                        -ak * phi * (1.0 - rho1 - rho0 / r),
                        -ak * phi * rho0 / r,
                    ]
                };
                update.h1 = Some(slot(k - 1));
                update.corrector = Some(Corrector {
                    base: CorrectorBase::Slot,
                    a: p.sigma / points[k - 1].sigma,
                    c,
                });
                update.xc_slot = Some(XC_SLOT);
            } else if corrector_runs(k + 1) {
                // x^c_k = x̃_k: the next corrector starts from the uncorrected sample.
                update.corrector = Some(Corrector {
                    base: CorrectorBase::X,
                    a: 1.0,
                    c: [0.0; 3],
                });
                update.xc_slot = Some(XC_SLOT);
            }
            if k + 1 < n {
                update.d_slot = Some(slot(k));
            }
            PlanStep {
                point: p,
                target,
                update,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_orders_match_diffusers() {
        let orders = |n: usize| (0..n).map(|k| predictor_order(k, n)).collect::<Vec<_>>();
        assert_eq!(orders(5), [1, 2, 2, 2, 1]);
        assert_eq!(orders(2), [1, 1]);
        assert_eq!(orders(1), [1]);
    }

    #[test]
    fn bh2_betas_match_reference_values() {
        let (b1, b2) = betas(0.5);
        assert!((b1 - 0.541494).abs() < 1e-6 && (b2 - 0.375518).abs() < 1e-6);
        let (b1, b2) = betas(1.0);
        assert!((b1 - 0.581977).abs() < 1e-6 && (b2 - 0.418023).abs() < 1e-6);
    }
}
