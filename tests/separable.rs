//! The separable operators (blur, bicubic SR) on their own: the truncated SVD
//! against the raw 1-D matrices, every tap of an odd kernel used, the bicubic
//! kernel's normalisation, the guided samplers' refusal, and bad input.

mod common;

use common::{compare, values};
use diffinv::backend::cpu::CpuBackend;
use diffinv::guidance::{CpgdmConfig, CpgdmPlan, PgdmDiscreteConfig, PgdmDiscretePlan};
use diffinv::ops::operator::separable::{gaussian_taps, uniform_taps, DEFAULT_TRUNCATION};
use diffinv::ops::{CpgdmSampler, GuidedSampler, Mode, Operator};
use diffinv::{DType, Error, HostSlice, Shape, Tensor};

const C: usize = 2;
const H: usize = 9;
const W: usize = 12;

fn apply(op: &Operator<CpuBackend>, mode: Mode, input: &[f64]) -> Vec<f64> {
    let b = CpuBackend::new();
    let shape = |i: Shape| Shape::from_dims(&[&[1][..], i.dims()].concat()).unwrap();
    let (i, o) = match mode {
        Mode::Forward => (op.x_item(), op.y_item()),
        Mode::Adjoint | Mode::PseudoInverse => (op.y_item(), op.x_item()),
        Mode::Project => (op.x_item(), op.x_item()),
    };
    let x = Tensor::from_host(&b, shape(i), DType::F64, HostSlice::F64(input)).unwrap();
    let mut y = Tensor::zeros(&b, shape(o), DType::F64).unwrap();
    op.apply(&b, mode, &x, &mut y).unwrap();
    y.to_f64(&b).unwrap()
}

/// Zero-boundary 2-D convolution with every tap, centred at len/2, by hand.
fn convolve(x: &[f64], taps: &[f64]) -> Vec<f64> {
    let half = taps.len() as i64 / 2;
    let at = |c: usize, i: i64, j: i64| {
        if (0..H as i64).contains(&i) && (0..W as i64).contains(&j) {
            x[c * H * W + i as usize * W + j as usize]
        } else {
            0.0
        }
    };
    let mut out = vec![0.0; C * H * W];
    for c in 0..C {
        for i in 0..H as i64 {
            for j in 0..W as i64 {
                let mut acc = 0.0;
                for (a, ka) in taps.iter().enumerate() {
                    for (bb, kb) in taps.iter().enumerate() {
                        acc += ka * kb * at(c, i + a as i64 - half, j + bb as i64 - half);
                    }
                }
                out[c * H * W + i as usize * W + j as usize] = acc;
            }
        }
    }
    out
}

/// Without truncation H is the convolution itself — for an odd kernel too,
/// whose last tap the official code drops and this one keeps.
#[test]
fn untruncated_blur_is_the_full_convolution() {
    let b = CpuBackend::new();
    let item = Shape::from_dims(&[C, H, W]).unwrap();
    let x = values(1, C * H * W, 1.0);
    for taps in [
        gaussian_taps(1.0, 2),
        uniform_taps(5),
        vec![0.1, 0.2, 0.4, 0.3],
    ] {
        let op = Operator::blur_with_truncation(&b, item, &taps, 0.0).unwrap();
        compare(
            "H x",
            &apply(&op, Mode::Forward, &x),
            &convolve(&x, &taps),
            1e-13,
            1e-13,
        );
        assert_eq!(
            op.svd_ranks(),
            Some((H, W)),
            "no singular value is exactly 0 here"
        );
    }
}

