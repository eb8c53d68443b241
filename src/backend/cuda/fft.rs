//! The fft family on CUDA: `kernels/fft.cu`, f32. Line transforms launch one
//! block per line (grid-stride beyond the block cap); the complex products one
//! thread per output element.
//!
//! With a device FFT library (cuFFT: [`CudaDevice::has_library_fft`]) and
//! [`CudaBackend::set_library_fft`] left on, a 2-D transform is the library's
//! plain batched C2C (input → the temporary) and `fft_centre_f32` (→ output),
//! which applies the shifts and the scaling as the line kernels define them
//! (`docs/math.md` §10.2). The interleaved `(re, im)` f32 layout is cuFFT's
//! `cufftComplex`, so nothing is copied or repacked.

use std::sync::atomic::Ordering;

use super::device::Fft2Batch;
use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{unsupported, CudaBackend, CudaBuffer, CudaDevice};
use crate::backend::params::{
    FftCentreParams, FFT_CENTRE_PARAMS_SIZE, FFT_LINE_PARAMS_SIZE, FFT_POINTWISE_PARAMS_SIZE,
};
use crate::error::Result;
use crate::ops::fft::{
    device_radices, Direction, Fft2Call, FftLinesCall, FftOps, FftPath, FftPointwiseCall,
};
use crate::tensor::DType;

/// cuFFT reads `cufftComplex` (8 bytes) at a time; an external f32 buffer
/// needs only 4-byte alignment, so a 4-mod-8 input takes the line kernels.
const LIBRARY_INPUT_ALIGN: u64 = 8;

/// `kernels/fft.cu`: compiled without FMA contraction, so the complex products
/// are bit-identical to the CPU reference (the transforms are not: the CPU
/// runs rustfft, and their parity is a tolerance).
pub const MODULE: Module = Module {
    id: 4,
    name: "fft",
    source: include_str!("../../../kernels/fft.cu"),
    contract_fma: false,
};

/// `(FftLineParams p, const float* in, float* out, const float* twiddles)`.
pub const LINES_F32: Kernel = Kernel {
    id: 11,
    module: &MODULE,
    name: "fft_lines_f32",
    params: &[
        Param::Value(FFT_LINE_PARAMS_SIZE),
        Param::In,
        Param::Out,
        Param::In,
    ],
};

/// `(FftPointwiseParams p, const float* in, float* out, const float* aux)`.
pub const POINTWISE_F32: Kernel = Kernel {
    id: 12,
    module: &MODULE,
    name: "fft_pointwise_f32",
    params: &[
        Param::Value(FFT_POINTWISE_PARAMS_SIZE),
        Param::In,
        Param::Out,
        Param::In,
    ],
};

/// `(FftCentreParams p, const float* in, float* out, const float* twiddles)`.
pub const CENTRE_F32: Kernel = Kernel {
    id: 24,
    module: &MODULE,
    name: "fft_centre_f32",
    params: &[
        Param::Value(FFT_CENTRE_PARAMS_SIZE),
        Param::In,
        Param::Out,
        Param::In,
    ],
};

impl<D: CudaDevice> CudaBackend<D> {
    /// Whether the library can take this call's input (f32 and aligned for
    /// `cufftComplex`; the temporary it writes is the crate's own allocation).
    fn library_takes(&self, call: &Fft2Call<'_, Self>) -> bool {
        call.dtype == DType::F32
            && self
                .device
                .device_ptr(&call.input.mem)
                .is_multiple_of(LIBRARY_INPUT_ALIGN)
    }

    /// The library's plain transform (input → mid), then the centring and
    /// scaling (mid → output).
    fn fft2_library(&self, call: Fft2Call<'_, Self>) -> Result<()> {
        let batch = Fft2Batch {
            planes: call.planes,
            height: call.height,
            width: call.width,
        };
        let inverse = call.direction == Direction::Inverse;
        let mid: &mut CudaBuffer<D::Mem> = call.mid;
        // SAFETY: Fft2 checked that input and mid (a temporary of the input's
        // shape) hold planes·H·W interleaved f32 complex numbers; they are
        // distinct buffers and the input is 8-byte aligned (library_takes).
        unsafe {
            self.device
                .library_fft2(&call.input.mem, &mut mid.mem, batch, inverse)?
        };
        // The library call is one entry in the launch count, however many
        // kernels it runs inside.
        self.launches.fetch_add(1, Ordering::Relaxed);
        let n_out = call.planes * call.height * call.width;
        let params = FftCentreParams {
            n_out: n_out as u32,
            height: call.height as u32,
            width: call.width as u32,
            inverse: u32::from(inverse),
            width_twiddles: 0,
            height_twiddles: call.width as u32,
            _pad: 0,
            scale: (1.0 / ((call.height * call.width) as f64).sqrt()) as f32,
        };
        let args = KernelArgs::new()
            .value(&params)
            .input(&mid.mem)
            .output(&mut call.output.mem)
            .input(&call.twiddles.mem);
        // SAFETY: mid and output hold n_out complex elements (the checked
        // shapes; n_out ≤ MAX_ELEMENTS fits u32), the twiddle table W + H
        // entries (W's first); mid and output are distinct.
        unsafe { self.launch(&CENTRE_F32, n_out, args) }
    }
}

impl<D: CudaDevice> FftOps for CudaBackend<D> {
    fn fft_supports(&self, dtype: DType) -> bool {
        dtype == DType::F32
    }

    fn fft_supports_len(&self, n: usize) -> bool {
        device_radices(n).is_some()
    }

    fn fft_path(&self) -> FftPath {
        if self.library_fft && self.device.has_library_fft() {
            FftPath::Cufft
        } else {
            FftPath::Kernels
        }
    }

    fn fft2_checked(&self, call: Fft2Call<'_, Self>) -> Result<()> {
        if self.fft_path() == FftPath::Cufft && self.library_takes(&call) {
            self.fft2_library(call)
        } else {
            call.lines(self)
        }
    }

    fn fft_lines_checked(&self, call: FftLinesCall<'_, Self>) -> Result<()> {
        if call.dtype != DType::F32 {
            return Err(unsupported(call.dtype));
        }
        let params = call.params;
        // One block per line: as many blocks as lines, up to the cap.
        let blocks = (params.lines as usize).min(self.max_blocks() as usize);
        let args = KernelArgs::new()
            .value(&params)
            .input(&call.input.mem)
            .output(&mut call.output.mem)
            .input(&call.twiddles.mem);
        // SAFETY: the checked call guarantees input and output hold every
        // element the line layout addresses (lines/inner groups of group_step
        // complex elements), n ≤ 1024 = the kernel's shared buffer, and the
        // twiddle table n entries at twiddle_offset. Input and output are
        // distinct tensors; each line is written by one block only.
        unsafe { self.launch(&LINES_F32, blocks * self.block_size() as usize, args) }
    }

    fn fft_pointwise_checked(&self, call: FftPointwiseCall<'_, Self>) -> Result<()> {
        if call.dtype != DType::F32 {
            return Err(unsupported(call.dtype));
        }
        let params = call.params;
        let args = KernelArgs::new()
            .value(&params)
            .input(&call.input.mem)
            .output(&mut call.output.mem)
            .input(&call.aux.mem);
        // SAFETY: the checked call guarantees the output holds n_out complex
        // elements and the input and aux every element the program reads
        // (n_out·coils or n_out/coils complex inputs, coils·plane maps or
        // plane mask entries); input and output are distinct tensors.
        unsafe { self.launch(&POINTWISE_F32, params.n_out as usize, args) }
    }
}
