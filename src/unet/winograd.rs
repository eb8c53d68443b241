//! Winograd F(2×2, 3×3) for the UNet's stride-1 3×3 convolutions with one
//! pixel of zero padding on each side (every resnet conv, conv_in, conv_out
//! and the upsamplers, whose nearest ×2 is folded into the input read).
//!
//! A 2×2 output tile is `Aᵀ [U ⊙ V] A` with `U = G g Gᵀ` (the 3×3 kernel,
//! transformed once at load) and `V = Bᵀ d B` (the tile's 4×4 input patch).
//! Summed over input channels, the 16 products become 16 independent GEMMs
//! `M[ξ] = U[ξ] · V[ξ]` of `[cout × cin] · [cin × tiles]`: 16 multiplies per
//! 4 outputs instead of 36, so 2.25× fewer GEMM flops than im2col, and the
//! transformed input (16 values per 4 outputs) is smaller than im2col's
//! columns (36 per 4). F(2×2, 3×3)'s transforms use only ±1 and ½, so the
//! result differs from the direct sum by rounding alone (a few f32 ulps of
//! the inputs' scale; `tests` bounds it against the direct definition).
//!
//! Layout: activations `[c, b·h·w]` as in [`super::kernels`]; a band of tile
//! lines (a tile line is one row of 2×2 tiles of one item) at a time, so the
//! transformed buffers stay bounded whatever the image size.

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::kernels::{matmul, Act, Mat};
use super::pool::{Arena, Store};

/// Whether eligible convolutions use Winograd: yes unless the environment
/// says `DIFFINV_CPU_WINOGRAD=0` when the first network loads (for A/B
/// timing, or to get the im2col path's rounding). Read once per process.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("DIFFINV_CPU_WINOGRAD").map_or(true, |v| v != "0"))
}

/// Transformed values per tile (the 4×4 Winograd domain).
const POINTS: usize = 16;

/// `U = G g Gᵀ` for every (cout, cin) kernel of `w` (`[cout, cin, 3, 3]`),
/// laid out `[16][cout][cin]`: point ξ is the lhs of GEMM ξ. Computed in f64
/// from the checkpoint's f32 values and rounded once to the storage type.
pub fn transform_weights<S: Store>(w: &[f32], cout: usize, cin: usize) -> Vec<S> {
    // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]] applied to a 3-vector.
    fn g_times(v: [f64; 3]) -> [f64; 4] {
        [
            v[0],
            0.5 * (v[0] + v[1] + v[2]),
            0.5 * (v[0] - v[1] + v[2]),
            v[2],
        ]
    }
    let mut u = vec![S::default(); POINTS * cout * cin];
    for (pair, g) in w.chunks_exact(9).enumerate() {
        let g = |r: usize, c: usize| f64::from(g[3 * r + c]);
        // Rows first (G g, 4×3), then columns ((G g) Gᵀ, 4×4).
        let cols: [[f64; 4]; 3] = std::array::from_fn(|c| g_times([g(0, c), g(1, c), g(2, c)]));
        for r in 0..4 {
            let row = g_times([cols[0][r], cols[1][r], cols[2][r]]);
            for (c, v) in row.into_iter().enumerate() {
                u[(4 * r + c) * cout * cin + pair] = S::from_f32(v as f32);
            }
        }
    }
    u
}

/// `Bᵀ` applied to the 4-vector `(a, b, c, d)`.
#[inline(always)]
fn bt(a: f32, b: f32, c: f32, d: f32) -> [f32; 4] {
    [a - c, b + c, c - b, b - d]
}

/// `Aᵀ` applied to the 4-vector `(a, b, c, d)`.
#[inline(always)]
fn at(a: f32, b: f32, c: f32, d: f32) -> [f32; 2] {
    [a + b + c, b - c - d]
}

/// Run `f` on this thread's scratch of at least `len` floats. The buffer
/// only grows, so repeated forwards of one shape allocate nothing here (the
/// arena's promise extends to the transforms' row buffers).
fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    thread_local! {
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len]);
    });
}

