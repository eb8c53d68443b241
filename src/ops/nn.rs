//! The nn family: the layers a UNet forward is made of — convolution as an
//! implicit GEMM, matrix products (linear layers, attention), GroupNorm with an
//! optional fused SiLU, row softmax, and the element-wise glue (add, SiLU,
//! nearest ×2 upsampling, channel concatenation, the sinusoidal time
//! embedding).
//!
//! Tensors are NCHW (`[batch, channels, h, w]`, row-major) and addressed from
//! element 0 of their buffers; a buffer may be longer than the op needs. A
//! call's storage type is its output's: f32, or f16 where the backend has it
//! ([`NnOps::nn_supports`]), and every input shares it except the timesteps of
//! [`time_proj`], which are always f32. Math is f32 in either storage: values
//! are widened on load and rounded once on store.
//! Every entry point here checks dtypes, sizes and buffer lengths before
//! anything launches; a backend only sees a [`NnCall`] that passed them.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Backends that run the nn family.
pub trait NnOps: Backend {
    /// Whether the nn kernels store in `dtype` here (f32 math either way).
    fn nn_supports(&self, dtype: DType) -> bool;

    /// Launch one op whose buffers the entry points of this module checked.
    fn nn_checked(&self, call: NnCall<'_, Self>) -> Result<()>;

    /// What runs this backend's f32 convolutions ([`conv2d`]).
    fn conv_path(&self) -> ConvPath;
}

/// What runs a backend's convolutions, for `diffinv info` and for comparing
/// a vendor library with the crate's kernels on one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// The CPU backend's plain loops, the definition of the op.
    Reference,
    /// The crate's own implicit-GEMM kernels (`kernels/nn.cu`, `shaders/nn*.wgsl`).
    Kernels,
    /// NVIDIA's cuDNN for f32 (and the crate's kernels for f16 and for the
    /// paddings cuDNN cannot express).
    Cudnn,
}

impl ConvPath {
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Reference => "reference loops",
            ConvPath::Kernels => "own kernels",
            ConvPath::Cudnn => "cuDNN",
        }
    }
}

impl std::fmt::Display for ConvPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A 2-D convolution: input `[batch, cin, h, w]`, weights `[cout, cin, k, k]`,
/// optional bias `[cout]`, output `[batch, cout, ho, wo]` with zero padding
/// `pad` above and left, `pad_after` below and right, and step `stride`.
/// Usually `pad_after == pad`; diffusers' downsampler with
/// `downsample_padding = 0` pads only after (0 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub pad_after: usize,
}

impl Conv2d {
    /// Output height and width. The kernels need nothing else from
    /// `pad_after`: taps past the last row or column read zero padding.
    pub fn out_size(&self) -> (usize, usize) {
        let span = |n: usize| (n + self.pad + self.pad_after - self.k) / self.stride + 1;
        (span(self.h), span(self.w))
    }
}

/// `out[z] = α·A[z]·B[z] + bias (+ out[z])` for `z < batch`: `A[z]` is `m×k`
/// (stored `k×m` when `trans_a`), `B[z]` is `k×n` (stored `n×k` when
/// `trans_b`, as a linear layer's weights are), bias `[n]` added to every row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matmul {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    /// Add the product to what `out` holds (a residual connection).
    pub accumulate: bool,
}

/// GroupNorm of `[batch, channels, hw]` over `groups` groups of channels,
/// then `γ·x̂ + β` per channel and optionally SiLU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNorm {
    pub batch: usize,
    pub channels: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

/// Softmax of `scale·x` along each of `rows` rows of `cols` values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softmax {
    pub rows: usize,
    pub cols: usize,
    pub scale: f32,
}

/// Copy `[batch, c, hw]` into channels `c_offset..c_offset + c` of a
/// `[batch, c_total, hw]` tensor: two of these build a channel concatenation
/// in place, with no separate concat pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    pub batch: usize,
    pub c: usize,
    pub hw: usize,
    pub c_total: usize,
    pub c_offset: usize,
}