/// The default truncation removes exactly the 1-D singular values below 3e-2
/// from H itself: H changes by at most that much per factor, and P stays a
/// projector of the reported rank.
#[test]
fn truncation_changes_the_operator_by_at_most_the_threshold() {
    let b = CpuBackend::new();
    let item = Shape::from_dims(&[C, H, W]).unwrap();
    let taps = gaussian_taps(2.0, 4);
    let raw = Operator::blur_with_truncation(&b, item, &taps, 0.0).unwrap();
    let cut = Operator::blur(&b, item, &taps).unwrap();
    let (rh, rw) = cut.svd_ranks().unwrap();
    assert!(
        rh < H && rw < W,
        "σ = 2 on 9×12 has singular values below 3e-2: {rh}, {rw}"
    );
    let x = values(2, C * H * W, 1.0);
    let (hx, hx_cut) = (
        apply(&raw, Mode::Forward, &x),
        apply(&cut, Mode::Forward, &x),
    );
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let diff: Vec<f64> = hx.iter().zip(&hx_cut).map(|(a, b)| a - b).collect();
    // ‖A⊗B − Ã⊗B̃‖ ≤ τ‖B‖ + ‖Ã‖τ ≤ 2τ (both factors have norm ≤ 1).
    assert!(
        norm(&diff) <= 2.0 * DEFAULT_TRUNCATION * norm(&x),
        "{}",
        norm(&diff)
    );
    // trace P = rank: P applied to each basis vector, diagonal summed.
    let n = C * H * W;
    let trace: f64 = (0..n)
        .map(|k| {
            let mut e = vec![0.0; n];
            e[k] = 1.0;
            apply(&cut, Mode::Project, &e)[k]
        })
        .sum();
    assert!((trace - (C * rh * rw) as f64).abs() < 1e-9, "{trace}");
}

/// Bicubic rows sum to 1 (the kernel is normalised and reflection keeps every
/// tap), so an untruncated H maps a constant image to the same constant.
#[test]
fn bicubic_preserves_constants() {
    let b = CpuBackend::new();
    let item = Shape::from_dims(&[C, 12, 12]).unwrap();
    for s in [2, 3, 4] {
        let op = Operator::bicubic_with_truncation(&b, item, s, 0.0).unwrap();
        let y = apply(&op, Mode::Forward, &vec![0.7; C * 144]);
        assert_eq!(y.len(), C * (12 / s) * (12 / s));
        assert!(y.iter().all(|v| (v - 0.7).abs() < 1e-14), "s = {s}: {y:?}");
    }
}

/// Noisy C-ΠGDM and noisy ΠGDM need `H⁺(H⁺)ᵀ = q·P`; a separable operator
/// has no such q. Noiseless, both take it.
#[test]
fn noisy_guidance_refuses_separable_operators() {
    let b = CpuBackend::new();
    let item = Shape::from_dims(&[3, 8, 8]).unwrap();
    let op = Operator::bicubic(&b, item, 4).unwrap();
    let y = Tensor::zeros(&b, Shape::new(1, 3, 2, 2), DType::F32).unwrap();
    for sigma_y in [0.0, 0.05] {
        let cpgdm = CpgdmPlan::new(CpgdmConfig {
            sigma_y,
            ..CpgdmConfig::default()
        })
        .unwrap();
        let pigdm = PgdmDiscretePlan::new(PgdmDiscreteConfig {
            sigma_y,
            ..PgdmDiscreteConfig::default()
        })
        .unwrap();
        let results = [
            GuidedSampler::new(&b, &cpgdm, &op, &y).err(),
            GuidedSampler::new(&b, &pigdm, &op, &y).err(),
        ];
        for e in results {
            match (sigma_y > 0.0, e) {
                (false, None) | (true, Some(Error::UnsupportedOperator { .. })) => {}
                (_, e) => panic!("σ_y = {sigma_y}: {e:?}"),
            }
        }
    }
}

