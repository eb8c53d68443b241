//! The restoration tasks: which operator degrades the image, and how its
//! measurement looks as a picture.

use crate::error::{Error, Result};
use crate::ops::operator::separable::{gaussian_taps, DEFAULT_TRUNCATION};
use crate::ops::{Operator, OperatorOps};
use crate::rng;
use crate::tensor::Shape;

use super::Image;

/// A degradation of an RGB image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// 4× super-resolution by 4×4 average pooling.
    Sr4,
    /// Inpainting of a centred box half the image's height and width.
    InpaintBox,
    /// Inpainting with 70 % of the pixels missing (seeded).
    InpaintRandom,
    /// Colorization from the mean of the channels.
    Colorize,
    /// Gaussian deblurring, σ = 2 px, 9 taps, SVD truncated at 3e-2 (inverted
    /// with the truncation [`blur_truncation`] when y is noisy).
    Deblur,
}

/// Pixels missing in [`Task::InpaintRandom`].
pub const RANDOM_MISSING: f64 = 0.7;
/// σ and radius of [`Task::Deblur`]'s kernel.
pub const BLUR_SIGMA: f64 = 2.0;
pub const BLUR_RADIUS: usize = 4;
/// The per-axis SVD truncation of [`Task::Deblur`] for measurement noise σ
/// (image units; 2σ in the network's [−1, 1] units): √(2σ), between the
/// operators' default 3e-2 (DDRM's) and [`MAX_BLUR_TRUNCATION`]. The blur's
/// 2-D singular values are products sᵢsⱼ of the axes' values, so with every
/// kept axis value ≥ √(2σ) each kept component amplifies the noise 2σ by at
/// most 1/(2σ) — to at most 1, half the image's range. With the noiseless
/// truncation, σ = 0.05 would come back up to 1/9e-4 ≈ 1100 times larger,
/// and H⁺y — the baseline and every method's start — would be noise.
pub fn blur_truncation(noise: f64) -> f64 {
    (2.0 * noise)
        .sqrt()
        .clamp(DEFAULT_TRUNCATION, MAX_BLUR_TRUNCATION)
}

/// The most [`blur_truncation`] drops: from σ = 0.125 on it stays here, so
/// that the blur's strongest components (singular values up to 1) are
/// always inverted, however noisy y is.
pub const MAX_BLUR_TRUNCATION: f64 = 0.5;

impl Task {
    pub const ALL: [Task; 5] = [
        Task::Sr4,
        Task::InpaintBox,
        Task::InpaintRandom,
        Task::Colorize,
        Task::Deblur,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Sr4 => "sr4",
            Task::InpaintBox => "inpaint-box",
            Task::InpaintRandom => "inpaint-random",
            Task::Colorize => "colorize",
            Task::Deblur => "deblur",
        }
    }

    /// The task of that name.
    pub fn from_name(name: &str) -> Result<Self> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| Error::UnsupportedOperator {
                operator: name.to_string(),
                reason: "tasks: sr4, inpaint-box, inpaint-random, colorize, deblur",
            })
    }

    /// What both sides of an image must be a multiple of for this task.
    pub fn side_multiple(self) -> usize {
        match self {
            Task::Sr4 => 4,
            _ => 1,
        }
    }

    /// The operator that measures images `item` = `[3, H, W]`; `seed` draws
    /// the random mask.
    pub fn operator<B: OperatorOps>(
        self,
        backend: &B,
        item: Shape,
        seed: u64,
    ) -> Result<Operator<B>> {
        self.operator_truncated(backend, item, DEFAULT_TRUNCATION, seed)
    }

    /// The operator the baseline and the samplers invert for measurements
    /// with noise σ = `noise` (image units): [`Task::operator`], except that
    /// deblurring's SVD truncation grows with σ ([`blur_truncation`]), which
    /// leaves the measured components the noise would swamp out of H⁺ and P.
    pub fn inverse_operator<B: OperatorOps>(
        self,
        backend: &B,
        item: Shape,
        noise: f64,
        seed: u64,
    ) -> Result<Operator<B>> {
        self.operator_truncated(backend, item, blur_truncation(noise), seed)
    }

    fn operator_truncated<B: OperatorOps>(
        self,
        backend: &B,
        item: Shape,
        truncation: f64,
        seed: u64,
    ) -> Result<Operator<B>> {
        let (h, w) = match *item.dims() {
            [3, h, w] => (h, w),
            _ => {
                return Err(Error::InvalidShape {
                    shape: item,
                    reason: "a restoration task takes RGB images [3, H, W]",
                })
            }
        };
        match self {
            Task::Sr4 => Operator::avg_pool(backend, item, 4),
            Task::InpaintBox => {
                let inside = |i: usize, j: usize| {
                    (h / 4..h - h / 4).contains(&i) && (w / 4..w - w / 4).contains(&j)
                };
                let mask = pixel_mask(h, w, |i, j| !inside(i, j));
                Operator::inpaint(backend, item, &mask, false)
            }
            Task::InpaintRandom => {
                // A pixel is missing when its uniform draw is below 0.7.
                let mask = pixel_mask(h, w, |i, j| {
                    let (_, u) = rng::uniforms(seed, 2_000_000, (i * w + j) as u32);
                    f64::from(u) >= RANDOM_MISSING
                });
                Operator::inpaint(backend, item, &mask, false)
            }
            Task::Colorize => {
                Operator::colorize(backend, item, Operator::<B>::OFFICIAL_COLOR_WEIGHTS)
            }
            Task::Deblur => Operator::blur_with_truncation(
                backend,
                item,
                &gaussian_taps(BLUR_SIGMA, BLUR_RADIUS),
                truncation,
            ),
        }
    }

    /// The measurement `y` (in the network's [−1, 1] units) as a picture of
    /// its own size: the small image for SR, the masked image for
    /// inpainting, the grey image for colorization, the blurred image.
    pub fn picture(self, y: &[f64], h: usize, w: usize) -> Result<Image> {
        let unit = |v: f64| (0.5 * (v + 1.0)) as f32;
        let image = match self {
            Task::Sr4 => Image::new(h / 4, w / 4, y.iter().map(|&v| unit(v)).collect())?,
            Task::Colorize => {
                let grey: Vec<f32> = y.iter().map(|&v| unit(v)).collect();
                Image::new(h, w, [&grey[..], &grey[..], &grey[..]].concat())?
            }
            Task::InpaintBox | Task::InpaintRandom | Task::Deblur => {
                Image::new(h, w, y.iter().map(|&v| unit(v)).collect())?
            }
        };
        Ok(image.clamped())
    }
}

