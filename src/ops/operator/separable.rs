//! Separable operators: `Y_c = A_h X_c A_wᵀ` per channel with small dense 1-D
//! factors — zero-boundary blur and bicubic down-sampling (`docs/math.md`
//! §5.4). Each factor's SVD (f64, faer) is truncated once: singular values
//! below the threshold become 0 in H itself, as in the official code, so H,
//! Hᵀ, H⁺ and P stay exact for one consistent operator. Every mode is then
//! `L X Rᵀ` with a precomputed pair (L, R), applied on the device as two
//! launches of small per-channel GEMMs (rows, then columns).

use faer::Mat;

use super::Mode;
use crate::error::{Error, Result};

/// Singular values of each 1-D factor below this are set to zero: the
/// official DDRM/C-ΠGDM value for blur and bicubic SR (absolute; the factors'
/// largest singular value is about 1).
pub const DEFAULT_TRUNCATION: f64 = 3e-2;

/// One 1-D factor `A` (`out × in`) and the matrices of every mode.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Factor {
    pub(crate) rows_in: usize,
    pub(crate) rows_out: usize,
    /// Row-major `A` (truncated), `Aᵀ`, `A⁺` and `P = A⁺A`.
    forward: Vec<f64>,
    adjoint: Vec<f64>,
    pinv: Vec<f64>,
    project: Vec<f64>,
    /// How many singular values survived the truncation.
    pub(crate) rank: usize,
    /// The full right singular basis V (`in × in`, kept directions first) and
    /// Vᵀ: the rotation into the basis where P is a 0/1 diagonal.
    basis: Vec<f64>,
    basis_t: Vec<f64>,
}

impl Factor {
    /// The truncated SVD of `a` (`out × in`, row-major).
    pub(crate) fn new(a: &[f64], out: usize, inp: usize, truncation: f64) -> Result<Self> {
        let m = Mat::from_fn(out, inp, |i, j| a[i * inp + j]);
        let svd = m.svd().map_err(|e| Error::Numerical {
            what: "SVD of a separable operator's factor",
            reason: format!("{e:?}"),
        })?;
        let (u, s, v) = (svd.U(), svd.S(), svd.V());
        let kept: Vec<usize> = (0..s.dim()).filter(|&k| s[k] >= truncation).collect();
        if kept.is_empty() {
            return Err(Error::InvalidParameter {
                name: "SVD truncation",
                value: truncation,
                reason: "every singular value of the operator falls below it",
            });
        }
        let build = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f64| -> Vec<f64> {
            (0..rows * cols).map(|k| f(k / cols, k % cols)).collect()
        };
        let sum = |f: &dyn Fn(usize) -> f64| kept.iter().map(|&k| f(k)).sum::<f64>();
        let forward = build(out, inp, &|i, j| sum(&|k| u[(i, k)] * s[k] * v[(j, k)]));
        let adjoint = build(inp, out, &|i, j| forward[j * inp + i]);
        let pinv = build(inp, out, &|i, j| sum(&|k| v[(i, k)] * u[(j, k)] / s[k]));
        let project = build(inp, inp, &|i, j| sum(&|k| v[(i, k)] * v[(j, k)]));
        // Singular values come sorted in non-increasing order, so the kept
        // directions are V's first columns.
        let basis = build(inp, inp, &|i, j| v[(i, j)]);
        let basis_t = build(inp, inp, &|i, j| v[(j, i)]);
        Ok(Factor {
            rows_in: inp,
            rows_out: out,
            forward,
            adjoint,
            pinv,
            project,
            rank: kept.len(),
            basis,
            basis_t,
        })
    }

    /// The matrix of `map` and its (rows, cols).
    pub(crate) fn matrix(&self, map: Map) -> (&[f64], usize, usize) {
        let (n, m) = (self.rows_in, self.rows_out);
        match map {
            Map::Mode(Mode::Forward) => (&self.forward, m, n),
            Map::Mode(Mode::Adjoint) => (&self.adjoint, n, m),
            Map::Mode(Mode::PseudoInverse) => (&self.pinv, n, m),
            Map::Mode(Mode::Project) => (&self.project, n, n),
            Map::ToSpectral => (&self.basis_t, n, n),
            Map::FromSpectral => (&self.basis, n, n),
        }
    }
}

/// A linear map a separable operator carries: one of its modes, or the
/// rotation into (out of) the singular basis `V_h ⊗ V_w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Map {
    Mode(Mode),
    ToSpectral,
    FromSpectral,
}

