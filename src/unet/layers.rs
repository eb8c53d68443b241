//! The layers of a `UNet2DModel` on the CPU: weights in the storage type `S`
//! for convolutions (f32 for the small time-path linears, norms and biases),
//! each layer a few GEMMs and fused elementwise passes over the arena.
//!
//! Fusions (all exact up to rounding): the time-embedding projection and the
//! conv bias are the initial value conv1's GEMM accumulates onto; the shortcut
//! (or the identity) is the initial value of conv2's GEMM, so the residual add
//! costs nothing; q, k and v are one GEMM with stacked weights; the nearest ×2
//! upsampling is folded into the im2col read of the following conv.

use rayon::prelude::*;

use super::kernels::{
    add_into, fill_bias, group_norm, im2col, matmul, scale, silu_in_place, softmax, Act, ConvGeom,
    Mat,
};
use super::pool::{Arena, Store};
use super::topology::{AttentionSpec, Widths};
use super::weights::Source;
use super::winograd;
use crate::error::Result;

fn load_s<S: Store>(src: &dyn Source, name: &str, shape: &[usize]) -> Result<Vec<S>> {
    Ok(src
        .tensor(name, shape)?
        .into_iter()
        .map(S::from_f32)
        .collect())
}

/// Bytes of im2col columns built at once (one band of output lines).
const COL_BUDGET: usize = 8 << 20;

/// How a convolution keeps its weights.
enum Kernel<S> {
    /// As loaded, `[cout, cin·k·k]`: the lhs of im2col + GEMM.
    Direct(Vec<S>),
    /// Winograd-transformed (stride-1 3×3 convolutions with one pixel of
    /// padding, [`winograd::transform_weights`]).
    Winograd(Vec<S>),
}

/// A 2-D convolution (3×3 or 1×1) with bias.
pub struct Conv<S> {
    kernel: Kernel<S>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
    geom: ConvGeom,
}

impl<S: Store> Conv<S> {
    pub fn load(
        src: &dyn Source,
        name: &str,
        cin: usize,
        cout: usize,
        geom: ConvGeom,
    ) -> Result<Self> {
        let k = geom.k;
        let w = src.tensor(&format!("{name}.weight"), &[cout, cin, k, k])?;
        let same_3x3 = k == 3 && geom.stride == 1 && geom.pad == 1 && geom.pad_after == 1;
        let kernel = if same_3x3 && winograd::enabled() {
            Kernel::Winograd(winograd::transform_weights(&w, cout, cin))
        } else {
            Kernel::Direct(w.into_iter().map(S::from_f32).collect())
        };
        Ok(Conv {
            kernel,
            bias: src.tensor(&format!("{name}.bias"), &[cout])?,
            cin,
            cout,
            geom,
        })
    }

    /// A 1×1 convolution (also: a linear layer over the pixels as tokens).
    pub fn pointwise(cin: usize, cout: usize, w: Vec<S>, bias: Vec<f32>) -> Self {
        let geom = ConvGeom {
            k: 1,
            stride: 1,
            pad: 0,
            pad_after: 0,
            up: 1,
        };
        Conv {
            kernel: Kernel::Direct(w),
            bias,
            cin,
            cout,
            geom,
        }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        self.geom.out_size(h, w)
    }

    /// Multiply-adds ×2 for an output of `n_out` pixels over the batch.
    pub fn flops(&self, n_out: usize) -> u64 {
        2 * (self.cout * self.cin * self.geom.k * self.geom.k * n_out) as u64
    }

    /// `dst += conv(x)` without bias: `dst` is `[cout, b·ho·wo]`.
    pub fn accumulate(&self, x: &Act<S>, dst: &mut [S], arena: &mut Arena<S>) {
        self.accumulate_in_bands(x, dst, arena, COL_BUDGET);
    }

