//! The layers of a `UNet2DModel` on a backend that runs the nn family:
//! weights uploaded once in the network's storage type (f32 or f16),
//! activations NCHW buffers of that type from the forward's arena, every layer
//! a short sequence of nn ops.

use super::arena::DeviceArena;
use crate::error::Result;
use crate::ops::nn::{self, Conv2d, GroupNorm, Matmul, NnOps, Softmax};
use crate::tensor::{DType, HostSlice};
use crate::unet::topology::{AttentionSpec, ResnetSpec};
use crate::unet::weights::Source;

/// Sizes of an activation: `[b, c, h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    pub fn len(&self) -> usize {
        self.b * self.c * self.hw()
    }

    pub fn with_c(self, c: usize) -> Self {
        Dims { c, ..self }
    }
}

/// An activation the arena lent.
pub struct Act<B: NnOps> {
    pub buf: B::Buffer,
    pub dims: Dims,
}

/// Where the layers' weights come from and how they are stored: the values of
/// `src`, uploaded to `backend` as `dtype`.
pub struct Weights<'a, B: NnOps> {
    pub backend: &'a B,
    pub src: &'a dyn Source,
    pub dtype: DType,
}

impl<B: NnOps> Weights<'_, B> {
    /// The tensor `name` of the source, checked against `shape`, in a new
    /// buffer of the backend.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<B::Buffer> {
        let v = self.src.tensor(name, shape)?;
        let mut buf = self.backend.alloc(v.len(), self.dtype)?;
        self.backend
            .write(&mut buf, self.dtype, 0, HostSlice::F32(&v))?;
        Ok(buf)
    }
}

/// Apply `op` to a new arena buffer of `dims`. (On an error the buffers
/// a forward holds are dropped, not given back: the arena's counters restart
/// with every forward, see [`DeviceArena::begin`].)
fn produce<B: NnOps>(
    backend: &B,
    arena: &mut DeviceArena<B>,
    dims: Dims,
    op: impl FnOnce(&mut B::Buffer) -> Result<()>,
) -> Result<Act<B>> {
    let mut buf = arena.take(backend, dims.len())?;
    op(&mut buf)?;
    Ok(Act { buf, dims })
}

/// `x + residual`, divided by `scale` unless it is 1; gives `x` back.
fn add_residual<B: NnOps>(
    backend: &B,
    arena: &mut DeviceArena<B>,
    x: Act<B>,
    residual: &B::Buffer,
    scale: f32,
) -> Result<Act<B>> {
    let n = x.dims.len();
    let sum = produce(backend, arena, x.dims, |o| {
        nn::add(backend, n, &x.buf, residual, o)
    })?;
    arena.give(x.buf);
    if scale == 1.0 {
        return Ok(sum);
    }
    let scaled = produce(backend, arena, sum.dims, |o| {
        nn::affine(backend, n, scale.recip(), 0.0, &sum.buf, o)
    })?;
    arena.give(sum.buf);
    Ok(scaled)
}

/// A 2-D convolution with bias.
pub struct Conv<B: NnOps> {
    w: B::Buffer,
    bias: B::Buffer,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    pad_after: usize,
}

/// Shape of a convolution: kernel, stride and padding before/after.
#[derive(Clone, Copy)]
pub struct ConvShape {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub pad_after: usize,
}

impl ConvShape {
    /// 3×3, stride 1, same-size output.
    pub const SAME3: ConvShape = ConvShape {
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    /// 1×1.
    pub const POINTWISE: ConvShape = ConvShape {
        k: 1,
        stride: 1,
        pad: 0,
        pad_after: 0,
    };
}

impl<B: NnOps> Conv<B> {
    pub fn load(
        weights: &Weights<'_, B>,
        name: &str,
        (cin, cout): (usize, usize),
        shape: ConvShape,
    ) -> Result<Self> {
        let k = shape.k;
        Ok(Conv {
            w: weights.tensor(&format!("{name}.weight"), &[cout, cin, k, k])?,
            bias: weights.tensor(&format!("{name}.bias"), &[cout])?,
            cin,
            cout,
            k,
            stride: shape.stride,
            pad: shape.pad,
            pad_after: shape.pad_after,
        })
    }