impl Map {
    const ALL: [Map; 6] = [
        Map::Mode(Mode::Forward),
        Map::Mode(Mode::Adjoint),
        Map::Mode(Mode::PseudoInverse),
        Map::Mode(Mode::Project),
        Map::ToSpectral,
        Map::FromSpectral,
    ];
}

/// The height and width factors of a separable operator, and where each
/// mode's matrices sit in the operator's table (f32 bits) and in `dense`
/// (f64, for the CPU's oracle path).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Separable {
    pub(crate) height: Factor,
    pub(crate) width: Factor,
    pub(crate) dense: Vec<f64>,
    /// Per map (in `Map::ALL` order): offsets of (L = height matrix, R = width matrix).
    offsets: [(usize, usize); 6],
}

impl Separable {
    pub(crate) fn new(height: Factor, width: Factor) -> Self {
        let mut dense = Vec::new();
        let mut offsets = [(0, 0); 6];
        for (slot, map) in Map::ALL.into_iter().enumerate() {
            let l = dense.len();
            dense.extend_from_slice(height.matrix(map).0);
            let r = dense.len();
            dense.extend_from_slice(width.matrix(map).0);
            offsets[slot] = (l, r);
        }
        Separable {
            height,
            width,
            dense,
            offsets,
        }
    }

    /// Where `map`'s (L, R) matrices start in the table.
    pub(crate) fn offsets(&self, map: Map) -> (usize, usize) {
        let slot = Map::ALL.iter().position(|&m| m == map).unwrap_or(0);
        self.offsets[slot]
    }

    /// The 0/1 diagonal of P in the singular basis over `[C, H, W]` items:
    /// 1 where both 1-D singular values were kept.
    pub(crate) fn spectral_mask(&self, channels: usize) -> Vec<f32> {
        let (h, w) = (self.height.rows_in, self.width.rows_in);
        (0..channels * h * w)
            .map(|k| {
                let (i, j) = ((k / w) % h, k % w);
                if i < self.height.rank && j < self.width.rank {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The table the kernels read: every matrix as f32 bits.
    pub(crate) fn table(&self) -> Vec<u32> {
        self.dense.iter().map(|&v| (v as f32).to_bits()).collect()
    }
}

/// Zero-boundary convolution with `taps` centred at `len/2` (all taps used,
/// odd or even length — the official code drops the last tap of odd kernels;
/// this does not): `A[i, j] = taps[j − i + len/2]` where that index exists.
pub(crate) fn blur_matrix(taps: &[f64], n: usize) -> Vec<f64> {
    let half = taps.len() / 2;
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for (t, &k) in taps.iter().enumerate() {
            // Column j = i + t − half, if inside the image.
            if let Some(j) = (i + t).checked_sub(half).filter(|&j| j < n) {
                a[i * n + j] = k;
            }
        }
    }
    a
}

/// Bicubic down-sampling by `s` (`docs/math.md` §5.4): Keys' cubic (a = −0.5)
/// with 4s taps normalised to sum 1, output o centred at `s·o + s/2`,
/// half-sample-symmetric reflection at the borders.
pub(crate) fn bicubic_matrix(s: usize, n: usize) -> Vec<f64> {
    let cubic = |x: f64| {
        let (a, x) = (-0.5, x.abs());
        if x <= 1.0 {
            (a + 2.0) * x.powi(3) - (a + 3.0) * x * x + 1.0
        } else if x < 2.0 {
            a * x.powi(3) - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let sf = s as f64;
    let taps: Vec<f64> = (0..4 * s)
        .map(|i| cubic((i as f64 - 2.0 * sf + 0.5) / sf))
        .collect();
    let total: f64 = taps.iter().sum();
    let reflect = |j: i64| -> usize {
        let n = n as i64;
        let r = if j < 0 {
            -j - 1
        } else if j >= n {
            2 * n - 1 - j
        } else {
            j
        };
        r.clamp(0, n - 1) as usize
    };
    let out = n / s;
    let mut a = vec![0.0; out * n];
    for o in 0..out {
        let centre = (s * o + s / 2) as i64;
        for (t, k) in taps.iter().enumerate() {
            let j = centre - 2 * s as i64 + t as i64;
            a[o * n + reflect(j)] += k / total;
        }
    }
    a
}

/// Normalised Gaussian taps `exp(−t²/2σ²)` for `t = −radius..=radius`.
pub fn gaussian_taps(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as i64;
    let raw: Vec<f64> = (-r..=r)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter().map(|v| v / total).collect()
}

/// `len` equal taps summing to 1.
pub fn uniform_taps(len: usize) -> Vec<f64> {
    vec![1.0 / len as f64; len]
}
