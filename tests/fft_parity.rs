//! The fft family and the MRI operators on every backend: the centred
//! orthonormal 2-D FFT against a naive f64 DFT (8…512, 320, non-square,
//! batches), its convention pinned by a centred delta and a constant, FFT·IFFT
//! = I, Parseval; the single- and multi-coil MRI operators against naive f64
//! references, adjointness, P² = P, AᴴA = Aᴴ∘A; launches per call; and bad
//! input as typed errors. The CUDA backend's cuFFT path runs the same checks
//! on the emulator with a host FFT standing in for cuFFT (`cuda_paths`).

mod common;

use common::{compare, values};
use diffinv::ops::fft::device_radices;
use diffinv::ops::mri::{ColumnMask, MaskKind, MultiCoil, SingleCoil};
use diffinv::ops::{Direction, Fft2, FftOps};
use diffinv::{DType, Error, HostSlice, Ops, Shape, Tensor};

/// Interleaved complex numbers as (re, im) pairs.
type C = (f64, f64);

fn pairs(v: &[f64]) -> Vec<C> {
    v.chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

fn flat(v: &[C]) -> Vec<f64> {
    v.iter().flat_map(|&(re, im)| [re, im]).collect()
}

fn cmul(a: C, b: C) -> C {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

fn conj(a: C) -> C {
    (a.0, -a.1)
}

/// The centred orthonormal DFT of one `h × w` plane straight from the
/// definition, in f64: `y[k] = Σ_n x[(n + ⌊N/2⌋) mod N] e^{∓2πi k'n/N} / √N`
/// per axis with `k' = (k − ⌊N/2⌋) mod N`, rows then columns, O(N²) per line.
fn naive_plane(x: &[C], h: usize, w: usize, inverse: bool) -> Vec<C> {
    let sign = if inverse { 1.0 } else { -1.0 };
    let line = |v: &[C]| -> Vec<C> {
        let n = v.len();
        let (half, scale) = (n / 2, 1.0 / (n as f64).sqrt());
        (0..n)
            .map(|k| {
                let kk = (k + n - half) % n;
                let mut acc = (0.0, 0.0);
                for (m, _) in v.iter().enumerate() {
                    // k'·m mod n keeps the angle small and exact in f64.
                    let t = (kk * m % n) as f64 / n as f64;
                    let (s, c) = (sign * std::f64::consts::TAU * t).sin_cos();
                    let xv = v[(m + half) % n];
                    acc = (acc.0 + xv.0 * c - xv.1 * s, acc.1 + xv.0 * s + xv.1 * c);
                }
                (acc.0 * scale, acc.1 * scale)
            })
            .collect()
    };
    let mut rows: Vec<C> = x.chunks(w).flat_map(line).collect();
    for j in 0..w {
        let col: Vec<C> = (0..h).map(|i| rows[i * w + j]).collect();
        for (i, v) in line(&col).into_iter().enumerate() {
            rows[i * w + j] = v;
        }
    }
    rows
}

/// [`naive_plane`] over every plane of `x`.
fn naive(x: &[C], h: usize, w: usize, inverse: bool) -> Vec<C> {
    x.chunks(h * w)
        .flat_map(|p| naive_plane(p, h, w, inverse))
        .collect()
}

/// The dtypes the fft family computes in on `b`.
fn dtypes<B: FftOps>(b: &B) -> Vec<DType> {
    [DType::F32, DType::F64]
        .into_iter()
        .filter(|&d| b.fft_supports(d))
        .collect()
}

/// (normalised, max-abs) tolerances of one transform of values in [−1, 1]
/// against f64. Measured worst cases over cpu, lavapipe and emulated CUDA
/// (512², 320², FᴴF at amplitude 3, 4-coil AᴴA): f32 2.3e-7 normalised,
/// 7.1e-7 max-abs per transform; f64 1.6e-15 and 7.8e-15.
fn tol(dtype: DType) -> (f64, f64) {
    if dtype == DType::F64 {
        (1e-14, 3e-14)
    } else {
        (5e-7, 1.5e-6)
    }
}

fn upload<B: Ops>(b: &B, dims: &[usize], dtype: DType, data: &[f64]) -> Tensor<B> {
    Tensor::from_host(
        b,
        Shape::from_dims(dims).unwrap(),
        dtype,
        HostSlice::F64(data),
    )
    .unwrap()
}

/// Plane shapes and batches of the sweep: powers of two 8…512, fastMRI's 320,
/// non-square mixes of radix 2 and 5, odd lengths, and odd batches.
const CASES: [(usize, usize, usize); 11] = [
    (3, 8, 8),
    (2, 16, 16),
    (1, 32, 64),
    (1, 128, 128),
    (1, 256, 256),
    (1, 512, 512),
    (1, 320, 320),
    (2, 320, 16),
    (3, 10, 40),
    (2, 25, 8),
    (2, 5, 125),
];

fn transforms_match_naive_dft<B: Ops>(b: &B) {
    for dtype in dtypes(b) {
        for &(batch, h, w) in &CASES {
            let dims = [batch, h, w, 2];
            let n = batch * h * w * 2;
            let x = values((h * 1000 + w) as u64, n, 1.0);
            let fft = Fft2::new(b, h, w).unwrap();
            let xt = upload(b, &dims, dtype, &x);
            let mut y = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            for (direction, inverse) in [(Direction::Forward, false), (Direction::Inverse, true)] {
                let before = b.launch_count();
                fft.transform(b, direction, &xt, &mut y).unwrap();
                assert_eq!(b.launch_count() - before, Fft2::<B>::LAUNCHES);
                let want = flat(&naive(&pairs(&x), h, w, inverse));
                let (rel, abs) = tol(dtype);
                let what = format!("{dtype:?} {direction:?} [{batch}, {h}, {w}]");
                compare(&what, &y.to_f64(b).unwrap(), &want, rel, abs);
            }
        }
    }
}

/// F of a delta at the centre pixel (H/2, W/2) is the constant 1/√(HW), and
/// Fᴴ of a constant c is a delta √(HW)·c there: the fastMRI centring, pinned
/// without the index arithmetic the naive reference shares with the kernels.
fn centring_follows_fastmri<B: Ops>(b: &B) {
    for dtype in dtypes(b) {
        for (h, w) in [(8, 8), (10, 16), (320, 320)] {
            let fft = Fft2::new(b, h, w).unwrap();
            let root = ((h * w) as f64).sqrt();
            let mut delta = vec![0.0; 2 * h * w];
            delta[2 * ((h / 2) * w + w / 2)] = 1.0;
            let x = upload(b, &[1, h, w, 2], dtype, &delta);
            let mut y = Tensor::zeros(b, x.shape(), dtype).unwrap();
            fft.forward(b, &x, &mut y).unwrap();
            let constant: Vec<f64> = (0..h * w).flat_map(|_| [1.0 / root, 0.0]).collect();
            let (rel, abs) = tol(dtype);
            compare(
                &format!("{dtype:?} F δ {h}×{w}"),
                &y.to_f64(b).unwrap(),
                &constant,
                rel,
                abs,
            );
            let c = upload(b, &[1, h, w, 2], dtype, &constant);
            fft.inverse(b, &c, &mut y).unwrap();
            compare(
                &format!("{dtype:?} Fᴴ 1 {h}×{w}"),
                &y.to_f64(b).unwrap(),
                &delta,
                rel,
                abs,
            );
        }
    }
}

/// Fᴴ F x = x and ‖F x‖ = ‖x‖, computed by the backend itself, on a
/// `[B, C, H, W, 2]` tensor (coil images).
fn inverse_and_parseval<B: Ops>(b: &B) {
    for dtype in dtypes(b) {
        for (h, w) in [(64, 320), (320, 320), (40, 8)] {
            let dims = [2, 3, h, w, 2];
            let n: usize = dims.iter().product();
            let x = values(n as u64, n, 3.0);
            let fft = Fft2::new(b, h, w).unwrap();
            let xt = upload(b, &dims, dtype, &x);
            let mut k = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            let mut back = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            fft.forward(b, &xt, &mut k).unwrap();
            fft.inverse(b, &k, &mut back).unwrap();
            let (rel, abs) = tol(dtype);
            let what = format!("{dtype:?} FᴴF x, {h}×{w}");
            compare(&what, &back.to_f64(b).unwrap(), &x, rel, 3.0 * abs);
            let ratio = norm(&k.to_f64(b).unwrap()) / norm(&x);
            assert!((ratio - 1.0).abs() <= rel, "{what}: ‖Fx‖/‖x‖ = {ratio}");
        }
    }
}

/// Lengths the device kernels cannot transform, wrong shapes and dtypes: typed
/// errors before any launch.
fn bad_input_is_rejected<B: Ops>(b: &B) {
    let cpu = b.kind().name() == "cpu";
    for n in [384, 2048, 7, 3 * 320] {
        let made = Fft2::new(b, 8, n);
        assert_eq!(
            made.is_ok(),
            cpu || device_radices(n).is_some(),
            "length {n}"
        );
        if let Err(e) = made {
            assert!(matches!(e, Error::UnsupportedOperator { .. }), "{e}");
        }
    }
    assert_eq!(device_radices(320), Some((1, 6)));
    assert_eq!(device_radices(1024), Some((0, 10)));
    assert!(device_radices(384).is_none() && device_radices(0).is_none());
    let fft = Fft2::new(b, 8, 16).unwrap();
    let dtype = DType::F32;
    let z = |dims: &[usize]| Tensor::zeros(b, Shape::from_dims(dims).unwrap(), dtype).unwrap();
    let launches = b.launch_count();
    let cases: [(&[usize], &[usize]); 5] = [
        (&[2, 8, 8, 2], &[2, 8, 8, 2]),   // not the plan's width
        (&[2, 8, 16, 2], &[2, 8, 16, 3]), // output differs
        (&[2, 8, 16, 3], &[2, 8, 16, 3]), // last dimension not 2
        (&[16, 2], &[16, 2]),             // no plane
        (&[2, 16, 8, 2], &[2, 16, 8, 2]), // transposed plane
    ];
    for (i, o) in cases {
        let (x, mut y) = (z(i), z(o));
        let e = fft.forward(b, &x, &mut y).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { .. } | Error::InvalidShape { .. }),
            "{i:?} → {o:?}: {e}"
        );
    }
    let x = z(&[1, 8, 16, 2]);
    if b.supports(DType::F16) {
        let mut y = Tensor::zeros(b, x.shape(), DType::F16).unwrap();
        assert!(matches!(
            fft.forward(b, &x, &mut y).unwrap_err(),
            Error::DTypeMismatch { .. }
        ));
        let h = Tensor::zeros(b, x.shape(), DType::F16).unwrap();
        assert!(matches!(
            fft.forward(b, &h, &mut y).unwrap_err(),
            Error::UnsupportedDType { .. }
        ));
    }
    assert_eq!(b.launch_count(), launches, "a rejected call launched");
}

