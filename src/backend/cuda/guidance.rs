//! The guidance family on CUDA: `kernels/guidance.cu`, one launch per pass.

use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{unsupported, CudaBackend, CudaDevice};
use crate::backend::params::CPGDM_PARAMS_SIZE;
use crate::error::Result;
use crate::ops::guidance::{CpgdmCall, GuidanceOps};
use crate::tensor::DType;

/// `kernels/guidance.cu`: compiled without FMA contraction, so f32 results
/// are bit-identical to the CPU reference.
pub const MODULE: Module = Module {
    id: 2,
    name: "guidance",
    source: include_str!("../../../kernels/guidance.cu"),
    contract_fma: false,
};

/// `(CpgdmParams p, float* u, float* v, T* x, T* m, const T* eps, const T* g,
/// const T* hy, const unsigned* table)`.
const PASS_PARAMS: &[Param] = &[
    Param::Value(CPGDM_PARAMS_SIZE),
    Param::Out,
    Param::Out,
    Param::Out,
    Param::Out,
    Param::In,
    Param::In,
    Param::In,
    Param::In,
];

pub const PASS_F32: Kernel = Kernel {
    id: 4,
    module: &MODULE,
    name: "cpgdm_pass_f32",
    params: PASS_PARAMS,
};

pub const PASS_F16: Kernel = Kernel {
    id: 5,
    module: &MODULE,
    name: "cpgdm_pass_f16",
    params: PASS_PARAMS,
};

impl<D: CudaDevice> GuidanceOps for CudaBackend<D> {
    fn guidance_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F16 | DType::F32)
    }

    fn cpgdm_pass_checked(&self, call: CpgdmCall<'_, Self>) -> Result<()> {
        let kernel = match call.dtype {
            DType::F16 => &PASS_F16,
            DType::F32 => &PASS_F32,
            other => return Err(unsupported(other)),
        };
        let params = call.params;
        let args = KernelArgs::new()
            .value(&params)
            .output(&mut call.u.mem)
            .output(&mut call.v.mem)
            .output(&mut call.x.mem)
            .output(&mut call.m.mem)
            .input(&call.eps.mem)
            .input(&call.g.mem)
            .input(&call.hy.mem)
            .input(&call.table.mem);
        // SAFETY: the checked call guarantees every buffer holds n_out elements
        // (u, v of f32, the others of the call's dtype) and the table every index
        // the Project program reads (each < the item length). Element o of each
        // output is written only by the thread handling o; the outputs are
        // distinct tensors, none of them an input.
        unsafe { self.launch(kernel, params.op.n_out as usize, args) }
    }
}
