//! The nn family: the CPU definitions against hand-computed values and each
//! other, then every kernel of every backend (WGSL, CUDA — emulated here, on a
//! GPU where one is present) against the CPU on sizes that are not multiples
//! of the GEMM tiles (16×16 on wgpu, 64×64 on CUDA) or of the block, and on
//! capped grids whose loops wrap in every dimension.
//!
//! f16 storage (f32 math) is checked too, where a backend has it: each output
//! the CPU definition's f16 or its neighbour.
//!
//! Tolerances (f32 storage, inputs in [−1, 1], GEMM weights scaled by 1/√K so
//! outputs are O(1)): normalised error 1e-6 and max abs 1e-5 against the CPU
//! — the CPU sums in f64, the kernels in f32 over at most a few hundred terms.
//! The time embedding is looser (max abs 2e-4): its argument t·f reaches
//! 999, where one f32 ulp is 6.1e-5, so a one-ulp difference in a device's
//! `exp` moves sin/cos by that much.

mod common;

use common::values;
use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::nn::{self, Concat, Conv2d, GroupNorm, Matmul, NnOps, Softmax, TimeProj};
use diffinv::{DType, HostSlice, Shape, Tensor};

/// `common::compare`, after printing the max abs error (for the record).
fn compare(what: &str, got: &[f64], want: &[f64], rel_tol: f64, abs_tol: f64) {
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    eprintln!("{what}: max abs {err:.3e}");
    common::compare(what, got, want, rel_tol, abs_tol);
}

/// `v` in a new tensor of `dt` (rounded once on the host, so every backend
/// reads the same values).
fn up<B: NnOps>(b: &B, v: &[f64], dt: DType) -> Tensor<B> {
    Tensor::from_host(b, Shape::flat(v.len()), dt, HostSlice::F64(v)).unwrap()
}

fn zeros<B: NnOps>(b: &B, n: usize, dt: DType) -> Tensor<B> {
    Tensor::zeros(b, Shape::flat(n), dt).unwrap()
}

/// f32-representable inputs, so both backends read the same values.
fn vals(seed: u64, n: usize, amp: f64) -> Vec<f64> {
    values(seed, n, amp)
        .into_iter()
        .map(|v| f64::from(v as f32))
        .collect()
}

fn conv_on<B: NnOps>(
    b: &B,
    dt: DType,
    g: Conv2d,
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let (ho, wo) = g.out_size();
    let (x, w) = (up(b, x, dt), up(b, w, dt));
    let bias = bias.map(|v| up(b, v, dt));
    let mut out = zeros(b, g.batch * g.cout * ho * wo, dt);
    nn::conv2d(
        b,
        g,
        x.buffer(),
        w.buffer(),
        bias.as_ref().map(|t| t.buffer()),
        out.buffer_mut(),
    )
    .unwrap();
    out.to_f64(b).unwrap()
}

fn matmul_on<B: NnOps>(
    b: &B,
    dt: DType,
    g: Matmul,
    a: &[f64],
    bm: &[f64],
    bias: Option<&[f64]>,
    init: &[f64],
) -> Vec<f64> {
    let (a, bm) = (up(b, a, dt), up(b, bm, dt));
    let bias = bias.map(|v| up(b, v, dt));
    let mut out = up(b, init, dt);
    nn::matmul(
        b,
        g,
        a.buffer(),
        bm.buffer(),
        bias.as_ref().map(|t| t.buffer()),
        out.buffer_mut(),
    )
    .unwrap();
    out.to_f64(b).unwrap()
}

fn group_norm_on<B: NnOps>(
    b: &B,
    dt: DType,
    g: GroupNorm,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
) -> Vec<f64> {
    let (x, gamma, beta) = (up(b, x, dt), up(b, gamma, dt), up(b, beta, dt));
    let mut out = zeros(b, x.len(), dt);
    nn::group_norm(
        b,
        g,
        x.buffer(),
        gamma.buffer(),
        beta.buffer(),
        out.buffer_mut(),
    )
    .unwrap();
    out.to_f64(b).unwrap()
}

fn softmax_on<B: NnOps>(b: &B, dt: DType, g: Softmax, x: &[f64]) -> Vec<f64> {
    let x = up(b, x, dt);
    let mut out = zeros(b, x.len(), dt);
    nn::softmax(b, g, x.buffer(), out.buffer_mut()).unwrap();
    out.to_f64(b).unwrap()
}

