//! Images in and out: PNG/JPEG through the `image` crate, fitted to the sizes
//! a model and task take, and PNGs written atomically (a temporary file, then
//! a rename, so a failed run leaves nothing half-written).

use std::path::{Path, PathBuf};

use diffinv::restore::Image;

use crate::error::{fail, CliError, CliResult};

/// Read an image as RGB in [0, 1]: grey is spread to three channels, alpha
/// is composited over white.
pub fn load(path: &Path) -> CliResult<Image> {
    let img = image::open(path)
        .map_err(|e| CliError(format!("cannot read image {}: {e}", path.display())))?
        .to_rgba32f();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (p, px) in img.pixels().enumerate() {
        let a = px.0[3];
        for c in 0..3 {
            data[c * h * w + p] = px.0[c] * a + (1.0 - a);
        }
    }
    Ok(Image::new(h, w, data)?.clamped())
}

/// How to reach sides that are multiples of what the model and task need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Refuse other sizes.
    Exact,
    /// Crop to the largest fitting size, centred.
    Crop,
    /// Pad to the smallest fitting size by reflection.
    Pad,
}

/// `img` with both sides multiples of `m`, as `fit` says.
pub fn fit(img: Image, m: usize, fit: Fit) -> CliResult<Image> {
    let (h, w) = (img.height, img.width);
    if h % m == 0 && w % m == 0 {
        return Ok(img);
    }
    let (down, up) = (
        (h / m * m, w / m * m),
        (h.div_ceil(m) * m, w.div_ceil(m) * m),
    );
    match fit {
        Fit::Exact => fail!(
            "the image is {w}×{h}; this model and task need sides that are multiples of {m}: \
             pass --crop (to {}×{}) or --pad (to {}×{})",
            down.1,
            down.0,
            up.1,
            up.0
        ),
        Fit::Crop if down.0 == 0 || down.1 == 0 => {
            fail!("the image is {w}×{h}, smaller than {m}×{m}: pass --pad instead")
        }
        Fit::Crop => {
            let (i0, j0) = ((h - down.0) / 2, (w - down.1) / 2);
            Ok(resample(&img, down, |i, j| (i + i0, j + j0)))
        }
        Fit::Pad => {
            let reflect = |k: usize, n: usize| {
                let period = 2 * n.max(1) - 2;
                let k = if period == 0 { 0 } else { k % period };
                if k < n {
                    k
                } else {
                    period - k
                }
            };
            Ok(resample(&img, up, |i, j| (reflect(i, h), reflect(j, w))))
        }
    }
}

/// An image of `size` whose pixel (i, j) is `img`'s pixel `at(i, j)`.
fn resample(
    img: &Image,
    size: (usize, usize),
    at: impl Fn(usize, usize) -> (usize, usize),
) -> Image {
    let (h, w) = size;
    let mut data = vec![0f32; 3 * h * w];
    for c in 0..3 {
        for i in 0..h {
            for j in 0..w {
                let (si, sj) = at(i, j);
                data[(c * h + i) * w + j] = img.data[(c * img.height + si) * img.width + sj];
            }
        }
    }
    Image {
        height: h,
        width: w,
        data,
    }
}

/// Images side by side, top-aligned, with a white 4-pixel gap.
pub fn side_by_side(images: &[&Image]) -> Image {
    const GAP: usize = 4;
    let h = images.iter().map(|i| i.height).max().unwrap_or(1);
    let w = images.iter().map(|i| i.width).sum::<usize>() + GAP * images.len().saturating_sub(1);
    let mut data = vec![1f32; 3 * h * w];
    let mut x0 = 0;
    for img in images {
        for c in 0..3 {
            for i in 0..img.height {
                for j in 0..img.width {
                    data[(c * h + i) * w + x0 + j] = img.data[(c * img.height + i) * img.width + j];
                }
            }
        }
        x0 += img.width + GAP;
    }
    Image {
        height: h,
        width: w,
        data,
    }
}

/// PNG files written next to their final names, renamed into place together
/// by [`Staged::commit`]; dropped uncommitted, they are removed.
pub struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    pub fn new() -> Self {
        Staged { files: Vec::new() }
    }

    /// Encode `img` to a temporary file beside `path`.
    pub fn png(&mut self, path: PathBuf, img: &Image) -> CliResult<()> {
        let (h, w) = (img.height, img.width);
        let mut rgb = vec![0u8; 3 * h * w];
        for p in 0..h * w {
            for c in 0..3 {
                rgb[3 * p + c] = (img.data[c * h * w + p].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("out.png");
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        image::save_buffer_with_format(
            &tmp,
            &rgb,
            w as u32,
            h as u32,
            image::ColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| CliError(format!("cannot write {}: {e}", tmp.display())))?;
        self.files.push((tmp, path));
        Ok(())
    }

    /// Rename every staged file into place.
    pub fn commit(mut self) -> CliResult<()> {
        for (tmp, path) in std::mem::take(&mut self.files) {
            std::fs::rename(&tmp, &path)
                .map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