/// 2 real channels `[B, 2, H, W]` ↔ interleaved `[B, H, W, 2]`: exact copies
/// both ways, one launch each; mismatched shapes are typed errors.
fn layouts_convert_exactly<B: Ops>(b: &B) {
    use diffinv::ops::{to_interleaved, to_planar};
    let dtype = DType::F32;
    let (batch, h, w) = (3, 5, 8);
    let n = batch * 2 * h * w;
    let planar = values(21, n, 1.0)
        .iter()
        .map(|&v| f64::from(v as f32))
        .collect::<Vec<_>>();
    let want: Vec<f64> = (0..n)
        .map(|r| {
            let (o, part) = (r / 2, r % 2);
            let (bb, px) = (o / (h * w), o % (h * w));
            planar[(2 * bb + part) * h * w + px]
        })
        .collect();
    let p = upload(b, &[batch, 2, h, w], dtype, &planar);
    let mut i = Tensor::zeros(b, Shape::from_dims(&[batch, h, w, 2]).unwrap(), dtype).unwrap();
    let mut back = Tensor::zeros(b, p.shape(), dtype).unwrap();
    let before = b.launch_count();
    to_interleaved(b, &p, &mut i).unwrap();
    to_planar(b, &i, &mut back).unwrap();
    assert_eq!(b.launch_count() - before, 2);
    assert_eq!(i.to_f64(b).unwrap(), want);
    assert_eq!(back.to_f64(b).unwrap(), planar);
    let z = |dims: &[usize]| Tensor::zeros(b, Shape::from_dims(dims).unwrap(), dtype).unwrap();
    for (pl, il) in [
        (&[batch, 2, h, w + 1][..], &[batch, h, w, 2][..]),
        (&[batch, 3, h, w], &[batch, h, w, 2]),
        (&[batch, 2, h, w], &[batch, 1, h, w, 2]),
        (&[batch, 2, h, w], &[batch, h, w, 3]),
    ] {
        let (mut pt, mut it) = (z(pl), z(il));
        assert!(to_interleaved(b, &pt, &mut it).is_err(), "{pl:?} → {il:?}");
        assert!(to_planar(b, &it, &mut pt).is_err(), "{il:?} → {pl:?}");
    }
}

