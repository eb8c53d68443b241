//! The C-ΠGDM plan (noiseless): Pandey, Yang, Mandt, *Fast Samplers for Inverse
//! Problems in Iterative Refinement Models*, NeurIPS 2024 — the conditional
//! conjugate integrator, restated in `docs/math.md` §6.2–6.4.
//!
//! The sampler integrates the projected state `x̄ = A_t x`, with
//! `A_t = e^{κ₁}(I + (e^{κ₂} − 1)P)`, `κ₁ = λt + B/2`, `κ₂ = −wB/2`, in split
//! coordinates `u = P x̄`, `v = (I − P)x̄`. Per step every term's coefficient
//! function is integrated exactly over the step (ΔΦ), with ε and the Jacobian
//! product frozen at the step's start; this module computes all of it in f64.

use super::quadrature::integrate;
use super::vp::VpSde;
use super::{check_step, GuidancePlan, ModelPoint, PassCoefficients};
use crate::error::{Error, Result};

/// How the network's time input is derived from the diffusion time `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkTime {
    /// τ = ⌊999·t⌋ (the official code's `int(t·(N−1))`), and the network is a
    /// model of the point `t_m = τ/999`: what the official fixtures record.
    Floor999,
    /// τ = 999·t, and the network sees the exact point `t`.
    Continuous,
}

/// Which conditional sampler a plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// C-ΠGDM: the projector-preconditioned conjugate integrator (§6.2–6.5).
    Cpgdm,
    /// Continuous ΠGDM as the C-ΠGDM authors implement it (§6.6): the scalar
    /// map `x̄ = e^{κ₁}x`, ε integrated exactly, the guidance `w·J_x̂0ᵀm` by an
    /// explicit Euler step.
    PgdmContinuous,
}

/// Where a run starts, at its first grid point (`docs/math.md` §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// `x₀ = μ₀H⁺y + σ₀z`: the official noiseless C-ΠGDM start, for every task.
    #[default]
    PseudoInverse,
    /// `x₀ = z ~ N(0, I)` at the same time: the official noisy C-ΠGDM and
    /// continuous-ΠGDM start for inpainting (degradations named "inp…").
    PureNoise,
}

/// Settings of a C-ΠGDM (or continuous ΠGDM) run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpgdmConfig {
    /// Sampler steps N (network calls).
    pub steps: usize,
    /// Guidance weight w ≥ 0 (w = 0, λ = 0 is DDIM with η = 0).
    pub w: f64,
    /// The conjugate map's λ (B_t = λI).
    pub lambda: f64,
    /// Reverse time of the first grid point, in (0, 1): the run starts at
    /// diffusion time `1 − t_start`.
    pub t_start: f64,
    /// Reverse time of the last grid point, in (t_start, 1): the run ends at
    /// `1 − t_end` (0.001 for 0.999).
    pub t_end: f64,
    /// ε added to σ in the 1/σ coefficients (the official `num_eps`).
    pub eps_num: f64,
    /// Measurement noise σ_y of the noisy variant (§6.5), in the units the
    /// official code states it (the noise added to y in [−1, 1] images is
    /// 2σ_y); 0 is the noiseless method.
    pub sigma_y: f64,
    pub sde: VpSde,
    pub network_time: NetworkTime,
    pub method: Method,
    pub start: Start,
}

impl Default for CpgdmConfig {
    /// The official noiseless configuration: w = 15, λ = 0, 5 steps from
    /// t = 0.4 to t = 0.001, ε_num = 1e-6.
    fn default() -> Self {
        CpgdmConfig {
            steps: 5,
            w: 15.0,
            lambda: 0.0,
            t_start: 0.6,
            t_end: 0.999,
            eps_num: 1e-6,
            sigma_y: 0.0,
            sde: VpSde::default(),
            network_time: NetworkTime::Floor999,
            method: Method::Cpgdm,
            start: Start::PseudoInverse,
        }
    }
}

