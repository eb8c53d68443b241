//! The fft family: the centred orthonormal 2-D DFT of complex images
//! (`docs/math.md` §10), and the complex element-wise products the MRI
//! operators ([`super::mri`]) build on it, on every backend.
//!
//! Complex data are interleaved `(re, im)` pairs of a real dtype: a tensor of
//! shape `[…, H, W, 2]` (any leading dimensions, e.g. `[B, H, W, 2]` images or
//! `[B, C, H, W, 2]` coil images) holds `len / (2·H·W)` planes. The CPU computes
//! in f32 or f64 (the oracle path) with `rustfft`; CUDA and wgpu in f32 with our
//! own Stockham kernels, which take line lengths `2^a·5^b` up to
//! [`MAX_DEVICE_LEN`] (see [`device_radices`]).
//!
//! A 2-D transform is two launches, each a batch of 1-D transforms along lines:
//! the rows (input → a pooled temporary), then the columns (→ output). The
//! shifts and the `1/√n` scaling are folded into each line's load and store.
//! A backend may run the whole 2-D transform another way
//! ([`FftOps::fft2_checked`]): CUDA with cuFFT, when libcufft loads, runs
//! cuFFT's plain transform (input → the temporary) and one centring kernel
//! (→ output), still two launches; [`FftOps::fft_path`] says which runs.

use crate::backend::params::{fft_pointwise, FftLineParams, FftPointwiseParams};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, Shape, Temp, Tensor, MAX_ELEMENTS};

/// Longest line the device kernels transform: a line and its ping-pong copy
/// (2 × 1024 complex f32 = 16 KiB) fit WebGPU's guaranteed workgroup memory.
pub const MAX_DEVICE_LEN: usize = 1024;

/// Backends that run the fft kernels.
pub trait FftOps: Backend {
    /// Whether the fft kernels compute in `dtype` here.
    fn fft_supports(&self, dtype: DType) -> bool;

    /// Whether this backend transforms lines of length `n`.
    fn fft_supports_len(&self, n: usize) -> bool;

    /// What computes this backend's 2-D transforms now.
    fn fft_path(&self) -> FftPath;

    /// Run one 2-D transform [`Fft2::transform`] has checked. The default is
    /// the two batches of line transforms; a backend with a library FFT
    /// overrides it.
    fn fft2_checked(&self, call: Fft2Call<'_, Self>) -> Result<()> {
        call.lines(self)
    }

    /// Launch one batch of line transforms [`Fft2::transform`] has checked.
    fn fft_lines_checked(&self, call: FftLinesCall<'_, Self>) -> Result<()>;

    /// Launch one complex element-wise product the MRI operators have checked.
    fn fft_pointwise_checked(&self, call: FftPointwiseCall<'_, Self>) -> Result<()>;
}

/// What computes a backend's 2-D transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FftPath {
    /// `rustfft` on the host (the CPU backend, the definition).
    Rustfft,
    /// The crate's own Stockham kernels (`kernels/fft.cu`, `shaders/fft.wgsl`).
    Kernels,
    /// NVIDIA's cuFFT, then the crate's centring kernel (`fft_centre_f32`).
    Cufft,
}

impl FftPath {
    pub fn name(self) -> &'static str {
        match self {
            FftPath::Rustfft => "rustfft",
            FftPath::Kernels => "own kernels",
            FftPath::Cufft => "cuFFT",
        }
    }
}

impl std::fmt::Display for FftPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One validated 2-D transform: `input`, `output` and the temporary `mid`
/// hold `planes` planes of `height × width` complex elements (the shapes
/// [`Fft2`] checked; `input` and `output` distinct tensors), `twiddles` the
/// plan's table — `e^{−2πik/W}` from 0, `e^{−2πik/H}` from `width`. Only
/// [`Fft2`] makes one.
pub struct Fft2Call<'a, B: Backend> {
    pub(crate) direction: Direction,
    pub(crate) dtype: DType,
    pub(crate) planes: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) input: &'a B::Buffer,
    pub(crate) output: &'a mut B::Buffer,
    pub(crate) mid: &'a mut B::Buffer,
    pub(crate) twiddles: &'a B::Buffer,
}

