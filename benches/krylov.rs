//! The Krylov family: one conjugate-gradient iteration of DDS's system
//! K = I + γAᵀA on 16×3×256×256 f32 images, fused against unfused, cpu and
//! wgpu, for each block-local operator (P inline).
//!
//! Fused: the crate's two passes per iteration, α and β computed on the device.
//! The time of one iteration is `(t(M = 9) − t(M = 1)) / 8` of whole solves, so
//! the residual pass and the solve's set-up cancel. Minimum bytes of an
//! iteration in this two-pass layout: the direction pass reads r, p, q and
//! writes p, q; the update reads x, r, p, q and writes x, r — 11 f32 vectors.
//!
//! Baseline ("unfused", what the official `utils.CG` does on a framework):
//! one launch per op and every scalar read back to the host —
//!
//! ```text
//! Ap = p + γ·Aᵀ(A p)          (4 launches: A, Aᵀ, two axpys)
//! pAp = ⟨p, Ap⟩               (1 launch + host read)
//! x += a·p;  r −= a·Ap        (2)
//! rs = ⟨r, r⟩                 (1 launch + host read)
//! p = r + (rs/rs_old)·p       (1)
//! ```
//!
//! 9 launches and 2 host syncs per iteration, against 2 and 0. A multi-coil
//! MRI case (1×320×320 complex, 8 coils) runs the same comparison with AᴴA
//! from the operator's FFT kernels on both sides.
//! `cargo bench --bench krylov` (a summary table goes to stderr at the end).

#[path = "common/mod.rs"]
mod common;

use criterion::Criterion;

use common::{axpy, quick_criterion, time_step, Timed};
use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::{CgOptions, ConjugateGradient, Mode, NormalSystem, Operator};
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

const SHAPE: [usize; 4] = [16, 3, 256, 256];
const GAMMA: f64 = 1.0;

fn shape() -> Shape {
    Shape::new(SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3])
}

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

fn tensor<B: Ops>(b: &B, values: &[f32]) -> Tensor<B> {
    Tensor::from_host(b, shape(), DType::F32, HostSlice::F32(values)).unwrap()
}

fn values(seed: usize) -> Vec<f32> {
    let n = shape().checked_len().unwrap();
    (0..n)
        .map(|i| (((i * 31 + seed * 17) % 89) as f32 - 44.0) / 44.0)
        .collect()
}

fn bench_fused<B: Ops>(c: &mut Criterion, b: &B, name: &str, rows: &mut Vec<String>) {
    let n = shape().checked_len().unwrap();
    let (x0, d) = (tensor(b, &values(1)), tensor(b, &values(2)));
    for (op_name, op) in operators(b) {
        let mut timed = Vec::new();
        for m in [1, 9] {
            let options = CgOptions {
                iterations: m,
                tolerance: None,
            };
            let mut cg = ConjugateGradient::new(
                b,
                &op,
                SHAPE[0],
                DType::F32,
                NormalSystem::tikhonov(GAMMA),
                options,
            )
            .unwrap();
            let mut x = tensor(b, &values(1));
            let id = format!("krylov/{name}/{op_name}/fused/M{m}");
            timed.push(time_step(c, b, &id, || {
                b.copy(x0.buffer(), x.buffer_mut()).unwrap();
                cg.solve(b, &mut x, &d, 1.0, GAMMA).unwrap();
            }));
        }
        let [Some(one), Some(nine)] = [&timed[0], &timed[1]] else {
            continue;
        };
        let per_iteration = (nine.median.saturating_sub(one.median)) / 8;
        let bytes = 11.0 * 4.0 * n as f64;
        rows.push(format!(
            "| {name} | {op_name} fused | {:.3} ms | {:.1} | {:.0} | {:.0} |",
            per_iteration.as_secs_f64() * 1e3,
            bytes / per_iteration.as_secs_f64() / 1e9,
            (nine.launches - one.launches) / 8.0,
            (nine.host_syncs - one.host_syncs) / 8.0,
        ));
    }
}