/// One grid point: diffusion time, the SDE there, and the conjugate map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridPoint {
    pub t: f64,
    pub mu: f64,
    pub sigma: f64,
    /// κ₁ = λt + B(t)/2.
    pub k1: f64,
    /// κ₂ = −wB(t)/2.
    pub k2: f64,
    /// κ₃ of the noisy variant, `½w(e^{κ₁+κ₂} − 1)·σ_y²·ln(e^B − 1 + ε_num)`
    /// (0 when noiseless).
    pub k3: f64,
}

/// The ΔΦ of one step: the integral of each term's coefficient over the step
/// (time decreasing, so ΔΦ = Φ(t_{n+1}) − Φ(t_n)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeltaPhi {
    /// Coefficient of H⁺y.
    pub y: f64,
    /// Of ε and of Pε.
    pub s1: f64,
    pub s2: f64,
    /// Of the Jacobian product g = J_εᵀm and of Pg.
    pub j1: f64,
    pub j2: f64,
    /// The noisy variant's terms in Q H⁺y, Qε and Qg (0 when noiseless), with
    /// Q = H⁺(H⁺)ᵀ.
    pub yc: f64,
    pub sc: f64,
    pub jc: f64,
}

/// The scalars of step n, from grid point n to n + 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpgdmStep {
    /// Network time τ.
    pub tau: f64,
    /// The point the network models: `x = a·x0 + b·noise`.
    pub model_a: f64,
    pub model_b: f64,
    pub d_phi: DeltaPhi,
    /// Reverse-time step `t_n − t_{n+1}` (> 0), for the explicit λ term.
    pub dr: f64,
    /// Continuous ΠGDM's explicit guidance coefficient `½wβ(t_n)e^{κ₁(t_n)}Δr`
    /// on `J_x̂0ᵀm` (0 for C-ΠGDM).
    pub euler_guidance: f64,
}

/// The plan of a C-ΠGDM run: `steps + 1` grid points and `steps` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct CpgdmPlan {
    pub config: CpgdmConfig,
    pub points: Vec<GridPoint>,
    pub steps: Vec<CpgdmStep>,
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value,
        reason,
    }
}

/// Coefficient functions of the projected ODE: y, s1, s2, j1, j2 and the noisy
/// variant's yc, sc, jc.
pub const TERMS: usize = 8;

/// Absolute tolerance of the ΔΦ quadratures (ΔΦ are O(1e-3 … 10)).
const QUADRATURE_TOL: f64 = 1e-13;

