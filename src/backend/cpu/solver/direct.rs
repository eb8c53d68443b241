//! Fast path of the fused update when the storage type is the math type
//! (f32, f64): one loop straight over the tensors, no scratch copies.
//!
//! Every sum is the generic path's expression in the generic path's order
//! (Rust never contracts to FMA), so the results are bit-identical to it; a
//! unit test checks it. Noise needs the per-element Philox draw and stays on
//! the generic path.

use super::{ChunkViews, Math, Scalars, ROW};
use crate::solver::CorrectorBase;

/// Run the noise-free fused update on the whole chunk; returns how many
/// elements it processed (all of them, or 0 when the step adds noise).
pub(super) fn fused<M: Math>(k: &Scalars<M>, c: &mut ChunkViews<'_, M>) -> usize {
    if k.noise != M::ZERO {
        return 0;
    }
    let len = c.x.len();
    // Row by row, so an absent history slot can read the static zero row.
    for at in (0..len).step_by(ROW) {
        let r = at..(at + ROW).min(len);
        let n = r.len();
        let zeros = &M::ZERO_ROW[..n];
        let row = Row {
            x: &mut c.x[r.clone()],
            m: &c.m[r.clone()],
            d: c.d.as_deref_mut().map(|s| &mut s[r.clone()]),
            xc: c.xc.as_deref_mut().map(|s| &mut s[r.clone()]),
            h1: c.h1.map_or(zeros, |s| &s[r.clone()]),
            h2: c.h2.map_or(zeros, |s| &s[r]),
        };
        row.update(k);
    }
    len
}

/// Equal-length views of one row; absent history slots are zero rows.
struct Row<'a, M> {
    x: &'a mut [M],
    m: &'a [M],
    d: Option<&'a mut [M]>,
    xc: Option<&'a mut [M]>,
    h1: &'a [M],
    h2: &'a [M],
}

impl<M: Math> Row<'_, M> {
    fn update(self, k: &Scalars<M>) {
        let (corr, from_x, ac, cc) = match (k.corr, self.xc.is_some()) {
            (Some((base, ac, cc)), true) => (true, base == CorrectorBase::X, ac, cc),
            _ => (false, false, M::ZERO, [M::ZERO; 3]),
        };
        let has_d = self.d.is_some();
        with_flags!(update_row [M,] (self, k, ac, cc) has_d, corr, from_x);
    }
}

/// The update of one row for one combination of present outputs, so the loop
/// has no branch and vectorises. Absent history rows are zero rows and still
/// enter their sums, as in the generic path.
fn update_row<M: Math, const D: bool, const CORR: bool, const FROM_X: bool>(
    row: Row<'_, M>,
    k: &Scalars<M>,
    ac: M,
    [c0, c1, c2]: [M; 3],
) {
    // Equal lengths, stated so the compiler drops the bounds checks; an
    // absent output is an empty slice its flag keeps the loop from touching.
    let n = row.x.len();
    let x = row.x;
    let (m, h1, h2) = (&row.m[..n], &row.h1[..n], &row.h2[..n]);
    let d = row.d.map_or(&mut [][..], |s| &mut s[..n]);
    let xc = row.xc.map_or(&mut [][..], |s| &mut s[..n]);
    let [b0, b1, b2] = k.b;
    for i in 0..n {
        let xi = x[i];
        let di = k.cx * xi - k.ce * m[i];
        if D {
            d[i] = di;
        }
        let base = if CORR {
            let prev = if FROM_X { xi } else { xc[i] };
            let corrected = ac * prev + c0 * di + c1 * h1[i] + c2 * h2[i];
            xc[i] = corrected;
            corrected
        } else {
            xi
        };
        x[i] = k.a * base + b0 * di + b1 * h1[i] + b2 * h2[i];
    }
}
