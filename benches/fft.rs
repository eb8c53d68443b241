//! The fft family on the MRI geometry of the DDS issue: the centred 2-D FFT of
//! 1×8×320×320 complex f32 coil images, the multi-coil `AᴴA x` (8 coils, the
//! operator the DDS conjugate gradient applies each iteration) and the
//! single-coil projector `P = FᴴMF` on 16×256×256, cpu and wgpu.
//!
//! Throughput is per the minimum byte count — read the input and every
//! operand once, write the output once (FFT: 2 × the tensor; `AᴴA`: the image
//! twice, the maps and the mask once; P: the image twice and the mask) — and
//! the same run measures a hot cpu copy of the FFT's bytes. The kernels move
//! more than that (each FFT reads and writes everything twice, once per axis;
//! `AᴴA` passes coil-sized temporaries between its 7 launches): the gap is the
//! price of unfused passes. `cargo bench --bench fft` (a summary table goes to
//! stderr at the end).

use std::time::{Duration, Instant};

use criterion::Criterion;
use rayon::prelude::*;

use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::mri::{ColumnMask, MaskKind, MultiCoil, SingleCoil};
use diffinv::ops::Fft2;
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

const COILS: usize = 8;
const SIDE: usize = 320;

struct Row {
    backend: &'static str,
    case: &'static str,
    median: Duration,
    bytes: u64,
    launches: u64,
}

/// Median of criterion's timed iterations of `op` (each followed by `sync`).
/// (Zero when the case is filtered out on the command line.)
fn timed(c: &mut Criterion, name: &str, mut op: impl FnMut(), mut sync: impl FnMut()) -> Duration {
    let mut samples = Vec::new();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                op();
                sync();
                let dt = t.elapsed();
                total += dt;
                samples.push(dt);
            }
            total
        })
    });
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn tensor<B: Ops>(b: &B, dims: &[usize]) -> Tensor<B> {
    let shape = Shape::from_dims(dims).unwrap();
    let n = shape.checked_len().unwrap();
    let values: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) / 48.0).collect();
    Tensor::from_host(b, shape, DType::F32, HostSlice::F32(&values)).unwrap()
}

fn bench_backend<B: Ops>(c: &mut Criterion, b: &B, name: &'static str, rows: &mut Vec<Row>) {
    let mut measure = |case: &'static str, bytes: usize, run: &mut dyn FnMut()| {
        let (before, calls) = (b.launch_count(), std::cell::Cell::new(0u64));
        let median = timed(
            c,
            &format!("fft/{name}/{case}"),
            || {
                run();
                calls.set(calls.get() + 1);
            },
            || b.synchronize().unwrap(),
        );
        rows.push(Row {
            backend: name,
            case,
            median,
            bytes: bytes as u64,
            launches: (b.launch_count() - before) / calls.get().max(1),
        });
    };
    let plane = SIDE * SIDE;
    let coil_images = tensor(b, &[1, COILS, SIDE, SIDE, 2]);
    let mut k = tensor(b, &[1, COILS, SIDE, SIDE, 2]);
    let fft = Fft2::new(b, SIDE, SIDE).unwrap();
    measure("F, 1×8×320×320", 2 * COILS * plane * 8, &mut || {
        fft.forward(b, &coil_images, &mut k).unwrap()
    });

    let mask = ColumnMask::generate(MaskKind::Uniform1d, SIDE, 4, 0.08, 0).unwrap();
    let maps: Vec<f64> = (0..COILS * plane * 2)
        .map(|i| ((i % 89) as f64 - 44.0) / 44.0)
        .collect();
    let op = MultiCoil::new(b, DType::F32, SIDE, SIDE, &mask.plane(SIDE), &maps, COILS).unwrap();
    let x = tensor(b, &[1, SIDE, SIDE, 2]);
    let mut out = tensor(b, &[1, SIDE, SIDE, 2]);
    let bytes = 2 * plane * 8 + COILS * plane * 8 + plane * 4;
    measure("AᴴA x, 8 coils 320×320", bytes, &mut || {
        op.normal(b, &x, &mut out).unwrap()
    });

    let side = 256;
    let mask = ColumnMask::generate(MaskKind::Uniform1d, side, 4, 0.08, 0).unwrap();
    let single = SingleCoil::new(b, DType::F32, side, side, &mask.plane(side)).unwrap();
    let x = tensor(b, &[16, side, side, 2]);
    let mut out = tensor(b, &[16, side, side, 2]);
    let bytes = 2 * 16 * side * side * 8 + side * side * 4;
    measure("P x, 16×256×256", bytes, &mut || {
        single.project(b, &x, &mut out).unwrap()
    });
}

/// A hot copy of the FFT's minimum bytes (read and write 8 coil images).
fn copy_bandwidth(c: &mut Criterion) -> f64 {
    let n = COILS * SIDE * SIDE * 2;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let t = timed(
        c,
        "fft/cpu/copy",
        || {
            dst.par_chunks_mut(1 << 15)
                .zip(src.par_chunks(1 << 15))
                .for_each(|(d, s)| d.copy_from_slice(s))
        },
        || {},
    );
    (2 * n * 4) as f64 / t.as_secs_f64() / 1e9
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    let mut rows = Vec::new();
    let copy = copy_bandwidth(&mut c);
    bench_backend(&mut c, &CpuBackend::new(), "cpu", &mut rows);
    #[cfg(feature = "wgpu")]
    match diffinv::backend::wgpu::WgpuBackend::new() {
        Ok(w) => bench_backend(&mut c, &w, "wgpu", &mut rows),
        Err(e) => eprintln!("wgpu skipped: {e}"),
    }
    c.final_summary();
    eprintln!("\ncpu hot copy bandwidth: {copy:.1} GB/s (read + write)");
    eprintln!("| backend | case (complex f32) | median | GB/s (min bytes) | % of cpu copy | launches |\n|---|---|---|---|---|---|");
    for r in rows {
        let gbps = r.bytes as f64 / r.median.as_secs_f64() / 1e9;
        eprintln!(
            "| {} | {} | {:.3} ms | {gbps:.2} | {:.0}% | {} |",
            r.backend,
            r.case,
            r.median.as_secs_f64() * 1e3,
            100.0 * gbps / copy,
            r.launches
        );
    }
}
