//! What the CUDA backend needs from a device, so the same host launcher code
//! drives a real GPU (through cudarc) and the CPU emulation harness used in tests.

use super::launch::{Kernel, KernelArgs};
use crate::error::Result;
use crate::ops::nn::Conv2d;
use crate::tensor::DType;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// A row-major, strided-batched GEMM that a device may hand to a vendor
/// library: `c[z] = α·op(a[z])·op(b[z]) + β·c[z]` for `z < batch`, `op(a[z])`
/// m×k (stored k×m when `trans_a`), `op(b[z])` k×n (stored n×k when
/// `trans_b`), `c[z]` m×n; a, b and c in f32, or in f16 when `f16` — the
/// products and sums in f32 either way, c rounded once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VendorGemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub f16: bool,
}

/// An f32 or f16 convolution a device may hand to a vendor library (cuDNN on
/// a GPU): the nn family's [`Conv2d`] — NCHW input and output, OIHW weights,
/// cross-correlation — with the same zero padding on every side
/// (`pad_after == pad`, as such a library takes it). Only
/// [`VendorConv::new`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VendorConv {
    conv: Conv2d,
    f16: bool,
}

impl VendorConv {
    /// `g` with `pad_after` set to `pad`, or `None` when that would change
    /// its output size (or leave no output). The kernels read zeros for
    /// every tap outside the input and take the output size from `pad +
    /// pad_after`, so where the size agrees the two compute the same
    /// values: always with `pad_after == pad`, never with diffusers' `(0,
    /// 1)` padding before a stride-2 conv (one output row and column more).
    ///
    /// Storage is `dtype`'s: f32, or f16 (`None` for any other) — with f32
    /// products and sums either way, each output rounded once.
    pub fn new(g: &Conv2d, dtype: DType) -> Option<VendorConv> {
        let f16 = match dtype {
            DType::F32 => false,
            DType::F16 => true,
            _ => return None,
        };
        let symmetric = Conv2d {
            pad_after: g.pad,
            ..*g
        };
        // `ops::nn` checked `n + pad + pad_after ≥ k`; with `pad` on both
        // sides it must hold again, or there is no output (and `out_size`
        // would underflow).
        let fits = |n: usize| n + 2 * g.pad >= g.k;
        (fits(g.h) && fits(g.w) && symmetric.out_size() == g.out_size()).then_some(VendorConv {
            conv: symmetric,
            f16,
        })
    }

    /// The convolution, with `pad_after == pad`.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// Whether x, w, the bias and the output are f16 (else f32).
    pub fn f16(&self) -> bool {
        self.f16
    }
}

/// The batch of one plain 2-D transform: `planes` contiguous `height × width`
/// planes of interleaved f32 complex numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fft2Batch {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
}

/// A device that stores bytes and launches the kernels of `kernels/*.cu`.
///
/// Every operation runs in order on the device's one stream.
pub trait CudaDevice: Send + Sync {
    /// Device memory of one buffer.
    type Mem: Send + Sync + 'static;

    /// Human-readable device name.
    fn name(&self) -> String;

    /// Allocate `bytes` zeroed bytes.
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Mem>;

    /// A buffer over `bytes` bytes of device memory the caller owns, at
    /// address `ptr`; dropping it leaves the memory alone.
    ///
    /// # Safety
    /// `ptr` addresses at least `bytes` bytes of memory this device's kernels
    /// can access (its context), valid and not freed while the returned value
    /// lives; `ptr` is non-null (the backend checks it first).
    ///
    /// A device whose memory type can only own (a test double that stores
    /// bytes in a `Vec`) keeps this default, which refuses.
    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Self::Mem> {
        Err(crate::error::Error::Device {
            backend: "cuda",
            message: format!(
                "{} cannot wrap external memory ({bytes} bytes at {ptr:#x})",
                self.name()
            ),
        })
    }

    /// Copy `src` into `mem` at byte `offset`.
    fn write(&self, mem: &mut Self::Mem, offset: usize, src: &[u8]) -> Result<()>;

