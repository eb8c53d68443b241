//! DPM-Solver++ multistep (data prediction, ODE): docs/math.md §2.2, diffusers' order rules.

use super::{simple_step, PlanStep, SecondOrder};
use crate::schedule::Point;

#[derive(Clone, Copy)]
pub(super) struct Options {
    pub order: u8,
    pub second_order: SecondOrder,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_zero: bool,
}

/// diffusers `step()`'s order choice at step `i` of `n`.
fn order_at(i: usize, n: usize, o: Options) -> u8 {
    let lof = i + 1 == n && (o.euler_at_final || (o.lower_order_final && n < 15) || o.final_zero);
    let los = i + 2 == n && o.lower_order_final && n < 15;
    if o.order == 1 || i == 0 || lof {
        1
    } else if o.order == 2 || i == 1 || los {
        2
    } else {
        3
    }
}

pub(super) fn plan(transitions: &[(Point, Point)], o: Options) -> Vec<PlanStep> {
    let n = transitions.len();
    let ring = u32::from(o.order);
    let slot = |i: usize| (i as u32) % ring;
    let lambdas: Vec<f64> = transitions.iter().map(|(s, _)| s.lambda()).collect();
    (0..n)
        .map(|i| {
            let (s0, t) = transitions[i];
            let order = order_at(i, n, o);
            let mut update = if t.is_clean() {
                // Step to σ = 0: x = D exactly (h = ∞, never take ln 0).
                simple_step(0.0, 1.0)
            } else {
                let h = t.lambda() - lambdas[i];
                let phi = (-h).exp_m1();
                let a = t.sigma / s0.sigma;
                let at = t.alpha;
                let mut u = simple_step(a, -at * phi);
                if order >= 2 {
                    let r0 = (lambdas[i] - lambdas[i - 1]) / h;
                    if order == 2 {
                        let (b0, b1) = match o.second_order {
                            SecondOrder::Midpoint => {
                                (-at * phi * (1.0 + 0.5 / r0), at * phi * 0.5 / r0)
                            }
                            SecondOrder::Heun => {
                                let psi = phi / h + 1.0;
                                (-at * phi + at * psi / r0, -at * psi / r0)
                            }
                        };
                        u.b = [b0, b1, 0.0];
                    } else {
                        let r1 = (lambdas[i - 1] - lambdas[i - 2]) / h;
                        let phi2 = phi / h + 1.0;
                        let phi3 = (phi + h) / (h * h) - 0.5;
                        let (uu, vv) = (1.0 / r0, 1.0 / r1);
                        let k = r0 / (r0 + r1);
                        let q = 1.0 / (r0 + r1);
                        u.b = [
                            at * (-phi + phi2 * (1.0 + k) * uu - phi3 * q * uu),
                            at * (-phi2 * ((1.0 + k) * uu + k * vv) + phi3 * q * (uu + vv)),
                            at * (phi2 * k * vv - phi3 * q * vv),
                        ];
                    }
                }
                u
            };
            if order >= 2 && !t.is_clean() {
                update.h1 = Some(slot(i - 1));
            }
            if order >= 3 && !t.is_clean() {
                update.h2 = Some(slot(i - 2));
            }
            // Only keep D if a later step reads it.
            if o.order >= 2 && i + 1 < n {
                update.d_slot = Some(slot(i));
            }
            PlanStep {
                point: s0,
                target: t,
                update,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(order: u8) -> Options {
        Options {
            order,
            second_order: SecondOrder::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_zero: true,
        }
    }

    fn orders(n: usize, o: Options) -> Vec<u8> {
        (0..n).map(|i| order_at(i, n, o)).collect()
    }

    #[test]
    fn order_schedule_matches_diffusers() {
        assert_eq!(orders(5, opts(2)), [1, 2, 2, 2, 1]);
        assert_eq!(orders(5, opts(3)), [1, 2, 3, 2, 1]);
        assert_eq!(orders(10, opts(3)), [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]);
        let o20 = orders(20, opts(3));
        assert_eq!(&o20[..3], [1, 2, 3]);
        assert_eq!(o20[18], 3);
        assert_eq!(o20[19], 1);
        assert_eq!(orders(1, opts(3)), [1]);
    }
}
