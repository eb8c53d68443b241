//! The Krylov family: conjugate-gradient data consistency on the device
//! (`docs/math.md` §9) and the two element-wise DDS passes around it.
//!
//! [`ConjugateGradient`] solves `K x = rhs_x·x₀ + rhs_d·d` with
//! `K = identity·I + gram·AᵀA`, warm-started at x₀, for every sample of a
//! batch with its own scalars. An iteration is two launches when AᵀA = c·P
//! with P block-local (inpainting, average pooling, colorization: P is the
//! operator's own Project program, computed inline): one that forms the
//! direction p and q = K p and sums ⟨p, q⟩, one that updates x and r and sums
//! ⟨r, r⟩. Other operators (separable blur, bicubic SR, anything that
//! implements [`NormalMap`]) apply AᵀA r with their own kernels first.
//!
//! The reductions never leave the device: each block writes one partial sum
//! per [`CG_CHUNK`] elements, and the next pass's blocks each re-sum their
//! sample's partials in a fixed order, so α and β are computed on the device,
//! identically in every block, with no host round trip inside the loop. The
//! CG vectors and sums are f32 (f64 on the CPU oracle path).

use crate::backend::params::{
    cg_pass, dds_pass, program, CgParams, OperatorParams, CG_CHUNK, CG_LANES,
};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::operator::{Mode, Operator, OperatorScalars};
use crate::ops::OperatorOps;
use crate::tensor::{DType, Shape, Temp, Tensor};

/// Backends that run the CG and DDS passes.
pub trait KrylovOps: OperatorOps {
    /// Whether the CG state (x, r, p, q and the sums) can be of `dtype` here.
    fn cg_supports(&self, dtype: DType) -> bool;

    /// Whether the DDS passes take network tensors of `dtype` here.
    fn dds_supports(&self, dtype: DType) -> bool;

    /// Launch one CG pass [`ConjugateGradient`] has checked.
    fn cg_pass_checked(&self, call: CgCall<'_, Self>) -> Result<()>;

    /// Launch one DDS pass [`dds_tweedie`] or [`dds_renoise`] has checked.
    fn dds_pass_checked(&self, call: DdsCall<'_, Self>) -> Result<()>;
}

/// The f64 scalars of a pass (the CPU's oracle path; the params hold them
/// rounded to f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgScalars {
    pub identity: f64,
    pub gram: f64,
    pub rhs_x: f64,
    pub rhs_d: f64,
    /// Squared tolerance; negative: none.
    pub tolerance2: f64,
    /// The stall rule's squared relative residual ([`stall2`]).
    pub stall2: f64,
    pub c: [f64; 3],
}

/// The stall rule of CG in state `dtype`: a sample stops once
/// ‖r‖ ≤ 8ε‖b‖ (ε the state's unit round-off, b the right-hand side), i.e.
/// once its residual is rounding — what a fixed M would otherwise iterate on.
/// Returns (8ε)²: 2⁻⁴² for f32 state (ε = 2⁻²⁴), 2⁻¹⁰⁰ for f64 (ε = 2⁻⁵³).
pub fn stall2(dtype: DType) -> f64 {
    let eps = if dtype == DType::F64 {
        f64::EPSILON / 2.0
    } else {
        f64::from(f32::EPSILON) / 2.0
    };
    (8.0 * eps).powi(2)
}

impl CgScalars {
    /// No K, no right-hand side, no tolerance: the DOT and DDS passes.
    const NONE: CgScalars = CgScalars {
        identity: 0.0,
        gram: 0.0,
        rhs_x: 0.0,
        rhs_d: 0.0,
        tolerance2: -1.0,
        stall2: -1.0,
        c: [0.0; 3],
    };