mod layouts {
    crate::for_each_backend!(super::layouts_convert_exactly);
}
mod transforms {
    crate::for_each_backend!(super::transforms_match_naive_dft);
}
mod centring {
    crate::for_each_backend!(super::centring_follows_fastmri);
}
mod inverse {
    crate::for_each_backend!(super::inverse_and_parseval);
}
mod bad_input {
    crate::for_each_backend!(super::bad_input_is_rejected);
}

/// The CUDA backend's two paths for a 2-D transform: cuFFT then the centring
/// kernel, and its own line kernels.
#[cfg(feature = "cuda")]
mod cuda_paths {
    use super::*;
    use crate::common::cuda_emu::{new_cuda_emu, new_cuda_emu_host_fft, LIBRARY_FFT};
    use crate::common::skip;
    use diffinv::backend::cpu::CpuBackend;
    use diffinv::backend::cuda::{CudaBackend, CudaDevice};
    use diffinv::ops::FftPath;

    /// The fft family's checks: transforms against the naive DFT (launches
    /// included), centring, FᴴF and Parseval, bad input, the MRI operators.
    fn family<B: Ops>(b: &B) {
        transforms_match_naive_dft(b);
        centring_follows_fastmri(b);
        inverse_and_parseval(b);
        bad_input_is_rejected(b);
        single_coil_operator(b);
        multi_coil_operator(b);
    }