    fn accumulate_in_bands(
        &self,
        x: &Act<S>,
        dst: &mut [S],
        arena: &mut Arena<S>,
        col_budget: usize,
    ) {
        let w = match &self.kernel {
            Kernel::Winograd(u) => {
                let up = self.geom.up;
                return winograd::accumulate(x, up, u, self.cout, dst, arena, col_budget);
            }
            Kernel::Direct(w) => w,
        };
        let (ho, wo) = self.out_size(x.h, x.w);
        let n = x.b * ho * wo;
        let kdim = self.cin * self.geom.k * self.geom.k;
        let lhs = Mat::rows(w, 0, kdim);
        if self.geom.k == 1 && self.geom.stride == 1 && self.geom.up == 1 {
            let rhs = Mat::rows(&x.data, 0, n);
            matmul(self.cout, n, kdim, dst, n, lhs, rhs, true, 1.0, true);
        } else {
            // im2col a band of output lines at a time: the band's columns
            // stay in cache between being written and being packed by the
            // GEMM, and the buffer is bounded whatever the image size.
            let lines = x.b * ho;
            let band = (col_budget / (kdim * wo * std::mem::size_of::<S>())).clamp(1, lines);
            let mut col = arena.take(kdim * band * wo);
            for first in (0..lines).step_by(band) {
                let range = first..(first + band).min(lines);
                let cols = range.len() * wo;
                im2col(x, self.geom, (ho, wo), range, &mut col);
                matmul(
                    self.cout,
                    cols,
                    kdim,
                    &mut dst[first * wo..],
                    n,
                    lhs,
                    Mat::rows(&col, 0, cols),
                    true,
                    1.0,
                    true,
                );
            }
            arena.give(col);
        }
    }

    /// `conv(x) + bias (+ per_item[b, c])` in a new arena buffer.
    pub fn run(&self, x: &Act<S>, per_item: Option<&[f32]>, arena: &mut Arena<S>) -> Act<S> {
        let (ho, wo) = self.out_size(x.h, x.w);
        let mut data = arena.take(self.cout * x.b * ho * wo);
        fill_bias(&mut data, &self.bias, per_item, x.b);
        self.accumulate(x, &mut data, arena);
        Act {
            data,
            c: self.cout,
            b: x.b,
            h: ho,
            w: wo,
        }
    }
}

/// A linear layer in f32 over `[batch, in]` rows (the time path: tiny, and
/// kept in f32 so the embedding every resnet sees is not rounded).
pub struct Linear {
    w: Vec<f32>,
    bias: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Linear {
    pub fn load(src: &dyn Source, name: &str, inp: usize, out: usize) -> Result<Self> {
        Ok(Linear {
            w: src.tensor(&format!("{name}.weight"), &[out, inp])?,
            bias: src.tensor(&format!("{name}.bias"), &[out])?,
            inp,
            out,
        })
    }

    pub fn flops(&self, batch: usize) -> u64 {
        2 * (batch * self.inp * self.out) as u64
    }

    /// `x W^T + bias` for `batch` rows, into a new f32 scratch buffer.
    pub fn run<S: Store>(&self, x: &[f32], batch: usize, arena: &mut Arena<S>) -> Vec<f32> {
        let mut y = arena.take_f32(batch * self.out);
        for row in y.chunks_mut(self.out) {
            row.copy_from_slice(&self.bias);
        }
        let rhs = Mat {
            data: &self.w,
            offset: 0,
            rs: 1,
            cs: self.inp,
        };
        let lhs = Mat::rows(x, 0, self.inp);
        matmul(
            batch, self.out, self.inp, &mut y, self.out, lhs, rhs, true, 1.0, false,
        );
        y
    }
}

/// GroupNorm's affine parameters and grouping.
pub struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    groups: usize,
    eps: f64,
}

impl Norm {
    pub fn load(
        src: &dyn Source,
        name: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Norm {
            gamma: src.tensor(&format!("{name}.weight"), &[channels])?,
            beta: src.tensor(&format!("{name}.bias"), &[channels])?,
            groups,
            eps,
        })
    }

    /// The normalised `x` (then SiLU if `apply_silu`) in a new arena buffer.
    pub fn run<S: Store>(&self, x: &Act<S>, apply_silu: bool, arena: &mut Arena<S>) -> Act<S> {
        let mut data = arena.take(x.data.len());
        group_norm(
            x,
            &self.gamma,
            &self.beta,
            self.groups,
            self.eps,
            apply_silu,
            &mut data,
        );
        Act { data, ..*x }
    }
}

/// diffusers' `ResnetBlock2D` (time_embedding_norm "default", pre-norm).
pub struct Resnet<S> {
    norm1: Norm,
    conv1: Conv<S>,
    time_proj: Linear,
    norm2: Norm,
    conv2: Conv<S>,
    /// 1×1 conv when the width changes; its bias is folded into `out_bias`.
    shortcut: Option<Conv<S>>,
    /// conv2's bias (+ the shortcut's).
    out_bias: Vec<f32>,
    out_scale: f32,
}

fn conv3() -> ConvGeom {
    ConvGeom {
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
        up: 1,
    }
}

