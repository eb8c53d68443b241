//! The exact posterior of `y = H x0 + σ_y n` under a [`GmmDenoiser`] prior
//! (`docs/math.md` §8.3): a Gaussian mixture again, each component conditioned
//! in closed form. Dense f64 on the host (faer): D ≤ a few thousand is what a
//! benchmark needs, and a D × D eigendecomposition per component gives the
//! spread metric its exact Mahalanobis distance.
//!
//! Per component, with `G = HΣHᵀ + σ_y²I` and the gain `K = ΣHᵀG⁻¹`:
//! mean `μ + K(y − Hμ)`, covariance `S = Σ − KHΣ`, weight `∝ w·N(y; Hμ, G)`.
//! Noiseless (σ_y = 0) conditions on H's row space (any rank); S then lives
//! on null(H).

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

use super::component::dot;
use super::{pick, GmmComponent, GmmDenoiser};
use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::ops::operator::Operator;
use crate::rng;
use crate::tensor::{DType, HostSlice, Shape, Tensor};

/// Eigenvalues of S below this fraction of the largest are its null space
/// (exactly zero in exact arithmetic for the noiseless posterior).
const RANK_TOLERANCE: f64 = 1e-10;

/// A linear measurement as a dense `m × D` matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseOperator {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl DenseOperator {
    /// The matrix of `op`, from H applied to every basis vector (f64, CPU).
    pub fn of(backend: &CpuBackend, op: &Operator<CpuBackend>) -> Result<Self> {
        let cols = op.x_item().checked_len()?;
        let rows = op.y_item().checked_len()?;
        let mut identity = vec![0.0; cols * cols];
        identity.iter_mut().step_by(cols + 1).for_each(|v| *v = 1.0);
        let x_shape = Shape::from_dims(&[&[cols][..], op.x_item().dims()].concat())?;
        let y_shape = Shape::from_dims(&[&[cols][..], op.y_item().dims()].concat())?;
        let x = Tensor::from_host(backend, x_shape, DType::F64, HostSlice::F64(&identity))?;
        let mut y = Tensor::zeros(backend, y_shape, DType::F64)?;
        op.forward(backend, &x, &mut y)?;
        // Item j of y is column j of H.
        let columns = y.to_f64(backend)?;
        let mut data = vec![0.0; rows * cols];
        for (j, column) in columns.chunks(rows).enumerate() {
            for (i, v) in column.iter().enumerate() {
                data[i * cols + j] = *v;
            }
        }
        Ok(DenseOperator { rows, cols, data })
    }

    /// `H x`.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.data.chunks(self.cols).map(|row| dot(row, x)).collect()
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// One component of the posterior mixture.
#[derive(Clone, Debug)]
pub struct PosteriorComponent {
    /// Posterior weight π_k (the components' weights sum to 1).
    pub weight: f64,
    /// Posterior mean.
    pub mean: Vec<f64>,
    prior: GmmComponent,
    /// `Kᵀ = G⁻¹HΣ`, m × D.
    gain_t: Mat<f64>,
    /// `V diag(1/√λ)` over S's range: `|Wᵀ(x − mean)|²` is the Mahalanobis² distance.
    whitener: Mat<f64>,
    /// Dimension of S's range (D − m noiseless, D noisy).
    rank: usize,
    /// `ln` of the product of S's nonzero eigenvalues.
    log_pdet: f64,
}

/// The exact posterior mixture for one measurement `y`.
#[derive(Clone, Debug)]
pub struct ExactPosterior {
    components: Vec<PosteriorComponent>,
    /// The measurement conditioned on: H and y as given (noisy), or their
    /// row space (noiseless; see [`row_space`]).
    h: DenseOperator,
    y: Vec<f64>,
    sigma_y: f64,
    /// H and y as given.
    given: (DenseOperator, Vec<f64>),
}

/// Noiseless `y = Hx` says exactly `V_rᵀx = S_r⁻¹U_rᵀy` for the rank-r SVD of
/// H: the same information with orthonormal rows, so an H without full row
/// rank (a truncated blur) conditions as well as any other. Singular values
/// below 1e-10 of the largest are its null space.
fn row_space(h: &DenseOperator, y: &[f64]) -> Result<(DenseOperator, Vec<f64>)> {
    let m = Mat::from_fn(h.rows, h.cols, |i, j| h.data[i * h.cols + j]);
    let svd = m.thin_svd().map_err(|e| Error::Numerical {
        what: "SVD of the measurement operator",
        reason: format!("{e:?}"),
    })?;
    let (u, s, v) = (svd.U(), svd.S(), svd.V());
    let largest = if s.dim() > 0 { s[0] } else { 0.0 };
    let kept: Vec<usize> = (0..s.dim())
        .filter(|&k| s[k] > RANK_TOLERANCE * largest)
        .collect();
    let data = kept
        .iter()
        .flat_map(|&k| (0..h.cols).map(move |j| v[(j, k)]))
        .collect();
    let y = kept
        .iter()
        .map(|&k| (0..h.rows).map(|i| u[(i, k)] * y[i]).sum::<f64>() / s[k])
        .collect();
    Ok((
        DenseOperator {
            rows: kept.len(),
            cols: h.cols,
            data,
        },
        y,
    ))
}