    fn geometry(&self, x: Dims) -> Conv2d {
        Conv2d {
            batch: x.b,
            cin: self.cin,
            h: x.h,
            w: x.w,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            pad_after: self.pad_after,
        }
    }

    /// Sizes of the output for an input of `x`.
    pub fn out_dims(&self, x: Dims) -> Dims {
        let (h, w) = self.geometry(x).out_size();
        Dims {
            c: self.cout,
            h,
            w,
            ..x
        }
    }

    /// Multiply-adds ×2 for an input of `x`.
    pub fn flops(&self, x: Dims) -> u64 {
        2 * (self.cin * self.k * self.k) as u64 * self.out_dims(x).len() as u64
    }

    /// The convolution of `x` into `out`, which holds `out_dims(x)`.
    pub fn run_into(
        &self,
        backend: &B,
        x: &B::Buffer,
        dims: Dims,
        out: &mut B::Buffer,
    ) -> Result<()> {
        nn::conv2d(
            backend,
            self.geometry(dims),
            x,
            &self.w,
            Some(&self.bias),
            out,
        )
    }

    pub fn run(
        &self,
        backend: &B,
        x: &B::Buffer,
        dims: Dims,
        arena: &mut DeviceArena<B>,
    ) -> Result<Act<B>> {
        produce(backend, arena, self.out_dims(dims), |o| {
            self.run_into(backend, x, dims, o)
        })
    }
}

/// A linear layer over `[rows, inp]`.
pub struct Linear<B: NnOps> {
    w: B::Buffer,
    bias: B::Buffer,
    inp: usize,
    out: usize,
}

impl<B: NnOps> Linear<B> {
    pub fn load(weights: &Weights<'_, B>, name: &str, inp: usize, out: usize) -> Result<Self> {
        Ok(Linear {
            w: weights.tensor(&format!("{name}.weight"), &[out, inp])?,
            bias: weights.tensor(&format!("{name}.bias"), &[out])?,
            inp,
            out,
        })
    }

    pub fn flops(&self, rows: usize) -> u64 {
        2 * (rows * self.inp * self.out) as u64
    }

    /// `x Wᵀ + bias` for `rows` rows, as a `[rows, out, 1, 1]` activation.
    pub fn run(
        &self,
        backend: &B,
        x: &B::Buffer,
        rows: usize,
        arena: &mut DeviceArena<B>,
    ) -> Result<Act<B>> {
        let g = Matmul {
            batch: 1,
            m: rows,
            n: self.out,
            k: self.inp,
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            accumulate: false,
        };
        let dims = Dims {
            b: rows,
            c: self.out,
            h: 1,
            w: 1,
        };
        produce(backend, arena, dims, |o| {
            nn::matmul(backend, g, x, &self.w, Some(&self.bias), o)
        })
    }
}

/// GroupNorm's affine parameters and grouping.
pub struct Norm<B: NnOps> {
    gamma: B::Buffer,
    beta: B::Buffer,
    groups: usize,
    eps: f32,
}

impl<B: NnOps> Norm<B> {
    pub fn load(
        weights: &Weights<'_, B>,
        name: &str,
        channels: usize,
        (groups, eps): (usize, f64),
    ) -> Result<Self> {
        Ok(Norm {
            gamma: weights.tensor(&format!("{name}.weight"), &[channels])?,
            beta: weights.tensor(&format!("{name}.bias"), &[channels])?,
            groups,
            eps: eps as f32,
        })
    }