/// s×s average pooling is separable (each 1-D factor averages s neighbours),
/// so the same problem runs in pixel space (`avg_pool`) and in the singular
/// basis (`separable_from_factors`). Every guided sampler, with the same z
/// and seed, gives the same sample both ways (f64, CPU), and a dropped-
/// Jacobian step costs the pass plus two rotations in and two out.
#[test]
fn guided_sampling_in_the_singular_basis_equals_pixel_space() {
    use diffinv::guidance::{Method, PgdmDiscreteConfig, PgdmDiscretePlan};
    use diffinv::sampler::{guided_sample, GuidedOptions, Jacobian};
    use diffinv::{Backend, GmmDenoiser, NoiseSchedule};
    let b = CpuBackend::new();
    let (c, h, w, s) = (3, 8, 12, 2);
    let item = Shape::from_dims(&[c, h, w]).unwrap();
    let pool = |n: usize| -> Vec<f64> {
        (0..n / s * n)
            .map(|k| {
                if (k % n) / s == k / n {
                    1.0 / s as f64
                } else {
                    0.0
                }
            })
            .collect()
    };
    let pixel = Operator::avg_pool(&b, item, s).unwrap();
    let spectral = Operator::separable_from_factors(&b, item, &pool(h), &pool(w), 0.0).unwrap();
    let dim = c * h * w;
    let gmm = GmmDenoiser::new(
        values(1, 2 * dim, 0.5),
        vec![0.2, 0.4],
        vec![0.5, 0.5],
        dim,
        NoiseSchedule::ddpm_linear(),
    )
    .unwrap();
    let batch = 2;
    let y = Tensor::from_host(
        &b,
        Shape::new(batch, c, h / s, w / s),
        DType::F64,
        HostSlice::F64(&values(2, batch * dim / 4, 0.5)),
    )
    .unwrap();
    let z = Tensor::from_host(
        &b,
        Shape::new(batch, c, h, w),
        DType::F64,
        HostSlice::F64(&values(3, batch * dim, 1.0)),
    )
    .unwrap();
    let run = |op: &Operator<CpuBackend>, method: &str, jacobian: Jacobian| -> Vec<f64> {
        let mut gmm = gmm.clone();
        let options = GuidedOptions { jacobian, seed: 9 };
        let x = match method {
            "pgdm" => {
                let plan = PgdmDiscretePlan::new(PgdmDiscreteConfig::default()).unwrap();
                guided_sample(&b, &plan, op, &y, &z, &mut gmm, options, |_| {})
            }
            _ => {
                let plan = CpgdmPlan::new(CpgdmConfig {
                    method: if method == "pgdm_cont" {
                        Method::PgdmContinuous
                    } else {
                        Method::Cpgdm
                    },
                    ..CpgdmConfig::default()
                })
                .unwrap();
                guided_sample(&b, &plan, op, &y, &z, &mut gmm, options, |_| {})
            }
        };
        x.unwrap().to_f64(&b).unwrap()
    };
    for (method, jacobian) in [
        ("cpgdm", Jacobian::Exact),
        ("cpgdm", Jacobian::Dropped),
        ("pgdm_cont", Jacobian::Exact),
        ("pgdm", Jacobian::Exact),
    ] {
        let want = run(&pixel, method, jacobian);
        let got = run(&spectral, method, jacobian);
        compare(&format!("{method} {jacobian:?}"), &got, &want, 1e-9, 1e-9);
    }
    // Launches of one dropped-Jacobian step.
    let plan = CpgdmPlan::new(CpgdmConfig::default()).unwrap();
    let mut sampler = CpgdmSampler::new(&b, &plan, &spectral, &y).unwrap();
    sampler.init(&b, &z).unwrap();
    let before = b.launch_count();
    sampler.update(&b, &z, None).unwrap();
    assert_eq!(b.launch_count() - before, 5);
}

#[test]
fn bad_separable_operators_are_typed_errors() {
    let b = CpuBackend::new();
    let item = Shape::from_dims(&[C, H, W]).unwrap();
    let param = |r: diffinv::Result<Operator<CpuBackend>>, want: &str| match r {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, want),
        Err(other) => panic!("{want}: {other}"),
        Ok(_) => panic!("{want}: accepted"),
    };
    param(
        Operator::blur(&b, item, &uniform_taps(10)),
        "blur kernel length",
    );
    param(Operator::blur(&b, item, &[]), "blur kernel length");
    param(Operator::blur(&b, item, &[0.5, f64::NAN]), "blur tap");
    param(Operator::blur(&b, item, &[0.0, 0.0]), "blur taps");
    param(
        Operator::blur_with_truncation(&b, item, &[1.0], -1.0),
        "SVD truncation",
    );
    param(
        Operator::blur_with_truncation(&b, item, &[1.0], 2.0),
        "SVD truncation",
    );
    param(Operator::bicubic(&b, item, 5), "bicubic factor");
    param(Operator::bicubic(&b, item, 0), "bicubic factor");
    assert!(matches!(
        Operator::bicubic(&b, Shape::from_dims(&[12, 12]).unwrap(), 2),
        Err(Error::InvalidShape { .. })
    ));
}

