//! The nn family on CUDA: `kernels/nn.cu`, f32 or f16 storage with f32 math.
//! Every op has an entry point per storage type (`nn_<op>_f32`,
//! `nn_<op>_f16`, one template body in nn.cu), picked by the call's dtype:
//! f16 values are widened on load and each output is rounded to f16 (nearest
//! even) once, as the CPU definition does; time_proj's timesteps are f32 in
//! both. conv2d and matmul launch blocks of [`NN_GEMM_THREADS`] threads on a
//! 3-D grid of 64×64 output tiles (batch in z) — a matmul without bias goes
//! to cuBLAS instead when the device has it (see `blas.rs`), and a conv2d
//! whose padding cuDNN can express to cuDNN (see `dnn.rs`), in f32 or f16
//! storage with f32 math (tensor cores for f16); every call a library
//! declines runs the crate's kernels; GroupNorm one
//! block per (item, group), softmax one per row; the element-wise ops one
//! thread per output element.

use bytemuck::{Pod, Zeroable};

use super::launch::{Kernel, KernelArgs, Module, Param};
use super::{
    too_large, unsupported, CudaBackend, CudaBuffer, CudaDevice, VendorConv, VendorGemm,
    MAX_LAUNCH_ELEMENTS,
};
use crate::error::{Error, Result};
use crate::ops::nn::{
    Concat, Conv2d, ConvPath, GroupNorm, Matmul, NnCall, NnOp, NnOps, Softmax, TimeProj,
};
use crate::tensor::DType;

/// `kernels/nn.cu`: compiled with FMA contraction (a GEMM family: its parity
/// with the CPU is a stated tolerance, not bit-exactness).
pub const MODULE: Module = Module {
    id: 5,
    name: "nn",
    source: include_str!("../../../kernels/nn.cu"),
    contract_fma: true,
};

/// Threads of every conv2d / matmul block (`NN_THREADS` in nn.cu): the
/// kernels map them onto the 4×4 micro-tiles of a 64×64 output tile, so they
/// ignore the backend's block size.
pub const NN_GEMM_THREADS: u32 = 256;

/// Side of a GEMM block's output tile (`NN_TILE` in nn.cu).
const TILE: usize = 64;

/// `NnConvParams` in nn.cu.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct ConvParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    k: u32,
    stride: u32,
    pad: u32,
    has_bias: u32,
    unused: u32,
}
const _: () = assert!(std::mem::size_of::<ConvParams>() == 48);

/// `NnMatmulParams` in nn.cu.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct MatmulParams {
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    has_bias: u32,
    accumulate: u32,
    alpha: f32,
    unused: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 48);

/// `NnGroupNormParams` in nn.cu.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct GroupNormParams {
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    silu: u32,
    eps: f32,
    unused: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<GroupNormParams>() == 32);

/// `NnSoftmaxParams` in nn.cu.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    scale: f32,
    unused: u32,
}
const _: () = assert!(std::mem::size_of::<SoftmaxParams>() == 16);

/// `NnElementParams` in nn.cu: `n` for every element-wise entry, the rest
/// for the entry that reads it (unused fields stay 0).
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct ElementParams {
    n: u32,
    h: u32,
    w: u32,
    hw: u32,
    c: u32,
    c_total: u32,
    c_offset: u32,
    dim: u32,
    flip_sin_to_cos: u32,
    shift: f32,
    scale: f32,
    unused: u32,
}
const _: () = assert!(std::mem::size_of::<ElementParams>() == 48);

const fn kernel(id: usize, name: &'static str, params: &'static [Param]) -> Kernel {
    Kernel {
        id,
        module: &MODULE,
        name,
        params,
    }
}

const fn size<T>() -> Param {
    Param::Value(std::mem::size_of::<T>())
}

