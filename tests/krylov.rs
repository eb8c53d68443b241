//! The Krylov family: conjugate gradients against a dense direct solve (f64),
//! the K-norm error's monotone decrease, the zero-residual guard, per-sample
//! independence, backend parity of the CG and DDS passes, launches per
//! iteration, and bad input.

mod common;

use common::{compare, values};
use diffinv::backend::cpu::CpuBackend;
use diffinv::gmm::posterior::DenseOperator;
use diffinv::ops::krylov::{dds_renoise, dds_tweedie};
use diffinv::ops::operator::separable::gaussian_taps;
use diffinv::ops::{CgOptions, ConjugateGradient, Mode, NormalSystem, Operator};
use diffinv::{Backend, DType, Error, HostSlice, Ops, Shape, Tensor};

const ITEM: [usize; 3] = [3, 8, 8];

fn item() -> Shape {
    Shape::from_dims(&ITEM).unwrap()
}

fn batched(batch: usize) -> Shape {
    Shape::from_dims(&[&[batch][..], &ITEM[..]].concat()).unwrap()
}

fn mask() -> Vec<f32> {
    (0..ITEM.iter().product::<usize>())
        .map(|i| {
            if i % 5 == 2 || (i / 8) % 8 < 3 {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// Every operator kind CG handles: block-local (P inline) and separable
/// (AᵀA by the operator's kernels).
fn operators<B: Ops>(b: &B) -> Vec<(&'static str, Operator<B>)> {
    vec![
        (
            "inpaint",
            Operator::inpaint(b, item(), &mask(), true).unwrap(),
        ),
        ("pool 2", Operator::avg_pool(b, item(), 2).unwrap()),
        (
            "colorize",
            Operator::colorize(b, item(), [0.2, 0.7, 0.1]).unwrap(),
        ),
        (
            "blur",
            Operator::blur(b, item(), &gaussian_taps(1.0, 2)).unwrap(),
        ),
    ]
}

fn tensor<B: Backend>(b: &B, shape: Shape, dtype: DType, v: &[f64]) -> Tensor<B> {
    Tensor::from_host(b, shape, dtype, HostSlice::F64(v)).unwrap()
}

/// Dense K = identity·I + gram·HᵀH (f64).
fn dense_k(op: &Operator<CpuBackend>, system: NormalSystem) -> Vec<f64> {
    let h = DenseOperator::of(&CpuBackend::new(), op).unwrap();
    let n = h.cols;
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let hth: f64 = (0..h.rows)
                .map(|r| h.data[r * n + i] * h.data[r * n + j])
                .sum();
            k[i * n + j] = system.gram * hth + if i == j { system.identity } else { 0.0 };
        }
    }
    k
}

/// Solve the SPD system K x = b by Cholesky (f64).
fn cholesky_solve(k: &[f64], rhs: &[f64]) -> Vec<f64> {
    let n = rhs.len();
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i * n + m] * l[j * n + m]).sum();
            if i == j {
                l[i * n + i] = (k[i * n + i] - s).sqrt();
            } else {
                l[i * n + j] = (k[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (rhs[i] - (0..i).map(|m| l[i * n + m] * y[m]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|m| l[m * n + i] * x[m]).sum::<f64>()) / l[i * n + i];
    }
    x
}

fn mat_vec(k: &[f64], x: &[f64]) -> Vec<f64> {
    let n = x.len();
    (0..n)
        .map(|i| (0..n).map(|j| k[i * n + j] * x[j]).sum())
        .collect()
}

/// Run `iterations` of CG on `backend` from x0 for rhs_x·x0 + rhs_d·d.
#[allow(clippy::too_many_arguments)]
fn solve<B: Ops>(
    b: &B,
    op: &Operator<B>,
    dtype: DType,
    system: NormalSystem,
    options: CgOptions,
    x0: &[f64],
    d: &[f64],
    rhs: (f64, f64),
) -> (Vec<f64>, Vec<usize>, u64) {
    let batch = x0.len() / item().checked_len().unwrap();
    let mut cg = ConjugateGradient::new(b, op, batch, dtype, system, options).unwrap();
    let mut x = tensor(b, batched(batch), dtype, x0);
    let d = tensor(b, batched(batch), dtype, d);
    let (before, syncs) = (b.launch_count(), b.host_sync_count());
    cg.solve(b, &mut x, &d, rhs.0, rhs.1).unwrap();
    let launches = b.launch_count() - before;
    assert_eq!(launches, cg.launches_per_solve());
    // α and β never come back to the host.
    assert_eq!(b.host_sync_count(), syncs, "host syncs inside a solve");
    (
        x.to_f64(b).unwrap(),
        cg.iterations_run(b).unwrap(),
        launches,
    )
}

/// CG converges to the dense solution of K x = x0 + γ·d within 1e-8 (f64):
/// two iterations suffice where K has two eigenvalues (block-local
/// operators), the blur needs more.
#[test]
fn cg_matches_a_dense_direct_solve() {
    let b = CpuBackend::new();
    let n = item().checked_len().unwrap();
    for (name, op) in operators(&b) {
        for system in [NormalSystem::tikhonov(0.7), NormalSystem::tikhonov(3.0)] {
            let k = dense_k(&op, system);
            let (x0, d) = (values(3, 2 * n, 1.0), values(4, 2 * n, 1.0));
            let iterations = if name == "blur" { 40 } else { 3 };
            let options = CgOptions {
                iterations,
                tolerance: None,
            };
            let (got, ..) = solve(
                &b,
                &op,
                DType::F64,
                system,
                options,
                &x0,
                &d,
                (1.0, system.gram),
            );
            for s in 0..2 {
                let rhs: Vec<f64> = (0..n)
                    .map(|i| x0[s * n + i] + system.gram * d[s * n + i])
                    .collect();
                let want = cholesky_solve(&k, &rhs);
                compare(
                    &format!("{name} γ {}: sample {s}", system.gram),
                    &got[s * n..(s + 1) * n],
                    &want,
                    1e-8,
                    1e-8,
                );
            }
        }
    }
}

/// The K-norm of the error never grows from one iteration count to the next
/// (CG minimises it over a growing Krylov space).
#[test]
fn the_k_norm_error_decreases_monotonically() {
    let b = CpuBackend::new();
    let n = item().checked_len().unwrap();
    let op = Operator::blur(&b, item(), &gaussian_taps(1.5, 3)).unwrap();
    let system = NormalSystem::tikhonov(5.0);
    let k = dense_k(&op, system);
    let (x0, d) = (values(7, n, 1.0), values(8, n, 1.0));
    let rhs: Vec<f64> = (0..n).map(|i| x0[i] + 5.0 * d[i]).collect();
    let exact = cholesky_solve(&k, &rhs);
    let k_norm = |x: &[f64]| {
        let e: Vec<f64> = x.iter().zip(&exact).map(|(a, b)| a - b).collect();
        let ke = mat_vec(&k, &e);
        e.iter().zip(&ke).map(|(a, b)| a * b).sum::<f64>().sqrt()
    };
    let mut last = k_norm(&x0);
    for m in 1..=12 {
        let options = CgOptions {
            iterations: m,
            tolerance: None,
        };
        let (x, ..) = solve(&b, &op, DType::F64, system, options, &x0, &d, (1.0, 5.0));
        let err = k_norm(&x);
        assert!(
            err <= last * (1.0 + 1e-12) + 1e-14,
            "M = {m}: K-norm error {err:.3e} > {last:.3e}"
        );
        last = err;
    }
    assert!(last < 1e-6 * k_norm(&x0), "12 iterations left {last:.3e}");
}

/// A warm start that already solves the system: the residual is exactly 0,
/// every α and β guard fires, x stays put with no NaN, and no iteration counts.
#[test]
fn an_exact_start_stays_exact() {
    let b = CpuBackend::new();
    let n = item().checked_len().unwrap();
    let op = Operator::inpaint(&b, item(), &mask(), false).unwrap();
    // K = AᵀA, b = Aᵀy with y = A x0: x0 solves it exactly (P x0 = Aᵀy).
    let x0: Vec<f64> = values(9, n, 1.0);
    let m = mask();
    let d: Vec<f64> = x0.iter().zip(&m).map(|(x, &k)| x * f64::from(k)).collect();
    let (x, iterations, _) = solve(
        &b,
        &op,
        DType::F64,
        NormalSystem::normal_equations(),
        CgOptions::default(),
        &x0,
        &d,
        (0.0, 1.0),
    );
    assert_eq!(x, x0);
    assert_eq!(iterations, vec![0]);
}

/// What a backend computes with: f32 everywhere, f64 on the CPU too.
fn state_dtypes<B: Ops>(b: &B) -> Vec<DType> {
    [DType::F32, DType::F64]
        .into_iter()
        .filter(|&d| b.cg_supports(d))
        .collect()
}

/// On every backend: CG in f32 tracks the f64 definition; a batch of two is
/// bit for bit two batches of one; one solve is 1 + 2M launches (+ AᵀA per K
/// application for the blur); the early stop counts iterations per sample.
fn cg_on_every_backend<B: Ops>(b: &B) {
    let cpu = CpuBackend::new();
    let n = item().checked_len().unwrap();
    let (x0, d) = (values(11, 2 * n, 1.0), values(12, 2 * n, 0.5));
    let system = NormalSystem::tikhonov(1.5);
    let options = CgOptions {
        iterations: 5,
        tolerance: None,
    };
    for ((name, op), (_, cpu_op)) in operators(b).into_iter().zip(operators(&cpu)) {
        let (want, ..) = solve(
            &cpu,
            &cpu_op,
            DType::F64,
            system,
            options,
            &x0,
            &d,
            (1.0, 1.5),
        );
        for dtype in state_dtypes(b) {
            let what = format!("{:?} {dtype:?} {name}", b.kind());
            let (got, _, launches) = solve(b, &op, dtype, system, options, &x0, &d, (1.0, 1.5));
            // Two per iteration and the residual; the blur's AᵀA is two
            // separable applications (4 launches) per K application (M + 1).
            let per_k = if name == "blur" { 4 } else { 0 };
            assert_eq!(launches, 1 + 2 * 5 + 6 * per_k, "{what}: launches");
            let tol = if dtype == DType::F64 { 1e-12 } else { 2e-5 };
            compare(&what, &got, &want, tol, tol);
            let (one, ..) = solve(
                b,
                &op,
                dtype,
                system,
                options,
                &x0[..n],
                &d[..n],
                (1.0, 1.5),
            );
            let (two, ..) = solve(
                b,
                &op,
                dtype,
                system,
                options,
                &x0[n..],
                &d[n..],
                (1.0, 1.5),
            );
            assert_eq!(&got[..n], &one[..], "{what}: sample 0 alone");
            assert_eq!(&got[n..], &two[..], "{what}: sample 1 alone");
            if dtype == DType::F32 && b.kind().name() == "cuda" {
                let (cpu_f32, ..) =
                    solve(&cpu, &cpu_op, dtype, system, options, &x0, &d, (1.0, 1.5));
                assert_eq!(
                    got, cpu_f32,
                    "{what}: CUDA is the CPU definition bit for bit"
                );
            }
        }
        // The unfused building block: ⟨a, b⟩ per sample, one launch.
        for dtype in state_dtypes(b) {
            let mut cg = ConjugateGradient::new(b, &op, 2, dtype, system, options).unwrap();
            let (at, dt) = (
                tensor(b, batched(2), dtype, &x0),
                tensor(b, batched(2), dtype, &d),
            );
            let before = b.launch_count();
            let dots = cg.inner_products(b, &at, &dt).unwrap();
            assert_eq!(b.launch_count() - before, 1);
            for (s, dot) in dots.iter().enumerate() {
                let want: f64 = (s * n..(s + 1) * n).map(|i| x0[i] * d[i]).sum();
                assert!(
                    (dot - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{name} {dtype:?}: dot {s}"
                );
            }
        }
        // The early stop, on K x = b with b given whole (rhs_x = 0): sample 0
        // starts at the solution, sample 1 does not.
        let b_total: Vec<f64> = x0.iter().zip(&d).map(|(x, d)| x + 1.5 * d).collect();
        let long = CgOptions {
            iterations: 60,
            tolerance: None,
        };
        let (exact, ..) = solve(
            &cpu,
            &cpu_op,
            DType::F64,
            system,
            long,
            &x0,
            &b_total,
            (0.0, 1.0),
        );
        let start: Vec<f64> = exact[..n].iter().chain(&x0[n..]).copied().collect();
        let run = |tolerance| {
            let options = CgOptions {
                iterations: 5,
                tolerance,
            };
            let (_, iterations, _) = solve(
                b,
                &op,
                DType::F32,
                system,
                options,
                &start,
                &b_total,
                (0.0, 1.0),
            );
            iterations
        };
        // The stall rule: a sample whose residual is already the rounding of
        // b takes no step at all (a step on rounding noise is noise); the
        // other goes on (K = I + γP has two eigenvalues: two steps solve it).
        let iterations = run(None);
        assert_eq!(iterations[0], 0, "{name}: a solved sample moved");
        assert!(
            iterations[1] >= 2,
            "{name}: the other stopped ({iterations:?})"
        );
        // The official tolerance is checked before each iteration after the
        // first: a tolerance nothing is above stops the other after one.
        let iterations = run(Some(1e30));
        assert_eq!(iterations, vec![0, 1], "{name}: the tolerance's stop");
    }
}

mod cg_parity {
    crate::for_each_backend!(super::cg_on_every_backend);
}

/// The normal equations AᵀA x = Aᵀy are singular. For the block-local
/// operators AᵀA = c·P has one non-zero eigenvalue, so one step solves them
/// and every later step would divide rounding noise by rounding noise: before
/// the stall rule, M = 8 sent colorization's x off by O(1) (a DDS restore at
/// 4.6 dB). Now, on every backend, M = 8 leaves P x = P x_true and
/// (I − P) x = (I − P) x0 to rounding, and stops after one step.
fn singular_normal_equations_stay_put<B: Ops>(b: &B) {
    let n = item().checked_len().unwrap();
    let (x_true, x0) = (values(21, n, 1.0), values(22, n, 1.0));
    let options = CgOptions {
        iterations: 8,
        tolerance: None,
    };
    for (name, op) in operators(b) {
        if name == "blur" {
            continue;
        }
        let cpu = CpuBackend::new();
        let cpu_op = operators(&cpu)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        let f64_apply = |mode: Mode, v: &[f64], in_shape: Shape, out_shape: Shape| {
            let input = tensor(&cpu, in_shape, DType::F64, v);
            let mut out = Tensor::zeros(&cpu, out_shape, DType::F64).unwrap();
            cpu_op.apply(&cpu, mode, &input, &mut out).unwrap();
            out.to_f64(&cpu).unwrap()
        };
        let y_shape = Shape::from_dims(&[&[1][..], cpu_op.y_item().dims()].concat()).unwrap();
        let y = f64_apply(Mode::Forward, &x_true, batched(1), y_shape);
        let aty = f64_apply(Mode::Adjoint, &y, y_shape, batched(1));
        let (x, iterations, _) = solve(
            b,
            &op,
            DType::F32,
            NormalSystem::normal_equations(),
            options,
            &x0,
            &aty,
            (0.0, 1.0),
        );
        let project = |v: &[f64]| f64_apply(Mode::Project, v, batched(1), batched(1));
        let (px, p_true, px0) = (project(&x), project(&x_true), project(&x0));
        for i in 0..n {
            let (range, null) = (
                (px[i] - p_true[i]).abs(),
                (x[i] - px[i] - (x0[i] - px0[i])).abs(),
            );
            assert!(
                range <= 1e-5 && null <= 1e-5,
                "{name}: element {i}: {range:e} {null:e}"
            );
        }
        assert_eq!(iterations, vec![1], "{name}: steps taken");
    }
}

/// The stall rule's threshold is (8ε)² of the state's unit round-off.
#[test]
fn the_stall_threshold_is_eight_roundings() {
    use diffinv::ops::krylov::stall2;
    assert_eq!(stall2(DType::F32), 2f64.powi(-42));
    assert_eq!(stall2(DType::F64), 2f64.powi(-100));
}

mod normal_equations {
    crate::for_each_backend!(super::singular_normal_equations_stay_put);
}

/// The DDS passes on every backend and network dtype against the f64
/// formulas: Tweedie into the f32 state, the re-noise back to the network
/// dtype (odd length: the packed variant's last word).
fn dds_passes_on_every_backend<B: Ops>(b: &B) {
    let shape = Shape::from_dims(&[3, 5, 7]).unwrap();
    let n = 105;
    let (xt, eps, z) = (values(21, n, 1.0), values(22, n, 1.0), values(23, n, 1.0));
    let (alpha, sigma) = (0.6, 0.8);
    let c = [0.9, 0.3, 0.2];
    for dtype in [DType::F16, DType::F32, DType::F64] {
        if !b.dds_supports(dtype) {
            continue;
        }
        let what = format!("{:?} {dtype:?}", b.kind());
        let round = |v: &[f64]| {
            tensor(&CpuBackend::new(), shape, dtype, v)
                .to_f64(&CpuBackend::new())
                .unwrap()
        };
        let (xt_r, eps_r, z_r) = (round(&xt), round(&eps), round(&z));
        let state = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let xt_t = tensor(b, shape, dtype, &xt);
        let eps_t = tensor(b, shape, dtype, &eps);
        let z_t = tensor(b, shape, dtype, &z);
        let mut x0 = Tensor::zeros(b, shape, state).unwrap();
        dds_tweedie(b, &xt_t, &eps_t, alpha, sigma, &mut x0).unwrap();
        let want: Vec<f64> = (0..n)
            .map(|i| (xt_r[i] - sigma * eps_r[i]) / alpha)
            .collect();
        let got = x0.to_f64(b).unwrap();
        compare(&format!("{what} tweedie"), &got, &want, 1e-6, 1e-6);
        let mut out = Tensor::zeros(b, shape, dtype).unwrap();
        dds_renoise(b, &x0, &eps_t, &z_t, c, &mut out).unwrap();
        let want: Vec<f64> = (0..n)
            .map(|i| c[0] * got[i] + c[1] * z_r[i] + c[2] * eps_r[i])
            .collect();
        let tol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
        compare(
            &format!("{what} renoise"),
            &out.to_f64(b).unwrap(),
            &want,
            tol,
            tol,
        );
    }
}

mod dds_parity {
    crate::for_each_backend!(super::dds_passes_on_every_backend);
}

/// M = 0, γ < 0, wrong shapes and dtypes are typed errors.
#[test]
fn bad_input_is_a_typed_error() {
    let b = CpuBackend::new();
    let op = Operator::avg_pool(&b, item(), 2).unwrap();
    let ok = NormalSystem::tikhonov(1.0);
    let new = |system, options| ConjugateGradient::new(&b, &op, 1, DType::F32, system, options);
    let zero = CgOptions {
        iterations: 0,
        tolerance: None,
    };
    assert!(matches!(new(ok, zero), Err(Error::InvalidParameter { .. })));
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let system = NormalSystem::tikhonov(bad);
        assert!(matches!(
            new(system, CgOptions::default()),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let zero_k = NormalSystem {
        identity: 0.0,
        gram: 0.0,
    };
    assert!(matches!(
        new(zero_k, CgOptions::default()),
        Err(Error::InvalidParameter { .. })
    ));
    let negative_tol = CgOptions {
        iterations: 3,
        tolerance: Some(-1.0),
    };
    assert!(matches!(
        new(ok, negative_tol),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        ConjugateGradient::new(&b, &op, 1, DType::F16, ok, CgOptions::default()),
        Err(Error::UnsupportedDType { .. })
    ));
    let mut cg = new(ok, CgOptions::default()).unwrap();
    let mut x = Tensor::zeros(&b, batched(1), DType::F32).unwrap();
    let wrong = Tensor::zeros(&b, batched(2), DType::F32).unwrap();
    assert!(matches!(
        cg.solve(&b, &mut x, &wrong, 1.0, 1.0),
        Err(Error::ShapeMismatch { .. })
    ));
    let f64_d = Tensor::zeros(&b, batched(1), DType::F64).unwrap();
    assert!(matches!(
        cg.solve(&b, &mut x, &f64_d, 1.0, 1.0),
        Err(Error::DTypeMismatch { .. })
    ));
    let d = Tensor::zeros(&b, batched(1), DType::F32).unwrap();
    assert!(matches!(
        cg.solve(&b, &mut x, &d, f64::NAN, 1.0),
        Err(Error::InvalidParameter { .. })
    ));
    // The DDS passes: a zero α, mismatched dtypes and shapes.
    let xt = Tensor::zeros(&b, batched(1), DType::F16).unwrap();
    let mut x0 = Tensor::zeros(&b, batched(1), DType::F32).unwrap();
    assert!(matches!(
        dds_tweedie(&b, &xt, &xt, 0.0, 1.0, &mut x0),
        Err(Error::InvalidParameter { .. })
    ));
    let mut x0_f16 = Tensor::zeros(&b, batched(1), DType::F16).unwrap();
    assert!(matches!(
        dds_tweedie(&b, &xt, &xt, 0.5, 0.5, &mut x0_f16),
        Err(Error::DTypeMismatch { .. })
    ));
    let eps2 = Tensor::zeros(&b, batched(2), DType::F16).unwrap();
    assert!(matches!(
        dds_tweedie(&b, &xt, &eps2, 0.5, 0.5, &mut x0),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// Multi-coil MRI data consistency: K = I + γAᴴA with AᴴA from the operator's
/// FFT kernels, on interleaved complex images. CG in f64 matches a dense solve
/// (AᴴA applied to every basis vector) to 1e-8; every backend's f32 CG tracks
/// it, with M + 1 AᴴA applications and no host sync.
fn multi_coil_cg<B: Ops>(b: &B) {
    use diffinv::ops::mri::{ColumnMask, MaskKind, MultiCoil};
    let (h, w, coils) = (8, 10, 3);
    let mask = ColumnMask::generate(MaskKind::Uniform1d, w, 2, 0.2, 5)
        .unwrap()
        .plane(h);
    let maps = values(31, coils * h * w * 2, 0.7);
    let cpu = CpuBackend::new();
    let n = h * w * 2;
    let shape = Shape::from_dims(&[1, h, w, 2]).unwrap();
    let system = NormalSystem::tikhonov(2.0);
    let (x0, d) = (values(32, n, 1.0), values(33, n, 1.0));
    let run = |backend: &B, dtype: DType, iterations: usize| -> Vec<f64> {
        let op = MultiCoil::new(backend, dtype, h, w, &mask, &maps, coils).unwrap();
        let options = CgOptions {
            iterations,
            tolerance: None,
        };
        let mut cg = ConjugateGradient::new(backend, &op, 1, dtype, system, options).unwrap();
        let mut x = tensor(backend, shape, dtype, &x0);
        let dt = tensor(backend, shape, dtype, &d);
        let (launches, syncs) = (backend.launch_count(), backend.host_sync_count());
        cg.solve(backend, &mut x, &dt, 1.0, 2.0).unwrap();
        assert_eq!(backend.launch_count() - launches, cg.launches_per_solve());
        assert_eq!(
            cg.launches_per_solve(),
            1 + 2 * iterations as u64 + 7 * (iterations as u64 + 1)
        );
        assert_eq!(backend.host_sync_count(), syncs);
        x.to_f64(backend).unwrap()
    };
    // The dense K from AᴴA of every basis vector (f64, CPU).
    let op = MultiCoil::new(&cpu, DType::F64, h, w, &mask, &maps, coils).unwrap();
    let mut k = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let mut out = Tensor::zeros(&cpu, shape, DType::F64).unwrap();
        op.normal(&cpu, &tensor(&cpu, shape, DType::F64, &e), &mut out)
            .unwrap();
        for (i, v) in out.to_f64(&cpu).unwrap().into_iter().enumerate() {
            k[i * n + j] = 2.0 * v + if i == j { 1.0 } else { 0.0 };
        }
    }
    let rhs: Vec<f64> = (0..n).map(|i| x0[i] + 2.0 * d[i]).collect();
    let want = cholesky_solve(&k, &rhs);
    let exact = {
        let op = MultiCoil::new(&cpu, DType::F64, h, w, &mask, &maps, coils).unwrap();
        let options = CgOptions {
            iterations: 60,
            tolerance: None,
        };
        let mut cg = ConjugateGradient::new(&cpu, &op, 1, DType::F64, system, options).unwrap();
        let mut x = tensor(&cpu, shape, DType::F64, &x0);
        cg.solve(&cpu, &mut x, &tensor(&cpu, shape, DType::F64, &d), 1.0, 2.0)
            .unwrap();
        x.to_f64(&cpu).unwrap()
    };
    compare("multi-coil CG f64 vs dense", &exact, &want, 1e-8, 1e-8);
    let got = run(b, DType::F32, 60);
    compare(
        &format!("{:?} multi-coil CG f32", b.kind()),
        &got,
        &want,
        1e-5,
        1e-5,
    );
}

mod multi_coil {
    crate::for_each_backend!(super::multi_coil_cg);
}

/// The edge sizes of `common::SIZES` (1, odd, around a block, past a chunk
/// of 1024, a whole image) as `[1, 1, n]` items, batch 2: the CG in f32 on
/// every backend tracks the f64 definition and stays per-sample, and the DDS
/// passes match the f64 formulas, in every network dtype.
fn edge_sizes<B: Ops>(b: &B) {
    let cpu = CpuBackend::new();
    for n in common::SIZES {
        let item = Shape::from_dims(&[1, 1, n]).unwrap();
        let shape = Shape::from_dims(&[2, 1, 1, n]).unwrap();
        let mask: Vec<f32> = (0..n).map(|i| f32::from(i % 3 != 1)).collect();
        let (x0, d) = (values(41, 2 * n, 1.0), values(42, 2 * n, 1.0));
        let system = NormalSystem::tikhonov(0.5);
        let options = CgOptions {
            iterations: 3,
            tolerance: None,
        };
        let run = |backend: &B, dtype: DType| {
            let op = Operator::inpaint(backend, item, &mask, false).unwrap();
            let mut cg = ConjugateGradient::new(backend, &op, 2, dtype, system, options).unwrap();
            let mut x = tensor(backend, shape, dtype, &x0);
            cg.solve(
                backend,
                &mut x,
                &tensor(backend, shape, dtype, &d),
                1.0,
                0.5,
            )
            .unwrap();
            x.to_f64(backend).unwrap()
        };
        let want = {
            let op = Operator::inpaint(&cpu, item, &mask, false).unwrap();
            let mut cg = ConjugateGradient::new(&cpu, &op, 2, DType::F64, system, options).unwrap();
            let mut x = tensor(&cpu, shape, DType::F64, &x0);
            cg.solve(&cpu, &mut x, &tensor(&cpu, shape, DType::F64, &d), 1.0, 0.5)
                .unwrap();
            x.to_f64(&cpu).unwrap()
        };
        let what = format!("{:?} n = {n}", b.kind());
        compare(&what, &run(b, DType::F32), &want, 2e-6, 2e-5);
        for dtype in [DType::F16, DType::F32] {
            if !b.dds_supports(dtype) {
                continue;
            }
            let xt = tensor(b, shape, dtype, &x0);
            let eps = tensor(b, shape, dtype, &d);
            let mut x = Tensor::zeros(b, shape, DType::F32).unwrap();
            dds_tweedie(b, &xt, &eps, 0.8, 0.6, &mut x).unwrap();
            let (xr, er) = (xt.to_f64(b).unwrap(), eps.to_f64(b).unwrap());
            let tw: Vec<f64> = (0..2 * n).map(|i| (xr[i] - 0.6 * er[i]) / 0.8).collect();
            compare(
                &format!("{what} {dtype:?} tweedie"),
                &x.to_f64(b).unwrap(),
                &tw,
                1e-6,
                1e-5,
            );
        }
    }
}

mod edge_sizes {
    crate::for_each_backend!(super::edge_sizes);
}
