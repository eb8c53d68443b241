//! The nn family on wgpu: `shaders/nn.wgsl`, f32 storage, or f16 where the
//! adapter has SHADER_F16 (no packed variant: without it the family runs f32
//! only, and an f16 call is `UnsupportedDType`). The GEMM-shaped
//! kernels launch a 2-D grid of 16×16 output tiles (batch in z), the
//! reductions one workgroup per normalised group or softmax row, the
//! element-wise ops one invocation per output element.

use super::kernels::{Access, Family, Kernel};
use super::{ShaderVariant, WgpuBackend};
use crate::error::{Error, Result};
use crate::ops::nn::{ConvPath, NnCall, NnOp, NnOps};
use crate::tensor::DType;

pub const FAMILY: Family = Family {
    name: "nn",
    source: include_str!("../../../shaders/nn.wgsl"),
    packed: None,
};

/// Three read-only inputs, one output and the f32 side input (time_proj's
/// timesteps), for every entry (see nn.wgsl).
const BINDINGS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::Read,
];

/// Side of the output tile of the GEMM-shaped kernels (`TILE` in nn.wgsl).
const TILE: usize = 16;

/// The 16 parameter words every nn entry reads (`Params` in nn.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct NnParams {
    w: [u32; 16],
}
const _: () = assert!(std::mem::size_of::<NnParams>() == 64);

impl NnParams {
    /// Words from values that the checked entry points proved fit in u32.
    fn new(words: &[u32]) -> Self {
        let mut p = NnParams::default();
        p.w[..words.len()].copy_from_slice(words);
        p
    }
}

const fn kernel(id: usize, entry: &'static str) -> Kernel {
    Kernel {
        id,
        family: &FAMILY,
        entry,
        bindings: BINDINGS,
        params_size: 64,
    }
}

pub const CONV2D: Kernel = kernel(3, "nn_conv2d");
pub const MATMUL: Kernel = kernel(4, "nn_matmul");
pub const GROUP_NORM: Kernel = kernel(5, "nn_group_norm");
pub const SOFTMAX: Kernel = kernel(6, "nn_softmax");
pub const ELEMENTWISE: Kernel = kernel(7, "nn_elementwise");

/// Op codes of `nn_elementwise`.
const EW_ADD: u32 = 0;
const EW_SILU: u32 = 1;
const EW_UPSAMPLE: u32 = 2;
const EW_CONCAT: u32 = 3;
const EW_TIME_PROJ: u32 = 4;
const EW_ADD_BIAS: u32 = 5;
const EW_AFFINE: u32 = 6;

/// Sizes were checked to fit u32 by `ops::nn` (each is at most a buffer length).
fn u(v: usize) -> u32 {
    v as u32
}

impl NnOps for WgpuBackend {
    fn nn_supports(&self, dtype: DType) -> bool {
        dtype == DType::F32 || (dtype == DType::F16 && self.native_f16)
    }

    fn conv_path(&self) -> ConvPath {
        ConvPath::Kernels
    }