/// The geometry of one Winograd convolution over an input read `up`× upsampled.
#[derive(Clone, Copy)]
struct Tiles {
    /// The (virtual, upsampled) input and output size.
    h: usize,
    w: usize,
    up: usize,
    /// Tile rows and columns per item.
    th: usize,
    tw: usize,
}

impl Tiles {
    fn of(x: &Act<impl Store>, up: usize) -> Self {
        let (h, w) = (x.h * up, x.w * up);
        Tiles {
            h,
            w,
            up,
            th: h.div_ceil(2),
            tw: w.div_ceil(2),
        }
    }
}

/// One row of the zero-padded, upsampled input: `buf[1 + ix]` = input pixel
/// `ix / up` of `line`, zeros around it.
fn padded_row<S: Store>(line: &[S], up: usize, buf: &mut [f32]) {
    buf.fill(0.0);
    match up {
        1 => {
            for (o, v) in buf[1..=line.len()].iter_mut().zip(line) {
                *o = v.to_f32();
            }
        }
        _ => {
            for (o, v) in buf[1..=line.len() * up].chunks_exact_mut(up).zip(line) {
                o.fill(v.to_f32());
            }
        }
    }
}

/// `V` for the tile lines `lines` (line = `b·th + ty`) of one input channel
/// `src` (`[b·h·w]` of the stored, not upsampled, image): `v[ξ·stride + t]`
/// for the band's tile `t`. `scratch` holds `8·(2·tw + 2)` floats. Every
/// inner loop runs along a row, so the compiler vectorises it.
fn input_tile_lines<S: Store>(
    src: &[S],
    g: Tiles,
    (in_h, in_w): (usize, usize),
    lines: std::ops::Range<usize>,
    v: &mut [S],
    stride: usize,
    scratch: &mut [f32],
) {
    // Two columns per tile plus the halo: w + 2, or w + 3 for an odd width.
    let padded = 2 * g.tw + 2;
    let (rows, cols) = scratch.split_at_mut(4 * padded);
    for (li, line) in lines.enumerate() {
        let (bi, ty) = (line / g.th, line % g.th);
        let img = &src[bi * in_h * in_w..(bi + 1) * in_h * in_w];
        // The patch rows 2·ty − 1 … 2·ty + 2 of the zero-padded input.
        for (r, buf) in rows.chunks_exact_mut(padded).enumerate() {
            let iy = (2 * ty + r).wrapping_sub(1);
            if iy < g.h {
                padded_row(&img[(iy / g.up) * in_w..][..in_w], g.up, buf);
            } else {
                buf.fill(0.0);
            }
        }
        // Bᵀ d down the columns, for every column at once.
        let (r0, rest) = rows.split_at(padded);
        let (r1, rest) = rest.split_at(padded);
        let (r2, r3) = rest.split_at(padded);
        for (i, out) in cols.chunks_exact_mut(padded).enumerate() {
            for (j, o) in out.iter_mut().enumerate() {
                *o = bt(r0[j], r1[j], r2[j], r3[j])[i];
            }
        }
        // (Bᵀ d) B along the rows: tile tx reads columns 2·tx … 2·tx + 3.
        let base = li * g.tw;
        for (r, col) in cols.chunks_exact(padded).enumerate() {
            // The four planes 4·r … 4·r + 3, each `stride` apart.
            let (p0, rest) = v[4 * r * stride + base..].split_at_mut(stride);
            let (p1, rest) = rest.split_at_mut(stride);
            let (p2, p3) = rest.split_at_mut(stride);
            let planes = p0[..g.tw]
                .iter_mut()
                .zip(&mut p1[..g.tw])
                .zip(&mut p2[..g.tw])
                .zip(&mut p3[..g.tw]);
            for (tx, (((o0, o1), o2), o3)) in planes.enumerate() {
                let q = &col[2 * tx..2 * tx + 4];
                let [a, b, c, d] = bt(q[0], q[1], q[2], q[3]);
                (*o0, *o1, *o2, *o3) = (
                    S::from_f32(a),
                    S::from_f32(b),
                    S::from_f32(c),
                    S::from_f32(d),
                );
            }
        }
    }
}