/// The official loop's vectors: one iteration is `atap ← AᵀA p` by the
/// operator's kernels, then [`Unfused::finish`].
struct Unfused<B: Ops> {
    x: Tensor<B>,
    r: Tensor<B>,
    p: Tensor<B>,
    ap: Tensor<B>,
    atap: Tensor<B>,
    /// The solver kernel's (unused) history buffer.
    none: Tensor<B>,
    rs_old: f64,
}

impl<B: Ops> Unfused<B> {
    fn new(b: &B, vector: impl Fn(usize) -> Tensor<B>) -> Self {
        Unfused {
            x: vector(1),
            r: vector(2),
            p: vector(3),
            ap: vector(4),
            atap: vector(5),
            none: Tensor::zeros(b, Shape::flat(1), DType::F32).unwrap(),
            rs_old: 1.0,
        }
    }

    /// Ap = p + γ·atap, two dots read back, three axpys.
    fn finish(&mut self, b: &B, dots: &mut ConjugateGradient<'_, B>) {
        let none = &mut self.none;
        axpy(b, none, &mut self.ap, 0.0, 1.0, &self.p);
        axpy(b, none, &mut self.ap, 1.0, GAMMA, &self.atap);
        let pap: f64 = dots
            .inner_products(b, &self.p, &self.ap)
            .unwrap()
            .iter()
            .sum();
        // Sizes like a mid-solve iteration's; the values do not change the work.
        let a = (self.rs_old / pap).clamp(-1.0, 1.0);
        axpy(b, none, &mut self.x, 1.0, a, &self.p);
        axpy(b, none, &mut self.r, 1.0, -a, &self.ap);
        let rs: f64 = dots
            .inner_products(b, &self.r, &self.r)
            .unwrap()
            .iter()
            .sum();
        let beta = (rs / self.rs_old).clamp(0.0, 1.0);
        axpy(b, none, &mut self.p, beta, 1.0, &self.r);
        self.rs_old = rs.max(1e-30);
    }
}

/// A table row of an unfused case.
fn unfused_row(name: &str, case: &str, timed: Option<Timed>) -> Option<String> {
    let Timed {
        median,
        launches,
        host_syncs,
    } = timed?;
    Some(format!(
        "| {name} | {case} unfused | {:.3} ms | — | {launches:.0} | {host_syncs:.0} |",
        median.as_secs_f64() * 1e3
    ))
}

fn bench_unfused<B: Ops>(c: &mut Criterion, b: &B, name: &str, rows: &mut Vec<String>) {
    let mut u = Unfused::new(b, |seed| tensor(b, &values(seed)));
    for (op_name, op) in operators(b) {
        let y_shape = Shape::from_dims(&[&[SHAPE[0]][..], op.y_item().dims()].concat()).unwrap();
        let mut ay = Tensor::zeros(b, y_shape, DType::F32).unwrap();
        // Only its inner products are used.
        let system = NormalSystem::tikhonov(GAMMA);
        let mut dots =
            ConjugateGradient::new(b, &op, SHAPE[0], DType::F32, system, CgOptions::default())
                .unwrap();
        let id = format!("krylov/{name}/{op_name}/unfused");
        let timed = time_step(c, b, &id, || {
            op.apply(b, Mode::Forward, &u.p, &mut ay).unwrap();
            op.apply(b, Mode::Adjoint, &ay, &mut u.atap).unwrap();
            u.finish(b, &mut dots);
        });
        rows.extend(unfused_row(name, op_name, timed));
    }
}