/// diffusers' sinusoidal timestep embedding: `t[batch]` → `[batch, dim]`,
/// `sin(t·f_j)` then `cos(t·f_j)` (swapped when `flip_sin_to_cos`) with
/// `f_j = exp(−ln(10⁴)·j / (dim/2 − freq_shift))`; an odd `dim` ends in 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeProj {
    pub batch: usize,
    pub dim: usize,
    pub freq_shift: f32,
    pub flip_sin_to_cos: bool,
}

impl TimeProj {
    /// The denominator of the frequency exponent, rounded to f32 as diffusers does.
    pub fn shift(&self) -> f32 {
        ((self.dim / 2) as f64 - f64::from(self.freq_shift)) as f32
    }
}

/// One op of the family and its sizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NnOp {
    /// inputs: x, weights, bias (optional).
    Conv2d(Conv2d),
    /// inputs: A, B, bias (optional).
    Matmul(Matmul),
    /// inputs: x, γ, β.
    GroupNorm(GroupNorm),
    /// input: x.
    Softmax(Softmax),
    /// `out = a + b` over `n` elements.
    Add { n: usize },
    /// `out = silu(a)` over `n` elements.
    Silu { n: usize },
    /// `out = scale·a + shift` over `n` elements.
    Affine { n: usize, scale: f32, shift: f32 },
    /// Nearest ×2: `[planes, h, w]` → `[planes, 2h, 2w]`.
    Upsample2x { planes: usize, h: usize, w: usize },
    /// input: the part to place.
    Concat(Concat),
    /// input: t (f32 timesteps).
    TimeProj(TimeProj),
    /// `out[p, i] = a[p, i] + bias[p]` for `planes` planes of `hw` values.
    AddBias { planes: usize, hw: usize },
}

/// One checked op: its storage type, its inputs in the order [`NnOp`] lists
/// them (`None` for an absent optional one) and its output, which no input
/// aliases. Only the entry points of this module make one.
pub struct NnCall<'a, B: Backend> {
    pub(crate) op: NnOp,
    pub(crate) dtype: DType,
    pub(crate) inputs: [Option<&'a B::Buffer>; 3],
    pub(crate) out: &'a mut B::Buffer,
}

/// An input of a call: its role (for errors), buffer and element count.
type Input<'a, B> = Option<(&'static str, &'a <B as Backend>::Buffer, usize)>;

/// Every element count the kernels index with must fit their u32 indices.
fn fits_u32(what: &'static str, n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(Error::InvalidParameter {
            name: what,
            value: n as f64,
            reason: "exceeds the 32-bit indices of the nn kernels",
        });
    }
    Ok(())
}

fn positive(name: &'static str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::InvalidParameter {
            name,
            value: 0.0,
            reason: "must be positive",
        });
    }
    Ok(())
}