impl CpgdmConfig {
    fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::InvalidSteps {
                steps: 0,
                train_steps: usize::MAX,
            });
        }
        if !(self.w.is_finite() && self.w >= 0.0) {
            return Err(invalid(
                "w",
                self.w,
                "the guidance weight must be finite and ≥ 0",
            ));
        }
        if !self.lambda.is_finite() {
            return Err(invalid("lambda", self.lambda, "must be finite"));
        }
        if !(self.t_start > 0.0 && self.t_start < 1.0) {
            return Err(invalid("t_start", self.t_start, "must lie in (0, 1)"));
        }
        if !(self.t_end > self.t_start && self.t_end < 1.0) {
            return Err(invalid("t_end", self.t_end, "must lie in (t_start, 1)"));
        }
        if !(self.eps_num.is_finite() && self.eps_num >= 0.0) {
            return Err(invalid("eps_num", self.eps_num, "must be finite and ≥ 0"));
        }
        if self.method == Method::PgdmContinuous && self.sigma_y != 0.0 {
            return Err(invalid(
                "sigma_y",
                self.sigma_y,
                "continuous ΠGDM is implemented for noiseless measurements only",
            ));
        }
        if !(self.sigma_y.is_finite() && self.sigma_y >= 0.0) {
            return Err(invalid(
                "sigma_y",
                self.sigma_y,
                "must be finite and ≥ 0 (0: the noiseless method)",
            ));
        }
        let sde = self.sde;
        if !(sde.beta0.is_finite()
            && sde.beta1.is_finite()
            && sde.beta0 > 0.0
            && sde.beta1 >= sde.beta0)
        {
            return Err(invalid("beta0", sde.beta0, "need 0 < β₀ ≤ β₁, both finite"));
        }
        Ok(())
    }

    /// The grid point at diffusion time `t`.
    pub fn point(&self, t: f64) -> GridPoint {
        let b = self.sde.big_b(t);
        // Continuous ΠGDM's map is the scalar e^{κ₁}: no projector part.
        let w_map = match self.method {
            Method::Cpgdm => self.w,
            Method::PgdmContinuous => 0.0,
        };
        let (k1, k2) = (self.lambda * t + 0.5 * b, -0.5 * w_map * b);
        let k3 = if self.sigma_y > 0.0 {
            0.5 * self.w
                * (k1 + k2).exp_m1()
                * self.sigma_y
                * self.sigma_y
                * (b.exp_m1() + self.eps_num).ln()
        } else {
            0.0
        };
        GridPoint {
            t,
            mu: self.sde.mu(t),
            sigma: self.sde.sigma(t),
            k1,
            k2,
            k3,
        }
    }

    /// The coefficient functions `(f_y, f_s1, f_s2, f_j1, f_j2, f_yc, f_sc,
    /// f_jc)` at `t` (`docs/math.md` §6.2, §6.5), whose integrals are the Φ.
    pub fn integrands(&self, t: f64) -> [f64; TERMS] {
        let p = self.point(t);
        let beta = self.sde.beta(t);
        // Continuous ΠGDM integrates only its ε term (w = 0 leaves f_s1 alone).
        let w = match self.method {
            Method::Cpgdm => self.w,
            Method::PgdmContinuous => 0.0,
        };
        let (e1, e2) = (p.k1.exp(), p.k2.exp());
        let inv_sigma = 1.0 / (p.sigma + self.eps_num);
        [
            -0.5 * w * beta * p.mu * e1 * e2,
            0.5 * beta * e1 * inv_sigma,
            0.5 * beta * e1 * (e2 - 1.0) * inv_sigma - 0.5 * w * beta * p.sigma * e1 * e2,
            0.5 * w * beta * p.sigma * p.mu * e1,
            0.5 * w * beta * p.sigma * p.mu * e1 * (e2 - 1.0),
            -0.5 * beta * w * p.mu * p.k3,
            0.5 * beta * p.k3 * (inv_sigma - w * p.sigma),
            0.5 * w * p.sigma * p.mu * beta * p.k3,
        ]
    }

    /// `∫ₐᵇ` of each coefficient function, through `t = u²` (the 1/σ terms grow
    /// like `t^{−1/2}` near 0; in u they are smooth).
    pub fn integrals(&self, a: f64, b: f64) -> [f64; TERMS] {
        let mut out = [0.0; TERMS];
        for (i, o) in out.iter_mut().enumerate() {
            *o = integrate(
                |u| 2.0 * u * self.integrands(u * u)[i],
                a.sqrt(),
                b.sqrt(),
                QUADRATURE_TOL,
            );
        }
        out
    }

    /// `Φ(t) = ∫₀ᵗ` of each coefficient function.
    pub fn phi(&self, t: f64) -> [f64; TERMS] {
        self.integrals(0.0, t)
    }
}

/// numpy's `linspace(start, stop, n + 1)` point `i`: `start + i·step`, the last
/// point exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize, i: usize) -> f64 {
    if i == n {
        stop
    } else {
        start + i as f64 * ((stop - start) / n as f64)
    }
}

