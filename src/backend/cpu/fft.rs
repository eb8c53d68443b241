//! The fft family on the CPU: the definition. Each line is gathered with the
//! inverse shift, transformed by `rustfft` (f32, or f64 for the oracle path),
//! scaled by `1/√n` and scattered with the forward shift (`docs/math.md` §10);
//! the element-wise products are plain loops in the order the device kernels
//! follow, so those match them bit for bit. Parallel over groups of lines
//! (single rows, or whole planes for the columns) and chunks of products.

use num_complex::Complex;
use rayon::prelude::*;
use rustfft::{FftDirection, FftNum, FftPlanner};

use super::{CpuBackend, Element, Math};
use crate::backend::params::{fft_pointwise, FftLineParams, FftPointwiseParams};
use crate::error::{Error, Result};
use crate::ops::fft::{FftLinesCall, FftOps, FftPath, FftPointwiseCall};
use crate::tensor::DType;

/// Complex output elements per parallel work item of the products.
const CHUNK: usize = 8 * 1024;

impl FftOps for CpuBackend {
    fn fft_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F32 | DType::F64)
    }

    fn fft_supports_len(&self, n: usize) -> bool {
        n >= 1
    }

    fn fft_path(&self) -> FftPath {
        FftPath::Rustfft
    }

    fn fft_lines_checked(&self, call: FftLinesCall<'_, Self>) -> Result<()> {
        launch_on_fft_storage!(self, call.dtype, lines(call))
    }

    fn fft_pointwise_checked(&self, call: FftPointwiseCall<'_, Self>) -> Result<()> {
        launch_on_fft_storage!(self, call.dtype, products(call))
    }
}

/// A real storage type the fft family computes in itself (f32, f64).
trait Real: Element<M = Self> + Math + FftNum {}
impl<T: Element<M = T> + Math + FftNum> Real for T {}

/// `$body::<T>(call)` for the call's f32 or f64 storage, then one launch
/// counted (`None`, a buffer not of the dtype, is ruled out by the checked call).
macro_rules! launch_on_fft_storage {
    ($backend:expr, $dtype:expr, $body:ident($call:expr)) => {{
        let dtype = $dtype;
        match dtype {
            DType::F32 => $body::<f32>($call),
            DType::F64 => $body::<f64>($call),
            _ => None,
        }
        .ok_or(Error::UnsupportedDType {
            backend: "cpu",
            dtype,
        })?;
        $backend.count_launch();
        Ok(())
    }};
}
use launch_on_fft_storage;

/// Every line of the checked call: `out[base + k·stride] = scale ·
/// DFT(line shifted by ⌊n/2⌋)[(k − ⌊n/2⌋) mod n]`.
fn lines<T: Real>(call: FftLinesCall<'_, CpuBackend>) -> Option<()> {
    let p: FftLineParams = call.params;
    let input = T::slice(call.input)?;
    let output = T::slice_mut(call.output)?;
    let (n, stride, half) = (p.n as usize, p.stride as usize, p.n as usize / 2);
    let (inner, inner_step, group_step) = (
        p.inner as usize,
        p.inner_step as usize,
        p.group_step as usize,
    );
    let groups = p.lines as usize / inner;
    let direction = if p.inverse == 0 {
        FftDirection::Forward
    } else {
        FftDirection::Inverse
    };
    let fft = FftPlanner::<T>::new().plan_fft(n, direction);
    let scale = <T as Math>::from_f64(1.0 / (n as f64).sqrt());
    // The checked call guarantees each group's lines lie inside its
    // group_step span (2 reals per complex element) and groups·group_step
    // complex elements in both buffers.
    output[..2 * groups * group_step]
        .par_chunks_mut(2 * group_step)
        .enumerate()
        .for_each_init(
            || {
                let zero = Complex::new(T::ZERO, T::ZERO);
                (vec![zero; n], vec![zero; fft.get_inplace_scratch_len()])
            },
            |(line, scratch), (g, out)| {
                let x = &input[2 * g * group_step..2 * (g + 1) * group_step];
                for l in 0..inner {
                    let base = l * inner_step;
                    for (i, v) in line.iter_mut().enumerate() {
                        let at = 2 * (base + (i + half) % n * stride);
                        *v = Complex::new(x[at], x[at + 1]);
                    }
                    fft.process_with_scratch(line, scratch);
                    for k in 0..n {
                        let v = line[(k + n - half) % n];
                        let at = 2 * (base + k * stride);
                        out[at] = scale * v.re;
                        out[at + 1] = scale * v.im;
                    }
                }
            },
        );
    Some(())
}

/// `a · b` for complex numbers as (re, im) pairs, in the kernels' order.
fn mul<T: Real>(a: (T, T), b: (T, T)) -> (T, T) {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

/// Every complex output element of the checked product (`fft_pointwise`).
fn products<T: Real>(call: FftPointwiseCall<'_, CpuBackend>) -> Option<()> {
    let p: FftPointwiseParams = call.params;
    let input = T::slice(call.input)?;
    let aux = T::slice(call.aux)?;
    let output = T::slice_mut(call.output)?;
    let (plane, coils) = (p.plane as usize, p.coils as usize);
    let at = |v: &[T], i: usize| (v[2 * i], v[2 * i + 1]);
    // The checked call guarantees the lengths each program reads and writes.
    let value = |o: usize| -> (T, T) {
        let px = o % plane;
        match p.program {
            fft_pointwise::MASK => {
                let (re, im) = at(input, o);
                (aux[px] * re, aux[px] * im)
            }
            fft_pointwise::COIL_EXPAND => {
                let (b, c) = (o / (coils * plane), o / plane % coils);
                mul(at(aux, c * plane + px), at(input, b * plane + px))
            }
            fft_pointwise::TO_INTERLEAVED => {
                let re_at = 2 * (o - px) + px;
                (input[re_at], input[re_at + plane])
            }
            _ => {
                let b = o / plane;
                let mut acc = (T::ZERO, T::ZERO);
                for c in 0..coils {
                    let (sr, si) = at(aux, c * plane + px);
                    let (vr, vi) = at(input, (b * coils + c) * plane + px);
                    // conj(s)·v, written out so no negated zero enters.
                    acc = (acc.0 + (sr * vr + si * vi), acc.1 + (sr * vi - si * vr));
                }
                acc
            }
        }
    };
    if p.program == fft_pointwise::TO_PLANAR {
        // Real r of the planar [B, 2, H, W] output: part (re, im) of pixel px.
        output[..2 * p.n_out as usize]
            .par_chunks_mut(2 * CHUNK)
            .enumerate()
            .for_each(|(chunk, out)| {
                for (k, v) in out.iter_mut().enumerate() {
                    let r = chunk * 2 * CHUNK + k;
                    let (b, part, px) = (r / (2 * plane), r / plane % 2, r % plane);
                    *v = input[2 * (b * plane + px) + part];
                }
            });
        return Some(());
    }
    output[..2 * p.n_out as usize]
        .par_chunks_mut(2 * CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            for (k, pair) in out.chunks_exact_mut(2).enumerate() {
                let (re, im) = value(chunk * CHUNK + k);
                pair[0] = re;
                pair[1] = im;
            }
        });
    Some(())
}