/// The element-wise ops, each from the same inputs: add, silu, upsample
/// (as `planes × h × w` = 7 × 5 × 3 from the first 105 values of `a`),
/// a concatenation of a 3- and a 5-channel part, a per-plane bias, and time
/// embeddings.
fn elementwise_on<B: NnOps>(b: &B, dt: DType, a: &[f64], bv: &[f64]) -> Vec<Vec<f64>> {
    let n = a.len();
    let (ta, tb) = (up(b, a, dt), up(b, bv, dt));
    let mut add = zeros(b, n, dt);
    nn::add(b, n, ta.buffer(), tb.buffer(), add.buffer_mut()).unwrap();
    let mut silu = zeros(b, n, dt);
    nn::silu(b, n, ta.buffer(), silu.buffer_mut()).unwrap();
    let mut affine = zeros(b, n, dt);
    nn::affine(b, n, 2.0, -1.0, ta.buffer(), affine.buffer_mut()).unwrap();
    let mut upsampled = zeros(b, 7 * 4 * 5 * 3, dt);
    nn::upsample2x(b, 7, 5, 3, ta.buffer(), upsampled.buffer_mut()).unwrap();
    let (batch, hw) = (2, 11);
    let p1 = up(b, &a[..batch * 3 * hw], dt);
    let p2 = up(b, &bv[..batch * 5 * hw], dt);
    let mut cat = zeros(b, batch * 8 * hw, dt);
    let part = |c, c_offset| Concat {
        batch,
        c,
        hw,
        c_total: 8,
        c_offset,
    };
    nn::concat_into(b, part(3, 0), p1.buffer(), cat.buffer_mut()).unwrap();
    nn::concat_into(b, part(5, 3), p2.buffer(), cat.buffer_mut()).unwrap();
    // A per-(item, channel) bias over 6 planes of 13 pixels.
    let bias = up(b, &bv[..6], dt);
    let mut biased = zeros(b, 6 * 13, dt);
    nn::add_bias(b, 6, 13, ta.buffer(), bias.buffer(), biased.buffer_mut()).unwrap();
    let t = up(b, &[0.0, 1.0, 999.0, 500.5], DType::F32);
    let mut outs = vec![add, silu, affine, upsampled, cat, biased];
    for (dim, freq_shift, flip_sin_to_cos) in [(32, 0.0, true), (33, 1.0, false), (2, 0.0, true)] {
        let g = TimeProj {
            batch: 4,
            dim,
            freq_shift,
            flip_sin_to_cos,
        };
        let mut o = zeros(b, 4 * dim, dt);
        nn::time_proj(b, g, t.buffer(), o.buffer_mut()).unwrap();
        outs.push(o);
    }
    outs.iter().map(|t| t.to_f64(b).unwrap()).collect()
}

// ---- the CPU definitions, against values that do not come from them

