//! wgpu-specific behaviour: adapter choice, f16 storage variants, dispatch
//! limits. Cross-backend numerics live in solver_parity.rs.
#![cfg(feature = "wgpu")]

mod common;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::wgpu::{WgpuBackend, WgpuOptions};
use diffinv::ops::solver_step;
use diffinv::solver::{slot_stride, SolverStep, StepLaunch};
use diffinv::{Backend, DType, HostSlice, Ops, Shape, Tensor};
use half::f16;

use common::steps::full_step;
use common::{compare, values};
use diffinv::{Error, HostVec};

/// Run the full step on `n` elements of f16; returns (x', state').
fn run_f16<B: Ops>(b: &B, n: usize) -> (Vec<f16>, Vec<f16>) {
    let x = common::values(11, n, 2.0);
    let m = common::values(12, n, 2.0);
    let s = common::values(13, 4 * slot_stride(n), 2.0);
    let mut xt = Tensor::from_host(b, Shape::flat(n), DType::F16, HostSlice::F64(&x)).unwrap();
    let mt = Tensor::from_host(b, Shape::flat(n), DType::F16, HostSlice::F64(&m)).unwrap();
    let mut st =
        Tensor::from_host(b, Shape::flat(s.len()), DType::F16, HostSlice::F64(&s)).unwrap();
    solver_step(
        b,
        &full_step(),
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

const LAUNCH: StepLaunch = StepLaunch {
    step: 5,
    seed: 0x0123_4567_89ab_cdef,
};

fn f16_bits(v: &HostVec) -> Vec<u16> {
    match v {
        HostVec::F16(v) => v.iter().map(|h| h.to_bits()).collect(),
        other => panic!(
            "expected f16, got {} elements of another dtype",
            other.len()
        ),
    }
}

/// One step of `dtype` on `backend`; returns (x', the whole state) in the
/// storage dtype, slot padding included.
fn step_raw<B: Ops>(backend: &B, dtype: DType, step: &SolverStep, n: usize) -> (HostVec, HostVec) {
    let up = |len: usize, seed: u64| {
        Tensor::from_host(
            backend,
            Shape::flat(len),
            dtype,
            HostSlice::F64(&values(seed, len, 2.0)),
        )
        .unwrap()
    };
    let mut x = up(n, 1);
    let m = up(n, 2);
    let mut state = up(4 * slot_stride(n), 3);
    solver_step(backend, step, LAUNCH, &mut x, &m, &mut state).unwrap();
    (
        x.download(backend).unwrap(),
        state.download(backend).unwrap(),
    )
}

/// One dispatch per fused step, on a backend no other test shares (the shared
/// ones' counters move under concurrently running tests).
#[test]
fn one_launch_per_step() {
    for packed in [false, true] {
        let b = match WgpuBackend::with_options(WgpuOptions {
            force_packed_f16: packed,
            allow_software: true,
        }) {
            Ok(b) => b,
            Err(e) => return common::skip("wgpu", e),
        };
        for (i, dtype) in [DType::F16, DType::F32].into_iter().enumerate() {
            step_raw(&b, dtype, &full_step(), 1001);
            assert_eq!(b.launch_count(), i as u64 + 1, "packed {packed} {dtype:?}");
        }
    }
}

#[test]
fn backend_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<WgpuBackend>();
    check::<diffinv::backend::wgpu::WgpuBuffer>();
}

#[test]
fn adapter_details_and_f64_refusal() {
    let Some(b) = common::wgpu(true) else { return };
    let info = b.adapter_info();
    eprintln!(
        "wgpu adapter: {} | driver: {} {}",
        b.device_name(),
        info.driver,
        info.driver_info
    );
    assert!(
        !b.uses_native_f16(),
        "force_packed_f16 selects the packed shaders"
    );
    assert!(b.supports(DType::F16) && b.supports(DType::F32));
    assert!(matches!(
        b.alloc(3, DType::F64),
        Err(Error::UnsupportedDType {
            backend: "wgpu",
            ..
        })
    ));
}

/// Every f16 bit class (±0, subnormal, ±Inf, NaN payloads, max finite) at odd
/// lengths, a prefix read, and odd-length f32 written from f64.
#[test]
fn odd_f16_bit_patterns_round_trip_exactly() {
    for packed in [false, true] {
        let Some(b) = common::wgpu(packed) else {
            continue;
        };
        for n in [1usize, 3, 7, 255, 4097] {
            let bits: Vec<u16> = (0..n as u32)
                .map(|i| match i % 7 {
                    0 => 0x8000,
                    1 => 0x0001,
                    2 => 0xfc00,
                    3 => 0x7e01,
                    4 => 0x7bff,
                    _ => (i.wrapping_mul(40503) & 0xffff) as u16,
                })
                .collect();
            let data: Vec<f16> = bits.iter().map(|&v| f16::from_bits(v)).collect();
            let t =
                Tensor::from_host(b, Shape::flat(n), DType::F16, HostSlice::F16(&data)).unwrap();
            assert_eq!(
                f16_bits(&t.download(b).unwrap()),
                bits,
                "packed {packed} n {n}"
            );
            let head = b.read(t.buffer(), DType::F16, 0, n / 2).unwrap();
            assert_eq!(
                f16_bits(&head),
                bits[..n / 2],
                "packed {packed} n {n} (prefix)"
            );
        }
        let v = values(9, 5, 3.0);
        let t = Tensor::from_host(b, Shape::flat(5), DType::F32, HostSlice::F64(&v)).unwrap();
        let want: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        assert_eq!(t.to_f32(b).unwrap(), want);
    }
}

#[test]
fn caller_errors_are_typed() {
    let Some(b) = common::wgpu(true) else { return };
    let mut t = Tensor::zeros(b, Shape::flat(7), DType::F16).unwrap();
    let err = t.upload(b, HostSlice::F32(&[1.0; 6])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                expected: 7,
                got: 6,
                ..
            }
        ),
        "{err}"
    );
    // The backend checks too, not only Tensor: a range past the buffer's end.
    let err = b
        .write(t.buffer_mut(), DType::F16, 0, HostSlice::F32(&[1.0; 8]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ViewOutOfRange {
                offset: 0,
                len: 8,
                tensor_len: 7,
            }
        ),
        "{err}"
    );
    let err = b
        .write(t.buffer_mut(), DType::F32, 0, HostSlice::F32(&[1.0; 7]))
        .unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    let err = b.read(t.buffer(), DType::F16, 0, 8).unwrap_err();
    assert!(matches!(err, Error::ViewOutOfRange { .. }), "{err}");
    // A state too short for the slots the step names: rejected before any launch.
    let mut x = Tensor::zeros(b, Shape::flat(7), DType::F16).unwrap();
    let m = Tensor::zeros(b, Shape::flat(7), DType::F16).unwrap();
    let mut state = Tensor::zeros(b, Shape::flat(3 * 64), DType::F16).unwrap();
    let before = b.launch_count();
    let err = solver_step(b, &full_step(), LAUNCH, &mut x, &m, &mut state).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                expected: 256,
                got: 192,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(b.launch_count(), before);
    // More than the device can bind: refused before wgpu sees it.
    let max = b.max_buffer_bytes();
    eprintln!("max buffer: {max} bytes");
    let len = usize::try_from(max / 4 + 1).unwrap_or(usize::MAX);
    if len <= diffinv::tensor::MAX_ELEMENTS {
        let err = Tensor::zeros(b, Shape::flat(len), DType::F32)
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::TooLarge { backend: "wgpu", limit, .. } if limit == max),
            "{err}"
        );
    }
}