impl<S: Store> Resnet<S> {
    pub fn load(src: &dyn Source, name: &str, wd: Widths, out_scale: f64) -> Result<Self> {
        let Widths {
            cin,
            cout,
            temb,
            groups,
            eps,
        } = wd;
        let conv2 = Conv::load(src, &format!("{name}.conv2"), cout, cout, conv3())?;
        let shortcut = if cin != cout {
            let g = ConvGeom {
                k: 1,
                stride: 1,
                pad: 0,
                pad_after: 0,
                up: 1,
            };
            Some(Conv::load(
                src,
                &format!("{name}.conv_shortcut"),
                cin,
                cout,
                g,
            )?)
        } else {
            None
        };
        let out_bias = match &shortcut {
            Some(sc) => conv2
                .bias
                .iter()
                .zip(&sc.bias)
                .map(|(a, b)| a + b)
                .collect(),
            None => conv2.bias.clone(),
        };
        Ok(Resnet {
            norm1: Norm::load(src, &format!("{name}.norm1"), cin, groups, eps)?,
            conv1: Conv::load(src, &format!("{name}.conv1"), cin, cout, conv3())?,
            time_proj: Linear::load(src, &format!("{name}.time_emb_proj"), temb, cout)?,
            norm2: Norm::load(src, &format!("{name}.norm2"), cout, groups, eps)?,
            conv2,
            shortcut,
            out_bias,
            out_scale: out_scale as f32,
        })
    }

    pub fn flops(&self, n: usize, b: usize) -> u64 {
        self.conv1.flops(n)
            + self.conv2.flops(n)
            + self.shortcut.as_ref().map_or(0, |s| s.flops(n))
            + self.time_proj.flops(b)
    }

    /// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(temb)))))/scale`;
    /// `temb_act` is `silu(temb)`, `[b, temb]`.
    pub fn run(&self, x: &Act<S>, temb_act: &[f32], arena: &mut Arena<S>) -> Act<S> {
        let h1 = self.norm1.run(x, true, arena);
        let proj = self.time_proj.run(temb_act, x.b, arena);
        let h = self.conv1.run(&h1, Some(&proj), arena);
        arena.give(h1.data);
        arena.give_f32(proj);
        let h2 = self.norm2.run(&h, true, arena);
        arena.give(h.data);
        let mut out = arena.take(self.conv2.cout * x.n());
        fill_bias(&mut out, &self.out_bias, None, x.b);
        match &self.shortcut {
            Some(sc) => sc.accumulate(x, &mut out, arena),
            None => add_into(&mut out, &x.data),
        }
        self.conv2.accumulate(&h2, &mut out, arena);
        arena.give(h2.data);
        if self.out_scale != 1.0 {
            scale(&mut out, self.out_scale.recip());
        }
        Act {
            data: out,
            c: self.conv2.cout,
            ..*x
        }
    }
}

/// diffusers' `Attention` as the UNet2DModel blocks build it: GroupNorm, one
/// head or `c / head_dim` heads over the pixels as tokens, output projection,
/// residual, divided by `rescale`.
pub struct Attention<S> {
    norm: Norm,
    /// q, k, v stacked: `[3c, c]`.
    qkv: Conv<S>,
    out: Conv<S>,
    heads: usize,
    rescale: f32,
}

impl<S: Store> Attention<S> {
    pub fn load(src: &dyn Source, spec: &AttentionSpec) -> Result<Self> {
        let (name, c) = (&spec.name, spec.channels);
        // Grown as each weight loads (not reserved up front): a config that
        // names a huge width fails on its first missing tensor, not in malloc.
        let (mut w, mut bias) = (Vec::new(), Vec::new());
        for p in ["to_q", "to_k", "to_v"] {
            w.extend(load_s::<S>(src, &format!("{name}.{p}.weight"), &[c, c])?);
            bias.extend(src.tensor(&format!("{name}.{p}.bias"), &[c])?);
        }
        let out_w = load_s(src, &format!("{name}.to_out.0.weight"), &[c, c])?;
        let out_b = src.tensor(&format!("{name}.to_out.0.bias"), &[c])?;
        Ok(Attention {
            norm: Norm::load(src, &format!("{name}.group_norm"), c, spec.groups, spec.eps)?,
            qkv: Conv::pointwise(c, 3 * c, w, bias),
            out: Conv::pointwise(c, c, out_w, out_b),
            heads: spec.heads,
            rescale: spec.rescale as f32,
        })
    }

    pub fn flops(&self, n: usize, b: usize) -> u64 {
        let c = self.out.cout as u64;
        let t = (n / b) as u64;
        // Scores and the weighted sum: 2·T·T·c each, per item.
        self.qkv.flops(n) + self.out.flops(n) + 4 * b as u64 * t * t * c
    }

