//! The solver family on wgpu: `shaders/solver.wgsl` (+ `solver_packed.wgsl`),
//! one dispatch per step.

use super::kernels::{Access, Family, Kernel};
use super::{ShaderVariant, WgpuBackend};
use crate::backend::params::{SolverStepParams, SOLVER_STEP_PARAMS_SIZE};
use crate::error::{Error, Result};
use crate::ops::{SolverOps, SolverStepCall};
use crate::tensor::DType;

pub const FAMILY: Family = Family {
    name: "solver",
    source: include_str!("../../../shaders/solver.wgsl"),
    packed: Some(include_str!("../../../shaders/solver_packed.wgsl")),
};

/// `solver_step(params; x, model_out, state)`.
pub const STEP: Kernel = Kernel {
    id: 0,
    family: &FAMILY,
    entry: "solver_step",
    bindings: &[Access::ReadWrite, Access::Read, Access::ReadWrite],
    params_size: SOLVER_STEP_PARAMS_SIZE as u64,
};

impl SolverOps for WgpuBackend {
    fn solver_supports(&self, dtype: DType) -> bool {
        self.variant(dtype).is_some()
    }

    fn solver_step_checked(&self, call: SolverStepCall<'_, Self>) -> Result<()> {
        let variant = self.variant(call.dtype).ok_or(Error::UnsupportedDType {
            backend: "wgpu",
            dtype: call.dtype,
        })?;
        // n fits u32: it is at most x's length, and a bindable buffer is smaller.
        // stride fits u32 whenever a slot is used (slots·stride ≤ state's length).
        let params =
            SolverStepParams::new(call.step, call.launch, call.n as u32, call.stride as u32);
        // The packed variant runs one invocation per f16 pair.
        let items = if variant == ShaderVariant::F16Packed {
            call.n.div_ceil(2)
        } else {
            call.n
        };
        self.dispatch(
            &STEP,
            variant,
            bytemuck::bytes_of(&params),
            &[&call.x.buffer, &call.model_out.buffer, &call.state.buffer],
            items,
        )
    }
}