/// `(ConvParams p, const T* x, const T* w, const T* bias, T* out)`.
const CONV2D_PARAMS: &[Param] = &[
    size::<ConvParams>(),
    Param::In,
    Param::In,
    Param::In,
    Param::Out,
];
/// `(MatmulParams p, const T* a, const T* b, const T* bias, T* out)`.
const MATMUL_PARAMS: &[Param] = &[
    size::<MatmulParams>(),
    Param::In,
    Param::In,
    Param::In,
    Param::Out,
];
/// `(GroupNormParams p, const T* x, const T* gamma, const T* beta, T* out)`.
const GROUP_NORM_PARAMS: &[Param] = &[
    size::<GroupNormParams>(),
    Param::In,
    Param::In,
    Param::In,
    Param::Out,
];
/// `(SoftmaxParams p, const T* x, T* out)`.
const SOFTMAX_PARAMS: &[Param] = &[size::<SoftmaxParams>(), Param::In, Param::Out];
/// `(ElementParams p, const T* a, T* out)`; time_proj's input is `const float*`
/// in either storage.
const UNARY_PARAMS: &[Param] = &[size::<ElementParams>(), Param::In, Param::Out];
/// `(ElementParams p, const T* a, const T* b, T* out)`.
const BINARY_PARAMS: &[Param] = &[size::<ElementParams>(), Param::In, Param::In, Param::Out];

// f32 storage (T = float).
pub const CONV2D_F32: Kernel = kernel(13, "nn_conv2d_f32", CONV2D_PARAMS);
pub const MATMUL_F32: Kernel = kernel(14, "nn_matmul_f32", MATMUL_PARAMS);
pub const GROUP_NORM_F32: Kernel = kernel(15, "nn_group_norm_f32", GROUP_NORM_PARAMS);
pub const SOFTMAX_F32: Kernel = kernel(16, "nn_softmax_f32", SOFTMAX_PARAMS);
pub const ADD_F32: Kernel = kernel(17, "nn_add_f32", BINARY_PARAMS);
pub const SILU_F32: Kernel = kernel(18, "nn_silu_f32", UNARY_PARAMS);
pub const UPSAMPLE2X_F32: Kernel = kernel(19, "nn_upsample2x_f32", UNARY_PARAMS);
pub const CONCAT_F32: Kernel = kernel(20, "nn_concat_f32", UNARY_PARAMS);
pub const TIME_PROJ_F32: Kernel = kernel(21, "nn_time_proj_f32", UNARY_PARAMS);
pub const ADD_BIAS_F32: Kernel = kernel(22, "nn_add_bias_f32", BINARY_PARAMS);
pub const AFFINE_F32: Kernel = kernel(23, "nn_affine_f32", UNARY_PARAMS);

// f16 storage (T = __half); ids after fft's CENTRE_F32 (24).
pub const CONV2D_F16: Kernel = kernel(25, "nn_conv2d_f16", CONV2D_PARAMS);
pub const MATMUL_F16: Kernel = kernel(26, "nn_matmul_f16", MATMUL_PARAMS);
pub const GROUP_NORM_F16: Kernel = kernel(27, "nn_group_norm_f16", GROUP_NORM_PARAMS);
pub const SOFTMAX_F16: Kernel = kernel(28, "nn_softmax_f16", SOFTMAX_PARAMS);
pub const ADD_F16: Kernel = kernel(29, "nn_add_f16", BINARY_PARAMS);
pub const SILU_F16: Kernel = kernel(30, "nn_silu_f16", UNARY_PARAMS);
pub const UPSAMPLE2X_F16: Kernel = kernel(31, "nn_upsample2x_f16", UNARY_PARAMS);
pub const CONCAT_F16: Kernel = kernel(32, "nn_concat_f16", UNARY_PARAMS);
pub const TIME_PROJ_F16: Kernel = kernel(33, "nn_time_proj_f16", UNARY_PARAMS);
pub const ADD_BIAS_F16: Kernel = kernel(34, "nn_add_bias_f16", BINARY_PARAMS);
pub const AFFINE_F16: Kernel = kernel(35, "nn_affine_f16", UNARY_PARAMS);