impl<B: FftOps> Fft2Call<'_, B> {
    /// The transform as two batches of line transforms: rows (input → mid),
    /// then columns (mid → output).
    pub(crate) fn lines(self, backend: &B) -> Result<()> {
        let (planes, h, w) = (self.planes, self.height, self.width);
        // Rows: planes·H lines of W contiguous elements.
        let rows = line_params(self.direction, w, planes * h, 1, 1, 0, w, 0);
        backend.fft_lines_checked(FftLinesCall {
            params: rows,
            dtype: self.dtype,
            input: self.input,
            output: self.mid,
            twiddles: self.twiddles,
        })?;
        // Columns: per plane, W lines of H elements W apart.
        let cols = line_params(self.direction, h, planes * w, w, w, 1, h * w, w);
        backend.fft_lines_checked(FftLinesCall {
            params: cols,
            dtype: self.dtype,
            input: self.mid,
            output: self.output,
            twiddles: self.twiddles,
        })
    }
}

/// One validated batch of line transforms: `input` and `output` hold every
/// element `params` addresses (the lines of each group lie inside its
/// `group_step` span, the groups one after another), `twiddles` this length's
/// table at `params.twiddle_offset`. Only [`Fft2`] makes one.
pub struct FftLinesCall<'a, B: Backend> {
    pub(crate) params: FftLineParams,
    pub(crate) dtype: DType,
    pub(crate) input: &'a B::Buffer,
    pub(crate) output: &'a mut B::Buffer,
    /// f32 `(cos, sin)` of `−2πk/n` (the device kernels read it; the CPU
    /// plans its own transform).
    pub(crate) twiddles: &'a B::Buffer,
}

/// One validated element-wise product: `output` holds `params.n_out`
/// complex elements, `input` and `aux` what the program reads. Only
/// the crate's MRI operators (through `pointwise`) make one.
pub struct FftPointwiseCall<'a, B: Backend> {
    pub(crate) params: FftPointwiseParams,
    pub(crate) dtype: DType,
    pub(crate) input: &'a B::Buffer,
    pub(crate) output: &'a mut B::Buffer,
    pub(crate) aux: &'a B::Buffer,
}

/// Which way to transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `F x = fftshift(DFT(ifftshift(x)))/√(HW)`.
    Forward,
    /// `Fᴴ y = fftshift(IDFT(ifftshift(y)))·√(HW)/(HW)`, the inverse of F.
    Inverse,
}

/// `(fives, twos)` with `n = 5^fives · 2^twos`, if `n` is such a length in
/// `1..=MAX_DEVICE_LEN` — what the device kernels run: a radix-5 pass covers
/// fastMRI's 320 = 5·2⁶ exactly, where Bluestein would need a padded length
/// of 1024 and three transforms.
pub fn device_radices(n: usize) -> Option<(u32, u32)> {
    if n == 0 || n > MAX_DEVICE_LEN {
        return None;
    }
    let (mut rest, mut fives) = (n, 0);
    while rest % 5 == 0 {
        rest /= 5;
        fives += 1;
    }
    rest.is_power_of_two()
        .then(|| (fives, rest.trailing_zeros()))
}

/// The image dimensions `(planes, H, W)` of a complex tensor `[…, H, W, 2]`.
pub fn complex_planes(shape: Shape) -> Result<(usize, usize, usize)> {
    shape.checked_len()?;
    match *shape.dims() {
        [.., h, w, 2] => Ok((shape.checked_len()? / (2 * h * w), h, w)),
        _ => Err(Error::InvalidShape {
            shape,
            reason: "complex data are [..., height, width, 2] (interleaved re, im)",
        }),
    }
}

fn check_dtype<B: FftOps>(backend: &B, what: &'static str, want: DType, got: DType) -> Result<()> {
    if !backend.fft_supports(want) {
        return Err(Error::UnsupportedDType {
            backend: backend.kind().name(),
            dtype: want,
        });
    }
    if got != want {
        return Err(Error::DTypeMismatch {
            what,
            expected: want,
            got,
        });
    }
    Ok(())
}

