//! The operator family: degradation operators H of linear inverse problems
//! with their adjoint Hᵀ, pseudo-inverse H⁺ and projector P = H⁺H, on every
//! backend, batch-aware (`docs/math.md` §5).
//!
//! An [`Operator`] is built once per problem (its index tables go to the device
//! then) and applied with [`Operator::apply`], the family's one checked entry:
//! every mode of the elementwise and block-local operators is one launch that
//! computes each output element on its own; the separable ones (blur, bicubic
//! SR; [`separable`]) are two launches of small per-channel GEMMs.

pub mod separable;

use crate::backend::params::{program, OperatorParams};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, Shape, Temp, Tensor};
use separable::{bicubic_matrix, blur_matrix, Factor, Map, Separable, DEFAULT_TRUNCATION};

/// Backends that run the operator kernels.
pub trait OperatorOps: Backend {
    /// Whether the operator kernels compute in `dtype` here.
    fn operator_supports(&self, dtype: DType) -> bool;

    /// Launch one operator application [`Operator::apply`] has checked.
    fn operator_apply_checked(&self, call: OperatorCall<'_, Self>) -> Result<()>;
}

/// One validated application: `input` holds `batch·in_item` and `output`
/// `batch·out_item` elements of `dtype` (`params.n_out` in all), and `table`
/// every index the program reads. Only [`Operator::apply`] makes one.
pub struct OperatorCall<'a, B: Backend> {
    pub(crate) params: OperatorParams,
    /// The params' scalars before rounding to f32 (the CPU's f64 oracle path).
    pub(crate) scalars: OperatorScalars,
    pub(crate) dtype: DType,
    pub(crate) input: &'a B::Buffer,
    pub(crate) output: &'a mut B::Buffer,
    pub(crate) table: &'a B::Buffer,
    /// The separable programs' matrices in f64 (the CPU's oracle path reads
    /// these; the device reads their f32 bits from `table`); empty otherwise.
    pub(crate) dense: &'a [f64],
}

/// The f64 scalars of one application.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatorScalars {
    pub scale: f64,
    pub h: [f64; 3],
    pub g: [f64; 3],
}

/// Which map of the operator to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// y = H x.
    Forward,
    /// x = Hᵀ y.
    Adjoint,
    /// x = H⁺ y (Moore–Penrose pseudo-inverse).
    PseudoInverse,
    /// x = P x = H⁺H x, the orthogonal projector onto the row space of H.
    Project,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Forward,
        Mode::Adjoint,
        Mode::PseudoInverse,
        Mode::Project,
    ];

    /// Whether the input is a measurement y (else an image x).
    fn reads_y(self) -> bool {
        matches!(self, Mode::Adjoint | Mode::PseudoInverse)
    }

    /// Whether the output is a measurement y (else an image x).
    fn writes_y(self) -> bool {
        self == Mode::Forward
    }
}

/// What an operator is, on the host.
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorKind {
    /// Inpainting with y the kept entries of x, in row-major (C, H, W) order:
    /// H gathers them, Hᵀ = H⁺ scatters them back with zeros elsewhere,
    /// P = diag(m).
    InpaintKept,
    /// Inpainting with y = m ⊙ x at full size: H = Hᵀ = H⁺ = P = diag(m).
    InpaintMasked,
    /// Super-resolution by `factor × factor` average pooling: H averages each
    /// block, Hᵀ = nearest upsampling / factor², H⁺ = nearest upsampling,
    /// P = upsampling ∘ pooling.
    AvgPool { factor: usize },
    /// Colorization: y = hᵀ x_rgb per pixel; Hᵀ y = h·y, H⁺ y = h·y/‖h‖²,
    /// P x = h hᵀ x/‖h‖².
    Colorize { h: [f64; 3] },
    /// Separable zero-boundary blur with `taps` along both axes, each 1-D
    /// factor's singular values below `truncation` set to 0.
    Blur { taps: Vec<f64>, truncation: f64 },
    /// Bicubic down-sampling by `factor` (Keys, a = −0.5, reflecting borders),
    /// truncated like [`OperatorKind::Blur`].
    Bicubic { factor: usize, truncation: f64 },
    /// Any separable operator from its 1-D factors, with `rows × cols`
    /// measurements per channel.
    Separable {
        rows: usize,
        cols: usize,
        truncation: f64,
    },
}