    /// The cuFFT path with rustfft (f32) standing in for cuFFT's plain
    /// transform: the backend's choice, temporary and launch count and the
    /// centring kernel run for real, and the family's checks hold at the
    /// same tolerances. Every transform was one library call and one
    /// centring launch, never a line kernel.
    #[test]
    fn library_path_passes_the_family_on_the_emulator() {
        let Some(b) = new_cuda_emu_host_fft() else {
            return;
        };
        assert_eq!(b.fft_path(), FftPath::Cufft);
        family(&b);
        let ran = b.device().launched();
        let library = ran.get(LIBRARY_FFT).copied().unwrap_or(0);
        assert!(library > 0, "no library transform ran: {ran:?}");
        assert_eq!(ran.get("fft_centre_f32").copied(), Some(library));
        assert_eq!(ran.get("fft_lines_f32"), None);
    }

    /// Turned off, the library is not used: the line kernels run and the
    /// backend says so.
    #[test]
    fn library_turned_off_runs_the_line_kernels() {
        let Some(mut b) = new_cuda_emu_host_fft() else {
            return;
        };
        b.set_library_fft(false);
        assert_eq!(b.fft_path(), FftPath::Kernels);
        transforms_match_naive_dft(&b);
        let ran = b.device().launched();
        assert_eq!(ran.get(LIBRARY_FFT), None);
        assert_eq!(ran.get("fft_centre_f32"), None);
        assert!(ran.get("fft_lines_f32").is_some_and(|&n| n > 0), "{ran:?}");
    }

