//! One mixture component N(μ, U diag(λ) Uᵀ + s² I) and its algebra at a noise
//! level (`docs/math.md` §8.1): everything costs O(D·r) through Woodbury, never
//! a D × D matrix.

use crate::error::{Error, Result};

/// A Gaussian component of the prior: weight, mean and the covariance
/// `Σ = U diag(λ) Uᵀ + s² I` with `r` orthonormal directions `U` (r = 0: the
/// isotropic `s² I`).
#[derive(Clone, Debug, PartialEq)]
pub struct GmmComponent {
    /// Mixture weight (positive; the mixture normalises them).
    pub weight: f64,
    /// The mean μ, D values.
    pub mean: Vec<f64>,
    /// The isotropic standard deviation s (positive).
    pub std: f64,
    /// The r directions of U, D values each, one after another; orthonormal.
    pub basis: Vec<f64>,
    /// The extra variance λ_j ≥ 0 along each direction of `basis`.
    pub lambdas: Vec<f64>,
}

/// Orthonormality of the basis is checked to this absolute error per entry of UᵀU.
const ORTHONORMAL_TOLERANCE: f64 = 1e-9;

pub(crate) fn dot(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a * b).sum()
}

impl GmmComponent {
    /// An isotropic component N(μ, s² I).
    pub fn isotropic(weight: f64, mean: Vec<f64>, std: f64) -> Self {
        GmmComponent {
            weight,
            mean,
            std,
            basis: Vec::new(),
            lambdas: Vec::new(),
        }
    }

    /// Rank r of the low-rank part.
    pub fn rank(&self) -> usize {
        self.lambdas.len()
    }

    /// Direction j of U.
    pub fn direction(&self, j: usize) -> &[f64] {
        let d = self.mean.len();
        &self.basis[j * d..(j + 1) * d]
    }

    /// `Σ w` for a vector `w` of length D.
    pub fn covariance_apply(&self, w: &[f64]) -> Vec<f64> {
        let s2 = self.std * self.std;
        let mut out: Vec<f64> = w.iter().map(|wi| s2 * wi).collect();
        for (j, lambda) in self.lambdas.iter().enumerate() {
            let u = self.direction(j);
            let c = lambda * dot(u, w);
            out.iter_mut().zip(u).for_each(|(o, ui)| *o += c * ui);
        }
        out
    }

    /// `Σ^{1/2} ξ` for the symmetric square root (`docs/math.md` §8.3).
    pub fn sqrt_covariance_apply(&self, xi: &[f64]) -> Vec<f64> {
        let s = self.std;
        let mut out: Vec<f64> = xi.iter().map(|x| s * x).collect();
        for (j, lambda) in self.lambdas.iter().enumerate() {
            let u = self.direction(j);
            let c = ((lambda + s * s).sqrt() - s) * dot(u, xi);
            out.iter_mut().zip(u).for_each(|(o, ui)| *o += c * ui);
        }
        out
    }

    /// Check the component for dimension `dim`.
    pub(crate) fn validate(&self, dim: usize) -> Result<()> {
        let r = self.lambdas.len();
        for (what, expected, got) in [
            ("gmm component mean", dim, self.mean.len()),
            (
                "gmm component basis (rank × dimension)",
                r * dim,
                self.basis.len(),
            ),
        ] {
            if expected != got {
                return Err(Error::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        let positive = [("weight", self.weight), ("std", self.std)];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::InvalidParameter {
                    name,
                    value,
                    reason: "gmm weights and stds must be finite and positive",
                });
            }
        }
        if let Some(&value) = self.lambdas.iter().find(|l| !(l.is_finite() && **l >= 0.0)) {
            return Err(Error::InvalidParameter {
                name: "lambda",
                value,
                reason: "gmm low-rank variances must be finite and non-negative",
            });
        }
        if let Some(&value) = self.mean.iter().chain(&self.basis).find(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "gmm mean or basis entry",
                value,
                reason: "must be finite",
            });
        }
        for i in 0..r {
            for j in 0..=i {
                let gram = dot(self.direction(i), self.direction(j));
                let expected = if i == j { 1.0 } else { 0.0 };
                if (gram - expected).abs() > ORTHONORMAL_TOLERANCE {
                    return Err(Error::InvalidParameter {
                        name: "gmm basis Gram entry",
                        value: gram,
                        reason: if i == j {
                            "basis directions must have unit norm"
                        } else {
                            "basis directions must be orthogonal"
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// The component's marginal at `x = a·x0 + b·n`.
    pub(crate) fn at(&self, a: f64, b: f64) -> Noised<'_> {
        let v = a * a * self.std * self.std + b * b;
        let rho = self
            .lambdas
            .iter()
            .map(|l| a * a * l / (a * a * l + v))
            .collect();
        Noised {
            component: self,
            a,
            v,
            rho,
        }
    }
}

/// A component's marginal `N(aμ, C)`, `C = a²Σ + b²I = U diag(a²λ) Uᵀ + v I`.
pub(crate) struct Noised<'c> {
    component: &'c GmmComponent,
    a: f64,
    v: f64,
    /// `ρ_j = a²λ_j / (a²λ_j + v)`: `C⁻¹ = (I − U diag(ρ) Uᵀ)/v` (Woodbury).
    rho: Vec<f64>,
}

impl Noised<'_> {
    /// `C⁻¹ w`.
    pub(crate) fn precision_apply(&self, w: &[f64]) -> Vec<f64> {
        let mut out = w.to_vec();
        for (j, rho) in self.rho.iter().enumerate() {
            let u = self.component.direction(j);
            let c = rho * dot(u, w);
            out.iter_mut().zip(u).for_each(|(o, ui)| *o -= c * ui);
        }
        out.iter_mut().for_each(|o| *o /= self.v);
        out
    }

    /// For a sample `x`: the logit `ln w − ½ ln det C − ½ dᵀC⁻¹d` (the common
    /// `−(D/2) ln 2π` dropped) and `e = C⁻¹ d`, with `d = x − aμ`.
    pub(crate) fn logit_and_score(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let d: Vec<f64> = x
            .iter()
            .zip(&self.component.mean)
            .map(|(xi, m)| xi - self.a * m)
            .collect();
        let e = self.precision_apply(&d);
        let log_det = x.len() as f64 * self.v.ln()
            + self
                .component
                .lambdas
                .iter()
                .map(|l| (self.a * self.a * l / self.v).ln_1p())
                .sum::<f64>();
        let logit = self.component.weight.ln() - 0.5 * log_det - 0.5 * dot(&d, &e);
        (logit, e)
    }
}
