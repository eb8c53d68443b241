//! CPU primitives of the forward, on activations stored channel-major over the
//! whole batch: `[C, B·H·W]`. In that layout every convolution of a batch is
//! one GEMM (`[Cout, K] × [K, B·H·W]`), a channel concatenation is two
//! contiguous copies and a 1×1 convolution needs no im2col at all.

use gemm::Parallelism;
use rayon::prelude::*;

use super::pool::Store;

/// Activations `[c, b·h·w]` in storage type `S`.
pub struct Act<S> {
    pub data: Vec<S>,
    pub c: usize,
    pub b: usize,
    pub h: usize,
    pub w: usize,
}

impl<S> Act<S> {
    /// Columns: pixels of the whole batch.
    pub fn n(&self) -> usize {
        self.b * self.h * self.w
    }
}

/// A strided matrix operand: element (i, j) is `data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    pub fn rows(data: &'a [T], offset: usize, rs: usize) -> Self {
        Mat {
            data,
            offset,
            rs,
            cs: 1,
        }
    }

    /// The last element a `rows × cols` operand touches lies in `data`.
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "GEMM operand out of bounds");
        }
    }
}

/// `dst[m × n] (row stride dst_rs) = (accumulate ? dst : 0) + scale · lhs[m × k] · rhs[k × n]`
/// with f32 accumulation (gemm's f16 kernels widen to f32).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Store>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "GEMM output out of bounds"
    );
    if k > 0 {
        lhs.check(m, k);
        rhs.check(k, n);
    }
    let par = if parallel && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the three asserts above bound every element the (m, n, k)
    // product reads or writes inside its slice; strides are non-negative and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            T::from_f32(1.0),
            T::from_f32(scale),
            false,
            false,
            false,
            par,
        );
    }
}

/// Geometry of a 3×3 (or 1×1) convolution read through im2col, including a
/// nearest-neighbour upsampling folded into the read.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub k: usize,
    pub stride: usize,
    /// Zero rows/columns before the image.
    pub pad: usize,
    /// Zero rows/columns after it (diffusers' `downsample_padding = 0` pads
    /// only after).
    pub pad_after: usize,
    /// The input is read as if repeated `up`× in each direction.
    pub up: usize,
}

impl ConvGeom {
    /// Output height and width for an input of `h × w`.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let pads = self.pad + self.pad_after;
        let size = |l: usize| (l * self.up + pads - self.k) / self.stride + 1;
        (size(h), size(w))
    }
}

/// Columns of the im2col matrix for output lines `lines` (a line is one
/// output row `oy` of one item `b`, index `b·Ho + oy`):
/// `col[(ci·k + ky)·k + kx, (line − lines.start)·Wo + ox]` = the input pixel
/// under that tap, 0 outside the image. Rows are filled in parallel.
pub fn im2col<S: Store>(
    x: &Act<S>,
    g: ConvGeom,
    (ho, wo): (usize, usize),
    lines: std::ops::Range<usize>,
    col: &mut [S],
) {
    let (h, w, b) = (x.h, x.w, x.b);
    let (lh, lw) = (h * g.up, w * g.up);
    let n_cols = lines.len() * wo;
    let hw = h * w;
    let kk = g.k * g.k;
    col[..n_cols * x.c * kk]
        .par_chunks_mut(n_cols)
        .enumerate()
        .for_each(|(row, dst)| {
            let (ci, tap) = (row / kk, row % kk);
            let (ky, kx) = (tap / g.k, tap % g.k);
            let src = &x.data[ci * b * hw..(ci + 1) * b * hw];
            for (line, out) in lines.clone().zip(dst.chunks_mut(wo)) {
                let (bi, oy) = (line / ho, line % ho);
                let img = &src[bi * hw..(bi + 1) * hw];
                let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                if iy >= lh {
                    out.fill(S::default());
                    continue;
                }
                let line = &img[(iy / g.up) * w..(iy / g.up + 1) * w];
                if g.stride == 1 && g.up == 1 {
                    // A shifted copy of the input line with zero borders:
                    // ox reads ix = ox + kx − pad.
                    let lead = g.pad.saturating_sub(kx).min(wo);
                    let start = (kx + lead).saturating_sub(g.pad);
                    let len = (w - start.min(w)).min(wo - lead);
                    out[..lead].fill(S::default());
                    out[lead..lead + len].copy_from_slice(&line[start..start + len]);
                    out[lead + len..].fill(S::default());
                    continue;
                }
                for (ox, o) in out.iter_mut().enumerate() {
                    let ix = (ox * g.stride + kx).wrapping_sub(g.pad);
                    *o = if ix < lw {
                        line[ix / g.up]
                    } else {
                        S::default()
                    };
                }
            }
        });
}