/// Multi-coil MRI, 1×320×320 complex (interleaved f32), 8 coils, 4× uniform1d:
/// K = I + AᴴA with AᴴA from the operator's 7 launches. Fused: the CG passes
/// around it; unfused: the same AᴴA, then the official loop's axpys and dots
/// with host reads. Minimum bytes of the vector work: as above, 11 vectors.
fn bench_mri<B: Ops>(c: &mut Criterion, b: &B, name: &str, rows: &mut Vec<String>) {
    use diffinv::ops::mri::{ColumnMask, MaskKind, MultiCoil};
    const SIDE: usize = 320;
    const COILS: usize = 8;
    let shape = Shape::from_dims(&[1, SIDE, SIDE, 2]).unwrap();
    let n = shape.checked_len().unwrap();
    let mask = ColumnMask::generate(MaskKind::Uniform1d, SIDE, 4, 0.08, 0)
        .unwrap()
        .plane(SIDE);
    let maps: Vec<f64> = (0..COILS * SIDE * SIDE * 2)
        .map(|i| 0.3 + ((i % 97) as f64) / 400.0)
        .collect();
    let op = MultiCoil::new(b, DType::F32, SIDE, SIDE, &mask, &maps, COILS).unwrap();
    let vals = |seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 31 + seed * 17) % 89) as f32 - 44.0) / 44.0)
            .collect()
    };
    let t = |seed| Tensor::from_host(b, shape, DType::F32, HostSlice::F32(&vals(seed))).unwrap();
    let (x0, d) = (t(1), t(2));
    let mut timed = Vec::new();
    for m in [1, 9] {
        let options = CgOptions {
            iterations: m,
            tolerance: None,
        };
        let mut cg = ConjugateGradient::new(
            b,
            &op,
            1,
            DType::F32,
            NormalSystem::tikhonov(GAMMA),
            options,
        )
        .unwrap();
        let mut x = t(1);
        let id = format!("krylov/{name}/mri-multicoil/fused/M{m}");
        timed.push(time_step(c, b, &id, || {
            b.copy(x0.buffer(), x.buffer_mut()).unwrap();
            cg.solve(b, &mut x, &d, 1.0, GAMMA).unwrap();
        }));
    }
    if let [Some(one), Some(nine)] = [&timed[0], &timed[1]] {
        let per = nine.median.saturating_sub(one.median) / 8;
        rows.push(format!(
            "| {name} | 1×320×320 complex, 8 coils, fused | {:.3} ms | {:.1} | {:.0} | {:.0} |",
            per.as_secs_f64() * 1e3,
            11.0 * 4.0 * n as f64 / per.as_secs_f64() / 1e9,
            (nine.launches - one.launches) / 8.0,
            (nine.host_syncs - one.host_syncs) / 8.0,
        ));
    }
    let mut u = Unfused::new(b, t);
    let system = NormalSystem::tikhonov(GAMMA);
    let mut dots =
        ConjugateGradient::new(b, &op, 1, DType::F32, system, CgOptions::default()).unwrap();
    let id = format!("krylov/{name}/mri-multicoil/unfused");
    let timed = time_step(c, b, &id, || {
        op.normal(b, &u.p, &mut u.atap).unwrap();
        u.finish(b, &mut dots);
    });
    rows.extend(unfused_row(name, "1×320×320 complex, 8 coils,", timed));
}

fn main() {
    let mut c = quick_criterion();
    let mut rows = Vec::new();
    let cpu = CpuBackend::new();
    bench_fused(&mut c, &cpu, "cpu", &mut rows);
    bench_unfused(&mut c, &cpu, "cpu", &mut rows);
    bench_mri(&mut c, &cpu, "cpu", &mut rows);
    #[cfg(feature = "wgpu")]
    match diffinv::backend::wgpu::WgpuBackend::new() {
        Ok(w) => {
            bench_fused(&mut c, &w, "wgpu", &mut rows);
            bench_unfused(&mut c, &w, "wgpu", &mut rows);
            bench_mri(&mut c, &w, "wgpu", &mut rows);
        }
        Err(e) => eprintln!("wgpu skipped: {e}"),
    }
    c.final_summary();
    eprintln!(
        "\n| backend | 16×3×256×256, one CG iteration | median | GB/s (min bytes) | launches | host syncs |\n|---|---|---|---|---|---|"
    );
    for r in rows {
        eprintln!("{r}");
    }
}