    /// An external f32 input 4 bytes past an 8-byte boundary (legal for f32,
    /// not for `cufftComplex`) is transformed by the line kernels, correctly;
    /// the aligned output tensor of the same call would not change that.
    #[test]
    fn misaligned_external_input_takes_the_line_kernels() {
        let Some(b) = new_cuda_emu_host_fft() else {
            return;
        };
        let (h, w) = (8, 10);
        let n = 2 * h * w;
        let x = values(5, n, 1.0);
        let dev = b.device();
        let mut mem = dev.alloc_zeroed(4 * (n + 1)).unwrap();
        let stored: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        dev.write(&mut mem, 4, bytemuck::cast_slice(&stored))
            .unwrap();
        let ptr = dev.device_ptr(&mem) + 4;
        // SAFETY: the allocation holds n f32 from byte 4 and outlives the
        // tensor (dropped first); the emulated device runs in order.
        let buf = unsafe { b.wrap_device_ptr(ptr, n, DType::F32) }.unwrap();
        let xt = Tensor::from_buffer(buf, Shape::from_dims(&[1, h, w, 2]).unwrap()).unwrap();
        let mut y = Tensor::zeros(&b, xt.shape(), DType::F32).unwrap();
        Fft2::new(&b, h, w)
            .unwrap()
            .forward(&b, &xt, &mut y)
            .unwrap();
        drop(xt);
        let ran = b.device().launched();
        assert_eq!(ran.get(LIBRARY_FFT), None, "{ran:?}");
        assert_eq!(ran.get("fft_lines_f32").copied(), Some(2));
        let input: Vec<f64> = stored.iter().map(|&v| f64::from(v)).collect();
        let want = flat(&naive(&pairs(&input), h, w, false));
        let (rel, abs) = tol(DType::F32);
        compare("misaligned input", &y.to_f64(&b).unwrap(), &want, rel, abs);
    }

    /// Without a library the emulated device runs the kernels; the CPU runs
    /// rustfft.
    #[test]
    fn paths_are_reported() {
        assert_eq!(CpuBackend::new().fft_path(), FftPath::Rustfft);
        if let Some(b) = new_cuda_emu() {
            assert_eq!(b.fft_path(), FftPath::Kernels);
        }
    }

    /// On a GPU the shared backend (`cuda_device` above) takes cuFFT when
    /// libcufft loads; this runs the family on the crate's own kernels there
    /// too. Skipped without a driver.
    #[test]
    fn gpu_line_kernels() {
        match CudaBackend::new(0) {
            Ok(mut b) => {
                b.set_library_fft(false);
                assert_eq!(b.fft_path(), FftPath::Kernels);
                family(&b);
            }
            Err(e) => skip("cuda", e),
        }
    }
}

// ---- MRI operators ----

/// A small problem: a 4× uniform1d mask with ACS, smooth-ish coil maps.
struct Problem {
    h: usize,
    w: usize,
    coils: usize,
    mask: Vec<f64>,
    maps: Vec<f64>,
}

fn problem(h: usize, w: usize, coils: usize) -> Problem {
    let cols = ColumnMask::generate(MaskKind::Uniform1d, w, 4, 0.25, 5).unwrap();
    let maps = (0..coils * h * w)
        .flat_map(|i| {
            let (c, px) = (i / (h * w), i % (h * w));
            let (y, x) = ((px / w) as f64 / h as f64, (px % w) as f64 / w as f64);
            let phase = 2.0 * (c as f64 + 1.0) * (x - y);
            let mag = 0.5 + 0.5 * (-(x - 0.3 * c as f64).powi(2) - (y - 0.5).powi(2)).exp();
            [mag * phase.cos(), mag * phase.sin()]
        })
        .collect();
    Problem {
        h,
        w,
        coils,
        mask: cols.plane(h),
        maps,
    }
}

