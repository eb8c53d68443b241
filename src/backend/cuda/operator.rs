//! The operator family on CUDA: `kernels/operator.cu`, one launch per application.

use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{unsupported, CudaBackend, CudaDevice};
use crate::backend::params::OPERATOR_PARAMS_SIZE;
use crate::error::Result;
use crate::ops::{OperatorCall, OperatorOps};
use crate::tensor::DType;

/// `kernels/operator.cu`: compiled without FMA contraction, so f32 results are
/// bit-identical to the CPU reference.
pub const MODULE: Module = Module {
    id: 1,
    name: "operator",
    source: include_str!("../../../kernels/operator.cu"),
    contract_fma: false,
};

/// `(OperatorParams p, const T* in, T* out, const unsigned* table)`.
const APPLY_PARAMS: &[Param] = &[
    Param::Value(OPERATOR_PARAMS_SIZE),
    Param::In,
    Param::Out,
    Param::In,
];

pub const APPLY_F32: Kernel = Kernel {
    id: 2,
    module: &MODULE,
    name: "operator_apply_f32",
    params: APPLY_PARAMS,
};

pub const APPLY_F16: Kernel = Kernel {
    id: 3,
    module: &MODULE,
    name: "operator_apply_f16",
    params: APPLY_PARAMS,
};

impl<D: CudaDevice> OperatorOps for CudaBackend<D> {
    fn operator_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F16 | DType::F32)
    }

    fn operator_apply_checked(&self, call: OperatorCall<'_, Self>) -> Result<()> {
        let kernel = match call.dtype {
            DType::F16 => &APPLY_F16,
            DType::F32 => &APPLY_F32,
            other => return Err(unsupported(other)),
        };
        let params = call.params;
        let args = KernelArgs::new()
            .value(&params)
            .input(&call.input.mem)
            .output(&mut call.output.mem)
            .input(&call.table.mem);
        // SAFETY: the checked call guarantees the output holds n_out elements and
        // the input batch·in_item of the call's dtype, and the table (built with the
        // operator) every index the program reads, each index < in_item. The kernel
        // writes output elements < n_out only; input and output are distinct tensors.
        unsafe { self.launch(kernel, params.n_out as usize, args) }
    }
}