/// `dst += Aᵀ M A` for output channel row `dst` (`[b·h·w]`) from the band's
/// products `m[ξ·stride + t]` of that channel. `scratch` holds `8·tw` floats.
fn output_tile_lines<S: Store>(
    m: &[S],
    stride: usize,
    g: Tiles,
    lines: std::ops::Range<usize>,
    dst: &mut [S],
    scratch: &mut [f32],
) {
    let hw = g.h * g.w;
    for (li, line) in lines.enumerate() {
        let (bi, ty) = (line / g.th, line % g.th);
        let img = &mut dst[bi * hw..(bi + 1) * hw];
        let base = li * g.tw;
        // Aᵀ M down the columns: half-row r of point column c in
        // scratch[(2·c + r)·tw + tx].
        for c in 0..4 {
            let p = |row: usize| &m[(4 * row + c) * stride + base..][..g.tw];
            let (p0, p1, p2, p3) = (p(0), p(1), p(2), p(3));
            let (a0, a1) = scratch[2 * c * g.tw..(2 * c + 2) * g.tw].split_at_mut(g.tw);
            for tx in 0..g.tw {
                let [x, y] = at(
                    p0[tx].to_f32(),
                    p1[tx].to_f32(),
                    p2[tx].to_f32(),
                    p3[tx].to_f32(),
                );
                a0[tx] = x;
                a1[tx] = y;
            }
        }
        // (Aᵀ M) A along the rows, added to the two output rows.
        for r in 0..2 {
            let y = 2 * ty + r;
            if y >= g.h {
                break;
            }
            let q = |c: usize| &scratch[(2 * c + r) * g.tw..][..g.tw];
            let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
            let out = &mut img[y * g.w..(y + 1) * g.w];
            let mut pairs = out.chunks_exact_mut(2);
            for (tx, pair) in (&mut pairs).enumerate() {
                let [e0, e1] = at(q0[tx], q1[tx], q2[tx], q3[tx]);
                pair[0] = S::from_f32(pair[0].to_f32() + e0);
                pair[1] = S::from_f32(pair[1].to_f32() + e1);
            }
            if let [last] = pairs.into_remainder() {
                let tx = g.tw - 1;
                *last = S::from_f32(last.to_f32() + at(q0[tx], q1[tx], q2[tx], q3[tx])[0]);
            }
        }
    }
}

