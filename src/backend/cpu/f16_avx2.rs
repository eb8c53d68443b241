//! AVX2 + F16C fast path of the f16 fused update.
//!
//! The generic path converts every row of a chunk to f32 scratch and back
//! (half's slice conversions), which costs more than the memory traffic on a
//! 2-core machine. Here eight lanes go from f16 registers through the same f32
//! arithmetic and back without touching scratch. Every sum is evaluated in the
//! generic path's order with separate multiplies and adds (no FMA), and
//! `vcvtps2ph` rounds to nearest even like `half`, so the results are
//! bit-identical to the generic path (a unit test checks it).

use std::arch::x86_64::{
    __m128i, __m256, _mm256_add_ps, _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_mul_ps,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_sub_ps, _mm_loadu_si128, _mm_storeu_si128,
    _MM_FROUND_TO_NEAREST_INT,
};

use half::f16;

use super::{ChunkViews, Scalars};
use crate::solver::CorrectorBase;

/// Whether this CPU can run [`fused_prefix`].
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load8(row: &[f16], i: usize) -> __m256 {
    let lanes = &row[i..i + 8];
    // SAFETY: `lanes` holds exactly 8 f16 = 16 bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(lanes.as_ptr().cast::<__m128i>()) })
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn store8(row: &mut [f16], i: usize, v: __m256) {
    let lanes = &mut row[i..i + 8];
    let packed = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
    // SAFETY: `lanes` holds exactly 8 f16 = 16 bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(lanes.as_mut_ptr().cast::<__m128i>(), packed) }
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load8_or_zero(row: Option<&[f16]>, i: usize) -> __m256 {
    match row {
        Some(r) => load8(r, i),
        None => _mm256_setzero_ps(),
    }
}

/// Run the noise-free fused update on the longest multiple-of-8 prefix of the
/// chunk; returns how many elements it processed.
///
/// # Safety
/// The CPU must support AVX2 and F16C ([`available`]).
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn fused_prefix(k: &Scalars<f32>, c: &mut ChunkViews<'_, f16>) -> usize {
    let body = c.x.len() - c.x.len() % 8;
    let s = _mm256_set1_ps;
    let (cx, ce, a) = (s(k.cx), s(k.ce), s(k.a));
    let b = [s(k.b[0]), s(k.b[1]), s(k.b[2])];
    let corr = k
        .corr
        .map(|(base, ac, cc)| (base, s(ac), [s(cc[0]), s(cc[1]), s(cc[2])]));
    let add = _mm256_add_ps;
    let mul = _mm256_mul_ps;
    for i in (0..body).step_by(8) {
        let x = load8(c.x, i);
        let d = _mm256_sub_ps(mul(cx, x), mul(ce, load8(c.m, i)));
        if let Some(dst) = c.d.as_deref_mut() {
            store8(dst, i, d);
        }
        let h1 = load8_or_zero(c.h1, i);
        let h2 = load8_or_zero(c.h2, i);
        let base = match (corr, c.xc.as_deref_mut()) {
            (Some((from, ac, cc)), Some(xc_row)) => {
                let prev = match from {
                    CorrectorBase::Slot => load8(xc_row, i),
                    CorrectorBase::X => x,
                };
                let xc = add(
                    add(add(mul(ac, prev), mul(cc[0], d)), mul(cc[1], h1)),
                    mul(cc[2], h2),
                );
                store8(xc_row, i, xc);
                xc
            }
            _ => x,
        };
        let out = add(
            add(add(mul(a, base), mul(b[0], d)), mul(b[1], h1)),
            mul(b[2], h2),
        );
        store8(c.x, i, out);
    }
    body
}
