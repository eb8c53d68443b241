//! The fft family on CUDA: `kernels/fft.cu`, f32. Line transforms launch one
//! block per line (grid-stride beyond the block cap); the complex products one
//! thread per output element.

use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{unsupported, CudaBackend, CudaDevice};
use crate::backend::params::{FFT_LINE_PARAMS_SIZE, FFT_POINTWISE_PARAMS_SIZE};
use crate::error::Result;
use crate::ops::fft::{device_radices, FftLinesCall, FftOps, FftPointwiseCall};
use crate::tensor::DType;

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

impl<D: CudaDevice> FftOps for CudaBackend<D> {
    fn fft_supports(&self, dtype: DType) -> bool {
        dtype == DType::F32
    }

    fn fft_supports_len(&self, n: usize) -> bool {
        device_radices(n).is_some()
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