    /// The launch parameters of `pass` (iteration `k`) over x of `shape`,
    /// with these scalars rounded once to f32.
    fn params(
        &self,
        op: OperatorParams,
        pass: u32,
        k: usize,
        shape: Shape,
        gram_from_t: bool,
    ) -> CgParams {
        let (batch, item) = (shape.batch(), shape.item_len());
        CgParams {
            op,
            pass,
            iteration: k as u32,
            item: item as u32,
            chunks: item.div_ceil(CG_CHUNK) as u32,
            batch: batch as u32,
            gram_from_t: u32::from(gram_from_t),
            stall2: self.stall2 as f32,
            _pad: 0,
            identity: self.identity as f32,
            gram: self.gram as f32,
            rhs_x: self.rhs_x as f32,
            rhs_d: self.rhs_d as f32,
            tolerance2: self.tolerance2 as f32,
            c: self.c.map(|v| v as f32),
        }
    }
}

/// The operator scalars of a pass with no operator program.
const NO_OPERATOR: OperatorScalars = OperatorScalars {
    scale: 1.0,
    h: [0.0; 3],
    g: [0.0; 3],
};

/// One validated CG pass: x, r, p, q, d, t hold `batch·item` elements of
/// `dtype`, `partials` `4·batch·chunks` (rr slots 0 and 1, pq, ⟨b, b⟩),
/// `iterations` `batch` u32, and `table` every index P reads. Only
/// [`ConjugateGradient`] makes one.
pub struct CgCall<'a, B: Backend> {
    pub(crate) params: CgParams,
    pub(crate) scalars: CgScalars,
    pub(crate) op_scalars: OperatorScalars,
    pub(crate) dtype: DType,
    pub(crate) x: &'a mut B::Buffer,
    pub(crate) r: &'a mut B::Buffer,
    pub(crate) p: &'a mut B::Buffer,
    pub(crate) q: &'a mut B::Buffer,
    pub(crate) partials: &'a mut B::Buffer,
    pub(crate) iterations: &'a mut B::Buffer,
    /// The right-hand side's vector d.
    pub(crate) d: &'a B::Buffer,
    /// AᵀA of x (RESIDUAL) or r (DIRECTION) when `gram_from_t`; d stands in,
    /// unread, otherwise.
    pub(crate) t: &'a B::Buffer,
    /// The operator's index table, when P is inline.
    pub(crate) table: Option<&'a B::Buffer>,
}

/// One validated DDS pass over `params.item·params.batch` elements: x̂0 of the
/// CG state dtype [`cg_state_dtype`]`(dtype)`, the network tensors of `dtype`.
/// Only [`dds_tweedie`] and [`dds_renoise`] make one.
pub struct DdsCall<'a, B: Backend> {
    pub(crate) params: CgParams,
    pub(crate) c: [f64; 3],
    pub(crate) dtype: DType,
    pub(crate) buffers: DdsBuffers<'a, B>,
}

/// What a DDS pass reads and writes.
pub enum DdsBuffers<'a, B: Backend> {
    /// x̂0 ← (xt − c1·ε)/c0.
    Tweedie {
        xt: &'a B::Buffer,
        eps: &'a B::Buffer,
        x0: &'a mut B::Buffer,
    },
    /// xt ← c0·x̂0 + c1·z + c2·ε.
    Renoise {
        x0: &'a B::Buffer,
        eps: &'a B::Buffer,
        z: &'a B::Buffer,
        xt: &'a mut B::Buffer,
    },
}

/// The CG state's dtype for network tensors of `dtype`: f64 stays f64 (the
/// oracle path), everything else is solved in f32 — ⟨r, r⟩ over a whole image
/// overflows f16 at once.
pub fn cg_state_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// A linear operator A as CG data consistency needs it: its adjoint (for the
/// right-hand side Aᵀy) and its normal operator AᵀA (AᴴA for complex data in
/// interleaved form: the real inner product of the interleaved vectors is
/// Re⟨·,·⟩, so CG needs nothing else for Hermitian K).
pub trait NormalMap<B: OperatorOps> {
    /// The shape of one sample of x.
    fn x_item(&self) -> Shape;

    /// The shape of one sample of y.
    fn y_item(&self) -> Shape;

    /// `out ← Aᵀ y` for a batch.
    fn adjoint(&self, backend: &B, y: &Tensor<B>, out: &mut Tensor<B>) -> Result<()>;

    /// `AᵀA = c·P` with P block-local, which the CG passes then compute inline
    /// (`None`: they read AᵀA v from [`NormalMap::normal`]).
    fn inline_gram(&self) -> Option<InlineGram<'_, B>> {
        None
    }

    /// `out ← AᵀA x` for a batch.
    fn normal(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()>;

    /// Kernel launches of one [`NormalMap::normal`].
    fn launches_per_normal(&self) -> u64;
}

