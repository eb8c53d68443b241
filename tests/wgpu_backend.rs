//! wgpu-specific behaviour: adapter choice, f16 storage variants, dispatch
//! limits. Cross-backend numerics live in solver_parity.rs.
#![cfg(feature = "wgpu")]

mod common;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::solver_step;
use diffinv::backend::wgpu::{WgpuBackend, WgpuOptions};
use diffinv::solver::{slot_stride, Corrector, CorrectorBase, SolverStep, StepLaunch};
use diffinv::{Backend, DType, HostSlice, Shape, Tensor};
use half::f16;

/// A step with every input and output in use, and noise.
fn busy_step() -> SolverStep {
    SolverStep {
        cx: 1.1,
        ce: 0.6,
        d_slot: Some(0),
        h1: Some(1),
        h2: Some(2),
        xc_slot: Some(3),
        corrector: Some(Corrector {
            base: CorrectorBase::Slot,
            a: 0.95,
            c: [0.1, 0.05, -0.02],
        }),
        a: 0.9,
        b: [0.4, -0.1, 0.05],
        noise: 0.2,
    }
}

/// Run `busy_step` on `n` elements of f16; returns (x', state').
fn run_f16<B: Backend>(b: &B, n: usize) -> (Vec<f16>, Vec<f16>) {
    let x = common::values(11, n, 2.0);
    let m = common::values(12, n, 2.0);
    let s = common::values(13, 4 * slot_stride(n), 2.0);
    let mut xt = Tensor::from_host(b, Shape::flat(n), DType::F16, HostSlice::F64(&x)).unwrap();
    let mt = Tensor::from_host(b, Shape::flat(n), DType::F16, HostSlice::F64(&m)).unwrap();
    let mut st =
        Tensor::from_host(b, Shape::flat(s.len()), DType::F16, HostSlice::F64(&s)).unwrap();
    solver_step(
        b,
        &busy_step(),
        StepLaunch { step: 2, seed: 99 },
        &mut xt,
        &mt,
        &mut st,
    )
    .unwrap();
    let f16s = |t: &Tensor<B>| match t.download(b).unwrap() {
        diffinv::HostVec::F16(v) => v,
        other => panic!("expected f16, got {other:?}"),
    };
    (f16s(&xt), f16s(&st))
}

#[test]
fn reports_its_adapter() {
    let Some(b) = common::wgpu(false) else { return };
    eprintln!(
        "wgpu adapter: {} (software: {}, native f16: {})",
        b.device_name(),
        b.is_software(),
        b.uses_native_f16()
    );
    assert_eq!(b.kind(), diffinv::BackendKind::Wgpu);
    assert!(!b.supports(DType::F64));
}

#[test]
fn native_and_packed_f16_agree_with_each_other_and_the_cpu() {
    let (Some(native), Some(packed)) = (common::wgpu(false), common::wgpu(true)) else {
        return;
    };
    assert!(native.uses_native_f16() && !packed.uses_native_f16());
    let cpu = CpuBackend::new();
    for n in [1, 3, 63, 64, 65, 1001] {
        let (xn, sn) = run_f16(native, n);
        let (xp, sp) = run_f16(packed, n);
        let (xc, sc) = run_f16(&cpu, n);
        // Same f32 expression, one rounding to f16: the variants agree bit for bit;
        // the CPU may differ by one f16 ulp where a compiler contracted a multiply-add.
        assert_eq!(xn, xp, "n={n}: x");
        assert_eq!(sn, sp, "n={n}: state (padding included)");
        for (i, (g, w)) in xn.iter().zip(&xc).enumerate() {
            let ulps = (i32::from(g.to_bits() as i16) - i32::from(w.to_bits() as i16)).abs();
            assert!(ulps <= 1, "n={n} element {i}: {g} vs cpu {w}");
        }
        assert_eq!(sn.len(), sc.len());
    }
}

#[test]
fn odd_length_f16_round_trips_exactly() {
    for packed in [false, true] {
        let Some(b) = common::wgpu(packed) else {
            return;
        };
        for n in [1, 7, 257] {
            let v: Vec<f16> = (0..n)
                .map(|i| f16::from_f32(i as f32 * 0.37 - 20.0))
                .collect();
            let t = Tensor::from_host(b, Shape::flat(n), DType::F16, HostSlice::F16(&v)).unwrap();
            assert_eq!(t.download(b).unwrap(), diffinv::HostVec::F16(v));
        }
    }
}

/// Grid-stride loops and a workgroup size that is not a power of two: a
/// capped dispatch must compute exactly what the full dispatch computes.
#[test]
fn capped_dispatch_and_odd_workgroups_match_the_full_dispatch() {
    let Some(full) = common::wgpu(false) else {
        return;
    };
    let opts = WgpuOptions {
        force_packed_f16: false,
        allow_software: true,
    };
    for packed in [false, true] {
        let mut capped = WgpuBackend::with_options(WgpuOptions {
            force_packed_f16: packed,
            ..opts
        })
        .unwrap();
        capped.set_max_workgroups(3).unwrap();
        capped.set_workgroup_size(96).unwrap();
        let reference = if packed {
            common::wgpu(true).unwrap()
        } else {
            full
        };
        for n in [1, 97, 96 * 3 * 2 + 5, 10_007] {
            assert_eq!(
                run_f16(&capped, n),
                run_f16(reference, n),
                "n={n}, packed={packed}"
            );
        }
    }
    let mut b = WgpuBackend::new().unwrap();
    assert!(b.set_workgroup_size(0).is_err() && b.set_workgroup_size(257).is_err());
    assert!(b.set_max_workgroups(0).is_err() && b.set_max_workgroups(65_536).is_err());
}
