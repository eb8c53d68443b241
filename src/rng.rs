//! Counter-based Gaussian noise (Philox4x32-10 + Box–Muller), keyed by
//! `(seed, step, element)`.
//!
//! Because the noise of element `i` at step `k` depends only on those three
//! values, every backend draws the same numbers regardless of how it maps
//! elements to threads. The integer stream is bit-identical everywhere; the
//! final normal differs only by the rounding of `ln`, `sqrt` and `cos` (a few
//! ulps in f32). `kernels/common.cuh` and `shaders/solver.wgsl` mirror this file.

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The two uniforms a normal is built from: `u1 ∈ (0, 1]`, `u2 ∈ [0, 1)`,
/// each from the top 24 bits so they are exact in f32 on every backend.
pub fn uniforms(seed: u64, step: u32, index: u32) -> (f32, f32) {
    let r = philox4x32_10([index, step, 0, 0], [seed as u32, (seed >> 32) as u32]);
    let scale = 1.0 / 16_777_216.0; // 2^-24
    let u1 = ((r[0] >> 8) + 1) as f32 * scale;
    let u2 = (r[1] >> 8) as f32 * scale;
    (u1, u2)
}

/// Standard normal for `(seed, step, index)`, computed in f32 like the kernels.
pub fn normal_f32(seed: u64, step: u32, index: u32) -> f32 {
    let (u1, u2) = uniforms(seed, step, index);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Standard normal for `(seed, step, index)`, computed in f64 (the CPU oracle path).
pub fn normal_f64(seed: u64, step: u32, index: u32) -> f64 {
    let (u1, u2) = uniforms(seed, step, index);
    let (u1, u2) = (f64::from(u1), f64::from(u2));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A host vector of `n` standard normals drawn with `step = u32::MAX`, a step
/// index no sampling loop uses, e.g. for the initial noise `x_T`.
pub fn normal_vec(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| normal_f32(seed, u32::MAX, i as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_random123_known_answer() {
        // Known-answer vectors of Random123 (kat_vectors, philox4x32_10).
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 200_000;
        let v: Vec<f64> = (0..n).map(|i| normal_f64(42, 3, i)).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn streams_differ_by_step_and_seed() {
        assert_ne!(normal_f32(1, 0, 5), normal_f32(1, 1, 5));
        assert_ne!(normal_f32(1, 0, 5), normal_f32(2, 0, 5));
        assert_eq!(normal_f32(1, 0, 5), normal_f32(1, 0, 5));
    }
}
