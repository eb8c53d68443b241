//! Why the CPU backend converts f16 a row at a time: `half`'s slice
//! conversions (F16C on x86, detected at run time) against converting one
//! element at a time, both directions, one thread, on a tensor the size of
//! the solver bench's big case (16×3×256×256) and on one L1-sized row.
//!
//! The CPU backend's fused fast path goes further and converts in registers
//! (`src/backend/cpu/f16_avx2.rs`); its cost shows in `benches/solver.rs`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Elements: one L1-resident row of the generic path, and the big solver case.
const SIZES: [(&str, usize); 2] = [("row-4096", 4096), ("16x3x256x256", 16 * 3 * 256 * 256)];

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for (name, n) in SIZES {
        let halves: Vec<f16> = (0..n)
            .map(|i| f16::from_f32((i % 2000) as f32 * 0.01 - 10.0))
            .collect();
        let floats: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        let mut out_f32 = vec![0f32; n];
        let mut out_f16 = vec![f16::ZERO; n];

        let mut g = c.benchmark_group(format!("f16_convert/{name}"));
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            // Bytes read + written: 2 + 4 per element either way.
            .throughput(Throughput::Bytes(6 * n as u64));
        g.bench_function("to_f32/slice", |b| {
            b.iter(|| black_box(&halves[..]).convert_to_f32_slice(black_box(&mut out_f32[..])))
        });
        g.bench_function("to_f32/per-element", |b| {
            b.iter(|| {
                for (o, h) in out_f32.iter_mut().zip(black_box(&halves[..])) {
                    *o = h.to_f32();
                }
                black_box(&mut out_f32);
            })
        });
        g.bench_function("from_f32/slice", |b| {
            b.iter(|| black_box(&mut out_f16[..]).convert_from_f32_slice(black_box(&floats[..])))
        });
        g.bench_function("from_f32/per-element", |b| {
            b.iter(|| {
                for (o, &f) in out_f16.iter_mut().zip(black_box(&floats[..])) {
                    *o = f16::from_f32(f);
                }
                black_box(&mut out_f16);
            })
        });
        g.finish();
    }
    c.final_summary();
}