/// A block-local AᵀA = `scale`·P: the operator whose Project program is P.
pub struct InlineGram<'a, B: OperatorOps> {
    pub(crate) op: &'a Operator<B>,
    pub(crate) scale: f64,
}

impl<B: OperatorOps> NormalMap<B> for Operator<B> {
    fn x_item(&self) -> Shape {
        Operator::x_item(self)
    }

    fn y_item(&self) -> Shape {
        Operator::y_item(self)
    }

    fn adjoint(&self, backend: &B, y: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        self.apply(backend, Mode::Adjoint, y, out)
    }

    /// Inpainting (AᵀA = P), s×s pooling (P/s²) and colorization (‖h‖²·P).
    fn inline_gram(&self) -> Option<InlineGram<'_, B>> {
        self.kind().is_block_local().then(|| InlineGram {
            op: self,
            scale: 1.0 / self.pinv_gram_scale(),
        })
    }

    fn normal(&self, backend: &B, x: &Tensor<B>, out: &mut Tensor<B>) -> Result<()> {
        let batch = x.shape().batch();
        let y_shape = Shape::from_dims(&[&[batch][..], self.y_item().dims()].concat())?;
        let mut y = Temp::new(backend, y_shape, x.dtype())?;
        self.apply(backend, Mode::Forward, x, &mut y)?;
        self.apply(backend, Mode::Adjoint, &y, out)
    }

    fn launches_per_normal(&self) -> u64 {
        2 * self.launches_per_apply()
    }
}

/// K = `identity`·I + `gram`·AᵀA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormalSystem {
    pub identity: f64,
    pub gram: f64,
}

impl NormalSystem {
    /// DDS's noisy system `I + γAᵀA`.
    pub fn tikhonov(gamma: f64) -> Self {
        NormalSystem {
            identity: 1.0,
            gram: gamma,
        }
    }

    /// The normal equations `AᵀA x = Aᵀy` (singular; CG stays in the row space).
    pub fn normal_equations() -> Self {
        NormalSystem {
            identity: 0.0,
            gram: 1.0,
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.identity) {
            return Err(invalid(
                "CG identity weight",
                self.identity,
                "must be finite and ≥ 0",
            ));
        }
        if !(ok(self.gram) && (self.gram > 0.0 || self.identity > 0.0)) {
            return Err(invalid(
                "CG Gram weight γ",
                self.gram,
                "must be finite and ≥ 0, and K = identity·I + γ·AᵀA must not be 0",
            ));
        }
        Ok(())
    }
}

/// How many iterations CG runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgOptions {
    /// Iterations M ≥ 1 (each one application of K).
    pub iterations: usize,
    /// Stop a sample once ‖r‖ < tolerance, checked before each iteration after
    /// the first (the official rule, per sample); `None`: always M.
    pub tolerance: Option<f64>,
}

impl Default for CgOptions {
    /// DDS's default: 5 iterations, no early stop.
    fn default() -> Self {
        CgOptions {
            iterations: 5,
            tolerance: None,
        }
    }
}

impl CgOptions {
    fn validate(&self) -> Result<()> {
        if self.iterations == 0 {
            return Err(invalid("CG iterations M", 0.0, "must be ≥ 1"));
        }
        if let Some(t) = self.tolerance {
            if !(t.is_finite() && t >= 0.0) {
                return Err(invalid("CG tolerance", t, "must be finite and ≥ 0"));
            }
        }
        Ok(())
    }
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value,
        reason,
    }
}

/// Blocks per dimension every backend can launch (WGSL's dispatch limit).
const MAX_GRID: usize = 65_535;

/// A conjugate-gradient solver for one batch shape: its vectors, partial sums
/// and iteration counters live on the device and are reused by every solve.
pub struct ConjugateGradient<'o, B: KrylovOps> {
    normal: &'o dyn NormalMap<B>,
    system: NormalSystem,
    options: CgOptions,
    shape: Shape,
    dtype: DType,
    chunks: usize,
    r: Tensor<B>,
    p: Tensor<B>,
    q: Tensor<B>,
    /// AᵀA v for operators without an inline Gram matrix (scratch otherwise).
    t: Tensor<B>,
    /// Whether AᵀA is c·P with P computed inline.
    inline: bool,
    partials: Tensor<B>,
    iterations: Tensor<B>,
}

