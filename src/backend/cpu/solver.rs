//! The solver family on the CPU: the definition of the fused update
//! (`docs/math.md` §2) and its fast paths.
//!
//! f16 and f32 storage compute in f32 with the plan's scalars rounded to f32,
//! exactly like the device kernels; f64 storage computes in f64 with the
//! unrounded scalars (the oracle path the fixture replays use).
//!
//! Two paths, bit-identical by construction and by unit test:
//! - the generic path (`step_row`) converts a row of each operand to the math
//!   type (`half`'s slice conversions, F16C on x86), does one pass per output
//!   and converts back; it defines the semantics and is the only one that
//!   draws noise;
//! - fast paths for noise-free steps (all DPM-Solver++ and UniPC steps, DDIM
//!   with η = 0) fuse everything into one loop per combination of present
//!   slots: `f16_avx2` (AVX2 + F16C, conversions in registers) and `direct`
//!   (f32 and f64, straight over the tensors).

/// Call `$f::<flags…>(args)` with const bool flags chosen at run time, so each
/// combination gets its own loop without a branch inside it.
macro_rules! with_flags {
    ($f:ident [$($fixed:tt)*] ($($arg:expr),*)) => {
        $f::<$($fixed)*>($($arg),*)
    };
    ($f:ident [$($fixed:tt)*] ($($arg:expr),*) $flag:expr $(, $rest:expr)*) => {
        if $flag {
            with_flags!($f [$($fixed)* true,] ($($arg),*) $($rest),*)
        } else {
            with_flags!($f [$($fixed)* false,] ($($arg),*) $($rest),*)
        }
    };
}

mod direct;
#[cfg(target_arch = "x86_64")]
mod f16_avx2;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{CpuBackend, Element, Math, ROW};
use crate::error::{Error, Result};
use crate::ops::{SolverOps, SolverStepCall};
use crate::solver::{CorrectorBase, SolverStep, StepLaunch};
use crate::tensor::DType;

/// Elements per parallel work item: large enough that rayon's per-task cost is
/// noise next to the memory traffic of the item.
const CHUNK: usize = 32 * 1024;

/// A storage element's row conversions to and from its math type, and the
/// fused fast path of the update.
trait Storage: Element {
    fn load(src: &[Self], dst: &mut [Self::M]);
    fn store(src: &[Self::M], dst: &mut [Self]);
    /// A fast path that handles a prefix of the chunk (possibly all of it)
    /// bit-identically to the generic one; returns how many elements it
    /// processed (0 if it does not apply, e.g. to a step with noise).
    fn fused_prefix(_k: &Scalars<Self::M>, _c: &mut ChunkViews<'_, Self>) -> usize {
        0
    }
}