/// Naive references: single-coil A and Aᴴ, multi-coil A and Aᴴ (f64).
impl Problem {
    fn plane(&self) -> usize {
        self.h * self.w
    }
    fn masked(&self, k: &[C]) -> Vec<C> {
        k.iter()
            .enumerate()
            .map(|(i, &v)| {
                let m = self.mask[i % self.plane()];
                (m * v.0, m * v.1)
            })
            .collect()
    }
    fn single_forward(&self, x: &[C]) -> Vec<C> {
        self.masked(&naive(x, self.h, self.w, false))
    }
    fn single_adjoint(&self, y: &[C]) -> Vec<C> {
        naive(&self.masked(y), self.h, self.w, true)
    }
    fn map(&self, c: usize, px: usize) -> C {
        let i = 2 * (c * self.plane() + px);
        (self.maps[i], self.maps[i + 1])
    }
    fn multi_forward(&self, x: &[C]) -> Vec<C> {
        let p = self.plane();
        let coil: Vec<C> = (0..x.len() / p * self.coils * p)
            .map(|o| {
                let (b, c, px) = (o / (self.coils * p), o / p % self.coils, o % p);
                cmul(self.map(c, px), x[b * p + px])
            })
            .collect();
        self.single_forward(&coil)
    }
    fn multi_adjoint(&self, y: &[C]) -> Vec<C> {
        let p = self.plane();
        let coil = self.single_adjoint(y);
        (0..y.len() / self.coils)
            .map(|o| {
                let (b, px) = (o / p, o % p);
                (0..self.coils).fold((0.0, 0.0), |acc, c| {
                    let v = cmul(conj(self.map(c, px)), coil[(b * self.coils + c) * p + px]);
                    (acc.0 + v.0, acc.1 + v.1)
                })
            })
            .collect()
    }
}

/// ⟨a, b⟩ = Σ conj(a)·b.
fn inner(a: &[f64], b: &[f64]) -> C {
    pairs(a)
        .iter()
        .zip(pairs(b))
        .fold((0.0, 0.0), |acc, (&u, v)| {
            let t = cmul(conj(u), v);
            (acc.0 + t.0, acc.1 + t.1)
        })
}

/// ‖v‖, summed pairwise: a plain f64 sum of a million squares would carry
/// ~1e-13 of its own rounding, more than an f64 transform's.
fn norm(v: &[f64]) -> f64 {
    fn sum_sq(v: &[f64]) -> f64 {
        if v.len() <= 64 {
            v.iter().map(|a| a * a).sum()
        } else {
            let (a, b) = v.split_at(v.len() / 2);
            sum_sq(a) + sum_sq(b)
        }
    }
    sum_sq(v).sqrt()
}

/// |⟨A x, y⟩ − ⟨x, Aᴴ y⟩| relative to ‖A x‖‖y‖.
fn adjoint_gap(ax: &[f64], y: &[f64], x: &[f64], ahy: &[f64]) -> f64 {
    let (l, r) = (inner(ax, y), inner(x, ahy));
    ((l.0 - r.0).powi(2) + (l.1 - r.1).powi(2)).sqrt() / (norm(ax) * norm(y))
}

const MRI_CASES: [(usize, usize, usize, usize); 3] = [(2, 8, 8, 3), (1, 10, 16, 2), (2, 20, 40, 4)];

