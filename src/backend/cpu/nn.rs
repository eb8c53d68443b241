//! The nn family on the CPU: the definition of every op (`crate::ops::nn`),
//! as plain loops over f32 values. Sums (GEMM dot products, GroupNorm
//! statistics, softmax denominators) accumulate in f64 and round once, so the
//! reference is closer to exact than any f32 kernel it checks. f16 storage is
//! the same loops on widened inputs, the output rounded to f16 (nearest even)
//! once, as the device kernels store it.

use std::borrow::Cow;

use half::f16;

use super::{CpuBackend, CpuBuffer, Element};
use crate::error::{Error, Result};
use crate::ops::nn::{
    Concat, Conv2d, ConvPath, GroupNorm, Matmul, NnCall, NnOp, NnOps, Softmax, TimeProj,
};
use crate::tensor::DType;

fn unsupported(dtype: DType) -> Error {
    Error::UnsupportedDType {
        backend: "cpu",
        dtype,
    }
}

// Through `Element::slice`, the one place that knows every way a CPU buffer
// can hold f32 or f16 values.
fn slice<T: Element>(buf: &CpuBuffer) -> Result<&[T]> {
    T::slice(buf).ok_or(unsupported(buf.dtype()))
}

fn slice_mut<T: Element>(buf: &mut CpuBuffer) -> Result<&mut [T]> {
    let dtype = buf.dtype();
    T::slice_mut(buf).ok_or(unsupported(dtype))
}

/// A buffer's values as f32: borrowed from f32 storage, widened from f16.
fn widened(buf: &CpuBuffer) -> Result<Cow<'_, [f32]>> {
    match buf.dtype() {
        DType::F16 => Ok(slice::<f16>(buf)?.iter().map(|v| v.to_f32()).collect()),
        _ => slice::<f32>(buf).map(Cow::Borrowed),
    }
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// The input a checked call always has.
fn input(b: Option<&[f32]>) -> Result<&[f32]> {
    b.ok_or_else(|| Error::Device {
        backend: "cpu",
        message: "nn call without its first input".into(),
    })
}

fn conv2d(g: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (ho, wo) = g.out_size();
    let kk = g.cin * g.k * g.k;
    for b in 0..g.batch {
        for co in 0..g.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias.map_or(0.0, |v| f64::from(v[co]));
                    for ci in 0..g.cin {
                        for ky in 0..g.k {
                            // The padded input row; rows outside the image read 0.
                            let Some(iy) = (oy * g.stride + ky).checked_sub(g.pad) else {
                                continue;
                            };
                            if iy >= g.h {
                                continue;
                            }
                            for kx in 0..g.k {
                                let Some(ix) = (ox * g.stride + kx).checked_sub(g.pad) else {
                                    continue;
                                };
                                if ix >= g.w {
                                    continue;
                                }
                                let wv = w[co * kk + (ci * g.k + ky) * g.k + kx];
                                let xv = x[((b * g.cin + ci) * g.h + iy) * g.w + ix];
                                acc += f64::from(wv) * f64::from(xv);
                            }
                        }
                    }
                    out[((b * g.cout + co) * ho + oy) * wo + ox] = acc as f32;
                }
            }
        }
    }
}

fn matmul(g: &Matmul, a: &[f32], bm: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (m, n, k) = (g.m, g.n, g.k);
    for z in 0..g.batch {
        let (a, bm) = (&a[z * m * k..], &bm[z * k * n..]);
        for r in 0..m {
            for c in 0..n {
                let mut acc = 0f64;
                for i in 0..k {
                    let av = if g.trans_a {
                        a[i * m + r]
                    } else {
                        a[r * k + i]
                    };
                    let bv = if g.trans_b {
                        bm[c * k + i]
                    } else {
                        bm[i * n + c]
                    };
                    acc += f64::from(av) * f64::from(bv);
                }
                let o = (z * m + r) * n + c;
                let mut v = f64::from(g.alpha) * acc;
                if let Some(bias) = bias {
                    v += f64::from(bias[c]);
                }
                if g.accumulate {
                    v += f64::from(out[o]);
                }
                out[o] = v as f32;
            }
        }
    }
}

fn group_norm(g: &GroupNorm, x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    let cg = g.channels / g.groups;
    let count = cg * g.hw;
    for item in 0..g.batch * g.groups {
        let base = ((item / g.groups) * g.channels + (item % g.groups) * cg) * g.hw;
        let seg = &x[base..base + count];
        let mean = seg.iter().map(|&v| f64::from(v)).sum::<f64>() / count as f64;
        let var = seg
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        let rstd = 1.0 / (var + f64::from(g.eps)).sqrt();
        for (i, &v) in seg.iter().enumerate() {
            let ch = (item % g.groups) * cg + i / g.hw;
            let y =
                ((f64::from(v) - mean) * rstd * f64::from(gamma[ch]) + f64::from(beta[ch])) as f32;
            out[base + i] = if g.silu { silu(y) } else { y };
        }
    }
}