/// A one-line name for messages (the blur's taps stay out of them).
impl std::fmt::Display for OperatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorKind::InpaintKept => write!(f, "inpainting (kept entries)"),
            OperatorKind::InpaintMasked => write!(f, "inpainting (masked image)"),
            OperatorKind::AvgPool { factor } => write!(f, "{factor}×{factor} average pooling"),
            OperatorKind::Colorize { .. } => write!(f, "colorization"),
            OperatorKind::Blur { taps, .. } => write!(f, "separable blur ({} taps)", taps.len()),
            OperatorKind::Bicubic { factor, .. } => write!(f, "bicubic ×{factor} down-sampling"),
            OperatorKind::Separable { rows, cols, .. } => {
                write!(f, "separable operator ({rows}×{cols} measurements)")
            }
        }
    }
}

impl OperatorKind {
    /// Whether P is elementwise or block-local, so other families' kernels
    /// (the guidance passes) can apply it inline.
    pub fn is_block_local(&self) -> bool {
        !matches!(
            self,
            OperatorKind::Blur { .. } | OperatorKind::Bicubic { .. }
        )
    }
}

/// A degradation operator on images of one item shape `[C, H, W]`, with its
/// index tables on the device.
pub struct Operator<B: Backend> {
    kind: OperatorKind,
    x_item: Shape,
    y_item: Shape,
    /// Index table: the kept list then the rank of each x element (inpainting);
    /// one unused entry otherwise.
    table: Tensor<B>,
    /// Where the rank list starts in `table`.
    rank_offset: usize,
    /// The factors of a separable operator (their matrices are the table).
    separable: Option<Separable>,
}

/// The pixel dimensions `[C, H, W]` of an image item.
fn image_dims(item: Shape) -> Result<[usize; 3]> {
    item.checked_len()?;
    match *item.dims() {
        [c, h, w] => Ok([c, h, w]),
        _ => Err(Error::InvalidShape {
            shape: item,
            reason: "an operator's image item is [channels, height, width]",
        }),
    }
}

fn check_truncation(truncation: f64) -> Result<()> {
    if truncation.is_finite() && truncation >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            "SVD truncation",
            truncation,
            "must be finite and ≥ 0",
        ))
    }
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value,
        reason,
    }
}

