//! The operator family on every backend: each operator (inpainting in both
//! conventions, average-pool SR, colorization, separable blur and bicubic SR
//! through their truncated SVDs) in each mode (H, Hᵀ, H⁺, P)
//! against the CPU's f64 definition, the operator laws computed by the backend
//! itself, one launch per application, and bad input as typed errors.

mod common;

use common::{compare, values};
use diffinv::backend::cpu::CpuBackend;
use diffinv::ops::{Mode, Operator};
use diffinv::{DType, Error, HostSlice, Ops, Shape, Tensor};

/// Image items and batch of the sweep: an even item, and an odd one whose
/// outputs do not fill whole f16 words or whole workgroups.
const ITEMS: [[usize; 3]; 2] = [[3, 12, 20], [3, 15, 21]];
const BATCH: usize = 3;

/// A mask over the item: a box unobserved in every channel (rows 3–7, cols
/// 5–10), plus every 7th element of the rest unobserved.
fn mask(item: [usize; 3]) -> Vec<f32> {
    let [c, h, w] = item;
    (0..c * h * w)
        .map(|i| {
            let (row, col) = ((i / w) % h, i % w);
            let boxed = (3..8).contains(&row) && (5..11).contains(&col);
            if boxed || i % 7 == 3 {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// Every operator on `item`, with a name.
fn operators<B: Ops>(b: &B, item: [usize; 3]) -> Vec<(String, Operator<B>)> {
    let shape = Shape::from_dims(&item).unwrap();
    let m = mask(item);
    let mut ops = vec![
        (
            "inpaint kept".to_string(),
            Operator::inpaint(b, shape, &m, true).unwrap(),
        ),
        (
            "inpaint masked".to_string(),
            Operator::inpaint(b, shape, &m, false).unwrap(),
        ),
        (
            "colorize".to_string(),
            Operator::colorize(b, shape, Operator::<B>::OFFICIAL_COLOR_WEIGHTS).unwrap(),
        ),
        (
            "colorize, skewed".to_string(),
            Operator::colorize(b, shape, [0.2, 0.7, 0.1]).unwrap(),
        ),
    ];
    use diffinv::ops::operator::separable::{gaussian_taps, uniform_taps};
    for (name, taps) in [
        ("gaussian blur σ 1.5, 7 taps", gaussian_taps(1.5, 3)),
        ("uniform blur, 4 taps", uniform_taps(4)),
    ] {
        if taps.len() <= item[1].min(item[2]) {
            ops.push((name.to_string(), Operator::blur(b, shape, &taps).unwrap()));
        }
    }
    for s in [3, 4] {
        if item[1].is_multiple_of(s) && item[2].is_multiple_of(s) {
            ops.push((
                format!("bicubic {s}"),
                Operator::bicubic(b, shape, s).unwrap(),
            ));
        }
    }
    for s in [1, 2, 3, 4] {
        if item[1].is_multiple_of(s) && item[2].is_multiple_of(s) {
            ops.push((
                format!("avg pool {s}"),
                Operator::avg_pool(b, shape, s).unwrap(),
            ));
        }
    }
    ops
}

fn batched(item: Shape) -> Shape {
    let mut dims = vec![BATCH];
    dims.extend_from_slice(item.dims());
    Shape::from_dims(&dims).unwrap()
}

/// (input shape, output shape) of `mode`.
fn shapes<B: Ops>(op: &Operator<B>, mode: Mode) -> (Shape, Shape) {
    let (x, y) = (batched(op.x_item()), batched(op.y_item()));
    match mode {
        Mode::Forward => (x, y),
        Mode::Adjoint | Mode::PseudoInverse => (y, x),
        Mode::Project => (x, x),
    }
}

fn round_to(dtype: DType, v: &[f64]) -> Vec<f64> {
    let cpu = CpuBackend::new();
    Tensor::from_host(&cpu, Shape::flat(v.len()), dtype, HostSlice::F64(v))
        .unwrap()
        .to_f64(&cpu)
        .unwrap()
}

/// `mode` of `op` on `input` (already representable in `dtype`) on backend `b`.
fn run<B: Ops>(b: &B, op: &Operator<B>, mode: Mode, dtype: DType, input: &[f64]) -> Vec<f64> {
    let (in_shape, out_shape) = shapes(op, mode);
    let x = Tensor::from_host(b, in_shape, dtype, HostSlice::F64(input)).unwrap();
    let mut y = Tensor::zeros(b, out_shape, dtype).unwrap();
    let before = b.launch_count();
    op.apply(b, mode, &x, &mut y).unwrap();
    assert_eq!(
        b.launch_count() - before,
        op.launches_per_apply(),
        "launches per application"
    );
    y.to_f64(b).unwrap()
}

/// max(1, max |v|): absolute tolerances are per unit of output magnitude, so
/// they hold for the separable pseudo-inverses too, which amplify by up to
/// 1/(smallest kept singular value)² ≈ 10³ and give outputs near 100.
fn magnitude(v: &[f64]) -> f64 {
    v.iter().fold(1f64, |m, x| m.max(x.abs()))
}

fn dtypes<B: Ops>(b: &B) -> Vec<DType> {
    [DType::F32, DType::F16]
        .into_iter()
        .filter(|&d| b.operator_supports(d))
        .collect()
}

fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (2e-3, 8e-3),
        _ => (1e-6, 1e-5),
    }
}

/// Every operator and mode matches the CPU's f64 definition on the same
/// (rounded) inputs.
fn every_mode_matches_the_f64_definition<B: Ops>(b: &B) {
    let cpu = CpuBackend::new();
    for item in ITEMS {
        let reference = operators(&cpu, item);
        for ((name, op), (_, op64)) in operators(b, item).iter().zip(&reference) {
            for mode in Mode::ALL {
                let n = shapes(op, mode).0.checked_len().unwrap();
                for dtype in dtypes(b) {
                    let input = round_to(dtype, &values(n as u64, n, 2.0));
                    let got = run(b, op, mode, dtype, &input);
                    let want = run(&cpu, op64, mode, DType::F64, &input);
                    let (rel, abs) = tolerance(dtype);
                    let what = format!("{:?} {dtype:?} {item:?} {name} {mode:?}", b.kind());
                    compare(&what, &got, &want, rel, abs * magnitude(&want));
                }
            }
        }
    }
}

mod modes {
    crate::for_each_backend!(super::every_mode_matches_the_f64_definition);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// |a − b| ≤ tol·scale, with a message.
fn close(what: &str, a: f64, b: f64, scale: f64, tol: f64) {
    assert!(
        (a - b).abs() <= tol * scale,
        "{what}: {a} vs {b} (scale {scale:.3e}, tol {tol:.0e})"
    );
}

/// The operator laws, each side computed by the backend itself:
/// ⟨Hx, y⟩ = ⟨x, Hᵀy⟩, HH⁺Hx = Hx, P²x = Px, ⟨Px, z⟩ = ⟨x, Pz⟩, PH⁺y = H⁺y.
/// Tolerances: relative to the norms involved, 1e-5 in f32 and 1e-2 in f16
/// (every application rounds its output to f16 once).
fn operator_laws_hold<B: Ops>(b: &B) {
    for item in ITEMS {
        for (name, op) in operators(b, item) {
            for dtype in dtypes(b) {
                let tol = if dtype == DType::F16 { 1e-2 } else { 1e-5 };
                let what = format!("{:?} {dtype:?} {item:?} {name}", b.kind());
                let nx = batched(op.x_item()).checked_len().unwrap();
                let ny = batched(op.y_item()).checked_len().unwrap();
                let x = round_to(dtype, &values(1, nx, 1.0));
                let z = round_to(dtype, &values(2, nx, 1.0));
                let y = round_to(dtype, &values(3, ny, 1.0));
                let hx = run(b, &op, Mode::Forward, dtype, &x);
                let hty = run(b, &op, Mode::Adjoint, dtype, &y);
                close(
                    &format!("{what}: <Hx,y> = <x,H'y>"),
                    dot(&hx, &y),
                    dot(&x, &hty),
                    norm(&hx) * norm(&y) + norm(&x) * norm(&hty),
                    tol,
                );
                let hphx = run(
                    b,
                    &op,
                    Mode::Forward,
                    dtype,
                    &run(b, &op, Mode::PseudoInverse, dtype, &hx),
                );
                compare(
                    &format!("{what}: HH+Hx = Hx"),
                    &hphx,
                    &hx,
                    tol,
                    tol * 4.0 * magnitude(&hx),
                );
                let px = run(b, &op, Mode::Project, dtype, &x);
                compare(
                    &format!("{what}: P²x = Px"),
                    &run(b, &op, Mode::Project, dtype, &px),
                    &px,
                    tol,
                    tol * 4.0 * magnitude(&px),
                );
                let pz = run(b, &op, Mode::Project, dtype, &z);
                close(
                    &format!("{what}: <Px,z> = <x,Pz>"),
                    dot(&px, &z),
                    dot(&x, &pz),
                    norm(&px) * norm(&z) + norm(&x) * norm(&pz),
                    tol,
                );
                let hpy = run(b, &op, Mode::PseudoInverse, dtype, &y);
                compare(
                    &format!("{what}: PH+y = H+y"),
                    &run(b, &op, Mode::Project, dtype, &hpy),
                    &hpy,
                    tol,
                    tol * 4.0 * magnitude(&hpy),
                );
            }
        }
    }
}

mod laws {
    crate::for_each_backend!(super::operator_laws_hold);
}

/// Closed forms on a hand-checkable case: a 1×2×4 item.
#[test]
fn small_cases_by_hand() {
    let b = CpuBackend::new();
    let item = Shape::from_dims(&[1, 2, 4]).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    // One batch item: [1, …item].
    let one = |item: Shape| {
        let mut dims = vec![1];
        dims.extend_from_slice(item.dims());
        Shape::from_dims(&dims).unwrap()
    };
    let apply = |op: &Operator<CpuBackend>, mode: Mode, input: &[f64], out: Shape| {
        let shape = if matches!(mode, Mode::Adjoint | Mode::PseudoInverse) {
            op.y_item()
        } else {
            op.x_item()
        };
        let t = Tensor::from_host(&b, one(shape), DType::F64, HostSlice::F64(input)).unwrap();
        let mut o = Tensor::zeros(&b, one(out), DType::F64).unwrap();
        op.apply(&b, mode, &t, &mut o).unwrap();
        o.to_f64(&b).unwrap()
    };
    let pool = Operator::avg_pool(&b, item, 2).unwrap();
    assert_eq!(pool.y_item().dims(), &[1, 1, 2]);
    assert_eq!(
        apply(&pool, Mode::Forward, &x, pool.y_item()),
        vec![3.5, 5.5]
    );
    assert_eq!(
        apply(&pool, Mode::PseudoInverse, &[1.0, 2.0], item),
        vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]
    );
    assert_eq!(
        apply(&pool, Mode::Adjoint, &[1.0, 2.0], item),
        vec![0.25, 0.25, 0.5, 0.5, 0.25, 0.25, 0.5, 0.5]
    );
    assert_eq!(
        apply(&pool, Mode::Project, &x, item),
        vec![3.5, 3.5, 5.5, 5.5, 3.5, 3.5, 5.5, 5.5]
    );
    let mask = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
    let kept = Operator::inpaint(&b, item, &mask, true).unwrap();
    assert_eq!(kept.y_item().dims(), &[4]);
    assert_eq!(
        apply(&kept, Mode::Forward, &x, kept.y_item()),
        vec![1.0, 3.0, 4.0, 7.0]
    );
    assert_eq!(
        apply(&kept, Mode::Adjoint, &[9.0, 8.0, 7.0, 6.0], item),
        vec![9.0, 0.0, 8.0, 7.0, 0.0, 0.0, 6.0, 0.0]
    );
    assert_eq!(
        apply(&kept, Mode::Project, &x, item),
        vec![1.0, 0.0, 3.0, 4.0, 0.0, 0.0, 7.0, 0.0]
    );
    let rgb = Shape::from_dims(&[3, 1, 2]).unwrap();
    let color = Operator::colorize(&b, rgb, [0.25, 0.5, 0.25]).unwrap();
    let y = apply(
        &color,
        Mode::Forward,
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        color.y_item(),
    );
    assert_eq!(y, vec![3.0, 4.0]); // 0.25·1 + 0.5·3 + 0.25·5, 0.25·2 + 0.5·4 + 0.25·6
                                   // ‖h‖² = 0.375: H⁺y = h·y/0.375.
    let pinv = apply(&color, Mode::PseudoInverse, &[3.0, 0.75], rgb);
    compare(
        "colour H+",
        &pinv,
        &[2.0, 0.5, 4.0, 1.0, 2.0, 0.5],
        1e-15,
        1e-15,
    );
}

/// `pinv_gram_scale`: H⁺(H⁺)ᵀ = q·P for every operator, checked with dense
/// matrices built column by column from the f64 operator (a 3×4×8 item).
#[test]
fn the_pseudo_inverse_gram_is_a_multiple_of_the_projector() {
    let b = CpuBackend::new();
    let item = [3, 4, 8];
    // The separable operators' H⁺(H⁺)ᵀ is no multiple of P (and the guided
    // samplers, its only user, refuse them).
    for (name, op) in operators(&b, item)
        .into_iter()
        .filter(|(_, op)| op.kind().is_block_local())
    {
        let (nx, ny) = (
            op.x_item().checked_len().unwrap(),
            op.y_item().checked_len().unwrap(),
        );
        let column = |mode: Mode, j: usize, n: usize| {
            let mut e = vec![0.0; n];
            e[j] = 1.0;
            let shape = |i: Shape| Shape::from_dims(&[&[1][..], i.dims()].concat()).unwrap();
            let (i, o) = match mode {
                Mode::PseudoInverse => (op.y_item(), op.x_item()),
                _ => (op.x_item(), op.x_item()),
            };
            let t = Tensor::from_host(&b, shape(i), DType::F64, HostSlice::F64(&e)).unwrap();
            let mut out = Tensor::zeros(&b, shape(o), DType::F64).unwrap();
            op.apply(&b, mode, &t, &mut out).unwrap();
            out.to_f64(&b).unwrap()
        };
        // pinv[j] is column j of H⁺ (nx values); p[j] is column j of P.
        let pinv: Vec<Vec<f64>> = (0..ny)
            .map(|j| column(Mode::PseudoInverse, j, ny))
            .collect();
        let p: Vec<Vec<f64>> = (0..nx).map(|j| column(Mode::Project, j, nx)).collect();
        let q = op.pinv_gram_scale();
        for r in 0..nx {
            for c in 0..nx {
                let gram: f64 = (0..ny).map(|k| pinv[k][r] * pinv[k][c]).sum();
                assert!(
                    (gram - q * p[c][r]).abs() < 1e-12,
                    "{name}: Q[{r},{c}] = {gram}, q·P = {}",
                    q * p[c][r]
                );
            }
        }
    }
}

/// Unobserved entries are exactly zero whatever x holds there (NaN, ±Inf),
/// and observed non-finite values pass through where the operator reads them.
fn non_finite_values_follow_what_the_operator_reads<B: Ops>(b: &B) {
    let item = Shape::from_dims(&[1, 2, 4]).unwrap();
    let mask = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
    let x = [
        f64::NAN,
        f64::NAN,
        f64::INFINITY,
        -1.0,
        f64::NEG_INFINITY,
        2.0,
        3.0,
        f64::NAN,
    ];
    for dtype in dtypes(b) {
        for kept in [true, false] {
            let op = Operator::inpaint(b, item, &mask, kept).unwrap();
            let t = Tensor::from_host(b, item, dtype, HostSlice::F64(&x)).unwrap();
            let mut p = Tensor::zeros(b, item, dtype).unwrap();
            op.project(b, &t, &mut p).unwrap();
            let got = p.to_f64(b).unwrap();
            let want = [f64::NAN, 0.0, f64::INFINITY, -1.0, 0.0, 0.0, 3.0, 0.0];
            compare(
                &format!("{:?} {dtype:?} kept {kept}: P", b.kind()),
                &got,
                &want,
                0.0,
                0.0,
            );
        }
    }
}

mod non_finite {
    crate::for_each_backend!(super::non_finite_values_follow_what_the_operator_reads);
}

/// Every misuse is a typed error before any launch.
fn bad_input_is_a_typed_error<B: Ops>(b: &B) {
    let item = Shape::from_dims(&[3, 8, 8]).unwrap();
    let good_mask = vec![1.0; 192];
    let param = |r: diffinv::Result<Operator<B>>, name: &str| match r {
        Err(Error::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
        Err(other) => panic!("expected InvalidParameter({name}), got {other}"),
        Ok(_) => panic!("expected InvalidParameter({name}), got an operator"),
    };
    assert!(matches!(
        Operator::inpaint(b, item, &good_mask[..191], true),
        Err(Error::LengthMismatch {
            expected: 192,
            got: 191,
            ..
        })
    ));
    let mut half = good_mask.clone();
    half[5] = 0.5;
    param(
        Operator::inpaint(b, item, &half, true),
        "inpainting mask entry",
    );
    half[5] = f32::NAN;
    param(
        Operator::inpaint(b, item, &half, false),
        "inpainting mask entry",
    );
    param(
        Operator::inpaint(b, item, &[0.0; 192], true),
        "observed entries",
    );
    param(Operator::avg_pool(b, item, 3), "pooling factor");
    param(Operator::avg_pool(b, item, 0), "pooling factor");
    param(
        Operator::colorize(b, Shape::from_dims(&[1, 8, 8]).unwrap(), [1.0; 3]),
        "channels",
    );
    param(
        Operator::colorize(b, item, [f64::NAN, 1.0, 1.0]),
        "colour weight",
    );
    param(Operator::colorize(b, item, [0.0; 3]), "colour weights");
    assert!(matches!(
        Operator::avg_pool(b, Shape::new(1, 3, 8, 8), 2),
        Err(Error::InvalidShape { .. })
    ));

    let op = Operator::avg_pool(b, item, 2).unwrap();
    let dtype = DType::F32;
    let x = Tensor::zeros(b, Shape::new(2, 3, 8, 8), dtype).unwrap();
    let before = b.launch_count();
    // y of the wrong shape (the image size, not the pooled size).
    let mut wrong = Tensor::zeros(b, Shape::new(2, 3, 8, 8), dtype).unwrap();
    assert!(matches!(
        op.forward(b, &x, &mut wrong),
        Err(Error::ShapeMismatch {
            what: "operator output",
            ..
        })
    ));
    // A batch that differs.
    let mut one = Tensor::zeros(b, Shape::new(1, 3, 4, 4), dtype).unwrap();
    assert!(matches!(
        op.forward(b, &x, &mut one),
        Err(Error::ShapeMismatch { .. })
    ));
    // An input of another item size.
    let small = Tensor::zeros(b, Shape::new(2, 3, 4, 8), dtype).unwrap();
    let mut y = Tensor::zeros(b, Shape::new(2, 3, 4, 4), dtype).unwrap();
    assert!(matches!(
        op.forward(b, &small, &mut y),
        Err(Error::ShapeMismatch {
            what: "operator input",
            ..
        })
    ));
    // Mixed dtypes, and dtypes the family does not compute on.
    let mut y16 = Tensor::zeros(b, Shape::new(2, 3, 4, 4), DType::F16).unwrap();
    assert!(matches!(
        op.forward(b, &x, &mut y16),
        Err(Error::DTypeMismatch { .. })
    ));
    let c = Tensor::zeros(b, Shape::new(2, 3, 8, 8), DType::C64).unwrap();
    let mut yc = Tensor::zeros(b, Shape::new(2, 3, 4, 4), DType::C64).unwrap();
    assert!(matches!(
        op.forward(b, &c, &mut yc),
        Err(Error::UnsupportedDType { .. })
    ));
    assert_eq!(b.launch_count(), before, "nothing launched");
    op.forward(b, &x, &mut y).unwrap();
}

mod bad_input {
    crate::for_each_backend!(super::bad_input_is_a_typed_error);
}