/// The entry point of an op for a storage type: `f32` or its f16 twin.
fn pick(dtype: DType, f32: &'static Kernel, f16: &'static Kernel) -> Result<&'static Kernel> {
    match dtype {
        DType::F32 => Ok(f32),
        DType::F16 => Ok(f16),
        other => Err(unsupported(other)),
    }
}

/// Sizes were checked to fit u32 by `ops::nn` (each is at most a buffer length).
fn u(v: usize) -> u32 {
    v as u32
}

fn missing_input() -> Error {
    Error::Device {
        backend: "cuda",
        message: "nn call without its first input".into(),
    }
}

/// The GEMM kernels index rows, columns and depths with u32 plus a tile
/// offset: each must stay well below 2³² (the checked call bounds them by
/// buffer lengths, which fit u32, so this refuses only near that limit).
/// Indices count elements, so the limit is the same in f16; the error's
/// bytes are `dtype`'s.
fn gemm_dims(dims: &[usize], dtype: DType) -> Result<()> {
    match dims.iter().find(|&&d| d > MAX_LAUNCH_ELEMENTS) {
        Some(&d) => Err(too_large(d, dtype, MAX_LAUNCH_ELEMENTS)),
        None => Ok(()),
    }
}

impl<D: CudaDevice> CudaBackend<D> {
    /// A grid of `(x, y, z)` blocks, each dimension capped at the backend's
    /// block cap: the nn kernels stride over the rest.
    fn nn_grid(&self, x: usize, y: usize, z: usize) -> (u32, u32, u32) {
        let cap = self.max_blocks() as usize;
        let dim = |v: usize| u(v.clamp(1, cap));
        (dim(x), dim(y), dim(z))
    }

    fn conv2d(
        &self,
        g: &Conv2d,
        dtype: DType,
        [x, w, bias]: [&CudaBuffer<D::Mem>; 3],
        has_bias: bool,
        out: &mut CudaBuffer<D::Mem>,
    ) -> Result<()> {
        let kernel = pick(dtype, &CONV2D_F32, &CONV2D_F16)?;
        let (ho, wo) = g.out_size();
        gemm_dims(&[g.cout, ho * wo, g.cin * g.k * g.k], dtype)?;
        // cuDNN when the device has it and it serves the call (padding it
        // can express: `VendorConv::new`); the crate's kernel otherwise, and
        // always where there is none (the emulation harness) or
        // `set_library_conv(false)` asks for the kernel.
        if let Some(conv) = VendorConv::new(g, dtype).filter(|_| self.library_conv) {
            let bias_mem = has_bias.then_some(&bias.mem);
            // SAFETY: the checked call guarantees x holds batch·cin·h·w
            // elements of `dtype` (`conv.f16()` says which), w cout·cin·k·k,
            // bias cout when has_bias and out batch·cout·ho·wo, `conv`'s
            // output size.
            if unsafe {
                self.device
                    .vendor_conv(&conv, &x.mem, &w.mem, bias_mem, &mut out.mem)?
            } {
                // One library call, and one more to add the bias.
                self.count_launch();
                if has_bias {
                    self.count_launch();
                }
                return Ok(());
            }
        }
        let p = ConvParams {
            batch: u(g.batch),
            cin: u(g.cin),
            h: u(g.h),
            w: u(g.w),
            cout: u(g.cout),
            ho: u(ho),
            wo: u(wo),
            k: u(g.k),
            stride: u(g.stride),
            pad: u(g.pad),
            has_bias: u32::from(has_bias),
            unused: 0,
        };
        let grid = self.nn_grid((ho * wo).div_ceil(TILE), g.cout.div_ceil(TILE), g.batch);
        let args = KernelArgs::new()
            .value(&p)
            .input(&x.mem)
            .input(&w.mem)
            .input(&bias.mem)
            .output(&mut out.mem);
        // SAFETY: the checked call guarantees x holds batch·cin·h·w elements
        // of `dtype` (the kernel's storage type), w cout·cin·k·k, bias cout
        // when has_bias (unread otherwise), out batch·cout·ho·wo, and ho, wo
        // are the padded input's output size; each output element is written
        // by the one block owning its tile.
        unsafe { self.launch_blocks(kernel, grid, NN_GEMM_THREADS, args) }
    }