impl<B: OperatorOps> Operator<B> {
    /// Inpainting with a mask over the image item `[C, H, W]` (1 = observed),
    /// in the kept-entries or the masked-image convention. The mask must hold
    /// only 0 and 1, and at least one observed entry.
    pub fn inpaint(backend: &B, item: Shape, mask: &[f32], kept_entries: bool) -> Result<Self> {
        let n = image_dims(item)?.iter().product::<usize>();
        if mask.len() != n {
            return Err(Error::LengthMismatch {
                what: "inpainting mask (one entry per element of the image item)",
                expected: n,
                got: mask.len(),
            });
        }
        if let Some(&bad) = mask.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(invalid(
                "inpainting mask entry",
                f64::from(bad),
                "must be 0 or 1",
            ));
        }
        // The kept list (row-major order), then each element's rank in it.
        let kept: Vec<u32> = (0..n as u32).filter(|&i| mask[i as usize] == 1.0).collect();
        if kept.is_empty() {
            return Err(invalid(
                "observed entries",
                0.0,
                "the mask observes nothing",
            ));
        }
        let mut rank = vec![program::NONE; n];
        for (j, &i) in kept.iter().enumerate() {
            rank[i as usize] = j as u32;
        }
        let (kind, y_item, rank_offset) = if kept_entries {
            (
                OperatorKind::InpaintKept,
                Shape::flat(kept.len()),
                kept.len(),
            )
        } else {
            (OperatorKind::InpaintMasked, item, 0)
        };
        let mut table = if kept_entries { kept } else { Vec::new() };
        table.extend_from_slice(&rank);
        Self::with_table(backend, kind, item, y_item, &table, rank_offset)
    }

    /// Super-resolution by `factor × factor` average pooling; `factor` must
    /// divide the item's height and width.
    pub fn avg_pool(backend: &B, item: Shape, factor: usize) -> Result<Self> {
        let [c, h, w] = image_dims(item)?;
        if factor == 0 || h % factor != 0 || w % factor != 0 {
            return Err(invalid(
                "pooling factor",
                factor as f64,
                "must be ≥ 1 and divide the image height and width",
            ));
        }
        let y_item = Shape::from_dims(&[c, h / factor, w / factor])?;
        Self::with_table(
            backend,
            OperatorKind::AvgPool { factor },
            item,
            y_item,
            &[0],
            0,
        )
    }

    /// Colorization with per-channel weights `h` of 3-channel items (y is one
    /// grey channel). `h` must be finite and not all zero.
    pub fn colorize(backend: &B, item: Shape, h: [f64; 3]) -> Result<Self> {
        let [c, height, width] = image_dims(item)?;
        if c != 3 {
            return Err(invalid(
                "channels",
                c as f64,
                "colorization needs 3 channels",
            ));
        }
        if let Some(&bad) = h.iter().find(|v| !v.is_finite()) {
            return Err(invalid("colour weight", bad, "must be finite"));
        }
        if h.iter().all(|&v| v == 0.0) {
            return Err(invalid("colour weights", 0.0, "must not all be zero"));
        }
        let y_item = Shape::from_dims(&[1, height, width])?;
        Self::with_table(backend, OperatorKind::Colorize { h }, item, y_item, &[0], 0)
    }

    /// Separable zero-boundary blur of `[C, H, W]` items with the 1-D kernel
    /// `taps` along rows and columns (all taps used; `separable::gaussian_taps`,
    /// `separable::uniform_taps`), truncated at [`separable::DEFAULT_TRUNCATION`].
    pub fn blur(backend: &B, item: Shape, taps: &[f64]) -> Result<Self> {
        Self::blur_with_truncation(backend, item, taps, DEFAULT_TRUNCATION)
    }

    /// [`Operator::blur`] with singular values below `truncation` set to 0
    /// (0 keeps every nonzero one).
    pub fn blur_with_truncation(
        backend: &B,
        item: Shape,
        taps: &[f64],
        truncation: f64,
    ) -> Result<Self> {
        let [_, h, w] = image_dims(item)?;
        if taps.is_empty() || taps.len() > h.min(w) {
            return Err(invalid(
                "blur kernel length",
                taps.len() as f64,
                "must be ≥ 1 and at most the image's height and width",
            ));
        }
        if let Some(&bad) = taps.iter().find(|v| !v.is_finite()) {
            return Err(invalid("blur tap", bad, "must be finite"));
        }
        if taps.iter().all(|&v| v == 0.0) {
            return Err(invalid("blur taps", 0.0, "must not all be zero"));
        }
        check_truncation(truncation)?;
        let height = Factor::new(&blur_matrix(taps, h), h, h, truncation)?;
        let width = Factor::new(&blur_matrix(taps, w), w, w, truncation)?;
        let kind = OperatorKind::Blur {
            taps: taps.to_vec(),
            truncation,
        };
        Self::separable(backend, kind, item, Separable::new(height, width))
    }

    /// Bicubic down-sampling of `[C, H, W]` items by `factor` (which must
    /// divide H and W), truncated at [`separable::DEFAULT_TRUNCATION`].
    pub fn bicubic(backend: &B, item: Shape, factor: usize) -> Result<Self> {
        Self::bicubic_with_truncation(backend, item, factor, DEFAULT_TRUNCATION)
    }

    /// [`Operator::bicubic`] with its own SVD truncation.
    pub fn bicubic_with_truncation(
        backend: &B,
        item: Shape,
        factor: usize,
        truncation: f64,
    ) -> Result<Self> {
        let [_, h, w] = image_dims(item)?;
        if factor == 0 || h % factor != 0 || w % factor != 0 {
            return Err(invalid(
                "bicubic factor",
                factor as f64,
                "must be ≥ 1 and divide the image height and width",
            ));
        }
        check_truncation(truncation)?;
        let height = Factor::new(&bicubic_matrix(factor, h), h / factor, h, truncation)?;
        let width = Factor::new(&bicubic_matrix(factor, w), w / factor, w, truncation)?;
        let kind = OperatorKind::Bicubic { factor, truncation };
        Self::separable(backend, kind, item, Separable::new(height, width))
    }

    /// Any separable operator `Y_c = A_h X_c A_wᵀ` of `[C, H, W]` items:
    /// `a_h` is `rows_h × H` and `a_w` `rows_w × W`, row-major, each truncated
    /// at `truncation` like [`Operator::blur`].
    pub fn separable_from_factors(
        backend: &B,
        item: Shape,
        a_h: &[f64],
        a_w: &[f64],
        truncation: f64,
    ) -> Result<Self> {
        let [_, h, w] = image_dims(item)?;
        check_truncation(truncation)?;
        let factor = |a: &[f64], n: usize| -> Result<Factor> {
            if a.is_empty() || !a.len().is_multiple_of(n) || a.len() / n > n {
                return Err(Error::LengthMismatch {
                    what: "separable factor (rows × the image side, at most square)",
                    expected: n * n,
                    got: a.len(),
                });
            }
            if let Some(&bad) = a.iter().find(|v| !v.is_finite()) {
                return Err(invalid("separable factor entry", bad, "must be finite"));
            }
            Factor::new(a, a.len() / n, n, truncation)
        };
        let (height, width) = (factor(a_h, h)?, factor(a_w, w)?);
        let kind = OperatorKind::Separable {
            rows: height.rows_out,
            cols: width.rows_out,
            truncation,
        };
        Self::separable(backend, kind, item, Separable::new(height, width))
    }

    fn separable(backend: &B, kind: OperatorKind, x_item: Shape, sep: Separable) -> Result<Self> {
        let [c, _, _] = image_dims(x_item)?;
        let y_item = Shape::from_dims(&[c, sep.height.rows_out, sep.width.rows_out])?;
        let mut op = Self::with_table(backend, kind, x_item, y_item, &sep.table(), 0)?;
        op.separable = Some(sep);
        Ok(op)
    }

    /// The colour weights of the official colorization operator (they sum to 1).
    pub const OFFICIAL_COLOR_WEIGHTS: [f64; 3] = [0.3333, 0.3334, 0.3333];

    fn with_table(
        backend: &B,
        kind: OperatorKind,
        x_item: Shape,
        y_item: Shape,
        table: &[u32],
        rank_offset: usize,
    ) -> Result<Self> {
        let table = Tensor::from_host(
            backend,
            Shape::flat(table.len()),
            DType::U32,
            HostSlice::U32(table),
        )?;
        Ok(Operator {
            kind,
            x_item,
            y_item,
            table,
            rank_offset,
            separable: None,
        })
    }

    pub fn kind(&self) -> &OperatorKind {
        &self.kind
    }

    /// `q` with `H⁺(H⁺)ᵀ = q·P` (the noisy C-ΠGDM's Q): 1 for inpainting, s²
    /// for s×s average pooling, 1/‖h‖² for colorization; NaN for the
    /// separable operators, whose `H⁺(H⁺)ᵀ` is no multiple of P (the guided
    /// samplers refuse them).
    pub fn pinv_gram_scale(&self) -> f64 {
        match &self.kind {
            OperatorKind::InpaintKept | OperatorKind::InpaintMasked => 1.0,
            OperatorKind::AvgPool { factor } => (factor * factor) as f64,
            OperatorKind::Colorize { h } => 1.0 / h.iter().map(|v| v * v).sum::<f64>(),
            OperatorKind::Blur { .. }
            | OperatorKind::Bicubic { .. }
            | OperatorKind::Separable { .. } => f64::NAN,
        }
    }

    /// Singular values each 1-D factor kept after truncation (height, width);
    /// `None` for the operators without an SVD.
    pub fn svd_ranks(&self) -> Option<(usize, usize)> {
        self.separable
            .as_ref()
            .map(|s| (s.height.rank, s.width.rank))
    }

    /// Kernel launches per application: 1, or 2 for the separable operators.
    pub fn launches_per_apply(&self) -> u64 {
        if self.separable.is_some() {
            2
        } else {
            1
        }
    }

    /// The image item `[C, H, W]` the operator acts on.
    pub fn x_item(&self) -> Shape {
        self.x_item
    }

    /// The measurement item: `[m]` kept entries, `[C, H, W]` for a masked
    /// image, `[C, H/s, W/s]` for pooling, `[1, H, W]` for colorization.
    pub fn y_item(&self) -> Shape {
        self.y_item
    }

    /// `out ← mode(input)` for a batch: an image input is `[B, C, H, W]` (any
    /// shape whose batch items hold the image item's elements), a measurement
    /// `[B, …y_item]`; `output` has the other shape and the same batch and
    /// dtype. One launch ([`Operator::launches_per_apply`]: two for the
    /// separable operators).
    pub fn apply(
        &self,
        backend: &B,
        mode: Mode,
        input: &Tensor<B>,
        output: &mut Tensor<B>,
    ) -> Result<()> {
        let dtype = input.dtype();
        if !backend.operator_supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: backend.kind().name(),
                dtype,
            });
        }
        if output.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                what: "operator output",
                expected: dtype,
                got: output.dtype(),
            });
        }
        let item_of = |y: bool| if y { self.y_item } else { self.x_item };
        let (in_item, out_item) = (item_of(mode.reads_y()), item_of(mode.writes_y()));
        let batch = input.shape().batch();
        let expect = |what: &'static str, t: &Tensor<B>, item: Shape| -> Result<()> {
            let (shape, n) = (t.shape(), item.checked_len()?);
            if shape.item_len() != n || shape.batch() != batch {
                let mut dims = vec![batch];
                dims.extend_from_slice(item.dims());
                return Err(Error::ShapeMismatch {
                    what,
                    expected: Shape::from_dims(&dims)?,
                    got: shape,
                });
            }
            Ok(())
        };
        expect("operator input", input, in_item)?;
        expect("operator output", output, out_item)?;
        if let Some(sep) = &self.separable {
            return self.apply_separable(backend, sep, Map::Mode(mode), batch, input, output);
        }
        let (params, scalars) =
            self.mode_params(mode, batch, in_item.checked_len()?, out_item.checked_len()?);
        backend.operator_apply_checked(OperatorCall {
            params,
            scalars,
            dtype,
            input: &input.buf,
            output: &mut output.buf,
            table: &self.table.buf,
            dense: &[],
        })
    }

    /// Separable operators only: rotate images into the singular basis
    /// (`to_spectral`: `(V_h ⊗ V_w)ᵀ x`) or back, where P is the 0/1 diagonal
    /// [`Operator::spectral_mask_operator`] applies. Two launches;
    /// `Error::UnsupportedOperator` for the other operators.
    pub fn rotate(
        &self,
        backend: &B,
        to_spectral: bool,
        input: &Tensor<B>,
        output: &mut Tensor<B>,
    ) -> Result<()> {
        let sep = self
            .separable
            .as_ref()
            .ok_or_else(|| Error::UnsupportedOperator {
                operator: self.kind.to_string(),
                reason: "only separable operators have a singular basis",
            })?;
        let n = self.x_item.checked_len()?;
        let batch = input.shape().batch();
        for (what, t) in [("rotation input", input), ("rotation output", &*output)] {
            if t.shape().item_len() != n || t.shape().batch() != batch {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: Shape::from_dims(&[&[batch][..], self.x_item.dims()].concat())?,
                    got: t.shape(),
                });
            }
        }
        if output.dtype() != input.dtype() || !backend.operator_supports(input.dtype()) {
            return Err(Error::DTypeMismatch {
                what: "rotation output",
                expected: input.dtype(),
                got: output.dtype(),
            });
        }
        let map = if to_spectral {
            Map::ToSpectral
        } else {
            Map::FromSpectral
        };
        self.apply_separable(backend, sep, map, batch, input, output)
    }

    /// Separable operators only: P in the singular basis, a masked-image
    /// inpainting operator whose mask keeps the coefficients of the kept
    /// singular-value pairs — the block-local form the fused guidance passes
    /// apply. `None` for the other operators.
    pub fn spectral_mask_operator(&self, backend: &B) -> Result<Option<Self>> {
        let Some(sep) = &self.separable else {
            return Ok(None);
        };
        let channels = self.x_item.dims()[0];
        Self::inpaint(backend, self.x_item, &sep.spectral_mask(channels), false).map(Some)
    }

    /// `out = L·X·Rᵀ` per channel, the pair (L, R) of `map`: rows (X Rᵀ into
    /// a pooled temporary), then columns. Shapes were checked by the caller.
    fn apply_separable(
        &self,
        backend: &B,
        sep: &Separable,
        map: Map,
        batch: usize,
        input: &Tensor<B>,
        output: &mut Tensor<B>,
    ) -> Result<()> {
        let channels = self.x_item.dims()[0];
        let (l_off, r_off) = sep.offsets(map);
        let (_, l_rows, l_cols) = sep.height.matrix(map);
        let (_, r_rows, r_cols) = sep.width.matrix(map);
        let dtype = input.dtype();
        let mid_item = channels * l_cols * r_rows;
        let mut mid = Temp::new(backend, Shape::flat(batch * mid_item), dtype)?;
        let pass = |program: u32, height, width, factor, offset, in_item, out_item| {
            let params = OperatorParams {
                n_out: (batch * out_item) as u32,
                out_item: out_item as u32,
                in_item: in_item as u32,
                program,
                channels: channels as u32,
                height: height as u32,
                width: width as u32,
                factor: factor as u32,
                rank_offset: offset as u32,
                _pad: [0; 3],
                scale: 1.0,
                h: [0.0; 3],
                g: [0.0; 3],
                _pad2: 0.0,
            };
            let scalars = OperatorScalars {
                scale: 1.0,
                h: [0.0; 3],
                g: [0.0; 3],
            };
            (params, scalars)
        };
        let in_item = channels * l_cols * r_cols;
        let (params, scalars) = pass(
            program::SEP_ROWS,
            l_cols,
            r_cols,
            r_rows,
            r_off,
            in_item,
            mid_item,
        );
        backend.operator_apply_checked(OperatorCall {
            params,
            scalars,
            dtype,
            input: &input.buf,
            output: &mut mid.buf,
            table: &self.table.buf,
            dense: &sep.dense,
        })?;
        let out_item = channels * l_rows * r_rows;
        let (params, scalars) = pass(
            program::SEP_COLS,
            l_cols,
            r_rows,
            l_rows,
            l_off,
            mid_item,
            out_item,
        );
        backend.operator_apply_checked(OperatorCall {
            params,
            scalars,
            dtype,
            input: &mid.buf,
            output: &mut output.buf,
            table: &self.table.buf,
            dense: &sep.dense,
        })
    }

    /// y = H x.
    pub fn forward(&self, backend: &B, x: &Tensor<B>, y: &mut Tensor<B>) -> Result<()> {
        self.apply(backend, Mode::Forward, x, y)
    }

    /// x = Hᵀ y.
    pub fn adjoint(&self, backend: &B, y: &Tensor<B>, x: &mut Tensor<B>) -> Result<()> {
        self.apply(backend, Mode::Adjoint, y, x)
    }

    /// x = H⁺ y.
    pub fn pseudo_inverse(&self, backend: &B, y: &Tensor<B>, x: &mut Tensor<B>) -> Result<()> {
        self.apply(backend, Mode::PseudoInverse, y, x)
    }

    /// out = P x.
    pub fn project(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        self.apply(backend, Mode::Project, x, out)
    }

    /// The device index table (for kernels of other families that apply this
    /// operator inline).
    pub(crate) fn table_buffer(&self) -> &B::Buffer {
        &self.table.buf
    }

    /// The kernel parameters of `mode` over `batch` items: which program, and
    /// its f64 scalars rounded once to f32.
    pub(crate) fn mode_params(
        &self,
        mode: Mode,
        batch: usize,
        in_item: usize,
        out_item: usize,
    ) -> (OperatorParams, OperatorScalars) {
        // Item dimensions were checked (each ≤ MAX_ELEMENTS < u32::MAX).
        let [c, h, w] = image_dims(self.x_item).unwrap_or([0; 3]);
        let (mut factor, mut scale, mut hw, mut g) = (1usize, 1.0f64, [0.0f64; 3], [0.0f64; 3]);
        let prog = match (&self.kind, mode) {
            (OperatorKind::InpaintKept, Mode::Forward) => program::GATHER,
            (OperatorKind::InpaintKept, Mode::Adjoint | Mode::PseudoInverse) => program::SCATTER,
            (OperatorKind::InpaintKept, Mode::Project) | (OperatorKind::InpaintMasked, _) => {
                program::MASK
            }
            (OperatorKind::AvgPool { factor: s }, m) => {
                factor = *s;
                let inv_area = 1.0 / (s * s) as f64;
                match m {
                    Mode::Forward => {
                        scale = inv_area;
                        program::POOL_MEAN
                    }
                    Mode::Adjoint => {
                        scale = inv_area;
                        program::POOL_SPREAD
                    }
                    Mode::PseudoInverse => program::POOL_SPREAD,
                    Mode::Project => {
                        scale = inv_area;
                        program::POOL_PROJECT
                    }
                }
            }
            (OperatorKind::Colorize { h }, m) => {
                hw = *h;
                let norm2: f64 = h.iter().map(|v| v * v).sum();
                g = match m {
                    Mode::Adjoint => *h,
                    _ => h.map(|v| v / norm2),
                };
                match m {
                    Mode::Forward => program::COLOR_DOT,
                    Mode::Adjoint | Mode::PseudoInverse => program::COLOR_SPREAD,
                    Mode::Project => program::COLOR_PROJECT,
                }
            }
            // Two launches each (`apply_separable`); no single program.
            (
                OperatorKind::Blur { .. }
                | OperatorKind::Bicubic { .. }
                | OperatorKind::Separable { .. },
                _,
            ) => program::NONE,
        };
        let scalars = OperatorScalars { scale, h: hw, g };
        let params = OperatorParams {
            n_out: (batch * out_item) as u32,
            out_item: out_item as u32,
            in_item: in_item as u32,
            program: prog,
            channels: c as u32,
            height: h as u32,
            width: w as u32,
            factor: factor as u32,
            rank_offset: self.rank_offset as u32,
            _pad: [0; 3],
            scale: scale as f32,
            h: hw.map(|v| v as f32),
            g: g.map(|v| v as f32),
            _pad2: 0.0,
        };
        (params, scalars)
    }
}