impl Storage for f16 {
    fn load(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
    #[cfg(target_arch = "x86_64")]
    fn fused_prefix(k: &Scalars<f32>, c: &mut ChunkViews<'_, Self>) -> usize {
        // Noise needs the per-element Philox draw; leave it to the generic path.
        if k.noise != 0.0 || !*AVX2_F16C {
            return 0;
        }
        // SAFETY: AVX2 and F16C were detected on this CPU.
        unsafe { f16_avx2::fused_prefix(k, c) }
    }
}

/// Detected once: `is_x86_feature_detected!` is cheap but not free per chunk.
#[cfg(target_arch = "x86_64")]
static AVX2_F16C: std::sync::LazyLock<bool> = std::sync::LazyLock::new(f16_avx2::available);

impl Storage for f32 {
    fn load(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn fused_prefix(k: &Scalars<f32>, c: &mut ChunkViews<'_, Self>) -> usize {
        direct::fused(k, c)
    }
}

impl Storage for f64 {
    fn load(src: &[Self], dst: &mut [f64]) {
        dst.copy_from_slice(src);
    }
    fn store(src: &[f64], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn fused_prefix(k: &Scalars<f64>, c: &mut ChunkViews<'_, Self>) -> usize {
        direct::fused(k, c)
    }
}

/// The plan's scalars in the math type.
struct Scalars<M> {
    cx: M,
    ce: M,
    a: M,
    b: [M; 3],
    corr: Option<(CorrectorBase, M, [M; 3])>,
    noise: M,
}

impl<M: Math> Scalars<M> {
    fn new(s: &SolverStep) -> Self {
        let m = M::from_f64;
        Scalars {
            cx: m(s.cx),
            ce: m(s.ce),
            a: m(s.a),
            b: s.b.map(m),
            corr: s.corrector.map(|c| (c.base, m(c.a), c.c.map(m))),
            noise: m(s.noise),
        }
    }
}

/// One chunk's views into the step's buffers.
struct ChunkViews<'a, S> {
    start: usize,
    x: &'a mut [S],
    m: &'a [S],
    d: Option<&'a mut [S]>,
    xc: Option<&'a mut [S]>,
    h1: Option<&'a [S]>,
    h2: Option<&'a [S]>,
}

impl<'a, S> ChunkViews<'a, S> {
    /// The first `at` elements and the rest.
    fn split_at(self, at: usize) -> (Self, Self) {
        let (x, x_rest) = self.x.split_at_mut(at);
        let (m, m_rest) = self.m.split_at(at);
        let split_mut = |s: Option<&'a mut [S]>| match s.map(|s| s.split_at_mut(at)) {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        let split = |s: Option<&'a [S]>| match s.map(|s| s.split_at(at)) {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        let (d, d_rest) = split_mut(self.d);
        let (xc, xc_rest) = split_mut(self.xc);
        let (h1, h1_rest) = split(self.h1);
        let (h2, h2_rest) = split(self.h2);
        let head = ChunkViews {
            start: self.start,
            x,
            m,
            d,
            xc,
            h1,
            h2,
        };
        let rest = ChunkViews {
            start: self.start + at,
            x: x_rest,
            m: m_rest,
            d: d_rest,
            xc: xc_rest,
            h1: h1_rest,
            h2: h2_rest,
        };
        (head, rest)
    }
}

/// Split `state` into its slots of `n` elements (the stride padding is never touched).
fn split_slots<S>(state: &mut [S], n: usize, stride: usize) -> Vec<Option<&mut [S]>> {
    state
        .chunks_mut(stride)
        .map(|c| Some(&mut c[..n]))
        .collect()
}

fn take_mut<'a, S>(slots: &mut [Option<&'a mut [S]>], slot: Option<u32>) -> Option<&'a mut [S]> {
    slot.and_then(|s| slots.get_mut(s as usize)?.take())
}

fn solver_step_typed<S: Storage>(
    step: &SolverStep,
    launch: StepLaunch,
    n: usize,
    stride: usize,
    x: &mut [S],
    model_out: &[S],
    state: &mut [S],
) {
    let k: Scalars<S::M> = Scalars::new(step);
    let mut slots = split_slots(state, n, stride);
    // Distinct slots are guaranteed by the plan; `take` makes aliasing impossible anyway.
    let d = take_mut(&mut slots, step.d_slot);
    let xc = take_mut(&mut slots, step.xc_slot);
    let h1 = take_mut(&mut slots, step.h1).map(|s| &*s);
    let h2 = take_mut(&mut slots, step.h2).map(|s| &*s);

    let mut chunks = Vec::with_capacity(n.div_ceil(CHUNK));
    let mut d_it = d.map(|s| s.chunks_mut(CHUNK));
    let mut xc_it = xc.map(|s| s.chunks_mut(CHUNK));
    let mut h1_it = h1.map(|s| s.chunks(CHUNK));
    let mut h2_it = h2.map(|s| s.chunks(CHUNK));
    for (i, (x, m)) in x.chunks_mut(CHUNK).zip(model_out.chunks(CHUNK)).enumerate() {
        chunks.push(ChunkViews {
            start: i * CHUNK,
            x,
            m,
            d: d_it.as_mut().and_then(Iterator::next),
            xc: xc_it.as_mut().and_then(Iterator::next),
            h1: h1_it.as_mut().and_then(Iterator::next),
            h2: h2_it.as_mut().and_then(Iterator::next),
        });
    }
    chunks
        .into_par_iter()
        .for_each_init(Scratch::empty, |scratch, c| {
            step_chunk::<S>(&k, launch, c, scratch)
        });
}

