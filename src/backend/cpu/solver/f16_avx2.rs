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
use std::ptr;

use half::f16;

use super::{ChunkViews, Scalars};
use crate::solver::CorrectorBase;

/// Whether this CPU can run [`fused_prefix`].
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")
}

/// Eight f16 at `p` (unaligned) widened to f32.
///
/// # Safety
/// `p..p+8` must be readable; the CPU must support AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load8(p: *const f16) -> __m256 {
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast::<__m128i>()) })
}

/// Eight f32 rounded to nearest-even f16 and stored at `p` (unaligned).
///
/// # Safety
/// `p..p+8` must be writable; the CPU must support AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn store8(p: *mut f16, v: __m256) {
    let packed = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
    unsafe { _mm_storeu_si128(p.cast::<__m128i>(), packed) }
}

/// The step's scalars broadcast to all lanes.
struct Lanes {
    cx: __m256,
    ce: __m256,
    a: __m256,
    b: [__m256; 3],
    ac: __m256,
    c: [__m256; 3],
}

/// Row pointers of a chunk; an absent row is null and never dereferenced.
struct Rows {
    x: *mut f16,
    m: *const f16,
    d: *mut f16,
    xc: *mut f16,
    h1: *const f16,
    h2: *const f16,
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
    let (corr, from_x, ac, cc) = match (k.corr, c.xc.is_some()) {
        (Some((base, ac, cc)), true) => (true, base == CorrectorBase::X, ac, cc),
        _ => (false, false, 0.0, [0.0; 3]),
    };
    let lanes = Lanes {
        cx: s(k.cx),
        ce: s(k.ce),
        a: s(k.a),
        b: [s(k.b[0]), s(k.b[1]), s(k.b[2])],
        ac: s(ac),
        c: [s(cc[0]), s(cc[1]), s(cc[2])],
    };
    // Every row is at least `body` long: the chunk's views all have the
    // length of x (asserted, so the loop below may index without checks).
    let len = c.x.len();
    assert!(c.m.len() == len);
    let mut_row = |r: Option<&mut [f16]>| {
        r.map_or(ptr::null_mut(), |r| {
            assert!(r.len() == len);
            r.as_mut_ptr()
        })
    };
    let row = |r: Option<&[f16]>| {
        r.map_or(ptr::null(), |r| {
            assert!(r.len() == len);
            r.as_ptr()
        })
    };
    let rows = Rows {
        x: c.x.as_mut_ptr(),
        m: c.m.as_ptr(),
        d: mut_row(c.d.as_deref_mut()),
        xc: mut_row(c.xc.as_deref_mut()),
        h1: row(c.h1),
        h2: row(c.h2),
    };
    // SAFETY: every non-null row holds ≥ body elements, the rows of one chunk
    // never overlap (distinct borrows), and a null row's flag is false.
    unsafe {
        with_flags!(fused_rows [] (&lanes, &rows, body)
            !rows.d.is_null(), !rows.h1.is_null(), !rows.h2.is_null(), corr, from_x)
    };
    body
}

/// The fused update on elements `0..body` (a multiple of 8) for one
/// combination of present rows. Every sum is evaluated in the generic path's
/// order with separate multiplies and adds; an absent history row reads as 0
/// and still enters its sum, exactly as in the generic path.
///
/// # Safety
/// Rows whose flag is set hold ≥ `body` elements and do not overlap; `xc` is
/// non-null when `CORR` is set. The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn fused_rows<
    const D: bool,
    const H1: bool,
    const H2: bool,
    const CORR: bool,
    const FROM_X: bool,
>(
    k: &Lanes,
    r: &Rows,
    body: usize,
) {
    let add = _mm256_add_ps;
    let mul = _mm256_mul_ps;
    let zero = _mm256_setzero_ps();
    for i in (0..body).step_by(8) {
        // SAFETY (all loads and stores): i + 8 ≤ body ≤ each present row's length.
        let x = unsafe { load8(r.x.add(i)) };
        let d = _mm256_sub_ps(mul(k.cx, x), mul(k.ce, unsafe { load8(r.m.add(i)) }));
        if D {
            unsafe { store8(r.d.add(i), d) };
        }
        let h1 = if H1 {
            unsafe { load8(r.h1.add(i)) }
        } else {
            zero
        };
        let h2 = if H2 {
            unsafe { load8(r.h2.add(i)) }
        } else {
            zero
        };
        let base = if CORR {
            let prev = if FROM_X {
                x
            } else {
                unsafe { load8(r.xc.add(i)) }
            };
            let xc = add(
                add(add(mul(k.ac, prev), mul(k.c[0], d)), mul(k.c[1], h1)),
                mul(k.c[2], h2),
            );
            unsafe { store8(r.xc.add(i), xc) };
            xc
        } else {
            x
        };
        let out = add(
            add(add(mul(k.a, base), mul(k.b[0], d)), mul(k.b[1], h1)),
            mul(k.b[2], h2),
        );
        unsafe { store8(r.x.add(i), out) };
    }
}