    fn nn_checked(&self, call: NnCall<'_, Self>) -> Result<()> {
        let [i0, i1, i2] = call.inputs;
        let first = i0.ok_or_else(|| super::device_error("nn call without its first input"))?;
        // Absent inputs bind the first one: the layout wants every binding.
        let bufs = [
            &first.buffer,
            &i1.unwrap_or(first).buffer,
            &i2.unwrap_or(first).buffer,
            &call.out.buffer,
            &first.buffer,
        ];
        let variant = match call.dtype {
            DType::F16 => ShaderVariant::F16Native,
            _ => ShaderVariant::F32,
        };
        let grid = |x: usize, y: usize, z: usize| {
            let max = self.max_workgroups as usize;
            [u(x.clamp(1, max)), u(y.clamp(1, max)), u(z.clamp(1, max))]
        };
        match call.op {
            NnOp::Conv2d(g) => {
                let (ho, wo) = g.out_size();
                let p = NnParams::new(&[
                    u(g.batch),
                    u(g.cin),
                    u(g.h),
                    u(g.w),
                    u(g.cout),
                    u(ho),
                    u(wo),
                    u(g.k),
                    u(g.stride),
                    u(g.pad),
                    u32::from(i2.is_some()),
                ]);
                let tiles_n = (g.batch * ho * wo).div_ceil(TILE);
                let groups = grid(tiles_n, g.cout.div_ceil(TILE), 1);
                self.dispatch_grid(&CONV2D, variant, bytemuck::bytes_of(&p), &bufs, groups)
            }
            NnOp::Matmul(g) => {
                let p = NnParams::new(&[
                    u(g.batch),
                    u(g.m),
                    u(g.n),
                    u(g.k),
                    u32::from(g.trans_a),
                    u32::from(g.trans_b),
                    g.alpha.to_bits(),
                    u32::from(i2.is_some()),
                    u32::from(g.accumulate),
                ]);
                let groups = grid(g.n.div_ceil(TILE), g.m.div_ceil(TILE), g.batch);
                self.dispatch_grid(&MATMUL, variant, bytemuck::bytes_of(&p), &bufs, groups)
            }
            NnOp::GroupNorm(g) => {
                let p = NnParams::new(&[
                    u(g.batch),
                    u(g.channels),
                    u(g.hw),
                    u(g.groups),
                    g.eps.to_bits(),
                    u32::from(g.silu),
                ]);
                let groups = grid(g.batch * g.groups, 1, 1);
                self.dispatch_grid(&GROUP_NORM, variant, bytemuck::bytes_of(&p), &bufs, groups)
            }
            NnOp::Softmax(g) => {
                let p = NnParams::new(&[u(g.rows), u(g.cols), g.scale.to_bits()]);
                let groups = grid(g.rows, 1, 1);
                self.dispatch_grid(&SOFTMAX, variant, bytemuck::bytes_of(&p), &bufs, groups)
            }
            NnOp::Add { n } => self.elementwise(variant, &[EW_ADD, u(n)], &bufs, n),
            NnOp::Silu { n } => self.elementwise(variant, &[EW_SILU, u(n)], &bufs, n),
            NnOp::Affine { n, scale, shift } => {
                let words = [EW_AFFINE, u(n), scale.to_bits(), shift.to_bits()];
                self.elementwise(variant, &words, &bufs, n)
            }
            NnOp::Upsample2x { planes, h, w } => {
                let n = planes * 4 * h * w;
                self.elementwise(variant, &[EW_UPSAMPLE, u(n), u(h), u(w)], &bufs, n)
            }
            NnOp::Concat(g) => {
                let n = g.batch * g.c * g.hw;
                let words = [
                    EW_CONCAT,
                    u(n),
                    u(g.c),
                    u(g.hw),
                    u(g.c_total),
                    u(g.c_offset),
                ];
                self.elementwise(variant, &words, &bufs, n)
            }
            NnOp::TimeProj(g) => {
                let n = g.batch * g.dim;
                let words = [
                    EW_TIME_PROJ,
                    u(n),
                    u(g.dim),
                    g.shift().to_bits(),
                    u32::from(g.flip_sin_to_cos),
                ];
                self.elementwise(variant, &words, &bufs, n)
            }
            NnOp::AddBias { planes, hw } => {
                let n = planes * hw;
                self.elementwise(variant, &[EW_ADD_BIAS, u(n), u(hw)], &bufs, n)
            }
        }
    }
}

impl WgpuBackend {
    fn elementwise(
        &self,
        variant: ShaderVariant,
        words: &[u32],
        bufs: &[&wgpu::Buffer],
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Err(Error::InvalidParameter {
                name: "elements",
                value: 0.0,
                reason: "must be positive",
            });
        }
        let p = NnParams::new(words);
        self.dispatch(&ELEMENTWISE, variant, bytemuck::bytes_of(&p), bufs, n)
    }
}