/// Every row `c` of `dst` (`[c, b·hw]`) set to `bias[c]`, plus `per_item[bi·c_total + c]`
/// when given (the time embedding projected for each batch item).
pub fn fill_bias<S: Store>(dst: &mut [S], bias: &[f32], per_item: Option<&[f32]>, b: usize) {
    let c_total = bias.len();
    let n = dst.len() / c_total;
    let hw = n / b;
    dst.par_chunks_mut(n).enumerate().for_each(|(c, row)| {
        for (bi, seg) in row.chunks_mut(hw).enumerate() {
            let v = bias[c] + per_item.map_or(0.0, |t| t[bi * c_total + c]);
            seg.fill(S::from_f32(v));
        }
    });
}

/// `dst[i] += src[i]` in f32, rounded to the storage type once.
pub fn add_into<S: Store>(dst: &mut [S], src: &[S]) {
    dst.par_chunks_mut(4096)
        .zip(src.par_chunks(4096))
        .for_each(|(d, s)| {
            for (d, s) in d.iter_mut().zip(s) {
                *d = S::from_f32(d.to_f32() + s.to_f32());
            }
        });
}

/// `dst[i] *= s`.
pub fn scale<S: Store>(dst: &mut [S], s: f32) {
    dst.par_chunks_mut(4096).for_each(|d| {
        for v in d {
            *v = S::from_f32(v.to_f32() * s);
        }
    });
}