impl<'o, B: KrylovOps> ConjugateGradient<'o, B> {
    /// A solver for x of `[batch, …normal.x_item()]` in `dtype` (f32, or f64
    /// on the CPU).
    pub fn new(
        backend: &B,
        normal: &'o dyn NormalMap<B>,
        batch: usize,
        dtype: DType,
        system: NormalSystem,
        options: CgOptions,
    ) -> Result<Self> {
        if !backend.cg_supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: backend.kind().name(),
                dtype,
            });
        }
        system.validate()?;
        options.validate()?;
        let shape = Shape::from_dims(&[&[batch][..], normal.x_item().dims()].concat())?;
        let item = shape.item_len();
        let chunks = item.div_ceil(CG_CHUNK);
        if chunks > MAX_GRID || batch > MAX_GRID {
            return Err(Error::InvalidShape {
                shape,
                reason: "CG launches one block per 1024 elements of a sample and one row per sample: at most 65535 of each",
            });
        }
        let zeros = || Tensor::zeros(backend, shape, dtype);
        Ok(ConjugateGradient {
            normal,
            system,
            options,
            shape,
            dtype,
            chunks,
            r: zeros()?,
            p: zeros()?,
            q: zeros()?,
            t: zeros()?,
            inline: normal.inline_gram().is_some(),
            partials: Tensor::zeros(backend, Shape::flat(4 * batch * chunks), dtype)?,
            iterations: Tensor::zeros(backend, Shape::flat(batch), DType::U32)?,
        })
    }

    /// The shape of x and of the right-hand side's vector.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Kernel launches of one [`ConjugateGradient::solve`]: 1 + 2M, plus an
    /// AᵀA per K application for operators without an inline Gram matrix.
    pub fn launches_per_solve(&self) -> u64 {
        let m = self.options.iterations as u64;
        let per_k = if self.inline {
            0
        } else {
            self.normal.launches_per_normal()
        };
        1 + 2 * m + (m + 1) * per_k
    }

    /// Solve `K x = rhs_x·x₀ + rhs_d·d` in place, warm-started at x = x₀.
    pub fn solve(
        &mut self,
        backend: &B,
        x: &mut Tensor<B>,
        d: &Tensor<B>,
        rhs_x: f64,
        rhs_d: f64,
    ) -> Result<()> {
        for (what, t) in [("CG solution x", &*x), ("CG right-hand side d", d)] {
            if t.shape() != self.shape {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: self.shape,
                    got: t.shape(),
                });
            }
            if t.dtype() != self.dtype {
                return Err(Error::DTypeMismatch {
                    what,
                    expected: self.dtype,
                    got: t.dtype(),
                });
            }
        }
        for (name, v) in [("CG rhs_x", rhs_x), ("CG rhs_d", rhs_d)] {
            if !v.is_finite() {
                return Err(invalid(name, v, "must be finite"));
            }
        }
        self.gram_of(backend, x, true)?;
        self.pass(backend, cg_pass::RESIDUAL, 0, x, d, rhs_x, rhs_d)?;
        for k in 0..self.options.iterations {
            self.gram_of(backend, x, false)?;
            self.pass(backend, cg_pass::DIRECTION, k, x, d, rhs_x, rhs_d)?;
            self.pass(backend, cg_pass::UPDATE, k, x, d, rhs_x, rhs_d)?;
        }
        Ok(())
    }

    /// Iterations each sample ran in the last solve (fewer than M where the
    /// tolerance stopped it); K was applied once more than that. A host sync.
    pub fn iterations_run(&self, backend: &B) -> Result<Vec<usize>> {
        let counts = self.iterations.download(backend)?;
        Ok(counts.into_f64().into_iter().map(|v| v as usize).collect())
    }

    /// ‖r‖ per sample after the last solve, summed on the host from the
    /// device's partial sums (the same values the device compared). A host sync.
    pub fn residual_norms(&self, backend: &B) -> Result<Vec<f64>> {
        let sums = self.slot_sums(backend, self.options.iterations % 2)?;
        Ok(sums.into_iter().map(f64::sqrt).collect())
    }

    /// ⟨a, b⟩ per sample, summed like the solver's own reductions: one launch
    /// and a host read of the partial sums — the building block of an unfused
    /// CG, which reads every scalar back (the baseline the benchmark times).
    pub fn inner_products(
        &mut self,
        backend: &B,
        a: &Tensor<B>,
        b: &Tensor<B>,
    ) -> Result<Vec<f64>> {
        for t in [a, b] {
            if t.shape() != self.shape || t.dtype() != self.dtype {
                return Err(Error::ShapeMismatch {
                    what: "CG inner product operand (the solver's shape and dtype)",
                    expected: self.shape,
                    got: t.shape(),
                });
            }
        }
        let (batch, item) = (self.shape.batch(), self.shape.item_len());
        let scalars = CgScalars::NONE;
        let params = scalars.params(no_program(batch, item), cg_pass::DOT, 0, self.shape, true);
        // The solver's own vectors fill the pass's writable slots, unwritten.
        backend.cg_pass_checked(CgCall {
            params,
            scalars,
            op_scalars: NO_OPERATOR,
            dtype: self.dtype,
            x: self.r.buffer_mut(),
            r: self.p.buffer_mut(),
            p: self.q.buffer_mut(),
            q: self.t.buffer_mut(),
            partials: self.partials.buffer_mut(),
            iterations: self.iterations.buffer_mut(),
            d: a.buffer(),
            t: b.buffer(),
            table: None,
        })?;
        self.slot_sums(backend, 2)
    }

    /// The sums in partial `slot` per sample, added up on the host. A host sync.
    fn slot_sums(&self, backend: &B, slot: usize) -> Result<Vec<f64>> {
        let (batch, chunks) = (self.shape.batch(), self.chunks);
        let partials = self.partials.to_f64(backend)?;
        Ok((0..batch)
            .map(|b| {
                let start = (slot * batch + b) * chunks;
                partials[start..start + chunks].iter().sum::<f64>()
            })
            .collect())
    }

    /// t ← AᵀA of x (before the residual) or of r, where P is not inline.
    fn gram_of(&mut self, backend: &B, x: &Tensor<B>, of_x: bool) -> Result<()> {
        if self.inline {
            return Ok(());
        }
        let v = if of_x { x } else { &self.r };
        self.normal.normal(backend, v, &mut self.t)
    }

    #[allow(clippy::too_many_arguments)]
    fn pass(
        &mut self,
        backend: &B,
        pass: u32,
        k: usize,
        x: &mut Tensor<B>,
        d: &Tensor<B>,
        rhs_x: f64,
        rhs_d: f64,
    ) -> Result<()> {
        let (batch, item) = (self.shape.batch(), self.shape.item_len());
        let inline = self.normal.inline_gram();
        let (op, op_scalars, gram, table) = match &inline {
            Some(g) => {
                let (params, scalars) = g.op.mode_params(Mode::Project, batch, item, item);
                (
                    params,
                    scalars,
                    g.scale * self.system.gram,
                    Some(g.op.table_buffer()),
                )
            }
            // No operator program: the t buffer holds AᵀA v.
            None => (no_program(batch, item), NO_OPERATOR, self.system.gram, None),
        };
        let scalars = CgScalars {
            identity: self.system.identity,
            gram,
            rhs_x,
            rhs_d,
            tolerance2: self.options.tolerance.map_or(-1.0, |t| t * t),
            stall2: stall2(self.dtype),
            c: [0.0; 3],
        };
        let params = scalars.params(op, pass, k, self.shape, inline.is_none());
        let t = if self.inline { d } else { &self.t }.buffer();
        backend.cg_pass_checked(CgCall {
            params,
            scalars,
            op_scalars,
            dtype: self.dtype,
            x: x.buffer_mut(),
            r: self.r.buffer_mut(),
            p: self.p.buffer_mut(),
            q: self.q.buffer_mut(),
            partials: self.partials.buffer_mut(),
            iterations: self.iterations.buffer_mut(),
            d: d.buffer(),
            t,
            table,
        })
    }
}

