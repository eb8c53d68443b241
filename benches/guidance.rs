//! The guidance family: one C-ΠGDM step outside the network — the residual
//! pass and the update pass (exact Jacobian), or the update alone (Jacobian
//! dropped) — for each elementwise / block-local operator, 16×3×256×256, f16
//! and f32 network tensors (the conjugate state is f32), cpu and wgpu.
//!
//! Minimum bytes of a step with the Jacobian (P applied inline): the residual
//! reads ε, H⁺y, u and writes m; the update reads ε, g, H⁺y, u, v and writes
//! u, v, x — 8 network-tensor and 5 state-tensor passes over n elements.
//! Without the Jacobian: the update reads ε, H⁺y, u, v and writes u, v, x.
//! `cargo bench --bench guidance` (a summary table goes to stderr at the end).

use std::time::{Duration, Instant};

use criterion::Criterion;

use diffinv::backend::cpu::CpuBackend;
use diffinv::guidance::{CpgdmConfig, CpgdmPlan};
use diffinv::ops::{CpgdmSampler, Operator};
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

const SHAPE: [usize; 4] = [16, 3, 256, 256];

fn operators<B: Ops>(b: &B) -> Vec<(&'static str, Operator<B>)> {
    let item = Shape::from_dims(&SHAPE[1..]).unwrap();
    let n = item.checked_len().unwrap();
    let mask: Vec<f32> = (0..n)
        .map(|i| if i % 10 == 0 { 0.0 } else { 1.0 })
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

fn bench_backend<B: Ops>(c: &mut Criterion, b: &B, name: &str, rows: &mut Vec<String>) {
    // Many steps, so the timed loop never runs past the plan's end.
    let plan = CpgdmPlan::new(CpgdmConfig {
        steps: 100_000,
        ..CpgdmConfig::default()
    })
    .unwrap();
    let shape = Shape::new(SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3]);
    let n = shape.checked_len().unwrap();
    let values: Vec<f32> = (0..n).map(|i| ((i % 89) as f32 - 44.0) / 44.0).collect();
    for dtype in [DType::F16, DType::F32] {
        if !b.guidance_supports(dtype) {
            continue;
        }
        let eps = Tensor::from_host(b, shape, dtype, HostSlice::F32(&values)).unwrap();
        let g = Tensor::from_host(b, shape, dtype, HostSlice::F32(&values)).unwrap();
        for (op_name, op) in operators(b) {
            let y_shape =
                Shape::from_dims(&[&[SHAPE[0]][..], op.y_item().dims()].concat()).unwrap();
            let y = Tensor::zeros(b, y_shape, dtype).unwrap();
            let mut run = CpgdmSampler::new(b, &plan, &op, &y).unwrap();
            run.init(b, &eps).unwrap();
            let size = dtype.size() as u64;
            for (mode, bytes) in [
                ("exact", n as u64 * (8 * size + 5 * 4)),
                ("dropped", n as u64 * (3 * size + 4 * 4)),
            ] {
                let mut samples = Vec::new();
                let launches_before = b.launch_count();
                let mut steps = 0u64;
                c.bench_function(
                    &format!("guidance/{name}/{op_name}/{dtype:?}/{mode}"),
                    |bench| {
                        bench.iter_custom(|iters| {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let t = Instant::now();
                                if mode == "exact" {
                                    run.residual(b, &eps).unwrap();
                                    run.update(b, &eps, Some(&g)).unwrap();
                                } else {
                                    run.update(b, &eps, None).unwrap();
                                }
                                b.synchronize().unwrap();
                                let dt = t.elapsed();
                                total += dt;
                                samples.push(dt);
                                steps += 1;
                            }
                            total
                        })
                    },
                );
                samples.sort();
                // Filtered out on the command line: no row.
                let Some(&median) = samples.get(samples.len() / 2) else {
                    continue;
                };
                let launches = (b.launch_count() - launches_before) as f64 / steps as f64;
                rows.push(format!(
                    "| {name} | {op_name} {dtype:?}, Jacobian {mode} | {:.3} ms | {:.1} | {launches:.0} |",
                    median.as_secs_f64() * 1e3,
                    bytes as f64 / median.as_secs_f64() / 1e9
                ));
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    let mut rows = Vec::new();
    bench_backend(&mut c, &CpuBackend::new(), "cpu", &mut rows);
    #[cfg(feature = "wgpu")]
    match diffinv::backend::wgpu::WgpuBackend::new() {
        Ok(w) => bench_backend(&mut c, &w, "wgpu", &mut rows),
        Err(e) => eprintln!("wgpu skipped: {e}"),
    }
    c.final_summary();
    eprintln!("\n| backend | 16×3×256×256 step | median | GB/s (min bytes) | launches per step |\n|---|---|---|---|---|");
    for r in rows {
        eprintln!("{r}");
    }
}