/// e^x in f32 without a libm call: Cephes' range reduction to
/// r ∈ [−½ ln 2, ½ ln 2] and its degree-6 polynomial (within 2 ulp of e^x;
/// `tests` checks it against f64), branch-free so that loops over slices
/// vectorise. On [−87, 88], where 2ⁿ stays a normal float; below it the
/// result is 0 (e^x < 1.7e-38), above it +∞ (e^x > 1.6e38, within 2× of
/// f32's overflow). NaN stays NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 split in a part exact in f32 and the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = x.clamp(-87.0, 88.0);
    let n = (c * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = (p * r * r + r + 1.0) * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x > 88.0 {
        f32::INFINITY
    } else if x < -87.0 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

pub fn silu(v: f32) -> f32 {
    v / (1.0 + exp_fast(-v))
}

/// `silu` of every element, in place (vectorised).
pub fn silu_in_place(v: &mut [f32]) {
    for x in v {
        *x = silu(*x);
    }
}

/// GroupNorm over (channels of a group × pixels of an item), then the affine
/// map and optionally SiLU. Statistics in f64, one (mean, 1/σ) per (item, group).
#[allow(clippy::too_many_arguments)]
pub fn group_norm<S: Store>(
    x: &Act<S>,
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f64,
    apply_silu: bool,
    y: &mut [S],
) {
    let (c, b) = (x.c, x.b);
    let hw = x.h * x.w;
    let n = x.n();
    let cg = c / groups;
    let stats: Vec<(f32, f32)> = (0..b * groups)
        .into_par_iter()
        .map(|i| {
            let (bi, g) = (i / groups, i % groups);
            // Eight independent partial sums (a fixed order, so the result
            // is deterministic) let the loop vectorise.
            let (mut s8, mut s28) = ([0f64; 8], [0f64; 8]);
            let mut add = |lane: usize, v: f32| {
                let v = f64::from(v);
                s8[lane] += v;
                s28[lane] += v * v;
            };
            for ch in g * cg..(g + 1) * cg {
                let seg = &x.data[ch * n + bi * hw..ch * n + (bi + 1) * hw];
                let mut chunks = seg.chunks_exact(8);
                for c in &mut chunks {
                    for (lane, v) in c.iter().enumerate() {
                        add(lane, v.to_f32());
                    }
                }
                for (lane, v) in chunks.remainder().iter().enumerate() {
                    add(lane, v.to_f32());
                }
            }
            let (s, s2): (f64, f64) = (s8.iter().sum(), s28.iter().sum());
            let count = (cg * hw) as f64;
            let mean = s / count;
            let var = (s2 / count - mean * mean).max(0.0);
            (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
        })
        .collect();
    y.par_chunks_mut(n).enumerate().for_each(|(ch, row)| {
        let g = ch / cg;
        let src = &x.data[ch * n..(ch + 1) * n];
        for bi in 0..b {
            let (mean, rstd) = stats[bi * groups + g];
            let a = rstd * gamma[ch];
            let o = beta[ch] - mean * a;
            let seg = bi * hw..(bi + 1) * hw;
            // Through an f32 block so that the SiLU loop vectorises.
            let mut block = [0f32; 64];
            for (d, s) in row[seg.clone()].chunks_mut(64).zip(src[seg].chunks(64)) {
                let t = &mut block[..d.len()];
                for (t, s) in t.iter_mut().zip(s) {
                    *t = s.to_f32() * a + o;
                }
                if apply_silu {
                    silu_in_place(t);
                }
                for (d, t) in d.iter_mut().zip(t.iter()) {
                    *d = S::from_f32(*t);
                }
            }
        }
    });
}

/// Numerically safe softmax of one row, in place.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = exp_fast(*v - max);
    }
    for v in row.iter() {
        sum += *v;
    }
    let inv = sum.recip();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// exp_fast within 2 ulp of e^x over the range the forward feeds it
    /// (SiLU's −v, softmax's non-positive logits), and its edge cases.
    #[test]
    fn exp_fast_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let want = f64::from(x).exp();
            let got = f64::from(exp_fast(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(f32::NAN).is_nan());
        assert_eq!(exp_fast(-1e30), 0.0);
        assert_eq!(exp_fast(1e30), f32::INFINITY);
        assert_eq!(silu(-1e30), -0.0);
        assert!(silu(f32::NAN).is_nan());
    }

    /// im2col + GEMM equals the direct definition of a padded, strided and
    /// upsampled 3×3 convolution.
    #[test]
    fn im2col_gemm_matches_a_direct_convolution() {
        for g in [
            ConvGeom {
                k: 3,
                stride: 1,
                pad: 1,
                pad_after: 1,
                up: 1,
            },
            ConvGeom {
                k: 3,
                stride: 2,
                pad: 1,
                pad_after: 1,
                up: 1,
            },
            ConvGeom {
                k: 3,
                stride: 2,
                pad: 0,
                pad_after: 1,
                up: 1,
            },
            ConvGeom {
                k: 3,
                stride: 1,
                pad: 1,
                pad_after: 1,
                up: 2,
            },
        ] {
            let (cin, cout, b, h, w) = (3, 4, 2, 6, 4);
            let x: Vec<f32> = (0..cin * b * h * w)
                .map(|i| ((i * 7 % 13) as f32) - 6.0)
                .collect();
            let wt: Vec<f32> = (0..cout * cin * 9)
                .map(|i| ((i * 5 % 11) as f32) / 10.0)
                .collect();
            let act = Act {
                data: x.clone(),
                c: cin,
                b,
                h,
                w,
            };
            let (ho, wo) = g.out_size(h, w);
            let n = b * ho * wo;
            let mut col = vec![0f32; cin * 9 * n];
            im2col(&act, g, (ho, wo), 0..b * ho, &mut col);
            let mut out = vec![0f32; cout * n];
            matmul(
                cout,
                n,
                cin * 9,
                &mut out,
                n,
                Mat::rows(&wt, 0, cin * 9),
                Mat::rows(&col, 0, n),
                false,
                1.0,
                true,
            );
            let (lh, lw) = (h * g.up, w * g.up);
            for co in 0..cout {
                for bi in 0..b {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut s = 0f32;
                            for ci in 0..cin {
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy >= lh as isize
                                            || ix >= lw as isize
                                        {
                                            continue;
                                        }
                                        let (sy, sx) = (iy as usize / g.up, ix as usize / g.up);
                                        s += wt[(co * cin + ci) * 9 + ky * 3 + kx]
                                            * x[(ci * b + bi) * h * w + sy * w + sx];
                                    }
                                }
                            }
                            let got = out[co * n + (bi * ho + oy) * wo + ox];
                            assert!((got - s).abs() < 1e-4, "{g:?}: {got} vs {s}");
                        }
                    }
                }
            }
        }
    }
}
