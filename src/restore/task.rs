//! The restoration tasks: which operator degrades the image, and how its
//! measurement looks as a picture.

use crate::error::{Error, Result};
use crate::ops::operator::separable::gaussian_taps;
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
    /// Gaussian deblurring, σ = 2 px, 9 taps, SVD truncated at 3e-2.
    Deblur,
}

/// Pixels missing in [`Task::InpaintRandom`].
pub const RANDOM_MISSING: f64 = 0.7;
/// σ and radius of [`Task::Deblur`]'s kernel.
pub const BLUR_SIGMA: f64 = 2.0;
pub const BLUR_RADIUS: usize = 4;

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

    /// The operator on images `item` = `[3, H, W]`; `seed` draws the random mask.
    pub fn operator<B: OperatorOps>(
        self,
        backend: &B,
        item: Shape,
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
            Task::Deblur => Operator::blur(backend, item, &gaussian_taps(BLUR_SIGMA, BLUR_RADIUS)),
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