impl CpgdmPlan {
    /// Validate `config` (steps ≥ 1, w ≥ 0, t_start in (0, 1), t_end in
    /// (t_start, 1), finite λ, ε_num ≥ 0) and compute every scalar of the run.
    pub fn new(config: CpgdmConfig) -> Result<Self> {
        config.validate()?;
        let n = config.steps;
        let points: Vec<GridPoint> = (0..=n)
            .map(|i| config.point(1.0 - linspace(config.t_start, config.t_end, n, i)))
            .collect();
        let steps = points
            .windows(2)
            .map(|pair| {
                let (from, to) = (pair[0], pair[1]);
                let (tau, t_model) = match config.network_time {
                    NetworkTime::Floor999 => {
                        let tau = (from.t * 999.0).floor();
                        (tau, tau / 999.0)
                    }
                    NetworkTime::Continuous => (from.t * 999.0, from.t),
                };
                // ∫ from t_n down to t_{n+1} = Φ(t_{n+1}) − Φ(t_n).
                let [y, s1, s2, j1, j2, yc, sc, jc] = config.integrals(from.t, to.t);
                let dr = from.t - to.t;
                let euler_guidance = match config.method {
                    Method::Cpgdm => 0.0,
                    Method::PgdmContinuous => {
                        0.5 * config.w * config.sde.beta(from.t) * from.k1.exp() * dr
                    }
                };
                CpgdmStep {
                    euler_guidance,
                    tau,
                    model_a: config.sde.mu(t_model),
                    model_b: config.sde.sigma(t_model),
                    d_phi: DeltaPhi {
                        y,
                        s1,
                        s2,
                        j1,
                        j2,
                        yc,
                        sc,
                        jc,
                    },
                    dr,
                }
            })
            .collect();
        Ok(CpgdmPlan {
            config,
            points,
            steps,
        })
    }
}

impl CpgdmPlan {
    /// `a = κ₃·q·e^{−κ₁−κ₂}` at grid point `n`: the first-order correction the
    /// noisy variant's state map applies to the P-component (0 when noiseless).
    fn noisy_correction(&self, n: usize, q: f64) -> f64 {
        let p = self.points[n];
        p.k3 * q * (-p.k1 - p.k2).exp()
    }

    /// The coefficient of u in x at grid point `n`: `e^{−κ₁−κ₂}(1 − a)` (the
    /// official first-order inverse of Ā = A + κ₃Q; exact A⁻¹ when noiseless).
    fn to_u(&self, n: usize, q: f64) -> f64 {
        let p = self.points[n];
        (-p.k1 - p.k2).exp() * (1.0 - self.noisy_correction(n, q))
    }
}

impl GuidancePlan for CpgdmPlan {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn model_point(&self, n: usize) -> Result<ModelPoint> {
        check_step(n, self.steps.len())?;
        let s = self.steps[n];
        Ok(ModelPoint {
            tau: s.tau,
            a: s.model_a,
            b: s.model_b,
        })
    }

    /// `x₀ = μ₀H⁺y + σ₀z` mapped to the state at the first grid point:
    /// `u₀ = (e^{κ₁+κ₂} + κ₃q)·P x₀`, `v₀ = e^{κ₁}σ(z − Pz)`; the first network
    /// input `e^{−κ₁}v₀ + to_u·u₀ = T·μH⁺y + σz + (T − 1)σPz`, `T = 1 − a²`
    /// (x₀ itself when noiseless; the official first-order inverse otherwise).
    fn uses_gram_scale(&self) -> bool {
        self.config.sigma_y > 0.0
    }

    fn init_coefficients(&self, q: f64) -> PassCoefficients {
        let p = self.points[0];
        let a = self.noisy_correction(0, q);
        let scale_u = (p.k1 + p.k2).exp() * (1.0 + a);
        let t = 1.0 - a * a;
        // x₀ = mu·H⁺y + sigma·z.
        let (mu, sigma) = match self.config.start {
            Start::PseudoInverse => (p.mu, p.sigma),
            Start::PureNoise => (0.0, 1.0),
        };
        let mut c = [0.0; 12];
        c[..6].copy_from_slice(&[
            scale_u * mu,
            scale_u * sigma,
            p.k1.exp() * sigma,
            t * mu,
            sigma,
            (t - 1.0) * sigma,
        ]);
        c
    }

    /// `m = H⁺y − (P x − σPε)/μ` with `P x = to_u·u`.
    fn residual_coefficients(&self, n: usize, q: f64) -> Result<PassCoefficients> {
        check_step(n, self.steps.len())?;
        let p = self.points[n];
        let mut c = [0.0; 12];
        (c[0], c[1]) = (self.to_u(n, q) / p.mu, p.sigma / p.mu);
        Ok(c)
    }

