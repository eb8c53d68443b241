//! The guidance family: one C-ΠGDM step outside the network — the residual
//! pass and the update pass (exact Jacobian), or the update alone (Jacobian
//! dropped) — for each elementwise / block-local operator, 16×3×256×256, f16
//! and f32 network tensors (the conjugate state is f32), cpu and wgpu.
//!
//! Minimum bytes of a step with the Jacobian (P applied inline): the residual
//! reads ε, H⁺y, u and writes m; the update reads ε, g, H⁺y, u, v and writes
//! u, v, x — 8 network-tensor and 5 state-tensor passes over n elements.
//! Without the Jacobian: the update reads ε, H⁺y, u, v and writes u, v, x.
//!
//! Baseline ("unfused"): the same step the way the official code writes it, in
//! x-space with the map x̄ = A x, one launch per op — the crate's operator
//! family for each projection (one `Project` launch where a framework would
//! launch H and then H⁺) and its solver kernel as a framework's in-place
//! axpy (`dst ← a·dst + b·src`, the `SolverStep` with no history):
//!
//! ```text
//! x̂0 = x/μ − (σ/μ)ε;  m = H⁺y − P x̂0;                      (5 launches)
//! x̄ = keep·x̄ + ΔΦ_y H⁺y + ΔΦ_s1 ε + ΔΦ_s2 Pε + ΔΦ_j1 g + ΔΦ_j2 Pg   (7: 2 of them P)
//! x = e^{−κ1}x̄ + c·P x̄                                        (3)
//! ```
//!
//! 15 launches with the Jacobian, 7 without (no x̂0, m or g terms). Every
//! temporary and x̄ are f32 (x̄ would overflow f16), and ε, g are given to it in
//! f32, untimed: both favour the baseline in the f16 rows, where it is compared
//! with the fused step on f16 network tensors.
//! `cargo bench --bench guidance` (a summary table goes to stderr at the end).

#[path = "common/mod.rs"]
mod common;

use criterion::Criterion;

use common::{axpy, quick_criterion, time_step, Timed};
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
                let id = format!("guidance/{name}/{op_name}/{dtype:?}/{mode}");
                let timed = time_step(c, b, &id, || {
                    if mode == "exact" {
                        run.residual(b, &eps).unwrap();
                        run.update(b, &eps, Some(&g)).unwrap();
                    } else {
                        run.update(b, &eps, None).unwrap();
                    }
                });
                // Filtered out on the command line: no row.
                let Some(Timed {
                    median,
                    launches,
                    host_syncs,
                }) = timed
                else {
                    continue;
                };
                rows.push(format!(
                    "| {name} | {op_name} {dtype:?}, Jacobian {mode} | {:.3} ms | {:.1} | {launches:.0} | {host_syncs:.0} |",
                    median.as_secs_f64() * 1e3,
                    bytes as f64 / median.as_secs_f64() / 1e9
                ));
            }
        }
    }
}

/// The unfused step of the module docs, one launch per op, f32 throughout.
fn bench_unfused<B: Ops>(c: &mut Criterion, b: &B, name: &str, rows: &mut Vec<String>) {
    let shape = Shape::new(SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3]);
    let n = shape.checked_len().unwrap();
    let values: Vec<f32> = (0..n).map(|i| ((i % 89) as f32 - 44.0) / 44.0).collect();
    let tensor = || Tensor::from_host(b, shape, DType::F32, HostSlice::F32(&values)).unwrap();
    let (eps, g, hy, x) = (tensor(), tensor(), tensor(), tensor());
    let (mut x0, mut px0, mut m, mut pe, mut pg) =
        (tensor(), tensor(), tensor(), tensor(), tensor());
    let (mut xbar, mut px, mut x_next) = (tensor(), tensor(), tensor());
    // The kernel's (unused) history buffer.
    let mut none = Tensor::zeros(b, Shape::flat(1), DType::F32).unwrap();
    // Mid-run-sized scalars; their values do not change the work.
    let (mu, sigma, keep, e_k1, corr) = (0.8, 0.6, 1.0, 1.1, 0.3);
    let d = [0.05, 0.02, 0.01, 0.03, 0.004];
    for (op_name, op) in operators(b) {
        for mode in ["exact", "dropped"] {
            let exact = mode == "exact";
            let id = format!("guidance/{name}/{op_name}/unfused-f32/{mode}");
            let timed = time_step(c, b, &id, || {
                if exact {
                    axpy(b, &mut none, &mut x0, 0.0, 1.0 / mu, &x);
                    axpy(b, &mut none, &mut x0, 1.0, -sigma / mu, &eps);
                    op.project(b, &x0, &mut px0).unwrap();
                    axpy(b, &mut none, &mut m, 0.0, 1.0, &hy);
                    axpy(b, &mut none, &mut m, 1.0, -1.0, &px0);
                }
                op.project(b, &eps, &mut pe).unwrap();
                axpy(b, &mut none, &mut xbar, keep, d[0], &hy);
                axpy(b, &mut none, &mut xbar, 1.0, d[1], &eps);
                axpy(b, &mut none, &mut xbar, 1.0, d[2], &pe);
                if exact {
                    op.project(b, &g, &mut pg).unwrap();
                    axpy(b, &mut none, &mut xbar, 1.0, d[3], &g);
                    axpy(b, &mut none, &mut xbar, 1.0, d[4], &pg);
                }
                op.project(b, &xbar, &mut px).unwrap();
                axpy(b, &mut none, &mut x_next, 0.0, e_k1, &xbar);
                axpy(b, &mut none, &mut x_next, 1.0, corr, &px);
            });
            let Some(Timed {
                median,
                launches,
                host_syncs,
            }) = timed
            else {
                continue;
            };
            rows.push(format!(
                "| {name} | {op_name} unfused (f32), Jacobian {mode} | {:.3} ms | — | {launches:.0} | {host_syncs:.0} |",
                median.as_secs_f64() * 1e3
            ));
        }
    }
}

fn main() {
    let mut c = quick_criterion();
    let mut rows = Vec::new();
    let cpu = CpuBackend::new();
    bench_backend(&mut c, &cpu, "cpu", &mut rows);
    bench_unfused(&mut c, &cpu, "cpu", &mut rows);
    #[cfg(feature = "wgpu")]
    match diffinv::backend::wgpu::WgpuBackend::new() {
        Ok(w) => {
            bench_backend(&mut c, &w, "wgpu", &mut rows);
            bench_unfused(&mut c, &w, "wgpu", &mut rows);
        }
        Err(e) => eprintln!("wgpu skipped: {e}"),
    }
    c.final_summary();
    eprintln!("\n| backend | 16×3×256×256 step | median | GB/s (min bytes) | launches per step | host syncs |\n|---|---|---|---|---|---|");
    for r in rows {
        eprintln!("{r}");
    }
}