/// Both f16 variants on every step kind at odd n: bit-identical x and state
/// (slot padding included), and both within the f16 tolerance of the CPU on
/// the whole state, so the padding past n in each slot is left as it was.
#[test]
fn f16_variants_agree_on_every_step_kind() {
    let (Some(native), Some(packed)) = (common::wgpu(false), common::wgpu(true)) else {
        return;
    };
    let cpu = CpuBackend::new();
    let steps = common::steps::step_kinds();
    for n in [1usize, 3, 63, 65, 257, 4097] {
        for (name, step) in &steps {
            let (nx, ns) = step_raw(native, DType::F16, step, n);
            let (px, ps) = step_raw(packed, DType::F16, step, n);
            assert_eq!(f16_bits(&nx), f16_bits(&px), "x, n {n}, {name}");
            assert_eq!(f16_bits(&ns), f16_bits(&ps), "state, n {n}, {name}");
            let (cx, cs) = step_raw(&cpu, DType::F16, step, n);
            compare(
                &format!("x vs cpu, n {n}, {name}"),
                &nx.into_f64(),
                &cx.into_f64(),
                2e-3,
                8e-3,
            );
            compare(
                &format!("state vs cpu, n {n}, {name}"),
                &ns.into_f64(),
                &cs.into_f64(),
                2e-3,
                8e-3,
            );
        }
    }
}