    pub fn run(&self, x: &Act<S>, arena: &mut Arena<S>) -> Act<S> {
        let (c, b) = (x.c, x.b);
        let n = x.n();
        let t = n / b;
        let heads = self.heads;
        let d = c / heads;
        let xn = self.norm.run(x, false, arena);
        let qkv = self.qkv.run(&xn, None, arena);
        arena.give(xn.data);
        // The score/softmax/weighting core runs in f32 whatever the storage:
        // f16 logits would lose ~1e-3 relative before the exponential.
        let mut qkv32 = arena.take_f32(3 * c * n);
        qkv32
            .par_chunks_mut(4096)
            .zip(qkv.data.par_chunks(4096))
            .for_each(|(d, s)| {
                for (d, s) in d.iter_mut().zip(s) {
                    *d = s.to_f32();
                }
            });
        arena.give(qkv.data);
        let mut scores = arena.take_f32(b * heads * t * t);
        let mut heads_out = arena.take_f32(c * n);
        let score_scale = (d as f32).sqrt().recip();
        let (q, rest) = qkv32.split_at(c * n);
        let (k, v) = rest.split_at(c * n);
        scores
            .par_chunks_mut(t * t)
            .zip(heads_out.par_chunks_mut(d * t))
            .enumerate()
            .for_each(|(i, (s, o))| {
                let (bi, h) = (i / heads, i % heads);
                let base = h * d * n + bi * t;
                // s[i, j] = scale · Σ_kk q[kk, i] k[kk, j]
                let lhs = Mat {
                    data: q,
                    offset: base,
                    rs: 1,
                    cs: n,
                };
                matmul(
                    t,
                    t,
                    d,
                    s,
                    t,
                    lhs,
                    Mat::rows(k, base, n),
                    false,
                    score_scale,
                    false,
                );
                s.chunks_mut(t).for_each(softmax);
                // o[kk, i] = Σ_j v[kk, j] p[i, j]
                let rhs = Mat {
                    data: s,
                    offset: 0,
                    rs: 1,
                    cs: t,
                };
                matmul(d, t, t, o, t, Mat::rows(v, base, n), rhs, false, 1.0, false);
            });
        arena.give_f32(scores);
        arena.give_f32(qkv32);
        // Back to [c, b·t]: row h·d + kk, item bi comes from head block (bi, h).
        let mut attn = arena.take(c * n);
        attn.par_chunks_mut(n).enumerate().for_each(|(ch, row)| {
            let (h, kk) = (ch / d, ch % d);
            for (bi, seg) in row.chunks_mut(t).enumerate() {
                let src = &heads_out[((bi * heads + h) * d + kk) * t..][..t];
                for (dst, s) in seg.iter_mut().zip(src) {
                    *dst = S::from_f32(*s);
                }
            }
        });
        arena.give_f32(heads_out);
        let attn = Act { data: attn, ..*x };
        let mut out = arena.take(c * n);
        fill_bias(&mut out, &self.out.bias, None, b);
        add_into(&mut out, &x.data);
        self.out.accumulate(&attn, &mut out, arena);
        arena.give(attn.data);
        if self.rescale != 1.0 {
            scale(&mut out, self.rescale.recip());
        }
        Act { data: out, ..*x }
    }
}

/// `silu(v)` for every element, into a new f32 scratch buffer.
pub fn silu_all<S: Store>(v: &[f32], arena: &mut Arena<S>) -> Vec<f32> {
    let mut out = arena.take_f32(v.len());
    out.copy_from_slice(v);
    silu_in_place(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conv computed one output line per band equals it in one band.
    #[test]
    fn banded_im2col_equals_one_band() {
        let (cin, cout, b, h, w) = (3, 5, 2, 6, 4);
        let weights: Vec<f32> = (0..cout * cin * 9).map(|i| (i % 7) as f32 - 3.0).collect();
        for geom in [
            conv3(),
            ConvGeom {
                stride: 2,
                pad: 0,
                ..conv3()
            },
            ConvGeom { up: 2, ..conv3() },
        ] {
            let conv = Conv {
                kernel: Kernel::Direct(weights.clone()),
                bias: vec![0.0; cout],
                cin,
                cout,
                geom,
            };
            let x = Act {
                data: (0..cin * b * h * w)
                    .map(|i| (i % 11) as f32 - 5.0)
                    .collect(),
                c: cin,
                b,
                h,
                w,
            };
            let (ho, wo) = conv.out_size(h, w);
            let mut arena = Arena::<f32>::default();
            let mut whole = vec![1.0; cout * b * ho * wo];
            let mut banded = whole.clone();
            conv.accumulate_in_bands(&x, &mut whole, &mut arena, usize::MAX / 2);
            conv.accumulate_in_bands(&x, &mut banded, &mut arena, 1);
            assert_eq!(whole, banded, "{geom:?}");
        }
    }
}
