//! The solver family on CUDA: `kernels/solver.cu`, one launch per step.

use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{too_large, unsupported, CudaBackend, CudaDevice, MAX_LAUNCH_ELEMENTS};
use crate::backend::params::{SolverStepParams, SOLVER_STEP_PARAMS_SIZE};
use crate::error::Result;
use crate::ops::{SolverOps, SolverStepCall};
use crate::tensor::DType;

/// `kernels/solver.cu`: compiled without FMA contraction, so f32 results are
/// bit-identical to the CPU reference (the family's promise).
pub const MODULE: Module = Module {
    id: 0,
    name: "solver",
    source: include_str!("../../../kernels/solver.cu"),
    contract_fma: false,
};

/// `(SolverStepParams p, T* x, const T* model_out, T* state)`.
const STEP_PARAMS: &[Param] = &[
    Param::Value(SOLVER_STEP_PARAMS_SIZE),
    Param::Out,
    Param::In,
    Param::Out,
];

pub const STEP_F32: Kernel = Kernel {
    id: 0,
    module: &MODULE,
    name: "solver_step_f32",
    params: STEP_PARAMS,
};

pub const STEP_F16: Kernel = Kernel {
    id: 1,
    module: &MODULE,
    name: "solver_step_f16",
    params: STEP_PARAMS,
};

impl<D: CudaDevice> SolverOps for CudaBackend<D> {
    fn solver_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F16 | DType::F32)
    }

    fn solver_step_checked(&self, call: SolverStepCall<'_, Self>) -> Result<()> {
        let SolverStepCall {
            dtype,
            n,
            state_len,
            x,
            model_out,
            state,
            ..
        } = call;
        let (kernel, work) = match dtype {
            // One thread per f16 pair (plus the odd tail element, done by thread 0).
            DType::F16 => (&STEP_F16, n.div_ceil(2)),
            DType::F32 => (&STEP_F32, n),
            other => return Err(unsupported(other)),
        };
        for len in [n, state_len] {
            if len > MAX_LAUNCH_ELEMENTS {
                return Err(too_large(len, dtype, MAX_LAUNCH_ELEMENTS));
            }
        }
        // Both fit u32: checked against MAX_LAUNCH_ELEMENTS above.
        let params = SolverStepParams::new(call.step, call.launch, n as u32, call.stride as u32);
        let args = KernelArgs::new()
            .value(&params)
            .output(&mut x.mem)
            .input(&model_out.mem)
            .output(&mut state.mem);
        // SAFETY: the checked call guarantees x and model_out hold ≥ n elements of
        // `dtype` and state ≥ slots_used·stride elements with stride ≥ n and a
        // multiple of 64 (so f16 pairs are 4-byte aligned in every slot);
        // `SolverStepParams::new` names only slots < slots_used. The kernel touches
        // element i < n of x, of model_out and of each named slot, nothing else. x
        // and state are exclusively borrowed and model_out is a distinct buffer.
        unsafe { self.launch(kernel, work, args) }
    }
}