    fn update_coefficients(&self, n: usize, q: f64) -> Result<PassCoefficients> {
        check_step(n, self.steps.len())?;
        let (s, next) = (self.steps[n], self.points[n + 1]);
        let (d, keep) = (s.d_phi, 1.0 - self.config.lambda * s.dr);
        let (to_x_v, to_x_u) = ((-next.k1).exp(), self.to_u(n + 1, q));
        Ok(match self.config.method {
            // Q = q·P, and P H⁺ = H⁺: the noisy terms join the P-component.
            Method::Cpgdm => [
                keep,
                d.y + q * d.yc,
                d.s1 + d.s2 + q * d.sc,
                d.j1 + d.j2 + q * d.jc,
                d.s1,
                d.j1,
                to_x_v,
                to_x_u,
                keep,
                0.0,
                0.0,
                0.0,
            ],
            Method::PgdmContinuous => {
                // x̄ += ΔΦ ε + e·J_x̂0ᵀm with J_x̂0ᵀm = (m − σg)/μ and
                // m = H⁺y − (e^{−κ₁}u − σPε)/μ, split into u = P x̄ and v.
                let p = self.points[n];
                let (e, mu, sig) = (s.euler_guidance, p.mu, p.sigma);
                let on_g = -e * sig / mu;
                [
                    keep - e * (-p.k1).exp() / (mu * mu),
                    e / mu,
                    d.s1 + e * sig / (mu * mu),
                    on_g,
                    d.s1,
                    on_g,
                    to_x_v,
                    to_x_u,
                    keep,
                    0.0,
                    0.0,
                    0.0,
                ]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(what: &str, got: f64, want: f64, tol: f64) {
        assert!(
            (got - want).abs() <= tol * want.abs().max(1e-300),
            "{what}: {got} vs {want}"
        );
    }

    /// Φ at t = 0.4 and 0.1 for w = 15, λ = 0, ε_num = 0 (docs/math.md §6.2:
    /// the first four are closed forms, Φ_j2 a quadrature).
    #[test]
    fn phi_matches_the_reference_values() {
        let config = CpgdmConfig {
            eps_num: 0.0,
            ..CpgdmConfig::default()
        };
        let table = [
            (0.4, [-0.9999952, 2.028323, -2.028313, 8.389687, -8.081217]),
            (
                0.1,
                [-0.5601185, 0.3401765, -0.1905392, 0.1782442, -0.0665715],
            ),
        ];
        for (t, want) in table {
            let got = config.phi(t);
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                close(&format!("Φ[{i}]({t})"), *g, w, 2e-6);
            }
        }
    }

    /// For λ = 0 four Φ have closed forms; quadrature reproduces them.
    #[test]
    fn quadrature_matches_the_closed_forms() {
        for w in [0.0, 1.0, 15.0] {
            let config = CpgdmConfig {
                w,
                eps_num: 0.0,
                ..CpgdmConfig::default()
            };
            for t in [0.001, 0.05, 0.3, 0.4, 0.9] {
                let (sde, b) = (config.sde, config.sde.big_b(t));
                let (sigma, rho) = (sde.sigma(t), sde.sigma(t) / sde.mu(t));
                let e = (-0.5 * w * b).exp();
                let want = [e - 1.0, rho, (e - 1.0) * rho, w * (sigma.atanh() - sigma)];
                let got = config.phi(t);
                for i in 0..4 {
                    let tol = 1e-10 * (1.0 + want[i].abs());
                    assert!(
                        (got[i] - want[i]).abs() <= tol,
                        "w={w} t={t} Φ[{i}]: {} vs {}",
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }

    /// w = 0, λ = 0: the step is DDIM with η = 0, x/μ moving by Δρ·ε.
    #[test]
    fn without_guidance_the_plan_is_ddim() {
        let plan = CpgdmPlan::new(CpgdmConfig {
            w: 0.0,
            eps_num: 0.0,
            ..CpgdmConfig::default()
        })
        .unwrap();
        for (n, s) in plan.steps.iter().enumerate() {
            let (from, to) = (plan.points[n], plan.points[n + 1]);
            let d_rho = to.sigma / to.mu - from.sigma / from.mu;
            close("ΔΦ_s1", s.d_phi.s1, d_rho, 1e-10);
            for v in [s.d_phi.y, s.d_phi.s2, s.d_phi.j1, s.d_phi.j2, s.d_phi.yc] {
                assert!(v.abs() < 1e-12, "{v}");
            }
            assert_eq!(
                (from.k2, from.k1),
                (0.0, 0.5 * plan.config.sde.big_b(from.t))
            );
        }
    }

    #[test]
    fn the_grid_and_network_times_follow_the_official_code() {
        let plan = CpgdmPlan::new(CpgdmConfig::default()).unwrap();
        let t: Vec<f64> = plan.points.iter().map(|p| p.t).collect();
        let want = [0.4, 0.3202, 0.2404, 0.1606, 0.0808, 0.001];
        for (g, w) in t.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{t:?}");
        }
        let taus: Vec<f64> = plan.steps.iter().map(|s| s.tau).collect();
        assert_eq!(taus, vec![399.0, 319.0, 240.0, 160.0, 80.0]);
        let s0 = plan.steps[0];
        close(
            "model a",
            s0.model_a,
            plan.config.sde.mu(399.0 / 999.0),
            1e-15,
        );
        assert!((s0.dr - 0.0798).abs() < 1e-12);
    }

    /// Continuous ΠGDM: a scalar map (κ₂ = 0), only the ε term integrated,
    /// the guidance as an explicit Euler coefficient.
    #[test]
    fn continuous_pgdm_plans_the_scalar_map() {
        let config = CpgdmConfig {
            w: 1.0,
            method: Method::PgdmContinuous,
            ..CpgdmConfig::default()
        };
        let plan = CpgdmPlan::new(config).unwrap();
        for (n, s) in plan.steps.iter().enumerate() {
            let (from, to) = (plan.points[n], plan.points[n + 1]);
            assert_eq!((from.k2, from.k3), (0.0, 0.0));
            let d = s.d_phi;
            assert!(d.s1 < 0.0);
            assert_eq!([d.y, d.s2, d.j1, d.j2, d.yc, d.sc, d.jc], [0.0; 7]);
            let want = 0.5 * config.sde.beta(from.t) * from.k1.exp() * (from.t - to.t);
            close("euler coefficient", s.euler_guidance, want, 1e-15);
        }
        let noisy = CpgdmConfig {
            sigma_y: 0.05,
            ..config
        };
        assert!(matches!(
            CpgdmPlan::new(noisy),
            Err(Error::InvalidParameter {
                name: "sigma_y",
                ..
            })
        ));
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let bad = |c: CpgdmConfig, name: &str| match CpgdmPlan::new(c) {
            Err(Error::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("expected InvalidParameter({name}), got {other:?}"),
        };
        let d = CpgdmConfig::default();
        bad(CpgdmConfig { w: -1.0, ..d }, "w");
        bad(CpgdmConfig { w: f64::NAN, ..d }, "w");
        bad(CpgdmConfig { t_start: 0.0, ..d }, "t_start");
        bad(CpgdmConfig { t_start: 1.0, ..d }, "t_start");
        bad(CpgdmConfig { t_end: 0.5, ..d }, "t_end");
        bad(
            CpgdmConfig {
                lambda: f64::INFINITY,
                ..d
            },
            "lambda",
        );
        bad(CpgdmConfig { eps_num: -1.0, ..d }, "eps_num");
        bad(CpgdmConfig { sigma_y: -0.1, ..d }, "sigma_y");
        bad(
            CpgdmConfig {
                sigma_y: f64::NAN,
                ..d
            },
            "sigma_y",
        );
        assert!(matches!(
            CpgdmPlan::new(CpgdmConfig { steps: 0, ..d }),
            Err(Error::InvalidSteps { .. })
        ));
    }
}
