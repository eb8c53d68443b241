//! The guidance family on wgpu: `shaders/guidance.wgsl` (+ `guidance_packed.wgsl`),
//! one dispatch per pass.

use super::kernels::{Access, Family, Kernel};
use super::{ShaderVariant, WgpuBackend};
use crate::backend::params::CPGDM_PARAMS_SIZE;
use crate::error::{Error, Result};
use crate::ops::guidance::{CpgdmCall, GuidanceOps};
use crate::tensor::DType;

pub const FAMILY: Family = Family {
    name: "guidance",
    source: include_str!("../../../shaders/guidance.wgsl"),
    packed: Some(include_str!("../../../shaders/guidance_packed.wgsl")),
};

/// `cpgdm_pass(params; u, v, x, m, eps, g, hy, table)`.
pub const PASS: Kernel = Kernel {
    id: 2,
    family: &FAMILY,
    entry: "cpgdm_pass",
    bindings: &[
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
    ],
    params_size: CPGDM_PARAMS_SIZE as u64,
};

impl GuidanceOps for WgpuBackend {
    fn guidance_supports(&self, dtype: DType) -> bool {
        self.variant(dtype).is_some()
    }

    fn cpgdm_pass_checked(&self, call: CpgdmCall<'_, Self>) -> Result<()> {
        let variant = self.variant(call.dtype).ok_or(Error::UnsupportedDType {
            backend: "wgpu",
            dtype: call.dtype,
        })?;
        let n = call.params.op.n_out as usize;
        // The packed variant runs one invocation per pair of elements.
        let items = if variant == ShaderVariant::F16Packed {
            n.div_ceil(2)
        } else {
            n
        };
        self.dispatch(
            &PASS,
            variant,
            bytemuck::bytes_of(&call.params),
            &[
                &call.u.buffer,
                &call.v.buffer,
                &call.x.buffer,
                &call.m.buffer,
                &call.eps.buffer,
                &call.g.buffer,
                &call.hy.buffer,
                &call.table.buffer,
            ],
            items,
        )
    }
}