/// Scratch rows of the generic path in the math type, one set per rayon
/// split, reused across chunks so the hot loop neither allocates nor clears
/// memory. Allocated on first use: the fast paths never need them.
struct Scratch<M> {
    x: Vec<M>,
    d: Vec<M>,
    h1: Vec<M>,
    h2: Vec<M>,
    xc: Vec<M>,
    out: Vec<M>,
}

impl<M: Math> Scratch<M> {
    fn empty() -> Self {
        Scratch {
            x: Vec::new(),
            d: Vec::new(),
            h1: Vec::new(),
            h2: Vec::new(),
            xc: Vec::new(),
            out: Vec::new(),
        }
    }

    fn ready(&mut self) -> &mut Self {
        if self.x.is_empty() {
            for row in [
                &mut self.x,
                &mut self.d,
                &mut self.h1,
                &mut self.h2,
                &mut self.xc,
                &mut self.out,
            ] {
                *row = vec![M::ZERO; ROW];
            }
        }
        self
    }
}

/// One work item: the fast path of the storage type where it applies, the
/// generic path a row at a time for the rest.
fn step_chunk<S: Storage>(
    k: &Scalars<S::M>,
    launch: StepLaunch,
    mut c: ChunkViews<'_, S>,
    scratch: &mut Scratch<S::M>,
) {
    let done = S::fused_prefix(k, &mut c);
    let (_, rest) = c.split_at(done);
    step_generic::<S>(k, launch, rest, scratch);
}

/// The generic path over a whole chunk, a row at a time.
fn step_generic<S: Storage>(
    k: &Scalars<S::M>,
    launch: StepLaunch,
    mut rest: ChunkViews<'_, S>,
    scratch: &mut Scratch<S::M>,
) {
    while !rest.x.is_empty() {
        let len = rest.x.len().min(ROW);
        let (piece, tail) = rest.split_at(len);
        step_row::<S>(k, launch, piece, scratch.ready());
        rest = tail;
    }
}

/// The generic path on at most [`ROW`] elements: convert every row to the
/// math type, one pass per output, convert back.
fn step_row<S: Storage>(
    k: &Scalars<S::M>,
    launch: StepLaunch,
    c: ChunkViews<'_, S>,
    s: &mut Scratch<S::M>,
) {
    let len = c.x.len();
    let x = &mut s.x[..len];
    S::load(c.x, x);
    // D = cx·x − ce·m, computed in place over the loaded model output.
    let d = &mut s.d[..len];
    S::load(c.m, d);
    for (di, &xi) in d.iter_mut().zip(x.iter()) {
        *di = k.cx * xi - k.ce * *di;
    }
    if let Some(dst) = c.d {
        S::store(d, dst);
    }
    let load_row = |src: Option<&[S]>, row: &'_ mut Vec<S::M>| {
        if let Some(src) = src {
            S::load(src, &mut row[..len]);
        }
    };
    load_row(c.h1, &mut s.h1);
    load_row(c.h2, &mut s.h2);
    let h1 = if c.h1.is_some() {
        &s.h1[..len]
    } else {
        &S::M::ZERO_ROW[..len]
    };
    let h2 = if c.h2.is_some() {
        &s.h2[..len]
    } else {
        &S::M::ZERO_ROW[..len]
    };

    // One pass per output, each sum left to right exactly as the kernels write it.
    let base: &[S::M] = match (k.corr, c.xc) {
        (Some((from, ac, cc)), Some(xc_buf)) => {
            let xc = &mut s.xc[..len];
            match from {
                CorrectorBase::Slot => S::load(xc_buf, xc),
                CorrectorBase::X => xc.copy_from_slice(x),
            }
            for i in 0..len {
                xc[i] = ac * xc[i] + cc[0] * d[i] + cc[1] * h1[i] + cc[2] * h2[i];
            }
            S::store(xc, xc_buf);
            xc
        }
        _ => x,
    };

    let out = &mut s.out[..len];
    for i in 0..len {
        out[i] = k.a * base[i] + k.b[0] * d[i] + k.b[1] * h1[i] + k.b[2] * h2[i];
    }
    if k.noise != S::M::ZERO {
        for (i, o) in out.iter_mut().enumerate() {
            let idx = (c.start + i) as u32;
            *o = *o + k.noise * S::M::normal(launch.seed, launch.step, idx);
        }
    }
    S::store(out, c.x);
}