    fn matmul(
        &self,
        g: &Matmul,
        dtype: DType,
        [a, b, bias]: [&CudaBuffer<D::Mem>; 3],
        has_bias: bool,
        out: &mut CudaBuffer<D::Mem>,
    ) -> Result<()> {
        let kernel = pick(dtype, &MATMUL_F32, &MATMUL_F16)?;
        gemm_dims(&[g.m, g.n, g.k], dtype)?;
        // A vendor GEMM (cuBLAS on a GPU, when it loads) for a product
        // without bias, f32 or f16 storage — C = α·A·B + β·C covers
        // accumulate with β = 1; the crate's kernel otherwise, and always
        // where there is none (the emulation harness).
        if !has_bias && matches!(dtype, DType::F32 | DType::F16) {
            let gemm = VendorGemm {
                batch: g.batch,
                m: g.m,
                n: g.n,
                k: g.k,
                trans_a: g.trans_a,
                trans_b: g.trans_b,
                alpha: g.alpha,
                beta: if g.accumulate { 1.0 } else { 0.0 },
                f16: dtype == DType::F16,
            };
            // SAFETY: the checked call guarantees A holds batch·m·k elements
            // of `dtype` (`gemm.f16` says which), B batch·k·n and out
            // batch·m·n.
            if unsafe {
                self.device
                    .vendor_gemm(&gemm, &a.mem, &b.mem, &mut out.mem)?
            } {
                self.count_launch();
                return Ok(());
            }
        }
        let p = MatmulParams {
            batch: u(g.batch),
            m: u(g.m),
            n: u(g.n),
            k: u(g.k),
            trans_a: u32::from(g.trans_a),
            trans_b: u32::from(g.trans_b),
            has_bias: u32::from(has_bias),
            accumulate: u32::from(g.accumulate),
            alpha: g.alpha,
            unused: [0; 3],
        };
        let grid = self.nn_grid(g.n.div_ceil(TILE), g.m.div_ceil(TILE), g.batch);
        let args = KernelArgs::new()
            .value(&p)
            .input(&a.mem)
            .input(&b.mem)
            .input(&bias.mem)
            .output(&mut out.mem);
        // SAFETY: the checked call guarantees A holds batch·m·k elements of
        // `dtype` (the kernel's storage type), B batch·k·n, bias n when
        // has_bias (unread otherwise) and out batch·m·n; each output element
        // is read (when accumulating) and written only by the block owning
        // its tile.
        unsafe { self.launch_blocks(kernel, grid, NN_GEMM_THREADS, args) }
    }

    fn group_norm(
        &self,
        g: &GroupNorm,
        dtype: DType,
        [x, gamma, beta]: [&CudaBuffer<D::Mem>; 3],
        out: &mut CudaBuffer<D::Mem>,
    ) -> Result<()> {
        let kernel = pick(dtype, &GROUP_NORM_F32, &GROUP_NORM_F16)?;
        let p = GroupNormParams {
            batch: u(g.batch),
            channels: u(g.channels),
            hw: u(g.hw),
            groups: u(g.groups),
            silu: u32::from(g.silu),
            eps: g.eps,
            unused: [0; 2],
        };
        let grid = self.nn_grid(g.batch * g.groups, 1, 1);
        let args = KernelArgs::new()
            .value(&p)
            .input(&x.mem)
            .input(&gamma.mem)
            .input(&beta.mem)
            .output(&mut out.mem);
        // SAFETY: the checked call guarantees x and out hold
        // batch·channels·hw elements of `dtype` (the kernel's storage type),
        // gamma and beta channels, and groups divides channels; each
        // (item, group) is read and written by one block.
        unsafe { self.launch_grid(kernel, grid, args) }
    }