#[test]
fn cpu_conv_of_ones_counts_the_window_inside_the_image() {
    let cpu = CpuBackend::new();
    let g = Conv2d {
        batch: 1,
        cin: 1,
        h: 3,
        w: 3,
        cout: 1,
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    let out = conv_on(&cpu, DType::F32, g, &[1.0; 9], &[1.0; 9], Some(&[0.5]));
    assert_eq!(out, [4.5, 6.5, 4.5, 6.5, 9.5, 6.5, 4.5, 6.5, 4.5]);
    let strided = conv_on(
        &cpu,
        DType::F32,
        Conv2d { stride: 2, ..g },
        &[1.0; 9],
        &[1.0; 9],
        None,
    );
    assert_eq!(strided, [4.0, 4.0, 4.0, 4.0]);
    // diffusers' downsampler with downsample_padding = 0: pad 1 only below
    // and right, so windows start at rows/columns 0 and 2 of a 4×4 image.
    let x: Vec<f64> = (0..16).map(f64::from).collect();
    let after = Conv2d {
        h: 4,
        w: 4,
        stride: 2,
        pad: 0,
        pad_after: 1,
        ..g
    };
    let down = conv_on(&cpu, DType::F32, after, &x, &[1.0; 9], None);
    // Window sums: rows 0–2 × cols 0–2, rows 0–2 × cols 2–3, …
    assert_eq!(down, [45.0, 39.0, 66.0, 50.0]);
}

#[test]
fn cpu_pointwise_conv_is_a_matmul_per_item() {
    let cpu = CpuBackend::new();
    let (cin, cout, hw) = (5, 3, 7);
    let x = vals(1, cin * hw, 1.0);
    let w = vals(2, cout * cin, 1.0);
    let g = Conv2d {
        batch: 1,
        cin,
        h: 1,
        w: hw,
        cout,
        k: 1,
        stride: 1,
        pad: 0,
        pad_after: 0,
    };
    let conv = conv_on(&cpu, DType::F32, g, &x, &w, None);
    let mm = Matmul {
        batch: 1,
        m: cout,
        n: hw,
        k: cin,
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        accumulate: false,
    };
    let prod = matmul_on(&cpu, DType::F32, mm, &w, &x, None, &vec![0.0; cout * hw]);
    compare("1×1 conv vs matmul", &conv, &prod, 1e-7, 1e-7);
}

#[test]
fn cpu_group_norm_standardises_each_group() {
    let cpu = CpuBackend::new();
    let g = GroupNorm {
        batch: 2,
        channels: 6,
        hw: 5,
        groups: 3,
        eps: 1e-6,
        silu: false,
    };
    let x = vals(3, 60, 3.0);
    let out = group_norm_on(&cpu, DType::F32, g, &x, &[1.0; 6], &[0.0; 6]);
    for grp in out.chunks(10) {
        let mean = grp.iter().sum::<f64>() / 10.0;
        let var = grp.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
}

#[test]
fn cpu_softmax_rows_are_distributions_ordered_like_the_input() {
    let cpu = CpuBackend::new();
    let x = vals(4, 3 * 9, 5.0);
    let out = softmax_on(
        &cpu,
        DType::F32,
        Softmax {
            rows: 3,
            cols: 9,
            scale: 0.5,
        },
        &x,
    );
    for (row, src) in out.chunks(9).zip(x.chunks(9)) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // exp is monotone: the larger input gets the larger weight.
        let (i, j) = (0, 1);
        assert_eq!(row[i] < row[j], src[i] < src[j]);
        let want = (0.5 * (src[i] - src[j])).exp();
        assert!((row[i] / row[j] - want).abs() < 1e-5 * want);
    }
}

#[test]
fn cpu_time_proj_matches_the_formula_in_f64() {
    let cpu = CpuBackend::new();
    let t = up(&cpu, &[3.0, 250.0], DType::F32);
    let g = TimeProj {
        batch: 2,
        dim: 6,
        freq_shift: 1.0,
        flip_sin_to_cos: true,
    };
    let mut o = zeros(&cpu, 12, DType::F32);
    nn::time_proj(&cpu, g, t.buffer(), o.buffer_mut()).unwrap();
    let o = o.to_f64(&cpu).unwrap();
    for (bi, tv) in [3.0f64, 250.0].into_iter().enumerate() {
        for j in 0..3 {
            let arg = tv * (-(10000f64.ln()) * j as f64 / 2.0).exp();
            assert!((o[bi * 6 + j] - arg.cos()).abs() < 1e-4);
            assert!((o[bi * 6 + 3 + j] - arg.sin()).abs() < 1e-4);
        }
    }
}

#[test]
fn cpu_add_bias_adds_one_value_per_plane() {
    let cpu = CpuBackend::new();
    let (a, bias) = (
        up(&cpu, &[1.0, 2.0, 3.0, 4.0], DType::F32),
        up(&cpu, &[10.0, 20.0], DType::F32),
    );
    let mut out = zeros(&cpu, 4, DType::F32);
    nn::add_bias(&cpu, 2, 2, a.buffer(), bias.buffer(), out.buffer_mut()).unwrap();
    assert_eq!(out.to_f64(&cpu).unwrap(), [11.0, 12.0, 23.0, 24.0]);
}

/// Bad sizes, short buffers and the wrong dtype are typed errors, and
/// nothing launches.
fn bad_calls_are_typed_errors<B: NnOps>(b: &B) {
    let x = zeros(b, 10, DType::F32);
    let mut out = zeros(b, 10, DType::F32);
    let launches = b.launch_count();
    let g = GroupNorm {
        batch: 1,
        channels: 5,
        hw: 2,
        groups: 2,
        eps: 1e-5,
        silu: false,
    };
    assert!(nn::group_norm(b, g, x.buffer(), x.buffer(), x.buffer(), out.buffer_mut()).is_err());
    // An output too short for the op.
    assert!(nn::add(b, 11, x.buffer(), x.buffer(), out.buffer_mut()).is_err());
    let h = Tensor::<B>::zeros(b, Shape::flat(10), DType::F16).unwrap();
    assert!(nn::silu(b, 10, h.buffer(), out.buffer_mut()).is_err());
    assert!(nn::affine(b, 10, f32::NAN, 0.0, x.buffer(), out.buffer_mut()).is_err());
    assert!(nn::affine(b, 10, 1.0, f32::INFINITY, x.buffer(), out.buffer_mut()).is_err());
    // A kernel larger than the padded input.
    let conv = Conv2d {
        batch: 1,
        cin: 1,
        h: 2,
        w: 2,
        cout: 1,
        k: 5,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    assert!(nn::conv2d(b, conv, x.buffer(), x.buffer(), None, out.buffer_mut()).is_err());
    // A matrix operand shorter than m·k.
    let mm = Matmul {
        batch: 1,
        m: 3,
        n: 2,
        k: 4,
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        accumulate: false,
    };
    assert!(nn::matmul(b, mm, x.buffer(), x.buffer(), None, out.buffer_mut()).is_err());
    // A part that runs past the concatenated channels.
    let cat = Concat {
        batch: 1,
        c: 2,
        hw: 2,
        c_total: 3,
        c_offset: 2,
    };
    assert!(nn::concat_into(b, cat, x.buffer(), out.buffer_mut()).is_err());
    let tp = TimeProj {
        batch: 1,
        dim: 1,
        freq_shift: 0.0,
        flip_sin_to_cos: false,
    };
    assert!(nn::time_proj(b, tp, x.buffer(), out.buffer_mut()).is_err());
    assert_eq!(b.launch_count(), launches, "a rejected call launched");
}

// ---- every backend's kernels against the CPU definition

const REL: f64 = 1e-6;
const ABS: f64 = 1e-5;

fn conv2d_matches_cpu<B: NnOps>(gpu: &B) {
    let cpu = CpuBackend::new();
    // (batch, cin, h, w, cout, k, stride, pad, pad_after): 3×3 stride 1
    // and 2 with padding, 1×1, unpadded 3×3, the stride-2 downsampler that
    // pads only after; none a multiple of the 16×16 tile.
    let cases = [
        (2, 3, 17, 13, 19, 3, 1, 1, 1),
        (2, 5, 9, 11, 7, 3, 2, 1, 1),
        (3, 4, 15, 15, 33, 3, 2, 1, 1),
        (1, 37, 5, 6, 21, 1, 1, 0, 0),
        (2, 6, 7, 9, 5, 3, 1, 0, 0),
        (2, 5, 10, 7, 9, 3, 2, 0, 1),
    ];
    for (i, &(batch, cin, h, w, cout, k, stride, pad, pad_after)) in cases.iter().enumerate() {
        let g = Conv2d {
            batch,
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad,
            pad_after,
        };
        let x = vals(10 + i as u64, batch * cin * h * w, 1.0);
        let scale = 1.0 / ((cin * k * k) as f64).sqrt();
        let wt = vals(20 + i as u64, cout * cin * k * k, scale);
        let bias = vals(30 + i as u64, cout, 1.0);
        let bias = (i % 2 == 0).then_some(&bias[..]);
        let want = conv_on(&cpu, DType::F32, g, &x, &wt, bias);
        let got = conv_on(gpu, DType::F32, g, &x, &wt, bias);
        compare(&format!("conv2d {g:?}"), &got, &want, REL, ABS);
    }
}

fn matmul_matches_cpu<B: NnOps>(gpu: &B) {
    let cpu = CpuBackend::new();
    for (i, (batch, m, n, k)) in [(3, 17, 23, 37), (1, 1, 33, 5), (2, 64, 17, 300)]
        .into_iter()
        .enumerate()
    {
        for flags in 0..8u32 {
            let g = Matmul {
                batch,
                m,
                n,
                k,
                trans_a: flags & 1 != 0,
                trans_b: flags & 2 != 0,
                alpha: 0.37,
                accumulate: flags & 4 != 0,
            };
            let seed = 100 * i as u64 + u64::from(flags);
            let a = vals(seed, batch * m * k, 1.0);
            let bm = vals(seed + 1, batch * k * n, 1.0 / (k as f64).sqrt());
            let bias = vals(seed + 2, n, 1.0);
            let init = vals(seed + 3, batch * m * n, 1.0);
            let bias = (flags % 3 != 0).then_some(&bias[..]);
            let want = matmul_on(&cpu, DType::F32, g, &a, &bm, bias, &init);
            let got = matmul_on(gpu, DType::F32, g, &a, &bm, bias, &init);
            compare(&format!("matmul {g:?}"), &got, &want, REL, ABS);
        }
    }
}

fn group_norm_matches_cpu<B: NnOps>(gpu: &B) {
    let cpu = CpuBackend::new();
    // A group smaller than the workgroup, and one (8 × 37 values) larger.
    for (i, (batch, channels, hw, groups)) in [(2, 12, 63, 4), (3, 32, 37, 4), (1, 5, 1, 5)]
        .into_iter()
        .enumerate()
    {
        for silu in [false, true] {
            let g = GroupNorm {
                batch,
                channels,
                hw,
                groups,
                eps: 1e-5,
                silu,
            };
            let x = vals(40 + i as u64, batch * channels * hw, 2.0)
                .into_iter()
                .map(|v| v + 0.5)
                .collect::<Vec<_>>();
            let gamma = vals(50 + i as u64, channels, 1.5);
            let beta = vals(60 + i as u64, channels, 1.0);
            let want = group_norm_on(&cpu, DType::F32, g, &x, &gamma, &beta);
            let got = group_norm_on(gpu, DType::F32, g, &x, &gamma, &beta);
            compare(&format!("group norm {g:?}"), &got, &want, REL, ABS);
        }
    }
}

fn softmax_matches_cpu<B: NnOps>(gpu: &B) {
    let cpu = CpuBackend::new();
    for (i, (rows, cols)) in [(5, 1), (3, 7), (4, 300), (2, 1000)]
        .into_iter()
        .enumerate()
    {
        let g = Softmax {
            rows,
            cols,
            scale: 0.125,
        };
        let x = vals(70 + i as u64, rows * cols, 20.0);
        let want = softmax_on(&cpu, DType::F32, g, &x);
        let got = softmax_on(gpu, DType::F32, g, &x);
        compare(&format!("softmax {g:?}"), &got, &want, REL, ABS);
    }
}

fn elementwise_matches_cpu<B: NnOps>(gpu: &B) {
    let cpu = CpuBackend::new();
    let names = [
        "add",
        "silu",
        "affine",
        "upsample",
        "concat",
        "add_bias",
        "time_proj 32",
        "time_proj 33",
        "time_proj 2",
    ];
    for n in [257, 4097] {
        let a = vals(80, n, 4.0);
        let b = vals(81, n, 4.0);
        let want = elementwise_on(&cpu, DType::F32, &a, &b);
        let got = elementwise_on(gpu, DType::F32, &a, &b);
        for ((name, got), want) in names.iter().zip(&got).zip(&want) {
            let (rel, abs) = if name.starts_with("time_proj") {
                (1e-4, 2e-4)
            } else {
                (REL, ABS)
            };
            compare(&format!("{name} (n = {n})"), got, want, rel, abs);
        }
    }
}

/// One f16 ulp of `v` (the spacing of f16 values at its magnitude; subnormal
/// spacing below 2⁻¹⁴).
fn f16_ulp(v: f64) -> f64 {
    let e = v.abs().log2().floor().max(-14.0);
    2f64.powf(e - 10.0)
}

/// f16 storage: the device and the CPU definition compute the same f32-exact
/// (to the f32 tolerance `abs`) value and round it once, so each output is
/// the same f16 or its neighbour.
fn compare_f16(what: &str, got: &[f64], want: &[f64], abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(
            d <= f16_ulp(w) + abs,
            "{what}: element {i} is {g}, expected {w} (± one f16 ulp + {abs:e})"
        );
        worst = worst.max(d);
    }
    eprintln!("{what} (f16): max abs {worst:.3e}");
}

/// Every op in f16 storage (f32 math) against the CPU definition in f16
/// storage, on odd sizes; a backend whose nn family stores f32 only refuses
/// an f16 call with a typed error and launches nothing.
fn f16_storage_matches_cpu<B: NnOps>(gpu: &B) {
    let f16 = DType::F16;
    if !gpu.nn_supports(f16) {
        let (x, mut out) = (zeros(gpu, 10, f16), zeros(gpu, 10, f16));
        let launches = gpu.launch_count();
        let e = nn::silu(gpu, 10, x.buffer(), out.buffer_mut());
        assert!(
            matches!(e, Err(diffinv::Error::UnsupportedDType { .. })),
            "{e:?}"
        );
        assert_eq!(gpu.launch_count(), launches);
        return;
    }
    let cpu = CpuBackend::new();
    let g = Conv2d {
        batch: 2,
        cin: 5,
        h: 9,
        w: 11,
        cout: 7,
        k: 3,
        stride: 2,
        pad: 1,
        pad_after: 1,
    };
    let x = vals(110, 2 * 5 * 9 * 11, 1.0);
    let wt = vals(111, 7 * 45, 1.0 / 45f64.sqrt());
    let bias = vals(112, 7, 1.0);
    let want = conv_on(&cpu, f16, g, &x, &wt, Some(&bias));
    let got = conv_on(gpu, f16, g, &x, &wt, Some(&bias));
    compare_f16("conv2d", &got, &want, ABS);
    for flags in [0u32, 3, 6] {
        let mm = Matmul {
            batch: 2,
            m: 17,
            n: 23,
            k: 37,
            trans_a: flags & 1 != 0,
            trans_b: flags & 2 != 0,
            alpha: 0.37,
            accumulate: flags & 4 != 0,
        };
        let a = vals(113, 2 * 17 * 37, 1.0);
        let bm = vals(114, 2 * 37 * 23, 1.0 / 37f64.sqrt());
        let bias = vals(115, 23, 1.0);
        let init = vals(116, 2 * 17 * 23, 1.0);
        let want = matmul_on(&cpu, f16, mm, &a, &bm, Some(&bias), &init);
        let got = matmul_on(gpu, f16, mm, &a, &bm, Some(&bias), &init);
        compare_f16(&format!("matmul {flags}"), &got, &want, ABS);
    }
    let gn = GroupNorm {
        batch: 2,
        channels: 12,
        hw: 63,
        groups: 4,
        eps: 1e-5,
        silu: true,
    };
    let x = vals(117, 2 * 12 * 63, 2.0);
    let (gamma, beta) = (vals(118, 12, 1.5), vals(119, 12, 1.0));
    let want = group_norm_on(&cpu, f16, gn, &x, &gamma, &beta);
    let got = group_norm_on(gpu, f16, gn, &x, &gamma, &beta);
    compare_f16("group norm", &got, &want, ABS);
    let sm = Softmax {
        rows: 3,
        cols: 300,
        scale: 0.125,
    };
    let x = vals(120, 900, 20.0);
    let want = softmax_on(&cpu, f16, sm, &x);
    compare_f16("softmax", &softmax_on(gpu, f16, sm, &x), &want, ABS);
    let (a, b) = (vals(121, 257, 4.0), vals(122, 257, 4.0));
    let want = elementwise_on(&cpu, f16, &a, &b);
    let got = elementwise_on(gpu, f16, &a, &b);
    for (k, (got, want)) in got.iter().zip(&want).enumerate() {
        // The time embeddings (k ≥ 6) carry the f32 exp/sin/cos tolerance.
        let abs = if k >= 6 { 2e-4 } else { ABS };
        compare_f16(&format!("elementwise op {k}"), got, want, abs);
    }
}

/// The grid-stride paths, on a backend capped at 3 blocks (workgroups) per
/// grid dimension with 96-thread reductions (not a power of two): more GEMM
/// tiles (16- or 64-wide), items, groups, rows and elements than the cap, so
/// every loop wraps.
fn capped_grid<B: NnOps>(gpu: &B) {
    let cpu = CpuBackend::new();
    let g = Conv2d {
        batch: 5,
        cin: 3,
        h: 17,
        w: 13,
        cout: 200,
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    let x = vals(90, 5 * 3 * 17 * 13, 1.0);
    let wt = vals(91, 200 * 27, 0.2);
    let bias = vals(92, 200, 1.0);
    let want = conv_on(&cpu, DType::F32, g, &x, &wt, Some(&bias));
    let got = conv_on(gpu, DType::F32, g, &x, &wt, Some(&bias));
    compare("capped conv2d", &got, &want, REL, ABS);
    // Accumulating, so a tile that two blocks both computed would be added
    // twice; 2 row tiles of 64 against 4 column tiles and 5 items, so a loop
    // striding by another dimension's grid size revisits (or skips) tiles.
    let mm = Matmul {
        batch: 5,
        m: 100,
        n: 199,
        k: 20,
        trans_a: false,
        trans_b: true,
        alpha: 1.0,
        accumulate: true,
    };
    let (a, bm) = (vals(93, 5 * 100 * 20, 1.0), vals(94, 5 * 199 * 20, 0.25));
    let init = vals(101, 5 * 100 * 199, 1.0);
    let want = matmul_on(&cpu, DType::F32, mm, &a, &bm, None, &init);
    let got = matmul_on(gpu, DType::F32, mm, &a, &bm, None, &init);
    compare("capped matmul", &got, &want, REL, ABS);
    let gn = GroupNorm {
        batch: 3,
        channels: 8,
        hw: 53,
        groups: 4,
        eps: 1e-5,
        silu: true,
    };
    let x = vals(95, 3 * 8 * 53, 2.0);
    let (gamma, beta) = (vals(96, 8, 1.0), vals(97, 8, 1.0));
    let want = group_norm_on(&cpu, DType::F32, gn, &x, &gamma, &beta);
    let got = group_norm_on(gpu, DType::F32, gn, &x, &gamma, &beta);
    compare("capped group norm", &got, &want, REL, ABS);
    let sm = Softmax {
        rows: 7,
        cols: 301,
        scale: 0.3,
    };
    let x = vals(98, 7 * 301, 10.0);
    let want = softmax_on(&cpu, DType::F32, sm, &x);
    compare(
        "capped softmax",
        &softmax_on(gpu, DType::F32, sm, &x),
        &want,
        REL,
        ABS,
    );
    let (a, b) = (vals(99, 1000, 3.0), vals(100, 1000, 3.0));
    let want = elementwise_on(&cpu, DType::F32, &a, &b);
    let got = elementwise_on(gpu, DType::F32, &a, &b);
    // add, silu, affine, upsample, concat and add_bias (the time embeddings
    // are checked above).
    for (k, (got, want)) in got.iter().zip(&want).take(6).enumerate() {
        compare(&format!("capped elementwise op {k}"), got, want, REL, ABS);
    }
}

mod conv2d {
    crate::for_each_backend!(super::conv2d_matches_cpu);
}

mod matmul {
    crate::for_each_backend!(super::matmul_matches_cpu);
}

mod group_norm {
    crate::for_each_backend!(super::group_norm_matches_cpu);
}

mod softmax {
    crate::for_each_backend!(super::softmax_matches_cpu);
}

mod elementwise {
    crate::for_each_backend!(super::elementwise_matches_cpu);
}

mod f16_storage {
    crate::for_each_backend!(super::f16_storage_matches_cpu);
}

mod bad_input {
    crate::for_each_backend!(super::bad_calls_are_typed_errors);
}

mod capped {
    use super::*;

    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu() {
        use diffinv::backend::wgpu::{WgpuBackend, WgpuOptions};
        let opts = WgpuOptions {
            force_packed_f16: true,
            allow_software: true,
        };
        let mut gpu = match WgpuBackend::with_options(opts) {
            Ok(b) => b,
            Err(e) => return common::skip("wgpu", e),
        };
        gpu.set_max_workgroups(3).unwrap();
        gpu.set_workgroup_size(96).unwrap();
        capped_grid(&gpu);
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_emu() {
        if let Some(gpu) = common::cuda_emu::new_cuda_emu_with(96, 3) {
            capped_grid(&gpu);
        }
    }
}
