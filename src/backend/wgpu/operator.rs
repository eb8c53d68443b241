//! The operator family on wgpu: `shaders/operator.wgsl` (+ `operator_packed.wgsl`),
//! one dispatch per application.

use super::kernels::{Access, Family, Kernel};
use super::{ShaderVariant, WgpuBackend};
use crate::backend::params::OPERATOR_PARAMS_SIZE;
use crate::error::{Error, Result};
use crate::ops::{OperatorCall, OperatorOps};
use crate::tensor::DType;

pub const FAMILY: Family = Family {
    name: "operator",
    source: include_str!("../../../shaders/operator.wgsl"),
    packed: Some(include_str!("../../../shaders/operator_packed.wgsl")),
};

/// `operator_apply(params; input, output, table)`.
pub const APPLY: Kernel = Kernel {
    id: 1,
    family: &FAMILY,
    entry: "operator_apply",
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
    params_size: OPERATOR_PARAMS_SIZE as u64,
};

impl OperatorOps for WgpuBackend {
    fn operator_supports(&self, dtype: DType) -> bool {
        self.variant(dtype).is_some()
    }

    fn operator_apply_checked(&self, call: OperatorCall<'_, Self>) -> Result<()> {
        let variant = self.variant(call.dtype).ok_or(Error::UnsupportedDType {
            backend: "wgpu",
            dtype: call.dtype,
        })?;
        let n_out = call.params.n_out as usize;
        // The packed variant runs one invocation per pair of output elements.
        let items = if variant == ShaderVariant::F16Packed {
            n_out.div_ceil(2)
        } else {
            n_out
        };
        self.dispatch(
            &APPLY,
            variant,
            bytemuck::bytes_of(&call.params),
            &[&call.input.buffer, &call.output.buffer, &call.table.buffer],
            items,
        )
    }
}