fn softmax(g: &Softmax, x: &[f32], out: &mut [f32]) {
    let scale = f64::from(g.scale);
    for (row, dst) in x.chunks(g.cols).zip(out.chunks_mut(g.cols)).take(g.rows) {
        let mx = row
            .iter()
            .map(|&v| scale * f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&v| (scale * f64::from(v) - mx).exp()).sum();
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = ((scale * f64::from(v) - mx).exp() / sum) as f32;
        }
    }
}

fn upsample2x(planes: usize, h: usize, w: usize, a: &[f32], out: &mut [f32]) {
    for p in 0..planes {
        for y in 0..2 * h {
            for x in 0..2 * w {
                out[(p * 2 * h + y) * 2 * w + x] = a[(p * h + y / 2) * w + x / 2];
            }
        }
    }
}

fn concat(g: &Concat, a: &[f32], out: &mut [f32]) {
    for b in 0..g.batch {
        let src = &a[b * g.c * g.hw..(b + 1) * g.c * g.hw];
        let start = (b * g.c_total + g.c_offset) * g.hw;
        out[start..start + g.c * g.hw].copy_from_slice(src);
    }
}

/// In f32 step by step, as diffusers computes it (the UNet fixtures were
/// produced that way).
fn time_proj(g: &TimeProj, t: &[f32], out: &mut [f32]) {
    let half = g.dim / 2;
    let shift = g.shift();
    let ln = 10000f64.ln() as f32;
    for (row, &ti) in out.chunks_mut(g.dim).zip(t).take(g.batch) {
        for j in 0..half {
            let arg = ti * ((-ln * j as f32) / shift).exp();
            let (s, c) = (arg.sin(), arg.cos());
            let (first, second) = if g.flip_sin_to_cos { (c, s) } else { (s, c) };
            row[j] = first;
            row[half + j] = second;
        }
        if g.dim % 2 == 1 {
            row[g.dim - 1] = 0.0;
        }
    }
}

/// Run `op` on f32 values.
fn run(op: NnOp, inputs: &[Option<Cow<'_, [f32]>>; 3], out: &mut [f32]) -> Result<()> {
    let [i0, i1, i2] = inputs.each_ref().map(|b| b.as_deref());
    match op {
        NnOp::Conv2d(g) => conv2d(&g, input(i0)?, input(i1)?, i2, out),
        NnOp::Matmul(g) => matmul(&g, input(i0)?, input(i1)?, i2, out),
        NnOp::GroupNorm(g) => group_norm(&g, input(i0)?, input(i1)?, input(i2)?, out),
        NnOp::Softmax(g) => softmax(&g, input(i0)?, out),
        NnOp::Add { n } => {
            let (a, b) = (input(i0)?, input(i1)?);
            for ((d, &x), &y) in out[..n].iter_mut().zip(a).zip(b) {
                *d = x + y;
            }
        }
        NnOp::Silu { n } => {
            for (d, &v) in out[..n].iter_mut().zip(input(i0)?) {
                *d = silu(v);
            }
        }
        NnOp::Affine { n, scale, shift } => {
            for (d, &v) in out[..n].iter_mut().zip(input(i0)?) {
                *d = scale * v + shift;
            }
        }
        NnOp::Upsample2x { planes, h, w } => upsample2x(planes, h, w, input(i0)?, out),
        NnOp::Concat(g) => concat(&g, input(i0)?, out),
        NnOp::TimeProj(g) => time_proj(&g, input(i0)?, out),
        NnOp::AddBias { planes, hw } => {
            let (a, bias) = (input(i0)?, input(i1)?);
            for ((d, s), &v) in out.chunks_mut(hw).zip(a.chunks(hw)).zip(bias).take(planes) {
                for (d, &x) in d.iter_mut().zip(s) {
                    *d = x + v;
                }
            }
        }
    }
    Ok(())
}

impl NnOps for CpuBackend {
    fn nn_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F32 | DType::F16)
    }

    fn conv_path(&self) -> ConvPath {
        ConvPath::Reference
    }

    fn nn_checked(&self, call: NnCall<'_, Self>) -> Result<()> {
        let inputs = call.inputs.map(|b| b.map(widened).transpose());
        let [i0, i1, i2] = inputs;
        let inputs = [i0?, i1?, i2?];
        match call.dtype {
            DType::F32 => run(call.op, &inputs, slice_mut::<f32>(call.out)?)?,
            DType::F16 => {
                let out = slice_mut::<f16>(call.out)?;
                let mut wide: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
                run(call.op, &inputs, &mut wide)?;
                // Only what the op wrote is rounded back: elements it left
                // alone keep their bits (a NaN payload included).
                for (d, v) in out.iter_mut().zip(wide) {
                    if v.to_bits() != d.to_f32().to_bits() {
                        *d = f16::from_f32(v);
                    }
                }
            }
            other => return Err(unsupported(other)),
        }
        self.count_launch();
        Ok(())
    }
}