    fn softmax(
        &self,
        g: &Softmax,
        dtype: DType,
        x: &CudaBuffer<D::Mem>,
        out: &mut CudaBuffer<D::Mem>,
    ) -> Result<()> {
        let kernel = pick(dtype, &SOFTMAX_F32, &SOFTMAX_F16)?;
        let p = SoftmaxParams {
            rows: u(g.rows),
            cols: u(g.cols),
            scale: g.scale,
            unused: 0,
        };
        let grid = self.nn_grid(g.rows, 1, 1);
        let args = KernelArgs::new()
            .value(&p)
            .input(&x.mem)
            .output(&mut out.mem);
        // SAFETY: the checked call guarantees x and out hold rows·cols
        // elements of `dtype` (the kernel's storage type); each row is read
        // and written by one block.
        unsafe { self.launch_grid(kernel, grid, args) }
    }

    /// An element-wise entry over `p.n` outputs with one or two inputs.
    ///
    /// # Safety
    /// `inputs` and `out` hold every element the entry addresses for `p`.
    unsafe fn elementwise(
        &self,
        kernel: &'static Kernel,
        p: ElementParams,
        inputs: &[&CudaBuffer<D::Mem>],
        out: &mut CudaBuffer<D::Mem>,
    ) -> Result<()> {
        let args = inputs
            .iter()
            .fold(KernelArgs::new().value(&p), |args, b| args.input(&b.mem))
            .output(&mut out.mem);
        // SAFETY: forwarded from the caller; `launch` checks the signature and
        // that p.n fits the grid-stride indices.
        unsafe { self.launch(kernel, p.n as usize, args) }
    }
}

fn concat_params(g: &Concat) -> ElementParams {
    ElementParams {
        n: u(g.batch * g.c * g.hw),
        hw: u(g.hw),
        c: u(g.c),
        c_total: u(g.c_total),
        c_offset: u(g.c_offset),
        ..Default::default()
    }
}

fn time_proj_params(g: &TimeProj) -> ElementParams {
    ElementParams {
        n: u(g.batch * g.dim),
        dim: u(g.dim),
        flip_sin_to_cos: u32::from(g.flip_sin_to_cos),
        shift: g.shift(),
        ..Default::default()
    }
}