fn single_coil_operator<B: Ops>(b: &B) {
    for dtype in dtypes(b) {
        let (rel, abs) = tol(dtype);
        for &(batch, h, w, _) in &MRI_CASES {
            let pr = problem(h, w, 1);
            let op = SingleCoil::new(b, dtype, h, w, &pr.mask).unwrap();
            let dims = [batch, h, w, 2];
            let n = batch * h * w * 2;
            let (x, y) = (values(1, n, 1.0), values(2, n, 1.0));
            let (xt, yt) = (upload(b, &dims, dtype, &x), upload(b, &dims, dtype, &y));
            let mut out = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            let mut out2 = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            let what = |m: &str| format!("{dtype:?} single-coil {m} [{batch}, {h}, {w}]");

            let before = b.launch_count();
            op.forward(b, &xt, &mut out).unwrap();
            assert_eq!(b.launch_count() - before, SingleCoil::<B>::LAUNCHES_FORWARD);
            let ax = out.to_f64(b).unwrap();
            compare(
                &what("A x"),
                &ax,
                &flat(&pr.single_forward(&pairs(&x))),
                rel,
                abs,
            );

            op.adjoint(b, &yt, &mut out).unwrap();
            let ahy = out.to_f64(b).unwrap();
            compare(
                &what("Aᴴ y"),
                &ahy,
                &flat(&pr.single_adjoint(&pairs(&y))),
                rel,
                abs,
            );
            op.pseudo_inverse(b, &yt, &mut out2).unwrap();
            assert_eq!(out2.to_f64(b).unwrap(), ahy, "{}", what("A⁺ = Aᴴ"));
            assert!(
                adjoint_gap(&ax, &y, &x, &ahy) <= rel,
                "{}",
                what("adjointness")
            );

            let before = b.launch_count();
            op.project(b, &xt, &mut out).unwrap();
            assert_eq!(b.launch_count() - before, SingleCoil::<B>::LAUNCHES_PROJECT);
            let px = out.to_f64(b).unwrap();
            let want = flat(&pr.single_adjoint(&pr.single_forward(&pairs(&x))));
            compare(&what("P x"), &px, &want, rel, abs);
            // P² = P, and P = AᴴA.
            op.project(b, &out, &mut out2).unwrap();
            compare(&what("P² x"), &out2.to_f64(b).unwrap(), &px, rel, abs);
            op.normal(b, &xt, &mut out2).unwrap();
            assert_eq!(out2.to_f64(b).unwrap(), px, "{}", what("AᴴA = P"));
        }
    }
}

fn multi_coil_operator<B: Ops>(b: &B) {
    for dtype in dtypes(b) {
        let (rel, abs) = tol(dtype);
        for &(batch, h, w, coils) in &MRI_CASES {
            let pr = problem(h, w, coils);
            let op = MultiCoil::new(b, dtype, h, w, &pr.mask, &pr.maps, coils).unwrap();
            let (xd, yd) = ([batch, h, w, 2], [batch, coils, h, w, 2]);
            let (nx, ny) = (batch * h * w * 2, batch * coils * h * w * 2);
            let (x, y) = (values(3, nx, 1.0), values(4, ny, 1.0));
            let (xt, yt) = (upload(b, &xd, dtype, &x), upload(b, &yd, dtype, &y));
            let mut ax_t = Tensor::zeros(b, yt.shape(), dtype).unwrap();
            let mut ahy_t = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            let mut normal_t = Tensor::zeros(b, xt.shape(), dtype).unwrap();
            let what = |m: &str| format!("{dtype:?} {coils}-coil {m} [{batch}, {h}, {w}]");

            let before = b.launch_count();
            op.forward(b, &xt, &mut ax_t).unwrap();
            assert_eq!(b.launch_count() - before, MultiCoil::<B>::LAUNCHES_FORWARD);
            let ax = ax_t.to_f64(b).unwrap();
            compare(
                &what("A x"),
                &ax,
                &flat(&pr.multi_forward(&pairs(&x))),
                rel,
                abs,
            );

            let before = b.launch_count();
            op.adjoint(b, &yt, &mut ahy_t).unwrap();
            assert_eq!(b.launch_count() - before, MultiCoil::<B>::LAUNCHES_FORWARD);
            let ahy = ahy_t.to_f64(b).unwrap();
            // Σ over coils of values ~1: tolerances scale with the coil count.
            let sum_abs = abs * coils as f64;
            compare(
                &what("Aᴴ y"),
                &ahy,
                &flat(&pr.multi_adjoint(&pairs(&y))),
                rel,
                sum_abs,
            );
            assert!(
                adjoint_gap(&ax, &y, &x, &ahy) <= rel,
                "{}",
                what("adjointness")
            );

            let before = b.launch_count();
            op.normal(b, &xt, &mut normal_t).unwrap();
            assert_eq!(b.launch_count() - before, MultiCoil::<B>::LAUNCHES_NORMAL);
            let want = flat(&pr.multi_adjoint(&pr.multi_forward(&pairs(&x))));
            compare(
                &what("AᴴA x"),
                &normal_t.to_f64(b).unwrap(),
                &want,
                rel,
                sum_abs,
            );
        }
    }
}