impl SolverOps for CpuBackend {
    fn solver_supports(&self, dtype: DType) -> bool {
        dtype.is_real_float()
    }

    fn solver_step_checked(&self, call: SolverStepCall<'_, Self>) -> Result<()> {
        launch_on_storage!(self, call.dtype, step_call(call))
    }
}

/// The checked call on storage `S`; `None` if the buffers are not of `S`
/// (the checked call gave all three the call's dtype, so that never happens).
fn step_call<S: Storage>(call: SolverStepCall<'_, CpuBackend>) -> Option<()> {
    let (n, state_len) = (call.n, call.state_len);
    // The checked call guarantees the lengths these slices take.
    let x = &mut S::slice_mut(call.x)?[..n];
    let m = &S::slice(call.model_out)?[..n];
    let state = &mut S::slice_mut(call.state)?[..state_len];
    solver_step_typed(call.step, call.launch, n, call.stride, x, m, state);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBuffer;
    use crate::ops::solver_step_raw;
    use crate::solver::{slot_stride, Corrector};

    /// Inputs with every awkward value class: signed zeros, infinities, NaN,
    /// subnormals, and ordinary values of both signs.
    fn awkward<M: Math + From<f32>>(seed: usize, len: usize) -> Vec<M> {
        let special = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40];
        (0..len)
            .map(|i| match (i * 31 + seed * 7) % 53 {
                j if j < special.len() => special[j],
                j => (j as f32 - 26.0) / 13.0,
            })
            .map(M::from)
            .collect()
    }

    fn bits<M: Math + Into<f64>>(v: &[M]) -> Vec<u64> {
        v.iter().map(|&x| x.into().to_bits()).collect()
    }

    /// One step with every slot and the corrector, and variants without each
    /// optional part (every combination the fast paths specialise on).
    fn step_variants() -> Vec<SolverStep> {
        let corr = |base| Corrector {
            base,
            a: 0.93,
            c: [0.1, 0.2, -0.05],
        };
        let full = SolverStep {
            cx: 1.1,
            ce: 0.7,
            d_slot: Some(0),
            h1: Some(1),
            h2: Some(2),
            xc_slot: Some(3),
            corrector: Some(corr(CorrectorBase::Slot)),
            a: 0.8,
            b: [0.3, -0.2, 0.1],
            noise: 0.0,
        };
        vec![
            full,
            SolverStep {
                corrector: Some(corr(CorrectorBase::X)),
                ..full
            },
            SolverStep {
                d_slot: None,
                h2: None,
                ..full
            },
            SolverStep {
                corrector: None,
                xc_slot: None,
                h1: None,
                ..full
            },
            SolverStep {
                d_slot: None,
                h1: None,
                h2: None,
                corrector: None,
                xc_slot: None,
                ..full
            },
        ]
    }

    /// The direct f32/f64 path is bit-identical to the generic path for every
    /// combination of present outputs, over row boundaries and odd lengths.
    fn direct_path_matches_generic<M>()
    where
        M: Math + Element<M = M> + Storage + From<f32> + Into<f64>,
    {
        let variants = step_variants();
        let launch = StepLaunch { step: 0, seed: 0 };
        for n in [1, 7, ROW - 1, ROW + 3, 2 * ROW + 5] {
            let stride = slot_stride(n);
            for step in &variants {
                let k = Scalars::<M>::new(step);
                let run = |fast: bool| {
                    let (mut x, m) = (awkward::<M>(1, n), awkward::<M>(2, n));
                    let mut state = awkward::<M>(3, 4 * stride);
                    let mut slots = split_slots(&mut state, n, stride);
                    let mut c = ChunkViews {
                        start: 0,
                        x: &mut x,
                        m: &m,
                        d: take_mut(&mut slots, step.d_slot),
                        xc: take_mut(&mut slots, step.xc_slot),
                        h1: take_mut(&mut slots, step.h1).map(|s| &*s),
                        h2: take_mut(&mut slots, step.h2).map(|s| &*s),
                    };
                    if fast {
                        assert_eq!(M::fused_prefix(&k, &mut c), n);
                    } else {
                        step_generic::<M>(&k, launch, c, &mut Scratch::empty());
                    }
                    drop(slots);
                    (bits(&x), bits(&state))
                };
                assert_eq!(run(true), run(false), "n={n} {step:?}");
            }
        }
    }

    #[test]
    fn direct_f32_path_matches_generic() {
        direct_path_matches_generic::<f32>();
    }

    #[test]
    fn direct_f64_path_matches_generic() {
        direct_path_matches_generic::<f64>();
    }

    /// f16 results must equal the f32 path's results rounded once to f16: both
    /// compute the same f32 expression, whatever the f16 code path (SIMD prefix
    /// or generic tail).
    #[test]
    fn f16_path_is_the_f32_path_rounded_once() {
        let mut variants = step_variants();
        variants.push(SolverStep {
            noise: 0.25,
            ..variants[0]
        });
        let cpu = CpuBackend::new();
        for n in [1, 7, 8, 9, 1023, 1024, 1025, 5000, CHUNK + ROW + 9] {
            let stride = slot_stride(n);
            let vals = |seed: usize, len: usize| -> Vec<f16> {
                (0..len)
                    .map(|i| f16::from_f32((((i * 37 + seed * 11) % 97) as f32 - 48.0) / 24.0))
                    .collect()
            };
            for v in &variants {
                let launch = StepLaunch { step: 1, seed: 9 };
                let (x, m, st) = (vals(1, n), vals(2, n), vals(3, 4 * stride));
                let mut bufs16 = (CpuBuffer::F16(x.clone()), CpuBuffer::F16(st.clone()));
                let widen = |h: &[f16]| h.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let mut bufs32 = (CpuBuffer::F32(widen(&x)), CpuBuffer::F32(widen(&st)));
                solver_step_raw(
                    &cpu,
                    v,
                    launch,
                    DType::F16,
                    n,
                    stride,
                    &mut bufs16.0,
                    &CpuBuffer::F16(m.clone()),
                    &mut bufs16.1,
                )
                .unwrap();
                solver_step_raw(
                    &cpu,
                    v,
                    launch,
                    DType::F32,
                    n,
                    stride,
                    &mut bufs32.0,
                    &CpuBuffer::F32(widen(&m)),
                    &mut bufs32.1,
                )
                .unwrap();
                for (b16, b32) in [(&bufs16.0, &bufs32.0), (&bufs16.1, &bufs32.1)] {
                    let (CpuBuffer::F16(h), CpuBuffer::F32(f)) = (b16, b32) else {
                        unreachable!()
                    };
                    for (i, (a, b)) in h.iter().zip(f).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            f16::from_f32(*b).to_bits(),
                            "n={n} element {i} of {v:?}"
                        );
                    }
                }
            }
        }
    }
}
