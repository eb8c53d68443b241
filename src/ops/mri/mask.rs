//! Cartesian undersampling masks along the phase-encoding axis (the last
//! image axis, W), as DDS's `get_mask` draws them (`docs/math.md` §10.4): an
//! ACS block of `int(W·f)` central columns plus random columns. The draws come
//! from our counter-based generator ([`crate::rng`]), so a seed gives the same
//! mask everywhere — not numpy's.

use crate::error::{Error, Result};
use crate::rng;

/// The generator's `step` word for mask draws (one no sampling loop uses).
const MASK_STREAM: u32 = 0x4d41_534b;

/// How the non-ACS columns are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// `W/R − ACS` columns uniform over `0..W`, with replacement.
    Uniform1d,
    /// `int(1.2·W/R)` columns from Normal(W/2, 15W/128), truncated toward zero
    /// and clipped to `0..W`.
    Gaussian1d,
}

/// A 1-D sampling pattern: which of the W columns are observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMask {
    columns: Vec<bool>,
}

impl ColumnMask {
    /// The mask of `kind` over `width` columns at acceleration `acceleration`
    /// (R ≥ 1) and ACS fraction `center_fraction` (in [0, 1]), from `seed`.
    pub fn generate(
        kind: MaskKind,
        width: usize,
        acceleration: usize,
        center_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        if width == 0 || width > u32::MAX as usize {
            return Err(invalid(
                "mask width",
                width as f64,
                "must be in 1..=u32::MAX",
            ));
        }
        if acceleration == 0 || acceleration > width {
            return Err(invalid(
                "acceleration",
                acceleration as f64,
                "must be in 1..=width",
            ));
        }
        if !(0.0..=1.0).contains(&center_fraction) {
            return Err(invalid(
                "center_fraction",
                center_fraction,
                "must be in [0, 1]",
            ));
        }
        let lines = width / acceleration;
        let acs = (width as f64 * center_fraction) as usize;
        let mut columns = vec![false; width];
        let start = width / 2 - acs / 2;
        columns[start..(start + acs).min(width)].fill(true);
        match kind {
            MaskKind::Uniform1d => {
                for i in 0..lines.saturating_sub(acs) {
                    let r = rng::philox4x32_10(
                        [i as u32, MASK_STREAM, 0, 0],
                        [seed as u32, (seed >> 32) as u32],
                    );
                    // Multiply-shift: a uniform index in 0..width.
                    columns[((u64::from(r[0]) * width as u64) >> 32) as usize] = true;
                }
            }
            MaskKind::Gaussian1d => {
                let (mean, std) = ((width / 2) as f64, width as f64 * 15.0 / 128.0);
                for i in 0..(1.2 * lines as f64) as usize {
                    let z = rng::normal_f64(seed, MASK_STREAM, i as u32);
                    // `as` truncates toward zero and saturates, like numpy's
                    // astype(int) then clip for every finite draw.
                    let col = ((mean + std * z) as i64).clamp(0, width as i64 - 1);
                    columns[col as usize] = true;
                }
            }
        }
        Ok(ColumnMask { columns })
    }

    /// A mask from explicit columns (true = observed).
    pub fn from_columns(columns: Vec<bool>) -> Self {
        ColumnMask { columns }
    }

    pub fn columns(&self) -> &[bool] {
        &self.columns
    }

    /// Observed columns.
    pub fn observed(&self) -> usize {
        self.columns.iter().filter(|&&c| c).count()
    }

    /// The mask over an `height × width` plane, row-major, 1 = observed (every
    /// row samples the same columns).
    pub fn plane(&self, height: usize) -> Vec<f64> {
        let row: Vec<f64> = self
            .columns
            .iter()
            .map(|&c| if c { 1.0 } else { 0.0 })
            .collect();
        row.repeat(height)
    }
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acs_block_is_central_and_counts_follow_the_convention() {
        let m = ColumnMask::generate(MaskKind::Uniform1d, 320, 4, 0.08, 7).unwrap();
        // int(320·0.08) = 25 columns from 160 − 12 = 148.
        assert!(m.columns()[148..173].iter().all(|&c| c));
        // At most 80 observed (draws with replacement may repeat), at least the ACS.
        assert!((25..=80).contains(&m.observed()), "{}", m.observed());
        assert_eq!(
            m,
            ColumnMask::generate(MaskKind::Uniform1d, 320, 4, 0.08, 7).unwrap()
        );
        assert_ne!(
            m,
            ColumnMask::generate(MaskKind::Uniform1d, 320, 4, 0.08, 8).unwrap()
        );
        let g = ColumnMask::generate(MaskKind::Gaussian1d, 320, 4, 0.08, 7).unwrap();
        assert!(g.columns()[148..173].iter().all(|&c| c));
        // 96 draws around the centre: more observed near it than at the edges.
        let near = g.columns()[100..220].iter().filter(|&&c| c).count();
        let far = g.observed() - near;
        assert!(near > 2 * far, "near {near}, far {far}");
    }

    #[test]
    fn bad_parameters_are_errors() {
        for (r, f) in [(0, 0.08), (400, 0.08), (4, -0.1), (4, f64::NAN)] {
            assert!(ColumnMask::generate(MaskKind::Uniform1d, 320, r, f, 1).is_err());
        }
        assert!(ColumnMask::generate(MaskKind::Gaussian1d, 0, 4, 0.08, 1).is_err());
    }
}