impl ExactPosterior {
    /// Condition `prior` on `y = H x0 + σ_y n` (σ_y ≥ 0).
    pub fn new(prior: &GmmDenoiser, h: &DenseOperator, y: &[f64], sigma_y: f64) -> Result<Self> {
        if h.cols != prior.dim() || y.len() != h.rows {
            return Err(Error::LengthMismatch {
                what: "posterior measurement (H's rows) or H's columns (the prior's dimension)",
                expected: h.rows * prior.dim(),
                got: y.len() * h.cols,
            });
        }
        if !(sigma_y.is_finite() && sigma_y >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "sigma_y",
                value: sigma_y,
                reason: "the measurement noise must be finite and non-negative",
            });
        }
        if let Some(&value) = y.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "y",
                value,
                reason: "measurements must be finite",
            });
        }
        let given = (h.clone(), y.to_vec());
        let (h, y) = if sigma_y == 0.0 {
            row_space(h, y)?
        } else {
            given.clone()
        };
        let (h, y) = (&h, &y[..]);
        let weights = prior.weights();
        let mut log_evidence = Vec::with_capacity(weights.len());
        let mut components = Vec::with_capacity(weights.len());
        for (c, w) in prior.components().iter().zip(&weights) {
            let (component, log_lik) = condition(c, h, y, sigma_y)?;
            log_evidence.push(w.ln() + log_lik);
            components.push(component);
        }
        let max = log_evidence
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = log_evidence.iter().map(|l| (l - max).exp()).sum();
        for (c, l) in components.iter_mut().zip(&log_evidence) {
            c.weight = (l - max).exp() / total;
        }
        Ok(ExactPosterior {
            components,
            h: h.clone(),
            y: y.to_vec(),
            sigma_y,
            given,
        })
    }

    pub fn components(&self) -> &[PosteriorComponent] {
        &self.components
    }

    /// The posterior weights π_k.
    pub fn weights(&self) -> Vec<f64> {
        self.components.iter().map(|c| c.weight).collect()
    }

    /// The posterior mean `Σ π_k m_k`.
    pub fn mean(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.h.cols];
        for c in &self.components {
            out.iter_mut()
                .zip(&c.mean)
                .for_each(|(o, m)| *o += c.weight * m);
        }
        out
    }

    /// `n` exact draws, item after item, by Matheron's rule: a prior draw of
    /// the chosen component corrected by its gain,
    /// `x = μ + Σ^{1/2}ξ + K(y − H(μ + Σ^{1/2}ξ) − σ_y η)`. Philox-keyed by `seed`.
    pub fn sample(&self, seed: u64, n: usize) -> Vec<f64> {
        let weights = self.weights();
        let (d, m) = (self.h.cols, self.h.rows);
        (0..n)
            .flat_map(|i| {
                let (_, u) = rng::uniforms(seed, 0, i as u32);
                let c = &self.components[pick(&weights, f64::from(u))];
                let normals = |offset: usize, len: usize| -> Vec<f64> {
                    (0..len)
                        .map(|j| rng::normal_f64(seed, 1 + i as u32, (offset + j) as u32))
                        .collect()
                };
                let x: Vec<f64> = c
                    .prior
                    .sqrt_covariance_apply(&normals(0, d))
                    .iter()
                    .zip(&c.prior.mean)
                    .map(|(s, mu)| mu + s)
                    .collect();
                let eta = normals(d, m);
                let residual: Vec<f64> = self
                    .h
                    .apply(&x)
                    .iter()
                    .zip(&self.y)
                    .zip(&eta)
                    .map(|((hx, y), e)| y - hx - self.sigma_y * e)
                    .collect();
                let mut out = x;
                for (j, r) in residual.iter().enumerate() {
                    for (l, o) in out.iter_mut().enumerate() {
                        *o += c.gain_t[(j, l)] * r;
                    }
                }
                out
            })
            .collect()
    }

    /// The most probable component of a sample `x` under the posterior, and
    /// its squared Mahalanobis distance per dimension of that component's
    /// support (1 on average for exact draws).
    pub fn classify(&self, x: &[f64]) -> (usize, f64) {
        let scored: Vec<(f64, f64)> = self
            .components
            .iter()
            .map(|c| {
                let maha = c.mahalanobis2(x);
                (
                    c.weight.ln() - 0.5 * c.log_pdet - 0.5 * maha,
                    maha / c.rank as f64,
                )
            })
            .collect();
        let best = (0..scored.len())
            .max_by(|&a, &b| scored[a].0.total_cmp(&scored[b].0))
            .unwrap_or(0);
        (best, scored[best].1)
    }

    /// The operator and measurement as given.
    pub fn measurement(&self) -> (&DenseOperator, &[f64]) {
        (&self.given.0, &self.given.1)
    }
}

