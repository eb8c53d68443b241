//! Image quality against the clean image: PSNR and SSIM on [0, 1] images.

use crate::error::{Error, Result};

use super::Image;

fn check(a: &Image, b: &Image) -> Result<()> {
    if (a.height, a.width) != (b.height, b.width) {
        return Err(Error::LengthMismatch {
            what: "images compared (same height × width)",
            expected: b.data.len(),
            got: a.data.len(),
        });
    }
    Ok(())
}

/// Peak signal-to-noise ratio in dB, peak 1: `10·log10(1/MSE)` over every
/// channel (∞ for identical images).
pub fn psnr(a: &Image, b: &Image) -> Result<f64> {
    check(a, b)?;
    let mse = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.data.len() as f64;
    Ok(-10.0 * mse.log10())
}

/// σ of SSIM's Gaussian window (Wang et al. 2004), and its radius.
const SSIM_SIGMA: f64 = 1.5;
const SSIM_RADIUS: usize = 5;

/// Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004): an 11×11
/// Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, peak 1, averaged over
/// every position where the window fits and over the channels (like
/// scikit-image's `structural_similarity(gaussian_weights=True)` without its
/// border padding). Images smaller than the window use a window of their size.
pub fn ssim(a: &Image, b: &Image) -> Result<f64> {
    check(a, b)?;
    let (h, w) = (a.height, a.width);
    let radius = SSIM_RADIUS.min((h.min(w) - 1) / 2);
    let taps: Vec<f64> = (0..=2 * radius)
        .map(|k| {
            let d = k as f64 - radius as f64;
            (-d * d / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()
        })
        .collect();
    let total: f64 = taps.iter().sum();
    let taps: Vec<f64> = taps.iter().map(|t| t / total).collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (oh, ow) = (h - 2 * radius, w - 2 * radius);
    // Valid-region Gaussian filter, rows then columns.
    let filter = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let rows: Vec<f64> = (0..h * ow)
            .map(|p| {
                let (i, j) = (p / ow, p % ow);
                taps.iter()
                    .enumerate()
                    .map(|(k, t)| t * f(i * w + j + k))
                    .sum()
            })
            .collect();
        (0..oh * ow)
            .map(|p| {
                let (i, j) = (p / ow, p % ow);
                taps.iter()
                    .enumerate()
                    .map(|(k, t)| t * rows[(i + k) * ow + j])
                    .sum()
            })
            .collect()
    };
    let plane = h * w;
    let mut sum = 0.0;
    for c in 0..3 {
        let x = |p: usize| f64::from(a.data[c * plane + p]);
        let y = |p: usize| f64::from(b.data[c * plane + p]);
        let (mx, my) = (filter(&x), filter(&y));
        let (xx, yy, xy) = (
            filter(&|p| x(p) * x(p)),
            filter(&|p| y(p) * y(p)),
            filter(&|p| x(p) * y(p)),
        );
        for k in 0..oh * ow {
            let (vx, vy, cov) = (
                xx[k] - mx[k] * mx[k],
                yy[k] - my[k] * my[k],
                xy[k] - mx[k] * my[k],
            );
            sum += (2.0 * mx[k] * my[k] + c1) * (2.0 * cov + c2)
                / ((mx[k] * mx[k] + my[k] * my[k] + c1) * (vx + vy + c2));
        }
    }
    Ok(sum / (3 * oh * ow) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize, shift: f32) -> Image {
        let data = (0..3 * h * w)
            .map(|i| ((i % 97) as f32 / 97.0 + shift).clamp(0.0, 1.0))
            .collect();
        Image::new(h, w, data).unwrap()
    }

    #[test]
    fn identical_images_score_perfectly() {
        let a = ramp(16, 20, 0.0);
        assert_eq!(psnr(&a, &a).unwrap(), f64::INFINITY);
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_constant_offset_has_the_textbook_psnr() {
        let a = Image::new(8, 8, vec![0.5; 192]).unwrap();
        let b = Image::new(8, 8, vec![0.6; 192]).unwrap();
        // MSE 0.01 → 20 dB.
        assert!((psnr(&a, &b).unwrap() - 20.0).abs() < 1e-5);
        // Equal variances (0), means 0.5 and 0.6: the luminance term alone.
        let want = (2.0 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4);
        assert!((ssim(&a, &b).unwrap() - want).abs() < 1e-6);
    }

    #[test]
    fn noise_lowers_both_and_sizes_must_match() {
        let a = ramp(24, 24, 0.0);
        let b = ramp(24, 24, 0.05);
        assert!(ssim(&a, &b).unwrap() < 1.0);
        assert!(psnr(&a, &b).unwrap() < 40.0);
        assert!(psnr(&a, &ramp(24, 20, 0.0)).is_err());
        // Smaller than the window: a window of the image's size.
        let tiny = ramp(3, 3, 0.0);
        assert!((ssim(&tiny, &tiny).unwrap() - 1.0).abs() < 1e-12);
    }
}
