//! The CPU reference backend: obvious loops, parallel over chunks of elements.
//!
//! f16 and f32 storage compute in f32 with the plan's scalars rounded to f32,
//! exactly like the device kernels; f64 storage computes in f64 with the
//! unrounded scalars (the oracle path the fixture replays use). f16 is
//! converted a chunk at a time with `half`'s slice conversions (F16C on x86),
//! which is several times faster than converting element by element.

#[cfg(target_arch = "x86_64")]
mod f16_avx2;

use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::rng;
use crate::solver::{CorrectorBase, SolverStep, StepLaunch};
use crate::tensor::{DType, HostSlice, HostVec};

/// Elements per work item: large enough to amortise scheduling, small enough
/// that the six scratch rows of one chunk stay in L1/L2.
const CHUNK: usize = 4096;

/// Storage of one CPU tensor.
#[derive(Clone, Debug)]
pub enum CpuBuffer {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// The reference backend.
#[derive(Default)]
pub struct CpuBackend {
    launches: AtomicU64,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The arithmetic type a storage type computes in.
trait Math:
    Copy
    + Send
    + Sync
    + PartialEq
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Sub<Output = Self>
{
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
    fn normal(seed: u64, step: u32, index: u32) -> Self;
}

impl Math for f32 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn normal(seed: u64, step: u32, index: u32) -> Self {
        rng::normal_f32(seed, step, index)
    }
}

impl Math for f64 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn normal(seed: u64, step: u32, index: u32) -> Self {
        rng::normal_f64(seed, step, index)
    }
}

/// A storage element and its chunk conversions to and from its math type.
trait Storage: Copy + Send + Sync {
    type M: Math;
    fn load(src: &[Self], dst: &mut [Self::M]);
    fn store(src: &[Self::M], dst: &mut [Self]);
    /// A SIMD path that handles a prefix of the chunk bit-identically to the
    /// generic one; returns how many elements it processed (0 if none).
    fn fused_prefix(_k: &Scalars<Self::M>, _c: &mut ChunkViews<'_, Self>) -> usize {
        0
    }
}