/// Operator params that name no program (the CG passes then read AᵀA v from t).
fn no_program(batch: usize, item: usize) -> OperatorParams {
    OperatorParams {
        n_out: (batch * item) as u32,
        out_item: item as u32,
        in_item: item as u32,
        program: program::NONE,
        channels: 0,
        height: 0,
        width: 0,
        factor: 1,
        rank_offset: 0,
        _pad: [0; 3],
        scale: 1.0,
        h: [0.0; 3],
        g: [0.0; 3],
        _pad2: 0.0,
    }
}

/// Check a DDS pass's tensors: x of the state dtype, the network tensors of
/// one supported dtype, all of x's shape. Returns that dtype.
fn check_dds<B: KrylovOps>(
    backend: &B,
    x: &Tensor<B>,
    net: &[(&'static str, &Tensor<B>)],
) -> Result<DType> {
    let dtype = net[0].1.dtype();
    if !backend.dds_supports(dtype) {
        return Err(Error::UnsupportedDType {
            backend: backend.kind().name(),
            dtype,
        });
    }
    let state = cg_state_dtype(dtype);
    if x.dtype() != state {
        return Err(Error::DTypeMismatch {
            what: "DDS x̂0 (the CG state)",
            expected: state,
            got: x.dtype(),
        });
    }
    for &(what, t) in net {
        if t.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                what,
                expected: dtype,
                got: t.dtype(),
            });
        }
        if t.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                what,
                expected: x.shape(),
                got: t.shape(),
            });
        }
    }
    if x.shape().batch() > MAX_GRID || x.shape().item_len().div_ceil(CG_LANES) > MAX_GRID {
        return Err(Error::InvalidShape {
            shape: x.shape(),
            reason: "DDS passes launch one row of blocks per sample: at most 65535 samples of 16.7M elements",
        });
    }
    Ok(dtype)
}

