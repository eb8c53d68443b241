//! Shared test support: backend openers that skip (or fail, when
//! `DIFFINV_REQUIRE` names the backend) with a printed reason, tolerances,
//! and the macro that runs one test body on every backend.
#![allow(dead_code)]

#[cfg(feature = "cuda")]
pub mod cuda_emu;
#[cfg(feature = "cuda")]
mod cuda_open;
pub mod fixtures;
pub mod steps;
pub mod unet_cases;
#[cfg(feature = "cuda")]
#[allow(unused_imports)] // not every test binary runs a per-backend body
pub use cuda_emu::{cuda_emu, cuda_emu_block_96};
#[cfg(feature = "cuda")]
#[allow(unused_imports)] // not every test binary runs a per-backend body
pub use cuda_open::cuda;
#[cfg(feature = "wgpu")]
mod wgpu_open;
#[cfg(feature = "wgpu")]
#[allow(unused_imports)] // not every test binary runs a per-backend body
pub use wgpu_open::wgpu;

use std::fmt::Display;

/// Whether `DIFFINV_REQUIRE` (comma-separated: cpu, wgpu, nvrtc, cuda, cuda-emu) names `what`.
pub fn required(what: &str) -> bool {
    std::env::var("DIFFINV_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == what))
        .unwrap_or(false)
}

/// Report an unreachable backend: a printed skip, or a failure if it is required.
///
/// Written straight to stderr, past the test harness's output capture, so a
/// plain `cargo test` says what it skipped and why.
pub fn skip(what: &str, reason: impl Display) {
    if required(what) {
        panic!("{what} is required by DIFFINV_REQUIRE but unavailable: {reason}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {reason}");
}

/// Normalised error ‖a − b‖/‖b‖ and max |a − b|; NaN/Inf positions must match exactly.
pub fn compare(what: &str, got: &[f64], want: &[f64], rel_tol: f64, abs_tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
    let mut worst = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() || !g.is_finite() {
            let same = (g.is_nan() && w.is_nan()) || g == w;
            assert!(same, "{what}: element {i} is {g}, expected {w}");
            continue;
        }
        let d = (g - w).abs();
        num += d * d;
        den += w * w;
        if d > max_abs {
            max_abs = d;
            worst = i;
        }
    }
    let rel = if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    };
    assert!(
        rel <= rel_tol && max_abs <= abs_tol,
        "{what}: normalised error {rel:.3e} (tol {rel_tol:.1e}), max abs {max_abs:.3e} at {worst} \
         (got {}, want {}; tol {abs_tol:.1e})",
        got[worst],
        want[worst]
    );
}

/// Serialises the bodies `for_each_backend!` runs: the shared device backends
/// count launches globally, and bodies assert exact launch counts.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed (panicked) body must not fail every later one.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sizes every element-wise kernel is swept over: 1, odd, around a workgroup, large.
pub const SIZES: [usize; 7] = [1, 7, 255, 256, 257, 4097, 3 * 256 * 256];

/// Deterministic pseudo-random values in [-amp, amp] (a tiny LCG, no dependency).
pub fn values(seed: u64, n: usize, amp: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// Run a generic test body `fn(&B)` on every backend this build has: the CPU
/// reference, wgpu with native f16 and with packed-u32 f16, CUDA on a real
/// device when one is present, and CUDA on the CPU emulation harness (the
/// unmodified kernels/*.cu through the real host launcher) at the launcher's
/// default block size and at blockDim 96 with a wrapping grid-stride loop.
#[macro_export]
macro_rules! for_each_backend {
    ($body:path) => {
        #[test]
        fn cpu() {
            $body(&diffinv::backend::cpu::CpuBackend::new());
        }
        #[cfg(feature = "wgpu")]
        #[test]
        fn wgpu_native_f16() {
            if let Some(b) = $crate::common::wgpu(false) {
                let _serial = $crate::common::serial();
                $body(b);
            }
        }
        #[cfg(feature = "wgpu")]
        #[test]
        fn wgpu_packed_f16() {
            if let Some(b) = $crate::common::wgpu(true) {
                let _serial = $crate::common::serial();
                $body(b);
            }
        }
        #[cfg(feature = "cuda")]
        #[test]
        fn cuda_device() {
            if let Some(b) = $crate::common::cuda() {
                let _serial = $crate::common::serial();
                $body(b);
            }
        }
        #[cfg(feature = "cuda")]
        #[test]
        fn cuda_emu() {
            if let Some(b) = $crate::common::cuda_emu() {
                let _serial = $crate::common::serial();
                $body(b);
            }
        }
        #[cfg(feature = "cuda")]
        #[test]
        fn cuda_emu_block_96() {
            if let Some(b) = $crate::common::cuda_emu_block_96() {
                let _serial = $crate::common::serial();
                $body(b);
            }
        }
    };
}