/// Masks and maps of the wrong length or with bad values, images and k-space
/// of the wrong shape: typed errors, no launch.
fn mri_bad_input_is_rejected<B: Ops>(b: &B) {
    let dtype = DType::F32;
    let (h, w, coils) = (8, 16, 2);
    let pr = problem(h, w, coils);
    let mut short = pr.mask.clone();
    short.pop();
    let mut half = pr.mask.clone();
    half[3] = 0.5;
    let mut nan_mask = pr.mask.clone();
    nan_mask[0] = f64::NAN;
    let launches = b.launch_count();
    for (m, want_len) in [(&short, true), (&half, false), (&nan_mask, false)] {
        let e = SingleCoil::new(b, dtype, h, w, m)
            .err()
            .expect("bad mask accepted");
        match e {
            Error::LengthMismatch { .. } => assert!(want_len),
            Error::InvalidParameter { .. } => assert!(!want_len),
            other => panic!("unexpected {other}"),
        }
    }
    let mut nan_maps = pr.maps.clone();
    nan_maps[5] = f64::NAN;
    let bad_maps: [(&[f64], usize); 3] = [(&pr.maps[1..], coils), (&nan_maps, coils), (&[], 0)];
    for (maps, c) in bad_maps {
        let e = MultiCoil::new(b, dtype, h, w, &pr.mask, maps, c)
            .err()
            .expect("bad maps accepted");
        assert!(
            matches!(
                e,
                Error::LengthMismatch { .. } | Error::InvalidParameter { .. }
            ),
            "{e}"
        );
    }
    let single = SingleCoil::new(b, dtype, h, w, &pr.mask).unwrap();
    let multi = MultiCoil::new(b, dtype, h, w, &pr.mask, &pr.maps, coils).unwrap();
    let z = |dims: &[usize]| Tensor::zeros(b, Shape::from_dims(dims).unwrap(), dtype).unwrap();
    let x = z(&[2, h, w, 2]);
    for bad in [
        &[2, w, h, 2][..],
        &[1, h, w, 2],
        &[2, h, w, 1],
        &[2, 1, h, w, 2],
    ] {
        let mut out = z(bad);
        assert!(
            single.forward(b, &x, &mut out).is_err(),
            "single A into {bad:?}"
        );
        assert!(single.project(b, &x, &mut out).is_err(), "P into {bad:?}");
        assert!(multi.normal(b, &x, &mut out).is_err(), "AᴴA into {bad:?}");
        assert!(
            multi.forward(b, &x, &mut out).is_err(),
            "multi A into {bad:?}"
        );
        assert!(
            multi.adjoint(b, &out, &mut z(&[2, h, w, 2])).is_err(),
            "Aᴴ of {bad:?}"
        );
    }
    assert_eq!(b.launch_count(), launches, "a rejected call launched");
    if b.fft_supports(DType::F64) {
        let x64 = Tensor::zeros(b, x.shape(), DType::F64).unwrap();
        let mut out = z(&[2, h, w, 2]);
        assert!(matches!(
            single.forward(b, &x64, &mut out).unwrap_err(),
            Error::DTypeMismatch { .. }
        ));
    }
}

mod single_coil {
    crate::for_each_backend!(super::single_coil_operator);
}
mod multi_coil {
    crate::for_each_backend!(super::multi_coil_operator);
}
mod mri_bad_input {
    crate::for_each_backend!(super::mri_bad_input_is_rejected);
}