    /// Copy bytes of `mem` from byte `offset` into `dst` (waits for pending work).
    fn read(&self, mem: &Self::Mem, offset: usize, dst: &mut [u8]) -> Result<()>;

    /// Set every byte of `mem` to zero.
    fn zero(&self, mem: &mut Self::Mem) -> Result<()>;

    /// Copy the first `bytes` bytes of `src` into `dst`, on the device.
    fn copy(&self, src: &Self::Mem, dst: &mut Self::Mem, bytes: usize) -> Result<()>;

    /// The address kernels see for `mem`.
    fn device_ptr(&self, mem: &Self::Mem) -> u64;

    /// Launch `kernel` with arguments already checked against its signature.
    ///
    /// # Safety
    /// Every buffer in `args` must be at least as long as the kernel reads or
    /// writes for the launch's params.
    unsafe fn launch(
        &self,
        kernel: &'static Kernel,
        cfg: LaunchConfig,
        args: KernelArgs<'_, Self::Mem>,
    ) -> Result<()>;

    /// Run `gemm` through a vendor GEMM library when this device has one
    /// (cuBLAS on a GPU, if it loads): `Ok(true)` when it ran, in order on the
    /// device's stream; `Ok(false)` when the caller must run its own kernel —
    /// this default, for devices without one (the emulation harness).
    ///
    /// # Safety
    /// `a` holds batch·m·k elements (f16 when `gemm.f16`, else f32), `b`
    /// batch·k·n and `c` batch·m·n.
    unsafe fn vendor_gemm(
        &self,
        _gemm: &VendorGemm,
        _a: &Self::Mem,
        _b: &Self::Mem,
        _c: &mut Self::Mem,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Run `conv` through a vendor convolution library when this device has
    /// one (cuDNN on a GPU, if it loads) and it serves the shape: `Ok(true)`
    /// when it ran — `out ← conv(x, w)`, plus `bias[co]` on every output of
    /// channel `co` when given — in order on the device's stream;
    /// `Ok(false)` when the caller must run its own kernel — this default,
    /// for devices without one (the emulation harness).
    ///
    /// # Safety
    /// `x` holds batch·cin·h·w elements (f16 when `conv.f16()`, else f32),
    /// `w` cout·cin·k·k, `bias` (when given) cout and `out` batch·cout·ho·wo
    /// (`conv`'s output size).
    unsafe fn vendor_conv(
        &self,
        _conv: &VendorConv,
        _x: &Self::Mem,
        _w: &Self::Mem,
        _bias: Option<&Self::Mem>,
        _out: &mut Self::Mem,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Whether [`CudaDevice::vendor_conv`] can run here (a vendor convolution
    /// library loads; asking may load it). Devices without one keep this
    /// default.
    fn has_library_conv(&self) -> bool {
        false
    }

    /// Whether [`CudaDevice::library_fft2`] runs here (a vendor FFT library
    /// was loaded). Devices without one keep this default.
    fn has_library_fft(&self) -> bool {
        false
    }

    /// `output ← DFT(input)` of every plane of `batch`, in order on the
    /// device's stream: the plain transform of a library (cuFFT's batched C2C)
    /// — uncentred, unscaled, `e^{−2πi…}` or, for `inverse`, `e^{+2πi…}`.
    ///
    /// # Safety
    /// `input` and `output` are distinct and hold `planes·height·width`
    /// complex f32 (8 bytes each); `input` is 8-byte aligned.
    unsafe fn library_fft2(
        &self,
        _input: &Self::Mem,
        _output: &mut Self::Mem,
        batch: Fft2Batch,
        _inverse: bool,
    ) -> Result<()> {
        Err(crate::error::Error::Device {
            backend: "cuda",
            message: format!("{} has no FFT library (asked for {batch:?})", self.name()),
        })
    }

    /// Wait for all launched work.
    fn synchronize(&self) -> Result<()>;
}