impl PosteriorComponent {
    fn mahalanobis2(&self, x: &[f64]) -> f64 {
        let diff: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        (0..self.whitener.ncols())
            .map(|j| {
                let p: f64 = (0..diff.len())
                    .map(|i| self.whitener[(i, j)] * diff[i])
                    .sum();
                p * p
            })
            .sum()
    }

    /// Dimension of the component's support.
    pub fn rank(&self) -> usize {
        self.rank
    }
}

/// One prior component conditioned on y; returns it (weight unset) and
/// `ln N(y; Hμ, G)`.
fn condition(
    prior: &GmmComponent,
    h: &DenseOperator,
    y: &[f64],
    sigma_y: f64,
) -> Result<(PosteriorComponent, f64)> {
    let (m, d) = (h.rows, h.cols);
    // HΣ (m × D): Σ is symmetric, so row i is Σ hᵢ.
    let h_sigma = Mat::from_fn(m, d, |_, _| 0.0);
    let mut h_sigma = h_sigma;
    for i in 0..m {
        for (l, v) in prior.covariance_apply(h.row(i)).into_iter().enumerate() {
            h_sigma[(i, l)] = v;
        }
    }
    let h_mat = Mat::from_fn(m, d, |i, l| h.data[i * d + l]);
    let mut g = &h_mat * h_sigma.transpose();
    for i in 0..m {
        g[(i, i)] += sigma_y * sigma_y;
    }
    let llt = g.llt(Side::Lower).map_err(|e| Error::Numerical {
        what: "Cholesky of HΣHᵀ + σ_y²I",
        reason: format!("{e:?}"),
    })?;
    let gain_t = llt.solve(&h_sigma);
    let innovation: Vec<f64> = h
        .apply(&prior.mean)
        .iter()
        .zip(y)
        .map(|(hm, yi)| yi - hm)
        .collect();
    let innovation_mat = Mat::from_fn(m, 1, |i, _| innovation[i]);
    let solved = llt.solve(&innovation_mat);
    let quad: f64 = (0..m).map(|i| innovation[i] * solved[(i, 0)]).sum();
    let log_det_g: f64 = (0..m).map(|i| 2.0 * llt.L()[(i, i)].ln()).sum();
    let log_lik = -0.5 * (quad + log_det_g + m as f64 * (2.0 * std::f64::consts::PI).ln());
    let mean: Vec<f64> = (0..d)
        .map(|l| prior.mean[l] + (0..m).map(|j| gain_t[(j, l)] * innovation[j]).sum::<f64>())
        .collect();
    // S = Σ − (HΣ)ᵀ Kᵀ, symmetric D × D.
    let mut s = Mat::from_fn(d, d, |i, j| {
        let mut v = if i == j { prior.std * prior.std } else { 0.0 };
        for (k, lambda) in prior.lambdas.iter().enumerate() {
            let u = prior.direction(k);
            v += lambda * u[i] * u[j];
        }
        v
    });
    s -= h_sigma.transpose() * &gain_t;
    let eigen = s
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numerical {
            what: "eigendecomposition of the posterior covariance",
            reason: format!("{e:?}"),
        })?;
    let values: Vec<f64> = (0..d).map(|i| eigen.S()[i]).collect();
    let largest = values.iter().cloned().fold(0.0, f64::max);
    let kept: Vec<usize> = (0..d)
        .filter(|&i| values[i] > RANK_TOLERANCE * largest)
        .collect();
    let whitener = Mat::from_fn(d, kept.len(), |i, j| {
        eigen.U()[(i, kept[j])] / values[kept[j]].sqrt()
    });
    let log_pdet = kept.iter().map(|&i| values[i].ln()).sum();
    Ok((
        PosteriorComponent {
            weight: 0.0,
            mean,
            prior: prior.clone(),
            gain_t,
            whitener,
            rank: kept.len(),
            log_pdet,
        },
        log_lik,
    ))
}