/// A centred orthonormal 2-D DFT over `H × W` planes, with its twiddle
/// tables on the device (built once; a transform allocates nothing after the
/// pool has its temporary).
pub struct Fft2<B: Backend> {
    height: usize,
    width: usize,
    /// f32 `(cos, sin)(−2πk/W)` for `k < W`, then the same for H.
    twiddles: Tensor<B>,
}

impl<B: FftOps> Fft2<B> {
    /// The transform of `height × width` planes; a length the backend cannot
    /// transform is [`Error::UnsupportedOperator`].
    pub fn new(backend: &B, height: usize, width: usize) -> Result<Self> {
        let plane = Shape::from_dims(&[height, width, 2])?;
        plane.checked_len()?;
        for n in [height, width] {
            if !backend.fft_supports_len(n) {
                return Err(Error::UnsupportedOperator {
                    operator: format!("FFT of length {n} on {}", backend.kind().name()),
                    reason: "the device kernels take lengths 2^a·5^b up to 1024",
                });
            }
        }
        let table: Vec<f64> = [width, height]
            .iter()
            .flat_map(|&n| {
                (0..n).flat_map(move |k| {
                    let angle = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                    [angle.cos(), angle.sin()]
                })
            })
            .collect();
        let twiddles = Tensor::from_host(
            backend,
            Shape::flat(table.len()),
            DType::F32,
            HostSlice::F64(&table),
        )?;
        Ok(Fft2 {
            height,
            width,
            twiddles,
        })
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Launches per transform on every path: rows and columns, or a
    /// library transform (counted as one launch) and the centring kernel.
    pub const LAUNCHES: u64 = 2;

    /// `output ← F input` or `Fᴴ input` for every plane of a `[…, H, W, 2]`
    /// tensor; `output` has the same shape and dtype. Two launches.
    pub fn transform(
        &self,
        backend: &B,
        direction: Direction,
        input: &Tensor<B>,
        output: &mut Tensor<B>,
    ) -> Result<()> {
        let dtype = input.dtype();
        check_dtype(backend, "FFT output", dtype, output.dtype())?;
        if output.shape() != input.shape() {
            return Err(Error::ShapeMismatch {
                what: "FFT output (the input's shape)",
                expected: input.shape(),
                got: output.shape(),
            });
        }
        let (planes, h, w) = complex_planes(input.shape())?;
        if (h, w) != (self.height, self.width) {
            let mut dims = input.shape().dims().to_vec();
            let rank = dims.len();
            dims[rank - 3] = self.height;
            dims[rank - 2] = self.width;
            return Err(Error::ShapeMismatch {
                what: "FFT input (the plan's height and width)",
                expected: Shape::from_dims(&dims)?,
                got: input.shape(),
            });
        }
        let mut mid = Temp::new(backend, input.shape(), dtype)?;
        backend.fft2_checked(Fft2Call {
            direction,
            dtype,
            planes,
            height: h,
            width: w,
            input: &input.buf,
            output: &mut output.buf,
            mid: &mut mid.buf,
            twiddles: &self.twiddles.buf,
        })
    }

    /// `output ← F input`.
    pub fn forward(&self, backend: &B, input: &Tensor<B>, output: &mut Tensor<B>) -> Result<()> {
        self.transform(backend, Direction::Forward, input, output)
    }

    /// `output ← Fᴴ input`.
    pub fn inverse(&self, backend: &B, input: &Tensor<B>, output: &mut Tensor<B>) -> Result<()> {
        self.transform(backend, Direction::Inverse, input, output)
    }
}

/// The params of `lines` transforms of length `n`; the plane's shape was
/// checked, so every count fits u32 (≤ MAX_ELEMENTS).
#[allow(clippy::too_many_arguments)]
fn line_params(
    direction: Direction,
    n: usize,
    lines: usize,
    stride: usize,
    inner: usize,
    inner_step: usize,
    group_step: usize,
    twiddle_offset: usize,
) -> FftLineParams {
    debug_assert!(lines * n <= MAX_ELEMENTS);
    // The CPU takes any length (it ignores the radix counts).
    let (fives, twos) = device_radices(n).unwrap_or((0, 0));
    FftLineParams {
        n: n as u32,
        lines: lines as u32,
        stride: stride as u32,
        inner: inner as u32,
        inner_step: inner_step as u32,
        group_step: group_step as u32,
        fives,
        twos,
        inverse: u32::from(direction == Direction::Inverse),
        twiddle_offset: twiddle_offset as u32,
        _pad: 0,
        scale: (1.0 / (n as f64).sqrt()) as f32,
    }
}

/// `[B, 2, H, W]` (2 real channels) and `[B, H, W, 2]` (interleaved) shapes
/// of the same images: `(B·H·W, H·W)` complex elements and plane.
fn planar_pair(planar: Shape, interleaved: Shape) -> Result<(usize, usize)> {
    let (planes, h, w) = complex_planes(interleaved)?;
    let want = Shape::from_dims(&[planes, 2, h, w])?;
    if interleaved.rank() != 4 || planar != want {
        return Err(Error::ShapeMismatch {
            what: "2-channel images [B, 2, H, W] of interleaved [B, H, W, 2]",
            expected: want,
            got: planar,
        });
    }
    Ok((planes * h * w, h * w))
}

/// `interleaved ← planar`: images as 2 real channels `[B, 2, H, W]` (what a
/// 2-channel network sees, e.g. DDS's MRI prior) to complex `[B, H, W, 2]`.
/// One launch.
pub fn to_interleaved<B: FftOps>(
    backend: &B,
    planar: &Tensor<B>,
    interleaved: &mut Tensor<B>,
) -> Result<()> {
    let (n_out, plane) = planar_pair(planar.shape(), interleaved.shape())?;
    let params = FftPointwiseParams {
        n_out: n_out as u32,
        program: fft_pointwise::TO_INTERLEAVED,
        plane: plane as u32,
        coils: 1,
    };
    pointwise(backend, params, planar, interleaved, planar)
}

/// `planar ← interleaved`, the reverse of [`to_interleaved`]. One launch.
pub fn to_planar<B: FftOps>(
    backend: &B,
    interleaved: &Tensor<B>,
    planar: &mut Tensor<B>,
) -> Result<()> {
    let (n_out, plane) = planar_pair(planar.shape(), interleaved.shape())?;
    let params = FftPointwiseParams {
        n_out: n_out as u32,
        program: fft_pointwise::TO_PLANAR,
        plane: plane as u32,
        coils: 1,
    };
    pointwise(backend, params, interleaved, planar, interleaved)
}

/// `output ← program(input, aux)` over complex elements (one launch), after
/// checking that every buffer holds what the program reads or writes.
pub(crate) fn pointwise<B: FftOps>(
    backend: &B,
    params: FftPointwiseParams,
    input: &Tensor<B>,
    output: &mut Tensor<B>,
    aux: &Tensor<B>,
) -> Result<()> {
    let dtype = input.dtype();
    check_dtype(backend, "complex product output", dtype, output.dtype())?;
    check_dtype(backend, "mask or coil maps", dtype, aux.dtype())?;
    let (n_out, plane, coils) = (
        params.n_out as usize,
        params.plane as usize,
        params.coils as usize,
    );
    // Reals each operand must hold, and the unit n_out is a multiple of.
    let (in_reals, aux_reals, unit) = match params.program {
        fft_pointwise::MASK => (2 * n_out, plane, plane),
        fft_pointwise::COIL_EXPAND => (2 * n_out / coils.max(1), 2 * coils * plane, coils * plane),
        fft_pointwise::COIL_COMBINE => (2 * n_out * coils, 2 * coils * plane, plane),
        _ => (2 * n_out, 0, plane),
    };
    if unit == 0 || !n_out.is_multiple_of(unit) {
        return Err(Error::InvalidParameter {
            name: "complex elements",
            value: n_out as f64,
            reason: "must be a positive multiple of the image plane (times the coils)",
        });
    }
    for (what, want, got) in [
        ("complex product output", 2 * n_out, output.len()),
        ("complex product input", in_reals, input.len()),
        ("mask or coil maps", aux_reals, aux.len()),
    ] {
        if got < want {
            return Err(Error::LengthMismatch {
                what,
                expected: want,
                got,
            });
        }
    }
    backend.fft_pointwise_checked(FftPointwiseCall {
        params,
        dtype,
        input: &input.buf,
        output: &mut output.buf,
        aux: &aux.buf,
    })
}