/// C-ΠGDM with a Gaussian blur and bicubic SR (singular-basis passes, GEMM
/// rotations) on every backend and dtype against the CPU's f64 run.
fn guided_blur_matches_the_f64_run<B: diffinv::Ops>(b: &B) {
    use diffinv::sampler::{cpgdm_sample, Jacobian};
    use diffinv::{GmmDenoiser, NoiseSchedule};
    let cpu = CpuBackend::new();
    let (c, h, w) = (3, 12, 16);
    let item = Shape::from_dims(&[c, h, w]).unwrap();
    let dim = c * h * w;
    let gmm = GmmDenoiser::new(
        values(4, 2 * dim, 0.5),
        vec![0.2, 0.4],
        vec![0.5, 0.5],
        dim,
        NoiseSchedule::ddpm_linear(),
    )
    .unwrap();
    let plan = CpgdmPlan::new(CpgdmConfig::default()).unwrap();
    let z = values(5, 2 * dim, 1.0);
    for name in ["blur", "bicubic"] {
        let op_b = match name {
            "blur" => Operator::blur(b, item, &gaussian_taps(1.5, 3)).unwrap(),
            _ => Operator::bicubic(b, item, 4).unwrap(),
        };
        let op64 = match name {
            "blur" => Operator::blur(&cpu, item, &gaussian_taps(1.5, 3)).unwrap(),
            _ => Operator::bicubic(&cpu, item, 4).unwrap(),
        };
        let y_item = op64.y_item();
        let y_shape = Shape::from_dims(&[&[2][..], y_item.dims()].concat()).unwrap();
        let y = values(6, y_shape.checked_len().unwrap(), 0.5);
        let want = {
            let yt = Tensor::from_host(&cpu, y_shape, DType::F64, HostSlice::F64(&y)).unwrap();
            let zt =
                Tensor::from_host(&cpu, Shape::new(2, c, h, w), DType::F64, HostSlice::F64(&z))
                    .unwrap();
            cpgdm_sample(
                &cpu,
                &plan,
                &op64,
                &yt,
                &zt,
                &mut gmm.clone(),
                Jacobian::Exact,
            )
            .unwrap()
            .to_f64(&cpu)
            .unwrap()
        };
        for dtype in [DType::F32, DType::F16] {
            if !b.guidance_supports(dtype) {
                continue;
            }
            let yt = Tensor::from_host(b, y_shape, dtype, HostSlice::F64(&y)).unwrap();
            let zt =
                Tensor::from_host(b, Shape::new(2, c, h, w), dtype, HostSlice::F64(&z)).unwrap();
            let got = cpgdm_sample(b, &plan, &op_b, &yt, &zt, &mut gmm.clone(), Jacobian::Exact)
                .unwrap()
                .to_f64(b)
                .unwrap();
            // Absolute bounds per unit of output magnitude (H⁺y of a blur
            // reaches ~16 here): f16 is ~4 half-ulps (measured 3.2e-2 at 16,
            // normalised 8.1e-4), f32 1e-5.
            let magnitude = want.iter().fold(1f64, |m, v| m.max(v.abs()));
            let (rel, abs) = if dtype == DType::F16 {
                (3e-3, 4e-3)
            } else {
                (2e-5, 1e-5)
            };
            let what = format!("{:?} {dtype:?} {name}", b.kind());
            compare(&what, &got, &want, rel, abs * magnitude);
        }
    }
}

mod guided_backends {
    crate::for_each_backend!(super::guided_blur_matches_the_f64_run);
}