impl Storage for f16 {
    type M = f32;
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
    type M = f32;
    fn load(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl Storage for f64 {
    type M = f64;
    fn load(src: &[Self], dst: &mut [f64]) {
        dst.copy_from_slice(src);
    }
    fn store(src: &[f64], dst: &mut [Self]) {
        dst.copy_from_slice(src);
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
    /// The views from element `at` of the chunk on.
    fn tail(self, at: usize) -> Self {
        ChunkViews {
            start: self.start + at,
            x: &mut self.x[at..],
            m: &self.m[at..],
            d: self.d.map(|s| &mut s[at..]),
            xc: self.xc.map(|s| &mut s[at..]),
            h1: self.h1.map(|s| &s[at..]),
            h2: self.h2.map(|s| &s[at..]),
        }
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
        .for_each_init(Scratch::new, |scratch, c| {
            step_chunk::<S>(&k, launch, c, scratch)
        });
}

/// Per-thread scratch rows in the math type, reused across chunks so the hot
/// loop neither allocates nor clears memory.
struct Scratch<M> {
    x: Vec<M>,
    d: Vec<M>,
    h1: Vec<M>,
    h2: Vec<M>,
    xc: Vec<M>,
    out: Vec<M>,
    /// Never written: stands in for an absent history slot (the kernels read 0 there).
    zeros: Vec<M>,
}

impl<M: Math> Scratch<M> {
    fn new() -> Self {
        let row = || vec![M::ZERO; CHUNK];
        Scratch {
            x: row(),
            d: row(),
            h1: row(),
            h2: row(),
            xc: row(),
            out: row(),
            zeros: row(),
        }
    }
}

fn step_chunk<S: Storage>(
    k: &Scalars<S::M>,
    launch: StepLaunch,
    mut c: ChunkViews<'_, S>,
    s: &mut Scratch<S::M>,
) {
    let done = S::fused_prefix(k, &mut c);
    let c = c.tail(done);
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
        &s.zeros[..len]
    };
    let h2 = if c.h2.is_some() {
        &s.h2[..len]
    } else {
        &s.zeros[..len]
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

fn check_dtype(buf: &CpuBuffer, dtype: DType) -> Result<()> {
    let actual = match buf {
        CpuBuffer::F16(_) => DType::F16,
        CpuBuffer::F32(_) => DType::F32,
        CpuBuffer::F64(_) => DType::F64,
    };
    if actual == dtype {
        Ok(())
    } else {
        Err(Error::DTypeMismatch {
            what: "cpu buffer",
            expected: dtype,
            got: actual,
        })
    }
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device_name(&self) -> String {
        format!("host CPU ({} threads)", rayon::current_num_threads())
    }

    fn supports(&self, _dtype: DType) -> bool {
        true
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<CpuBuffer> {
        Ok(match dtype {
            DType::F16 => CpuBuffer::F16(vec![f16::ZERO; len]),
            DType::F32 => CpuBuffer::F32(vec![0.0; len]),
            DType::F64 => CpuBuffer::F64(vec![0.0; len]),
        })
    }

    fn write(&self, buf: &mut CpuBuffer, dtype: DType, data: HostSlice<'_>) -> Result<()> {
        check_dtype(buf, dtype)?;
        let expected = match buf {
            CpuBuffer::F16(v) => v.len(),
            CpuBuffer::F32(v) => v.len(),
            CpuBuffer::F64(v) => v.len(),
        };
        if data.len() != expected {
            return Err(Error::LengthMismatch {
                what: "cpu write",
                expected,
                got: data.len(),
            });
        }
        match (buf, data) {
            (CpuBuffer::F16(d), HostSlice::F16(s)) => d.copy_from_slice(s),
            (CpuBuffer::F16(d), HostSlice::F32(s)) => d.convert_from_f32_slice(s),
            (CpuBuffer::F16(d), HostSlice::F64(s)) => d.convert_from_f64_slice(s),
            (CpuBuffer::F32(d), HostSlice::F16(s)) => s.convert_to_f32_slice(d),
            (CpuBuffer::F32(d), HostSlice::F32(s)) => d.copy_from_slice(s),
            (CpuBuffer::F32(d), HostSlice::F64(s)) => {
                d.iter_mut().zip(s).for_each(|(o, &v)| *o = v as f32)
            }
            (CpuBuffer::F64(d), HostSlice::F16(s)) => s.convert_to_f64_slice(d),
            (CpuBuffer::F64(d), HostSlice::F32(s)) => {
                d.iter_mut().zip(s).for_each(|(o, &v)| *o = f64::from(v))
            }
            (CpuBuffer::F64(d), HostSlice::F64(s)) => d.copy_from_slice(s),
        }
        Ok(())
    }

    fn read(&self, buf: &CpuBuffer, dtype: DType, len: usize) -> Result<HostVec> {
        check_dtype(buf, dtype)?;
        let out = match buf {
            CpuBuffer::F16(v) => HostVec::F16(v[..len.min(v.len())].to_vec()),
            CpuBuffer::F32(v) => HostVec::F32(v[..len.min(v.len())].to_vec()),
            CpuBuffer::F64(v) => HostVec::F64(v[..len.min(v.len())].to_vec()),
        };
        if out.len() != len {
            return Err(Error::LengthMismatch {
                what: "cpu read",
                expected: len,
                got: out.len(),
            });
        }
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn solver_step_raw(
        &self,
        step: &SolverStep,
        launch: StepLaunch,
        dtype: DType,
        n: usize,
        stride: usize,
        x: &mut CpuBuffer,
        model_out: &CpuBuffer,
        state: &mut CpuBuffer,
    ) -> Result<()> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        match (x, model_out, state) {
            (CpuBuffer::F16(x), CpuBuffer::F16(m), CpuBuffer::F16(s)) => {
                solver_step_typed(step, launch, n, stride, x, m, s)
            }
            (CpuBuffer::F32(x), CpuBuffer::F32(m), CpuBuffer::F32(s)) => {
                solver_step_typed(step, launch, n, stride, x, m, s)
            }
            (CpuBuffer::F64(x), CpuBuffer::F64(m), CpuBuffer::F64(s)) => {
                solver_step_typed(step, launch, n, stride, x, m, s)
            }
            _ => {
                return Err(Error::DTypeMismatch {
                    what: "solver step buffers",
                    expected: dtype,
                    got: dtype,
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::{slot_stride, Corrector};

    /// f16 results must equal the f32 path's results rounded once to f16: both
    /// compute the same f32 expression, whatever the f16 code path (SIMD prefix
    /// or generic tail).
    #[test]
    fn f16_path_is_the_f32_path_rounded_once() {
        let step = SolverStep {
            cx: 1.1,
            ce: 0.7,
            d_slot: Some(0),
            h1: Some(1),
            h2: Some(2),
            xc_slot: Some(3),
            corrector: Some(Corrector {
                base: CorrectorBase::Slot,
                a: 0.93,
                c: [0.1, 0.2, -0.05],
            }),
            a: 0.8,
            b: [0.3, -0.2, 0.1],
            noise: 0.0,
        };
        let variants = [
            step,
            SolverStep {
                corrector: None,
                xc_slot: None,
                h2: None,
                ..step
            },
            SolverStep {
                noise: 0.25,
                ..step
            },
        ];
        let cpu = CpuBackend::new();
        for n in [1, 7, 8, 9, 1023, 1024, 1025, 5000] {
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
                cpu.solver_step_raw(
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
                cpu.solver_step_raw(
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
