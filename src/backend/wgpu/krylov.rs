//! The Krylov family on wgpu: `shaders/krylov.wgsl` (the CG passes, f32, one
//! dispatch on a (chunks, batch) grid each) and `shaders/dds.wgsl` (+
//! `dds_packed.wgsl`; the element-wise DDS passes in every storage variant).

use super::kernels::{Access, Family, Kernel};
use super::{ShaderVariant, WgpuBackend};
use crate::backend::params::CG_PARAMS_SIZE;
use crate::error::{Error, Result};
use crate::ops::krylov::{CgCall, DdsBuffers, DdsCall, KrylovOps};
use crate::tensor::DType;

pub const CG_FAMILY: Family = Family {
    name: "krylov",
    source: include_str!("../../../shaders/krylov.wgsl"),
    packed: None,
};

pub const DDS_FAMILY: Family = Family {
    name: "dds",
    source: include_str!("../../../shaders/dds.wgsl"),
    packed: Some(include_str!("../../../shaders/dds_packed.wgsl")),
};

/// `cg_pass(params; x, r, p, q, partials, iterations, d, t, table)`.
pub const CG_PASS: Kernel = Kernel {
    id: 8,
    family: &CG_FAMILY,
    entry: "cg_pass",
    bindings: &[
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Read,
        Access::Read,
        Access::Read,
    ],
    params_size: CG_PARAMS_SIZE as u64,
};

/// `dds_pass(params; x0, xt, eps, z)`: Tweedie reads xt, re-noise writes it.
pub const DDS_PASS: Kernel = Kernel {
    id: 9,
    family: &DDS_FAMILY,
    entry: "dds_pass",
    bindings: &[
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Read,
        Access::Read,
    ],
    params_size: CG_PARAMS_SIZE as u64,
};

impl KrylovOps for WgpuBackend {
    fn cg_supports(&self, dtype: DType) -> bool {
        dtype == DType::F32
    }

    fn dds_supports(&self, dtype: DType) -> bool {
        self.variant(dtype).is_some()
    }

    fn cg_pass_checked(&self, call: CgCall<'_, Self>) -> Result<()> {
        if call.dtype != DType::F32 {
            return Err(Error::UnsupportedDType {
                backend: "wgpu",
                dtype: call.dtype,
            });
        }
        let params = call.params;
        // Without an inline P the table is unread; d stands in for it.
        let table = call.table.unwrap_or(call.d);
        self.dispatch_grid(
            &CG_PASS,
            ShaderVariant::F32,
            bytemuck::bytes_of(&params),
            &[
                &call.x.buffer,
                &call.r.buffer,
                &call.p.buffer,
                &call.q.buffer,
                &call.partials.buffer,
                &call.iterations.buffer,
                &call.d.buffer,
                &call.t.buffer,
                &table.buffer,
            ],
            [params.chunks, params.batch, 1],
        )
    }

    fn dds_pass_checked(&self, call: DdsCall<'_, Self>) -> Result<()> {
        let variant = self.variant(call.dtype).ok_or(Error::UnsupportedDType {
            backend: "wgpu",
            dtype: call.dtype,
        })?;
        let n = (call.params.item * call.params.batch) as usize;
        // The packed variant runs one invocation per pair of elements.
        let items = if variant == ShaderVariant::F16Packed {
            n.div_ceil(2)
        } else {
            n
        };
        // Tweedie only reads xt and has no z (ε stands in, unread).
        let (x0, xt, eps, z) = match &call.buffers {
            DdsBuffers::Tweedie { xt, eps, x0 } => (&**x0, *xt, *eps, *eps),
            DdsBuffers::Renoise { x0, eps, z, xt } => (*x0, &**xt, *eps, *z),
        };
        self.dispatch(
            &DDS_PASS,
            variant,
            bytemuck::bytes_of(&call.params),
            &[&x0.buffer, &xt.buffer, &eps.buffer, &z.buffer],
            items,
        )
    }
}