fn dds_params(x: &Shape, pass: u32, c: [f64; 3]) -> CgParams {
    let op = no_program(x.batch(), x.item_len());
    CgScalars {
        c,
        ..CgScalars::NONE
    }
    .params(op, pass, 0, *x, false)
}

/// Tweedie's x̂0 = (xt − `sigma`·ε)/`alpha` into the CG state `x0` (one launch).
pub fn dds_tweedie<B: KrylovOps>(
    backend: &B,
    xt: &Tensor<B>,
    eps: &Tensor<B>,
    alpha: f64,
    sigma: f64,
    x0: &mut Tensor<B>,
) -> Result<()> {
    if !(alpha.is_finite() && alpha > 0.0 && sigma.is_finite() && sigma >= 0.0) {
        return Err(invalid(
            "DDS α_t (σ_t ≥ 0 too)",
            alpha,
            "must be finite and > 0",
        ));
    }
    let dtype = check_dds(backend, x0, &[("DDS network input xt", xt), ("DDS ε", eps)])?;
    let c = [alpha, sigma, 0.0];
    backend.dds_pass_checked(DdsCall {
        params: dds_params(&x0.shape(), dds_pass::TWEEDIE, c),
        c,
        dtype,
        buffers: DdsBuffers::Tweedie {
            xt: xt.buffer(),
            eps: eps.buffer(),
            x0: x0.buffer_mut(),
        },
    })
}

/// The next network input `xt = c0·x̂0 + c1·z + c2·ε` (one launch).
pub fn dds_renoise<B: KrylovOps>(
    backend: &B,
    x0: &Tensor<B>,
    eps: &Tensor<B>,
    z: &Tensor<B>,
    c: [f64; 3],
    xt: &mut Tensor<B>,
) -> Result<()> {
    if let Some(&bad) = c.iter().find(|v| !v.is_finite()) {
        return Err(invalid("DDS re-noise coefficient", bad, "must be finite"));
    }
    let dtype = check_dds(
        backend,
        x0,
        &[
            ("DDS network input xt", xt),
            ("DDS ε", eps),
            ("DDS noise z", z),
        ],
    )?;
    backend.dds_pass_checked(DdsCall {
        params: dds_params(&x0.shape(), dds_pass::RENOISE, c),
        c,
        dtype,
        buffers: DdsBuffers::Renoise {
            x0: x0.buffer(),
            eps: eps.buffer(),
            z: z.buffer(),
            xt: xt.buffer_mut(),
        },
    })
}
