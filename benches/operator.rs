//! The operator family: one application of P = H⁺H (the operator the guided
//! samplers apply twice per step) as one fused launch, against the unfused
//! composition H then H⁺ (two launches and a measurement-sized temporary),
//! on 16×3×256×256 f16 and f32, cpu and wgpu.
//!
//! Throughput is the minimum byte count of P: read x, write P x (2 × n × dtype
//! size); the same run measures a hot copy of those bytes (a rayon memcpy of
//! the same size on cpu, a buffer copy on wgpu). `cargo bench --bench operator`
//! (a summary table goes to stderr at the end).

use std::time::{Duration, Instant};

use criterion::Criterion;
use rayon::prelude::*;

use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::{Mode, Operator};
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

const SHAPE: [usize; 4] = [16, 3, 256, 256];

struct Row {
    backend: &'static str,
    case: String,
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

/// The operators benchmarked, on an image item of SHAPE.
fn operators<B: Ops>(b: &B) -> Vec<(&'static str, Operator<B>)> {
    let item = Shape::from_dims(&SHAPE[1..]).unwrap();
    let n = item.checked_len().unwrap();
    // A 64×64 box missing in every channel, and every 10th pixel elsewhere.
    let mask: Vec<f32> = (0..n)
        .map(|i| {
            let (row, col) = ((i / 256) % 256, i % 256);
            let boxed = (96..160).contains(&row) && (96..160).contains(&col);
            if boxed || i % 10 == 0 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    vec![
        ("sr4", Operator::avg_pool(b, item, 4).unwrap()),
        ("inpaint", Operator::inpaint(b, item, &mask, true).unwrap()),
        (
            "colorize",
            Operator::colorize(b, item, Operator::<B>::OFFICIAL_COLOR_WEIGHTS).unwrap(),
        ),
    ]
}

fn bench_backend<B: Ops>(c: &mut Criterion, b: &B, name: &'static str, rows: &mut Vec<Row>) {
    let shape = Shape::new(SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3]);
    let n = shape.checked_len().unwrap();
    for dtype in [DType::F16, DType::F32] {
        if !b.operator_supports(dtype) {
            continue;
        }
        let values: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) / 24.0).collect();
        let x = Tensor::from_host(b, shape, dtype, HostSlice::F32(&values)).unwrap();
        let mut out = Tensor::zeros(b, shape, dtype).unwrap();
        for (op_name, op) in operators(b) {
            let y_shape =
                Shape::from_dims(&[&[SHAPE[0]][..], op.y_item().dims()].concat()).unwrap();
            let mut y = Tensor::zeros(b, y_shape, dtype).unwrap();
            let bytes = 2 * (n * dtype.size()) as u64;
            let case = format!("{op_name} P {dtype:?}");
            let mut measure = |label: &str, run: &mut dyn FnMut()| {
                let (before, calls) = (b.launch_count(), std::cell::Cell::new(0u64));
                let median = timed(
                    c,
                    &format!("operator/{name}/{case}/{label}"),
                    || {
                        run();
                        calls.set(calls.get() + 1);
                    },
                    || b.synchronize().unwrap(),
                );
                let launches = (b.launch_count() - before) / calls.get().max(1);
                rows.push(Row {
                    backend: name,
                    case: format!("{case}, {label}"),
                    median,
                    bytes,
                    launches,
                });
            };
            measure("fused", &mut || {
                op.apply(b, Mode::Project, &x, &mut out).unwrap()
            });
            measure("H then H⁺", &mut || {
                op.apply(b, Mode::Forward, &x, &mut y).unwrap();
                op.apply(b, Mode::PseudoInverse, &y, &mut out).unwrap();
            });
        }
    }
}

/// A hot copy of the bytes P moves (read n, write n elements of f32).
fn copy_bandwidth(c: &mut Criterion) -> f64 {
    let n: usize = SHAPE.iter().product();
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let t = timed(
        c,
        "operator/cpu/copy",
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
    eprintln!("| backend | 16×3×256×256 | median | GB/s (min bytes) | % of cpu copy | launches |\n|---|---|---|---|---|---|");
    for r in rows {
        let gbps = r.bytes as f64 / r.median.as_secs_f64() / 1e9;
        eprintln!(
            "| {} | {} | {:.3} ms | {gbps:.1} | {:.0}% | {} |",
            r.backend,
            r.case,
            r.median.as_secs_f64() * 1e3,
            100.0 * gbps / copy,
            r.launches
        );
    }
}