impl<D: CudaDevice> NnOps for CudaBackend<D> {
    fn nn_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F32 | DType::F16)
    }

    fn conv_path(&self) -> ConvPath {
        if self.library_conv && self.device.has_library_conv() {
            ConvPath::Cudnn
        } else {
            ConvPath::Kernels
        }
    }

    fn nn_checked(&self, call: NnCall<'_, Self>) -> Result<()> {
        let [i0, i1, i2] = call.inputs;
        let first = i0.ok_or_else(missing_input)?;
        let second = i1.unwrap_or(first);
        // An absent optional input (a bias) passes the first one, unread.
        let all = [first, second, i2.unwrap_or(first)];
        let (dtype, out) = (call.dtype, call.out);
        let n = |n: usize| ElementParams {
            n: u(n),
            ..Default::default()
        };
        // SAFETY (the element-wise arms): the checked call guarantees each
        // input and the output hold the elements its op addresses for these
        // params, in the call's dtype — the storage type of the kernel picked
        // — except time_proj's timesteps, f32 for both kernels (n outputs;
        // upsample planes·h·w inputs; concat parts inside the output's
        // c_total channels; add_bias planes = n/hw biases; time_proj
        // batch = n/dim timesteps), and no input aliases the output.
        match call.op {
            NnOp::Conv2d(g) => self.conv2d(&g, dtype, all, i2.is_some(), out),
            NnOp::Matmul(g) => self.matmul(&g, dtype, all, i2.is_some(), out),
            NnOp::GroupNorm(g) => self.group_norm(&g, dtype, all, out),
            NnOp::Softmax(g) => self.softmax(&g, dtype, first, out),
            NnOp::Add { n: len } => {
                let k = pick(dtype, &ADD_F32, &ADD_F16)?;
                unsafe { self.elementwise(k, n(len), &[first, second], out) }
            }
            NnOp::Silu { n: len } => {
                let k = pick(dtype, &SILU_F32, &SILU_F16)?;
                unsafe { self.elementwise(k, n(len), &[first], out) }
            }
            NnOp::Affine {
                n: len,
                scale,
                shift,
            } => {
                let p = ElementParams {
                    scale,
                    shift,
                    ..n(len)
                };
                let k = pick(dtype, &AFFINE_F32, &AFFINE_F16)?;
                unsafe { self.elementwise(k, p, &[first], out) }
            }
            NnOp::Upsample2x { planes, h, w } => {
                let p = ElementParams {
                    h: u(h),
                    w: u(w),
                    ..n(planes * 4 * h * w)
                };
                let k = pick(dtype, &UPSAMPLE2X_F32, &UPSAMPLE2X_F16)?;
                unsafe { self.elementwise(k, p, &[first], out) }
            }
            NnOp::Concat(g) => {
                let k = pick(dtype, &CONCAT_F32, &CONCAT_F16)?;
                unsafe { self.elementwise(k, concat_params(&g), &[first], out) }
            }
            NnOp::TimeProj(g) => {
                let k = pick(dtype, &TIME_PROJ_F32, &TIME_PROJ_F16)?;
                unsafe { self.elementwise(k, time_proj_params(&g), &[first], out) }
            }
            NnOp::AddBias { planes, hw } => {
                let p = ElementParams {
                    hw: u(hw),
                    ..n(planes * hw)
                };
                let k = pick(dtype, &ADD_BIAS_F32, &ADD_BIAS_F16)?;
                unsafe { self.elementwise(k, p, &[first, second], out) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(pad: usize, pad_after: usize, stride: usize) -> Conv2d {
        Conv2d {
            batch: 2,
            cin: 4,
            h: 16,
            w: 12,
            cout: 8,
            k: 3,
            stride,
            pad,
            pad_after,
        }
    }

    #[test]
    fn symmetric_convolutions_go_to_the_library_with_their_output_size() {
        for (g, out) in [
            (conv(1, 1, 1), (16, 12)),
            (conv(1, 1, 2), (8, 6)),
            (conv(0, 0, 1), (14, 10)),
        ] {
            for dtype in [DType::F32, DType::F16] {
                let v = VendorConv::new(&g, dtype).unwrap();
                assert_eq!(*v.conv(), g);
                assert_eq!(v.conv().out_size(), out);
                assert_eq!(v.f16(), dtype == DType::F16);
            }
        }
    }

    #[test]
    fn padding_the_library_cannot_express_runs_the_kernel() {
        // diffusers' Downsample2D with padding 0: (0, 1) before a stride-2
        // conv, one output row and column more than (0, 0) gives.
        assert_eq!(VendorConv::new(&conv(0, 1, 2), DType::F32), None);
        assert_eq!(VendorConv::new(&conv(2, 0, 1), DType::F32), None);
        // A trailing pad no tap reaches changes nothing: the library serves it.
        let odd = |pad_after| Conv2d {
            h: 15,
            w: 11,
            ..conv(1, pad_after, 2)
        };
        let g = odd(2);
        assert_eq!(odd(1).out_size(), g.out_size());
        assert_eq!(VendorConv::new(&g, DType::F32).unwrap().conv(), &odd(1));
        // A kernel larger than the input plus the leading pad on both sides.
        let tall = Conv2d {
            h: 1,
            k: 4,
            pad: 0,
            pad_after: 3,
            ..conv(0, 3, 1)
        };
        assert_eq!(VendorConv::new(&tall, DType::F32), None);
    }
}