/// `dst += conv3×3(x)` (stride 1, one pixel of zero padding, the input read
/// `up`× upsampled) from the transformed weights `u` of
/// [`transform_weights`]; `dst` is `[cout, b·(h·up)·(w·up)]`. Transformed
/// buffers hold at most about `budget` bytes each.
pub fn accumulate<S: Store>(
    x: &Act<S>,
    up: usize,
    u: &[S],
    cout: usize,
    dst: &mut [S],
    arena: &mut Arena<S>,
    budget: usize,
) {
    let cin = x.c;
    let g = Tiles::of(x, up);
    let n_out = x.b * g.h * g.w;
    let lines = x.b * g.th;
    if lines == 0 || g.tw == 0 {
        return;
    }
    let per_line = POINTS * cin.max(cout) * g.tw * std::mem::size_of::<S>();
    let band = (budget / per_line).clamp(1, lines);
    let cap = band * g.tw;
    let mut v = arena.take(POINTS * cin * cap);
    let mut m = arena.take(POINTS * cout * cap);
    let in_n = x.n();
    for first in (0..lines).step_by(band) {
        let range = first..(first + band).min(lines);
        let tiles = range.len() * g.tw;
        // V as [cin][16][tiles]: one input channel per task, and GEMM ξ
        // reads V[ξ] as rows ci at a stride of 16·tiles.
        v[..POINTS * cin * tiles]
            .par_chunks_mut(POINTS * tiles)
            .enumerate()
            .for_each(|(ci, planes)| {
                with_scratch(8 * (2 * g.tw + 2), |rows| {
                    let src = &x.data[ci * in_n..(ci + 1) * in_n];
                    input_tile_lines(src, g, (x.h, x.w), range.clone(), planes, tiles, rows);
                });
            });
        // The 16 GEMMs are independent: one per task, each single-threaded,
        // so the threads never synchronise inside a product.
        m[..POINTS * cout * tiles]
            .par_chunks_mut(cout * tiles)
            .enumerate()
            .for_each(|(xi, mx)| {
                matmul(
                    cout,
                    tiles,
                    cin,
                    mx,
                    tiles,
                    Mat::rows(u, xi * cout * cin, cin),
                    Mat::rows(&v, xi * tiles, POINTS * tiles),
                    false,
                    1.0,
                    false,
                );
            });
        dst.par_chunks_mut(n_out).enumerate().for_each(|(co, row)| {
            with_scratch(8 * g.tw, |scratch| {
                let m = &m[co * tiles..];
                output_tile_lines(m, cout * tiles, g, range.clone(), row, scratch);
            });
        });
    }
    arena.give(v);
    arena.give(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::kernels::{im2col, ConvGeom};

    /// The direct definition, through im2col + GEMM in f64-free f32.
    fn direct(x: &Act<f32>, w: &[f32], cout: usize, up: usize) -> Vec<f32> {
        let g = ConvGeom {
            k: 3,
            stride: 1,
            pad: 1,
            pad_after: 1,
            up,
        };
        let (ho, wo) = g.out_size(x.h, x.w);
        let n = x.b * ho * wo;
        let mut col = vec![0f32; x.c * 9 * n];
        im2col(x, g, (ho, wo), 0..x.b * ho, &mut col);
        let mut out = vec![0.5f32; cout * n];
        let (lhs, rhs) = (Mat::rows(w, 0, x.c * 9), Mat::rows(&col, 0, n));
        matmul(cout, n, x.c * 9, &mut out, n, lhs, rhs, true, 1.0, false);
        out
    }

    /// Odd and even sizes, both upsampling factors, one band and a band per
    /// tile line: Winograd equals the direct convolution up to rounding.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        let (cin, cout, b) = (3, 5, 2);
        let w: Vec<f32> = (0..cout * cin * 9)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let u = transform_weights::<f32>(&w, cout, cin);
        for (h, wd, up) in [
            (6, 4, 1),
            (5, 3, 1),
            (1, 1, 1),
            (7, 2, 1),
            (3, 5, 2),
            (1, 2, 2),
        ] {
            let x = Act {
                data: (0..cin * b * h * wd)
                    .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
                    .collect(),
                c: cin,
                b,
                h,
                w: wd,
            };
            let want = direct(&x, &w, cout, up);
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            for budget in [usize::MAX / 2, 1] {
                let mut got = vec![0.5f32; want.len()];
                let mut arena = Arena::<f32>::default();
                accumulate(&x, up, &u, cout, &mut got, &mut arena, budget);
                for (i, (g, d)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - d).abs() <= 1e-5 * scale,
                        "{h}×{wd} up {up} budget {budget}: [{i}] {g} vs {d}"
                    );
                }
            }
        }
    }

    /// f16 storage: the transformed weights and domains are rounded to f16,
    /// so the result moves by a few f16 ulps of the output's scale, no more.
    #[test]
    fn winograd_in_f16_storage_stays_within_f16_rounding() {
        use half::f16;
        let (cin, cout, b, h, wd) = (4, 3, 1, 6, 6);
        let w: Vec<f32> = (0..cout * cin * 9)
            .map(|i| ((i * 3 % 7) as f32 - 3.0) / 5.0)
            .collect();
        let data: Vec<f32> = (0..cin * b * h * wd)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let x32 = Act {
            data: data.clone(),
            c: cin,
            b,
            h,
            w: wd,
        };
        let want = direct(&x32, &w, cout, 1);
        let x16 = Act {
            data: data.iter().map(|&v| f16::from_f32(v)).collect(),
            c: cin,
            b,
            h,
            w: wd,
        };
        let u = transform_weights::<f16>(&w, cout, cin);
        let mut got = vec![f16::from_f32(0.5); want.len()];
        accumulate(&x16, 1, &u, cout, &mut got, &mut Arena::default(), 1 << 20);
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (g, d) in got.iter().zip(&want) {
            assert!((g.to_f32() - d).abs() <= 8e-3 * scale, "{g} vs {d}");
        }
    }
}
