//! The fft family on wgpu: `shaders/fft.wgsl`, f32 only (no f16 variants:
//! k-space needs f32's range). Line transforms dispatch one workgroup per line
//! (grid-stride beyond the workgroup cap); the complex products one invocation
//! per output element.

use super::kernels::{Access, Family, Kernel};
use super::{ShaderVariant, WgpuBackend};
use crate::backend::params::{FFT_LINE_PARAMS_SIZE, FFT_POINTWISE_PARAMS_SIZE};
use crate::error::{Error, Result};
use crate::ops::fft::{device_radices, FftLinesCall, FftOps, FftPath, FftPointwiseCall};
use crate::tensor::DType;

pub const FAMILY: Family = Family {
    name: "fft",
    source: include_str!("../../../shaders/fft.wgsl"),
    packed: None,
};

/// `(params; input, output, twiddles or mask/maps)` for both entries.
const BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite, Access::Read];

pub const LINES: Kernel = Kernel {
    id: 10,
    family: &FAMILY,
    entry: "fft_lines",
    bindings: BINDINGS,
    params_size: FFT_LINE_PARAMS_SIZE as u64,
};

pub const POINTWISE: Kernel = Kernel {
    id: 11,
    family: &FAMILY,
    entry: "fft_pointwise",
    bindings: BINDINGS,
    params_size: FFT_POINTWISE_PARAMS_SIZE as u64,
};

fn f32_only(dtype: DType) -> Result<()> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            backend: "wgpu",
            dtype,
        })
    }
}

impl FftOps for WgpuBackend {
    fn fft_supports(&self, dtype: DType) -> bool {
        dtype == DType::F32
    }

    fn fft_supports_len(&self, n: usize) -> bool {
        device_radices(n).is_some()
    }

    fn fft_path(&self) -> FftPath {
        FftPath::Kernels
    }

    fn fft_lines_checked(&self, call: FftLinesCall<'_, Self>) -> Result<()> {
        f32_only(call.dtype)?;
        // One workgroup per line, up to the cap (the shader strides over the rest).
        let groups = call.params.lines.clamp(1, self.max_workgroups);
        self.dispatch_grid(
            &LINES,
            ShaderVariant::F32,
            bytemuck::bytes_of(&call.params),
            &[
                &call.input.buffer,
                &call.output.buffer,
                &call.twiddles.buffer,
            ],
            [groups, 1, 1],
        )
    }

    fn fft_pointwise_checked(&self, call: FftPointwiseCall<'_, Self>) -> Result<()> {
        f32_only(call.dtype)?;
        self.dispatch(
            &POINTWISE,
            ShaderVariant::F32,
            bytemuck::bytes_of(&call.params),
            &[&call.input.buffer, &call.output.buffer, &call.aux.buffer],
            call.params.n_out as usize,
        )
    }
}