/// Grid-stride loop against the CPU, f16 and f32: with the workgroup cap
/// lowered every element is still updated exactly once.
#[test]
fn grid_stride_matches_the_cpu_in_both_dtypes() {
    let cpu = CpuBackend::new();
    let step = SolverStep {
        noise: 0.0,
        ..full_step()
    };
    for packed in [false, true] {
        let mut b = match WgpuBackend::with_options(WgpuOptions {
            force_packed_f16: packed,
            allow_software: true,
        }) {
            Ok(b) => b,
            Err(e) => return common::skip("wgpu", e),
        };
        for (wg, groups) in [(64, 3), (256, 1), (96, 5)] {
            b.set_workgroup_size(wg).unwrap();
            b.set_max_workgroups(groups).unwrap();
            for dtype in [DType::F16, DType::F32] {
                for n in [1usize, 4097, 20_001] {
                    let (gx, gs) = step_raw(&b, dtype, &step, n);
                    let (cx, cs) = step_raw(&cpu, dtype, &step, n);
                    let (rel, abs) = if dtype == DType::F16 {
                        (2e-3, 8e-3)
                    } else {
                        (1e-6, 1e-5)
                    };
                    let what = format!("packed {packed} wg {wg}×{groups} {dtype:?} n {n}");
                    compare(
                        &format!("{what}: x"),
                        &gx.into_f64(),
                        &cx.into_f64(),
                        rel,
                        abs,
                    );
                    compare(
                        &format!("{what}: state"),
                        &gs.into_f64(),
                        &cs.into_f64(),
                        rel,
                        abs,
                    );
                }
            }
        }
    }
}

/// More elements than 65,535 workgroups of 256 cover: 65,535·256 + 3, so the
/// last 3 are reached only by the grid-stride loop (f16 native and f32; the
/// packed variant needs half as many invocations). Exact: the scalars are
/// powers of two.
#[test]
fn more_elements_than_one_dispatch_covers() {
    let n = 65_535 * 256 + 3;
    let step = SolverStep {
        cx: 1.0,
        ce: 0.5,
        d_slot: Some(0),
        h1: None,
        h2: None,
        xc_slot: None,
        corrector: None,
        a: 0.5,
        b: [0.25, 0.0, 0.0],
        noise: 0.0,
    };
    for (packed, dtype) in [(false, DType::F16), (true, DType::F32)] {
        let Some(b) = common::wgpu(packed) else {
            continue;
        };
        let xs: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
        let ms: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.125).collect();
        let mut x = Tensor::from_host(b, Shape::flat(n), dtype, HostSlice::F32(&xs)).unwrap();
        let m = Tensor::from_host(b, Shape::flat(n), dtype, HostSlice::F32(&ms)).unwrap();
        let mut state = Tensor::zeros(b, Shape::flat(slot_stride(n)), dtype).unwrap();
        solver_step(b, &step, LAUNCH, &mut x, &m, &mut state).unwrap();
        let got = x.to_f32(b).unwrap();
        let d = state.to_f32(b).unwrap();
        let round = |v: f32| {
            if dtype == DType::F16 {
                f16::from_f32(v).to_f32()
            } else {
                v
            }
        };
        for i in (0..n).step_by(997).chain(n - 300..n) {
            let (xv, mv) = (round(xs[i]), round(ms[i]));
            let dv = xv - 0.5 * mv;
            assert_eq!(d[i], round(dv), "{dtype:?} D[{i}]");
            assert_eq!(got[i], round(0.5 * xv + 0.25 * dv), "{dtype:?} x[{i}]");
        }
    }
}

/// One tensor's (x', state') from the device and from the CPU.
type Pair = ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>));

