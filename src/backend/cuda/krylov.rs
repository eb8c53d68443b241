//! The Krylov family on CUDA: `kernels/krylov.cu`. A CG pass is one launch
//! on a (chunks, batch) grid; a DDS pass one grid-stride launch.

use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{unsupported, CudaBackend, CudaDevice};
use crate::backend::params::CG_PARAMS_SIZE;
use crate::error::Result;
use crate::ops::krylov::{CgCall, DdsBuffers, DdsCall, KrylovOps};
use crate::tensor::DType;

/// `kernels/krylov.cu`: compiled without FMA contraction, so f32 results are
/// bit-identical to the CPU reference.
pub const MODULE: Module = Module {
    id: 3,
    name: "krylov",
    source: include_str!("../../../kernels/krylov.cu"),
    contract_fma: false,
};

/// `(CgParams p, float* x, float* r, float* p, float* q, float* partials,
/// unsigned* iterations, const float* d, const float* t, const unsigned* table)`.
pub const CG_PASS: Kernel = Kernel {
    id: 6,
    module: &MODULE,
    name: "cg_pass_f32",
    params: &[
        Param::Value(CG_PARAMS_SIZE),
        Param::Out,
        Param::Out,
        Param::Out,
        Param::Out,
        Param::Out,
        Param::Out,
        Param::In,
        Param::In,
        Param::In,
    ],
};

/// `(CgParams p, const T* xt, const T* eps, float* x0)`.
const TWEEDIE_PARAMS: &[Param] = &[
    Param::Value(CG_PARAMS_SIZE),
    Param::In,
    Param::In,
    Param::Out,
];

/// `(CgParams p, const float* x0, const T* eps, const T* z, T* xt)`.
const RENOISE_PARAMS: &[Param] = &[
    Param::Value(CG_PARAMS_SIZE),
    Param::In,
    Param::In,
    Param::In,
    Param::Out,
];

pub const TWEEDIE_F32: Kernel = Kernel {
    id: 7,
    module: &MODULE,
    name: "dds_tweedie_f32",
    params: TWEEDIE_PARAMS,
};

pub const TWEEDIE_F16: Kernel = Kernel {
    id: 8,
    module: &MODULE,
    name: "dds_tweedie_f16",
    params: TWEEDIE_PARAMS,
};

pub const RENOISE_F32: Kernel = Kernel {
    id: 9,
    module: &MODULE,
    name: "dds_renoise_f32",
    params: RENOISE_PARAMS,
};

pub const RENOISE_F16: Kernel = Kernel {
    id: 10,
    module: &MODULE,
    name: "dds_renoise_f16",
    params: RENOISE_PARAMS,
};

impl<D: CudaDevice> KrylovOps for CudaBackend<D> {
    fn cg_supports(&self, dtype: DType) -> bool {
        dtype == DType::F32
    }

    fn dds_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F16 | DType::F32)
    }

    fn cg_pass_checked(&self, call: CgCall<'_, Self>) -> Result<()> {
        if call.dtype != DType::F32 {
            return Err(unsupported(call.dtype));
        }
        let params = call.params;
        // Without an inline P the table is unread; d stands in for it.
        let table = call.table.unwrap_or(call.d);
        let args = KernelArgs::new()
            .value(&params)
            .output(&mut call.x.mem)
            .output(&mut call.r.mem)
            .output(&mut call.p.mem)
            .output(&mut call.q.mem)
            .output(&mut call.partials.mem)
            .output(&mut call.iterations.mem)
            .input(&call.d.mem)
            .input(&call.t.mem)
            .input(&table.mem);
        // SAFETY: the checked call guarantees x, r, p, q, d, t hold batch·item
        // f32, partials 3·batch·chunks, iterations batch, and the table every
        // index P reads. Block (g, b) writes elements of chunk g of sample b
        // only, reads other elements of r or x (P) only in passes that do not
        // write them, and writes partial slots the pass does not read.
        unsafe { self.launch_grid(&CG_PASS, (params.chunks, params.batch, 1), args) }
    }

    fn dds_pass_checked(&self, call: DdsCall<'_, Self>) -> Result<()> {
        let params = call.params;
        let n = (params.item * params.batch) as usize;
        let f16 = match call.dtype {
            DType::F16 => true,
            DType::F32 => false,
            other => return Err(unsupported(other)),
        };
        // SAFETY (both arms): the checked call guarantees every buffer holds
        // item·batch elements (x̂0 f32, the others of the call's dtype);
        // element o is written only by the thread handling it, and the output
        // is no input.
        match call.buffers {
            DdsBuffers::Tweedie { xt, eps, x0 } => {
                let kernel = if f16 { &TWEEDIE_F16 } else { &TWEEDIE_F32 };
                let args = KernelArgs::new()
                    .value(&params)
                    .input(&xt.mem)
                    .input(&eps.mem)
                    .output(&mut x0.mem);
                unsafe { self.launch(kernel, n, args) }
            }
            DdsBuffers::Renoise { x0, eps, z, xt } => {
                let kernel = if f16 { &RENOISE_F16 } else { &RENOISE_F32 };
                let args = KernelArgs::new()
                    .value(&params)
                    .input(&x0.mem)
                    .input(&eps.mem)
                    .input(&z.mem)
                    .output(&mut xt.mem);
                unsafe { self.launch(kernel, n, args) }
            }
        }
    }
}