    /// The normalised `x`, then SiLU if `silu`.
    pub fn run(
        &self,
        backend: &B,
        x: &B::Buffer,
        dims: Dims,
        silu: bool,
        arena: &mut DeviceArena<B>,
    ) -> Result<Act<B>> {
        let g = GroupNorm {
            batch: dims.b,
            channels: dims.c,
            hw: dims.hw(),
            groups: self.groups,
            eps: self.eps,
            silu,
        };
        produce(backend, arena, dims, |o| {
            nn::group_norm(backend, g, x, &self.gamma, &self.beta, o)
        })
    }
}

/// diffusers' `ResnetBlock2D` (time_embedding_norm "default", pre-norm).
pub struct Resnet<B: NnOps> {
    norm1: Norm<B>,
    conv1: Conv<B>,
    time_proj: Linear<B>,
    norm2: Norm<B>,
    conv2: Conv<B>,
    /// 1×1 conv when the width changes.
    shortcut: Option<Conv<B>>,
    out_scale: f32,
}

impl<B: NnOps> Resnet<B> {
    pub fn load(weights: &Weights<'_, B>, spec: &ResnetSpec) -> Result<Self> {
        let w = spec.widths;
        let name = &spec.name;
        let norm = (w.groups, w.eps);
        let shortcut = if w.cin != w.cout {
            let name = format!("{name}.conv_shortcut");
            let sc = Conv::load(weights, &name, (w.cin, w.cout), ConvShape::POINTWISE)?;
            Some(sc)
        } else {
            None
        };
        Ok(Resnet {
            norm1: Norm::load(weights, &format!("{name}.norm1"), w.cin, norm)?,
            conv1: Conv::load(
                weights,
                &format!("{name}.conv1"),
                (w.cin, w.cout),
                ConvShape::SAME3,
            )?,
            time_proj: Linear::load(weights, &format!("{name}.time_emb_proj"), w.temb, w.cout)?,
            norm2: Norm::load(weights, &format!("{name}.norm2"), w.cout, norm)?,
            conv2: Conv::load(
                weights,
                &format!("{name}.conv2"),
                (w.cout, w.cout),
                ConvShape::SAME3,
            )?,
            shortcut,
            out_scale: spec.out_scale as f32,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.conv2.cout
    }

    pub fn flops(&self, x: Dims) -> u64 {
        let mid = self.conv1.out_dims(x);
        self.conv1.flops(x)
            + self.conv2.flops(mid)
            + self.shortcut.as_ref().map_or(0, |s| s.flops(x))
            + self.time_proj.flops(x.b)
    }

    /// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(temb_act)))))/scale`,
    /// `temb_act = silu(temb)` as `[b, temb]`.
    pub fn run(
        &self,
        backend: &B,
        x: &B::Buffer,
        dims: Dims,
        temb_act: &B::Buffer,
        arena: &mut DeviceArena<B>,
    ) -> Result<Act<B>> {
        let h1 = self.norm1.run(backend, x, dims, true, arena)?;
        let h = self.conv1.run(backend, &h1.buf, dims, arena)?;
        arena.give(h1.buf);
        let proj = self.time_proj.run(backend, temb_act, dims.b, arena)?;
        let (planes, hw) = (h.dims.b * h.dims.c, h.dims.hw());
        let timed = produce(backend, arena, h.dims, |o| {
            nn::add_bias(backend, planes, hw, &h.buf, &proj.buf, o)
        })?;
        arena.give(h.buf);
        arena.give(proj.buf);
        let h2 = self
            .norm2
            .run(backend, &timed.buf, timed.dims, true, arena)?;
        arena.give(timed.buf);
        let out = self.conv2.run(backend, &h2.buf, h2.dims, arena)?;
        arena.give(h2.buf);
        match &self.shortcut {
            Some(sc) => {
                let skip = sc.run(backend, x, dims, arena)?;
                let sum = add_residual(backend, arena, out, &skip.buf, self.out_scale)?;
                arena.give(skip.buf);
                Ok(sum)
            }
            None => add_residual(backend, arena, out, x, self.out_scale),
        }
    }
}

/// diffusers' `Attention` as the UNet2DModel blocks build it: GroupNorm,
/// heads over the pixels as tokens, output projection, residual, divided by
/// `rescale`.
pub struct Attention<B: NnOps> {
    norm: Norm<B>,
    q: Conv<B>,
    k: Conv<B>,
    v: Conv<B>,
    out: Conv<B>,
    heads: usize,
    rescale: f32,
}

impl<B: NnOps> Attention<B> {
    pub fn load(weights: &Weights<'_, B>, spec: &AttentionSpec) -> Result<Self> {
        let (name, c) = (&spec.name, spec.channels);
        // diffusers' linear projections are 1×1 convolutions over the pixels.
        let proj = |p: &str| {
            Conv::load(
                weights,
                &format!("{name}.{p}"),
                (c, c),
                ConvShape::POINTWISE,
            )
        };
        Ok(Attention {
            norm: Norm::load(
                weights,
                &format!("{name}.group_norm"),
                c,
                (spec.groups, spec.eps),
            )?,
            q: proj("to_q")?,
            k: proj("to_k")?,
            v: proj("to_v")?,
            out: proj("to_out.0")?,
            heads: spec.heads,
            rescale: spec.rescale as f32,
        })
    }

    pub fn flops(&self, x: Dims) -> u64 {
        let (t, c) = (x.hw() as u64, self.q.cout as u64);
        // q, k, v and out projections, then scores and the weighted sum
        // (2·T·T·c each, per item).
        4 * self.q.flops(x) + 4 * x.b as u64 * t * t * c
    }

    pub fn run(
        &self,
        backend: &B,
        x: &B::Buffer,
        dims: Dims,
        arena: &mut DeviceArena<B>,
    ) -> Result<Act<B>> {
        let (t, heads) = (dims.hw(), self.heads);
        let d = dims.c / heads;
        let xn = self.norm.run(backend, x, dims, false, arena)?;
        let q = self.q.run(backend, &xn.buf, dims, arena)?;
        let k = self.k.run(backend, &xn.buf, dims, arena)?;
        let v = self.v.run(backend, &xn.buf, dims, arena)?;
        arena.give(xn.buf);
        // Per (item, head): q, k and v are contiguous [d, t] blocks of the
        // NCHW activations, so one batched product covers every head.
        let pairs = dims.b * heads;
        let score_dims = Dims {
            b: pairs,
            c: t,
            h: t,
            w: 1,
        };
        let scores = produce(backend, arena, score_dims, |o| {
            let g = Matmul {
                batch: pairs,
                m: t,
                n: t,
                k: d,
                trans_a: true,
                trans_b: false,
                alpha: (d as f32).sqrt().recip(),
                accumulate: false,
            };
            nn::matmul(backend, g, &q.buf, &k.buf, None, o)
        })?;
        arena.give(q.buf);
        arena.give(k.buf);
        let probs = produce(backend, arena, score_dims, |o| {
            let g = Softmax {
                rows: pairs * t,
                cols: t,
                scale: 1.0,
            };
            nn::softmax(backend, g, &scores.buf, o)
        })?;
        arena.give(scores.buf);
        // o[kk, i] = Σ_j v[kk, j] p[i, j]: already the NCHW layout of the heads.
        let mixed = produce(backend, arena, dims, |o| {
            let g = Matmul {
                batch: pairs,
                m: d,
                n: t,
                k: t,
                trans_a: false,
                trans_b: true,
                alpha: 1.0,
                accumulate: false,
            };
            nn::matmul(backend, g, &v.buf, &probs.buf, None, o)
        })?;
        arena.give(v.buf);
        arena.give(probs.buf);
        let projected = self.out.run(backend, &mixed.buf, dims, arena)?;
        arena.give(mixed.buf);
        add_residual(backend, arena, projected, x, self.rescale)
    }
}