/// Record `rounds × tensors` fused steps (a different step kind, scale and
/// step index per dispatch) on `backend` and the CPU, chained per tensor; calls
/// `before_read` once all are recorded, then returns every tensor's results.
fn recorded_steps<B: Ops>(
    backend: &B,
    dtype: DType,
    tensors: usize,
    rounds: usize,
    before_read: impl FnOnce(),
) -> Vec<Pair> {
    let n = 301;
    let stride = slot_stride(n);
    let kinds = common::steps::step_kinds();
    let cpu = CpuBackend::new();
    let inputs = |j: usize| {
        (
            values(50 + j as u64, n, 2.0),
            values(90 + j as u64, 4 * stride, 2.0),
        )
    };
    let m = values(40, n, 2.0);
    let (m_dev, m_cpu) = (upload(backend, dtype, &m), upload(&cpu, dtype, &m));
    let mut dev: Vec<_> = (0..tensors)
        .map(|j| {
            let (x, s) = inputs(j);
            (upload(backend, dtype, &x), upload(backend, dtype, &s))
        })
        .collect();
    let mut host: Vec<_> = (0..tensors)
        .map(|j| {
            let (x, s) = inputs(j);
            (upload(&cpu, dtype, &x), upload(&cpu, dtype, &s))
        })
        .collect();
    for round in 0..rounds {
        for j in 0..tensors {
            let k = round * tensors + j;
            let (_, kind) = kinds[k % kinds.len()];
            let step = SolverStep {
                a: kind.a * (1.0 - k as f64 / 200.0),
                cx: kind.cx + k as f64 / 100.0,
                ..kind
            };
            let launch = StepLaunch {
                step: k as u32,
                seed: 7,
            };
            let (x, s) = &mut dev[j];
            solver_step(backend, &step, launch, x, &m_dev, s).unwrap();
            let (x, s) = &mut host[j];
            solver_step(&cpu, &step, launch, x, &m_cpu, s).unwrap();
        }
    }
    before_read();
    dev.iter()
        .zip(&host)
        .map(|((x, s), (hx, hs))| {
            (
                (x.to_f64(backend).unwrap(), s.to_f64(backend).unwrap()),
                (hx.to_f64(&cpu).unwrap(), hs.to_f64(&cpu).unwrap()),
            )
        })
        .collect()
}

fn upload<B: Ops>(b: &B, dtype: DType, v: &[f64]) -> Tensor<B> {
    Tensor::from_host(b, Shape::flat(v.len()), dtype, HostSlice::F64(v)).unwrap()
}

fn unshared(packed: bool) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(WgpuOptions {
        force_packed_f16: packed,
        allow_software: true,
    }) {
        Ok(b) => Some(b),
        Err(e) => {
            common::skip("wgpu", e);
            None
        }
    }
}

/// Dozens of dispatches with different parameters, recorded into one
/// submission: each keeps its own params block (the uniform arena), chained
/// dispatches see their predecessors' writes, and every result is the CPU's.
#[test]
fn many_dispatches_share_one_submission_and_keep_their_parameters() {
    for packed in [false, true] {
        let Some(b) = unshared(packed) else { return };
        for dtype in [DType::F32, DType::F16] {
            let (tensors, rounds) = (16, 3);
            let (subs, launches) = (b.submission_count(), b.launch_count());
            let results = recorded_steps(&b, dtype, tensors, rounds, || {
                // Uploads come before the first dispatch; recording submits nothing.
                assert_eq!(
                    b.submission_count(),
                    subs,
                    "{dtype:?}: submitted while recording"
                );
                assert_eq!(b.launch_count() - launches, (tensors * rounds) as u64);
            });
            // The first read submitted all 48 dispatches at once; each read-back
            // after it is one copy submission.
            let reads = 2 * tensors as u64;
            assert_eq!(b.submission_count() - subs, reads, "{dtype:?}");
            let (rel, abs) = if dtype == DType::F16 {
                (2e-3, 8e-3)
            } else {
                (1e-6, 1e-5)
            };
            for (j, ((x, s), (hx, hs))) in results.iter().enumerate() {
                let what = format!("packed {packed} {dtype:?} tensor {j}");
                compare(&format!("{what}: x"), x, hx, rel, abs);
                compare(&format!("{what}: state"), s, hs, rel, abs);
            }
        }
    }
}

/// A submission budget splits long recordings: 48 dispatches at a budget of 5
/// are 9 full batches plus the 3 left for the first read.
#[test]
fn the_submit_budget_bounds_recorded_work() {
    let Some(mut b) = unshared(false) else { return };
    b.set_submit_budget(5).unwrap();
    assert!(b.set_submit_budget(0).is_err());
    assert!(b.set_submit_budget(257).is_err());
    let subs = b.submission_count();
    let results = recorded_steps(&b, DType::F32, 16, 3, || {
        assert_eq!(b.submission_count() - subs, 9);
    });
    assert_eq!(b.submission_count() - subs, 9 + 32);
    for ((x, s), (hx, hs)) in &results {
        compare("budget 5: x", x, hx, 1e-6, 1e-5);
        compare("budget 5: state", s, hs, 1e-6, 1e-5);
    }
}

/// Without XDG_RUNTIME_DIR (a headless machine), opening the backend prints
/// nothing: run in a child process, where the variable can be removed safely.
#[test]
fn opening_on_a_headless_machine_is_quiet() {
    if std::env::var_os("DIFFINV_QUIET_CHILD").is_some() {
        let _ = WgpuBackend::new();
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "opening_on_a_headless_machine_is_quiet",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DIFFINV_QUIET_CHILD", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(
        !stderr.contains("XDG_RUNTIME_DIR"),
        "driver chatter on stderr:\n{stderr}"
    );
}