/// Check and launch `op`: its storage type is the output's; inputs share it,
/// except time_proj's timesteps, which are f32.
fn launch<B: NnOps>(
    backend: &B,
    op: NnOp,
    inputs: [Input<'_, B>; 3],
    out: (&'static str, &mut B::Buffer, usize),
) -> Result<()> {
    let (out_what, out, out_len) = out;
    let dtype = B::buffer_info(out).dtype;
    if !backend.nn_supports(dtype) {
        return Err(Error::UnsupportedDType {
            backend: backend.kind().name(),
            dtype,
        });
    }
    let f32_input = matches!(op, NnOp::TimeProj(_));
    for &(what, buf, len) in inputs.iter().flatten() {
        fits_u32(what, len)?;
        let expected = if f32_input { DType::F32 } else { dtype };
        B::buffer_info(buf).check(what, expected, len)?;
    }
    fits_u32(out_what, out_len)?;
    B::buffer_info(out).check(out_what, dtype, out_len)?;
    backend.nn_checked(NnCall {
        op,
        dtype,
        inputs: inputs.map(|i| i.map(|(_, b, _)| b)),
        out,
    })
}

/// `out ← conv(x, w) + bias`; see [`Conv2d`].
pub fn conv2d<B: NnOps>(
    backend: &B,
    g: Conv2d,
    x: &B::Buffer,
    w: &B::Buffer,
    bias: Option<&B::Buffer>,
    out: &mut B::Buffer,
) -> Result<()> {
    for (name, v) in [
        ("batch", g.batch),
        ("input channels", g.cin),
        ("height", g.h),
        ("width", g.w),
        ("output channels", g.cout),
        ("kernel size", g.k),
        ("stride", g.stride),
    ] {
        positive(name, v)?;
    }
    let padding = g.pad + g.pad_after;
    if g.h + padding < g.k || g.w + padding < g.k {
        return Err(Error::InvalidParameter {
            name: "kernel size",
            value: g.k as f64,
            reason: "larger than the padded input",
        });
    }
    let (ho, wo) = g.out_size();
    launch(
        backend,
        NnOp::Conv2d(g),
        [
            Some(("conv input", x, g.batch * g.cin * g.h * g.w)),
            Some(("conv weights", w, g.cout * g.cin * g.k * g.k)),
            bias.map(|b| ("conv bias", b, g.cout)),
        ],
        ("conv output", out, g.batch * g.cout * ho * wo),
    )
}

/// `out ← α·A·B + bias (+ out)`; see [`Matmul`].
pub fn matmul<B: NnOps>(
    backend: &B,
    g: Matmul,
    a: &B::Buffer,
    b: &B::Buffer,
    bias: Option<&B::Buffer>,
    out: &mut B::Buffer,
) -> Result<()> {
    for (name, v) in [("batch", g.batch), ("m", g.m), ("n", g.n), ("k", g.k)] {
        positive(name, v)?;
    }
    launch(
        backend,
        NnOp::Matmul(g),
        [
            Some(("matmul A", a, g.batch * g.m * g.k)),
            Some(("matmul B", b, g.batch * g.k * g.n)),
            bias.map(|v| ("matmul bias", v, g.n)),
        ],
        ("matmul output", out, g.batch * g.m * g.n),
    )
}

/// `out ← GroupNorm(x)·γ + β`, then SiLU if asked; see [`GroupNorm`].
pub fn group_norm<B: NnOps>(
    backend: &B,
    g: GroupNorm,
    x: &B::Buffer,
    gamma: &B::Buffer,
    beta: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    for (name, v) in [
        ("batch", g.batch),
        ("channels", g.channels),
        ("pixels", g.hw),
        ("groups", g.groups),
    ] {
        positive(name, v)?;
    }
    if !g.channels.is_multiple_of(g.groups) {
        return Err(Error::InvalidParameter {
            name: "groups",
            value: g.groups as f64,
            reason: "must divide the channel count",
        });
    }
    if !(g.eps.is_finite() && g.eps > 0.0) {
        return Err(Error::InvalidParameter {
            name: "eps",
            value: f64::from(g.eps),
            reason: "must be positive and finite",
        });
    }
    let n = g.batch * g.channels * g.hw;
    launch(
        backend,
        NnOp::GroupNorm(g),
        [
            Some(("group norm input", x, n)),
            Some(("group norm gamma", gamma, g.channels)),
            Some(("group norm beta", beta, g.channels)),
        ],
        ("group norm output", out, n),
    )
}

/// `out ← softmax(scale·x)` row by row; see [`Softmax`].
pub fn softmax<B: NnOps>(
    backend: &B,
    g: Softmax,
    x: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    positive("rows", g.rows)?;
    positive("columns", g.cols)?;
    let n = g.rows * g.cols;
    launch(
        backend,
        NnOp::Softmax(g),
        [Some(("softmax input", x, n)), None, None],
        ("softmax output", out, n),
    )
}

/// `out ← a + b` over `n` elements.
pub fn add<B: NnOps>(
    backend: &B,
    n: usize,
    a: &B::Buffer,
    b: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    positive("elements", n)?;
    launch(
        backend,
        NnOp::Add { n },
        [Some(("add a", a, n)), Some(("add b", b, n)), None],
        ("add output", out, n),
    )
}

/// `out ← silu(a)` over `n` elements.
pub fn silu<B: NnOps>(backend: &B, n: usize, a: &B::Buffer, out: &mut B::Buffer) -> Result<()> {
    positive("elements", n)?;
    launch(
        backend,
        NnOp::Silu { n },
        [Some(("silu input", a, n)), None, None],
        ("silu output", out, n),
    )
}

/// `out ← scale·a + shift` over `n` elements (diffusers' input centring
/// `2x − 1`, a block's output rescaling).
pub fn affine<B: NnOps>(
    backend: &B,
    n: usize,
    scale: f32,
    shift: f32,
    a: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    positive("elements", n)?;
    if !(scale.is_finite() && shift.is_finite()) {
        return Err(Error::InvalidParameter {
            name: "affine scale and shift",
            value: f64::from(if scale.is_finite() { shift } else { scale }),
            reason: "must be finite",
        });
    }
    launch(
        backend,
        NnOp::Affine { n, scale, shift },
        [Some(("affine input", a, n)), None, None],
        ("affine output", out, n),
    )
}

/// Nearest ×2 upsampling of `planes` planes of `h × w`.
pub fn upsample2x<B: NnOps>(
    backend: &B,
    planes: usize,
    h: usize,
    w: usize,
    a: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    for (name, v) in [("planes", planes), ("height", h), ("width", w)] {
        positive(name, v)?;
    }
    launch(
        backend,
        NnOp::Upsample2x { planes, h, w },
        [Some(("upsample input", a, planes * h * w)), None, None],
        ("upsample output", out, planes * 4 * h * w),
    )
}

/// Place `a` at channels `c_offset..` of `out`; see [`Concat`].
pub fn concat_into<B: NnOps>(
    backend: &B,
    g: Concat,
    a: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    for (name, v) in [("batch", g.batch), ("channels", g.c), ("pixels", g.hw)] {
        positive(name, v)?;
    }
    if g.c_offset + g.c > g.c_total {
        return Err(Error::InvalidParameter {
            name: "concat channel offset",
            value: g.c_offset as f64,
            reason: "the part does not fit inside the concatenated channels",
        });
    }
    launch(
        backend,
        NnOp::Concat(g),
        [Some(("concat part", a, g.batch * g.c * g.hw)), None, None],
        ("concat output", out, g.batch * g.c_total * g.hw),
    )
}

/// The sinusoidal embedding of `t` (f32 timesteps, whatever the output's
/// storage type, as diffusers keeps them); see [`TimeProj`].
pub fn time_proj<B: NnOps>(
    backend: &B,
    g: TimeProj,
    t: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    positive("batch", g.batch)?;
    if g.dim < 2 {
        return Err(Error::InvalidParameter {
            name: "embedding dim",
            value: g.dim as f64,
            reason: "must be at least 2",
        });
    }
    let shift = g.shift();
    if !(shift.is_finite() && shift != 0.0) {
        return Err(Error::InvalidParameter {
            name: "freq_shift",
            value: f64::from(g.freq_shift),
            reason: "dim/2 − freq_shift must be finite and nonzero",
        });
    }
    launch(
        backend,
        NnOp::TimeProj(g),
        [Some(("timesteps", t, g.batch)), None, None],
        ("time embedding", out, g.batch * g.dim),
    )
}

/// `out[p, i] ← a[p, i] + bias[p]` over `planes` planes (e.g. batch × channels)
/// of `hw` values: a bias that differs per item, such as a resnet's projected
/// time embedding.
pub fn add_bias<B: NnOps>(
    backend: &B,
    planes: usize,
    hw: usize,
    a: &B::Buffer,
    bias: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    positive("planes", planes)?;
    positive("pixels", hw)?;
    let n = planes * hw;
    launch(
        backend,
        NnOp::AddBias { planes, hw },
        [
            Some(("add_bias input", a, n)),
            Some(("add_bias bias", bias, planes)),
            None,
        ],
        ("add_bias output", out, n),
    )
}