/// A [3, h, w] mask, 1 where `kept(i, j)`, the same in every channel.
fn pixel_mask(h: usize, w: usize, kept: impl Fn(usize, usize) -> bool) -> Vec<f32> {
    let plane: Vec<f32> = (0..h * w)
        .map(|p| if kept(p / w, p % w) { 1.0 } else { 0.0 })
        .collect();
    [&plane[..], &plane[..], &plane[..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::ops::Mode;
    use crate::tensor::{DType, HostSlice, Tensor};

    /// RMS of H⁺n for white noise n of std 2σ (the noise `restore` adds to y).
    fn pinv_noise_rms(op: &Operator<CpuBackend>, b: &CpuBackend, sigma: f64) -> f64 {
        let y_shape = Shape::from_dims(&[&[1][..], op.y_item().dims()].concat()).unwrap();
        let n: Vec<f64> = (0..y_shape.checked_len().unwrap())
            .map(|i| 2.0 * sigma * rng::normal_f64(7, 0, i as u32))
            .collect();
        let y = Tensor::from_host(b, y_shape, DType::F64, HostSlice::F64(&n)).unwrap();
        let x_shape = Shape::from_dims(&[&[1][..], op.x_item().dims()].concat()).unwrap();
        let mut x = Tensor::zeros(b, x_shape, DType::F64).unwrap();
        op.apply(b, Mode::PseudoInverse, &y, &mut x).unwrap();
        let x = x.to_f64(b).unwrap();
        (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// With noise, deblurring's truncation keeps every component's noise
    /// gain ≤ 1/(2σ), so H⁺ of the noise stays below 1 (half the image
    /// range); the noiseless truncation would blow it up.
    #[test]
    fn the_deblur_truncation_bounds_the_noise_in_h_pinv_y() {
        let b = CpuBackend::new();
        let item = Shape::from_dims(&[3, 32, 32]).unwrap();
        assert_eq!(blur_truncation(0.0), DEFAULT_TRUNCATION);
        // Past σ = 0.125 the strongest components are still inverted.
        for sigma in [0.125, 1.0, 1e300, f64::INFINITY] {
            assert_eq!(blur_truncation(sigma), MAX_BLUR_TRUNCATION, "σ = {sigma}");
            Task::Deblur.inverse_operator(&b, item, sigma, 0).unwrap();
        }
        for sigma in [0.01, 0.05, 0.2] {
            let op = Task::Deblur.inverse_operator(&b, item, sigma, 0).unwrap();
            let rms = pinv_noise_rms(&op, &b, sigma);
            assert!(rms <= 1.0, "σ = {sigma}: H⁺n has RMS {rms}");
            let fixed = Task::Deblur.operator(&b, item, 0).unwrap();
            let blown = pinv_noise_rms(&fixed, &b, sigma);
            assert!(blown > 4.0 * rms, "σ = {sigma}: {blown} vs {rms}");
        }
    }
}
