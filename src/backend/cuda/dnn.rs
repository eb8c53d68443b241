//! cuDNN for the nn family's conv2d on a GPU: an optional library, loaded at
//! run time like cuBLAS (`blas.rs`). Without it (or with a libcudnn other
//! than version 9, whose status codes cudarc's bindings describe), or on a
//! device that is not a real GPU such as the emulation harness, conv2d runs
//! the crate's own implicit-GEMM kernel (kernels/nn.cu); so does every call
//! cuDNN does not serve: padding cuDNN cannot express, sizes beyond its
//! 32-bit arguments, and shapes cuDNN refuses when the plan is made.
//!
//! What it serves: NCHW tensors in f32 or f16 storage, OIHW weights,
//! cross-correlation with the same zero padding on every side, one square
//! stride. The bias, when there is one, is added afterwards by
//! `cudnnAddTensor` in place — the kernel also adds it once to the finished
//! f32 sum, so in f32 both round the same way; in f16 cuDNN rounds the sum
//! to f16 before adding the bias, one rounding more than the kernel (half
//! an f16 ulp, far inside the f16 tolerance of 3e-2).
//!
//! Numerical contract: f32 products with f32 accumulation — for f32 storage
//! CUDNN_FMA_MATH, so no TF32, whose 10-bit mantissa would miss the family's
//! tolerance; for f16 storage CUDNN_TENSOR_OP_MATH with an f32 compute type,
//! tensor cores whose f16 products are exact in f32 — and only GEMM-family
//! algorithms (implicit GEMM, precomputed implicit GEMM, explicit GEMM):
//! each output is the same `cin·k·k`-term dot product as the kernel's,
//! summed in another order, so the two differ by rounding alone and the
//! kernel's parity tolerance with the CPU (1e-6 normalised, 1e-5 absolute
//! in `tests/nn_parity.rs` for f32) is the one we expect of cuDNN. FFT and
//! Winograd algorithms are excluded: they transform the operands and their
//! error does not follow that bound.
//!
//! Layout: NCHW because every tensor of the crate is NCHW. For f32 with FMA
//! math cuDNN uses no tensor cores, so the layout costs nothing there; for
//! f16 its tensor-core kernels prefer NHWC (channels a multiple of 8), and
//! with NCHW cuDNN transposes around them — the price of one layout for
//! every backend and op, which an NHWC network would pay in every other
//! kernel instead.
//!
//! cudarc's safe `cudnn` types are not used: `Cudnn::new` unwraps binding the
//! context, every descriptor's `Drop` unwraps its destroy call, the handle
//! is neither `Send` nor `Sync`, and `pick_algorithm` asserts — and nothing
//! here may panic. The raw `result`/`sys` calls below are wrapped instead,
//! as `blas.rs` and `cufft.rs` wrap theirs.
//!
//! Unexercised without a GPU: here the unit tests below check the pure parts
//! (which calls cuDNN would take, the algorithm filter, the opt-out) and the
//! launcher's choice runs on a recording device in `tests/cuda_nvrtc.rs`.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use cudarc::cudnn::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};

use super::device::VendorConv;
use crate::error::{Error, Result};

/// Set to `0` to keep cuDNN unloaded: every conv2d then runs the crate's
/// kernel (for comparing the two on one GPU; see also
/// `CudaBackend::set_library_conv`).
pub const DISABLE_VAR: &str = "DIFFINV_CUDNN";

/// Most workspace one convolution may ask for. The GEMM-family algorithms
/// need little (implicit GEMM none); an algorithm wanting more is skipped.
const WORKSPACE_LIMIT: usize = 64 << 20;

type Algo = sys::cudnnConvolutionFwdAlgo_t;

fn dnn_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device {
        backend: "cuda",
        message: format!("cuDNN {what}: {e:?}"),
    }
}

/// Whether to open cuDNN: not when [`DISABLE_VAR`] is `0`, and only when
/// `present` (the probe for libcudnn) says it loads.
fn wanted(disable_var: Option<&str>, present: impl FnOnce() -> bool) -> bool {
    disable_var.is_none_or(|v| v.trim() != "0") && present()
}

/// Whether the loaded library's `cudnnGetVersion()` is one cudarc's
/// bindings (cuDNN 9) describe. cuDNN 9 renumbered its status codes (8's
/// NOT_SUPPORTED, 9, is 3000 in 9), and the bindings read them as Rust
/// enums: a cuDNN 8 status would be an invalid value, so cuDNN 8 is left
/// unloaded. Versions are `major·10000 + minor·100 + patch` from 9 on,
/// `major·1000 + …` before.
fn bindings_match(version: usize) -> bool {
    (90_000..100_000).contains(&version)
}

/// The 32-bit sizes of one convolution, as cuDNN's descriptors take them:
/// the plan cache's key. `None` when a size or the output's element count
/// does not fit (the kernel then runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Shape {
    x: [c_int; 4],
    filter: [c_int; 4],
    y: [c_int; 4],
    stride: c_int,
    pad: c_int,
    /// f16 storage (else f32).
    f16: bool,
}

impl Shape {
    fn of(conv: &VendorConv) -> Option<Shape> {
        let c = conv.conv();
        let (ho, wo) = c.out_size();
        let int = |v: usize| c_int::try_from(v).ok();
        // cuDNN's 4-D descriptors address elements with 32-bit strides.
        let dims = |d: [usize; 4]| -> Option<[c_int; 4]> {
            d.iter()
                .try_fold(1usize, |n, &v| n.checked_mul(v))
                .and_then(int)?;
            Some([int(d[0])?, int(d[1])?, int(d[2])?, int(d[3])?])
        };
        Some(Shape {
            x: dims([c.batch, c.cin, c.h, c.w])?,
            filter: dims([c.cout, c.cin, c.k, c.k])?,
            y: dims([c.batch, c.cout, ho, wo])?,
            stride: int(c.stride)?,
            pad: int(c.pad)?,
            f16: conv.f16(),
        })
    }

    /// cuDNN's type for the tensors and filter.
    fn storage(&self) -> sys::cudnnDataType_t {
        if self.f16 {
            sys::cudnnDataType_t::CUDNN_DATA_HALF
        } else {
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT
        }
    }

    /// The math the contract allows: tensor cores for f16 (exact products,
    /// f32 sums), FMA for f32 (no TF32).
    fn math(&self) -> sys::cudnnMathType_t {
        if self.f16 {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        }
    }
}

/// The algorithms of cuDNN's heuristic ranking (`perf`, best first) that
/// keep the numerical contract: GEMM family, deterministic, within
/// [`WORKSPACE_LIMIT`], and not failed.
fn contract_algorithms(
    perf: &[sys::cudnnConvolutionFwdAlgoPerf_t],
) -> impl Iterator<Item = Algo> + '_ {
    use sys::cudnnConvolutionFwdAlgo_t as A;
    perf.iter()
        .filter(|p| {
            p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                && matches!(
                    p.algo,
                    A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM
                        | A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM
                        | A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM
                )
                && p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
                && p.memory <= WORKSPACE_LIMIT
        })
        .map(|p| p.algo)
}

/// The descriptors and algorithm of one [`Shape`], made once. Descriptors
/// are independent of the handle; each is destroyed here, once (a null one
/// was never made).
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    /// `1 × cout × 1 × 1`: broadcast over the output by `cudnnAddTensor`.
    bias: sys::cudnnTensorDescriptor_t,
    filter: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algo: Algo,
    workspace_bytes: usize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each non-null descriptor was created by `Plan::make` and is
        // destroyed only here; a failure at teardown leaves nothing to do.
        unsafe {
            for t in [self.x, self.y, self.bias] {
                if !t.is_null() {
                    let _ = result::destroy_tensor_descriptor(t);
                }
            }
            if !self.filter.is_null() {
                let _ = result::destroy_filter_descriptor(self.filter);
            }
            if !self.conv.is_null() {
                let _ = result::destroy_convolution_descriptor(self.conv);
            }
        }
    }
}

impl Plan {
    /// Descriptors for `s`, cuDNN's fastest contract-keeping algorithm and
    /// its workspace; `Err` when cuDNN refuses any of it (the caller then
    /// runs the kernel for this shape from now on).
    fn make(
        handle: sys::cudnnHandle_t,
        s: &Shape,
    ) -> std::result::Result<Plan, result::CudnnError> {
        use sys::cudnnDataType_t::CUDNN_DATA_FLOAT as F32;
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as NCHW;
        let storage = s.storage();
        let mut plan = Plan {
            x: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            bias: std::ptr::null_mut(),
            filter: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            workspace_bytes: 0,
        };
        plan.x = result::create_tensor_descriptor()?;
        plan.y = result::create_tensor_descriptor()?;
        plan.bias = result::create_tensor_descriptor()?;
        plan.filter = result::create_filter_descriptor()?;
        plan.conv = result::create_convolution_descriptor()?;
        // SAFETY: every descriptor was just created and is live; the output
        // pointers of the queries are locals that outlive the calls.
        unsafe {
            result::set_tensor4d_descriptor(plan.x, NCHW, storage, s.x)?;
            result::set_tensor4d_descriptor(plan.y, NCHW, storage, s.y)?;
            result::set_tensor4d_descriptor(plan.bias, NCHW, storage, [1, s.y[1], 1, 1])?;
            result::set_filter4d_descriptor(plan.filter, storage, NCHW, s.filter)?;
            result::set_convolution2d_descriptor(
                plan.conv,
                s.pad,
                s.pad,
                s.stride,
                s.stride,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                // The compute type: f32 sums for both storages.
                F32,
            )?;
            // Set before the queries: cuDNN's forward call honours the
            // descriptor's math type (FMA rules out TF32).
            result::set_convolution_math_type(plan.conv, s.math())?;
            // The caller derived y's size from its own padding; cuDNN must
            // agree, or it would read or write past what the call checked.
            let mut dims = [0 as c_int; 4];
            let [n, c, h, w] = &mut dims;
            sys::cudnnGetConvolution2dForwardOutputDim(plan.conv, plan.x, plan.filter, n, c, h, w)
                .result()?;
            if dims != s.y {
                return Err(result::CudnnError(
                    sys::cudnnStatus_t::CUDNN_STATUS_BAD_PARAM,
                ));
            }
            const COUNT: usize =
                sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;
            let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); COUNT];
            let mut returned: c_int = 0;
            result::get_convolution_forward_algorithm(
                handle,
                plan.x,
                plan.filter,
                plan.conv,
                plan.y,
                COUNT as c_int,
                &mut returned,
                perf.as_mut_ptr(),
            )?;
            let ranked = &perf[..usize::try_from(returned).unwrap_or(0).min(COUNT)];
            // The ranking's memory is an estimate; the size query decides.
            for algo in contract_algorithms(ranked) {
                let bytes = result::get_convolution_forward_workspace_size(
                    handle,
                    plan.x,
                    plan.filter,
                    plan.conv,
                    plan.y,
                    algo,
                )?;
                if bytes <= WORKSPACE_LIMIT {
                    plan.algo = algo;
                    plan.workspace_bytes = bytes;
                    return Ok(plan);
                }
            }
        }
        Err(result::CudnnError(
            sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED,
        ))
    }
}

/// What one handle has made: plans by shape (`None`: cuDNN refused the
/// shape, the kernel serves it) and one workspace, grown to the largest a
/// plan needs. Made at the first call of each shape — the first network
/// forward — so a sampling loop allocates nothing.
#[derive(Default)]
struct Cache {
    plans: HashMap<Shape, Option<Plan>>,
    workspace: Option<CudaSlice<u8>>,
}

/// A cuDNN handle bound to the device's stream, so its convolutions are
/// ordered with the crate's kernels (and cuBLAS's GEMMs) like any launch.
pub(super) struct Dnn {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    /// Held for every call: a handle serves one host thread at a time, and
    /// the workspace one convolution at a time.
    cache: Mutex<Cache>,
}

// SAFETY: the handle and the plans' descriptors are only used with `cache`
// locked (one thread at a time, as cuDNN requires of a handle); the handle's
// stream is set once, in `open`.
unsafe impl Send for Dnn {}
// SAFETY: as above.
unsafe impl Sync for Dnn {}

impl Dnn {
    /// cuDNN on `stream`, or `None` when [`DISABLE_VAR`] is `0`, libcudnn
    /// does not load, or it cannot make a handle: then every conv2d takes
    /// the crate's kernel.
    pub(super) fn open(stream: &Arc<CudaStream>) -> Option<Dnn> {
        let var = std::env::var(DISABLE_VAR).ok();
        // SAFETY: only probes whether the shared library loads.
        if !wanted(var.as_deref(), || unsafe { sys::is_culib_present() }) {
            return None;
        }
        // cudnnCreate initialises on the current context.
        stream.context().bind_to_thread().ok()?;
        // cudarc panics when the library lacks a symbol it resolves lazily
        // (one older than the version it was built for): no cuDNN then.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            if !bindings_match(result::get_version()) {
                return None;
            }
            let dnn = Dnn {
                handle: result::create_handle().ok()?,
                stream: Arc::clone(stream),
                cache: Mutex::default(),
            };
            // SAFETY: the handle is live; the stream outlives it (`dnn`
            // holds it, and the device drops the handle before its context).
            unsafe { result::set_stream(dnn.handle, stream.cu_stream() as _) }.ok()?;
            Some(dnn)
        }))
        .ok()
        .flatten()
    }

    /// `out ← conv(x, w) (+ bias)` for `c` on device addresses, enqueued on
    /// the stream. `Ok(false)` when cuDNN does not serve this shape (sizes
    /// beyond its 32-bit arguments, or refused when planned), so the caller
    /// runs its own kernel; an error when a planned call fails.
    ///
    /// # Safety
    /// `x` holds batch·cin·h·w elements (f16 when `c.f16()`, else f32), `w`
    /// cout·cin·k·k, `bias` (when given) cout and `out` batch·cout·ho·wo, all
    /// of this stream's context and
    /// live until the stream has run the call; `out` overlaps no input.
    pub(super) unsafe fn conv2d(
        &self,
        c: &VendorConv,
        x: u64,
        w: u64,
        bias: Option<u64>,
        out: u64,
    ) -> Result<bool> {
        let Some(shape) = Shape::of(c) else {
            return Ok(false);
        };
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| dnn_error("plan cache", "poisoned"))?;
        let Cache { plans, workspace } = &mut *cache;
        let handle = self.handle;
        let plan = plans.entry(shape).or_insert_with(|| {
            std::panic::catch_unwind(|| Plan::make(handle, &shape))
                .ok()
                .and_then(|made| made.ok())
        });
        let Some(plan) = plan else {
            return Ok(false);
        };
        if workspace.as_ref().map_or(0, CudaSlice::len) < plan.workspace_bytes {
            // Replacing the old one frees it in stream order, after the
            // calls that used it.
            *workspace = Some(
                self.stream
                    .alloc_zeros::<u8>(plan.workspace_bytes)
                    .map_err(|e| dnn_error("workspace", e))?,
            );
        }
        // The workspace is written by the convolution: the record makes the
        // stream order it after its last use, as for any output.
        let (work, _record) = match workspace.as_mut() {
            Some(ws) if plan.workspace_bytes > 0 => {
                let (ptr, record) = ws.device_ptr_mut(&self.stream);
                (ptr as *mut c_void, Some(record))
            }
            _ => (std::ptr::null_mut(), None),
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let scalar = |v: &f32| (v as *const f32).cast::<c_void>();
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the caller's contract on the addresses and their
            // sizes, which are the plan's descriptors'; the workspace holds
            // at least `workspace_bytes`; the scalars are host values that
            // outlive the calls (cuDNN reads them before returning).
            unsafe {
                result::convolution_forward(
                    self.handle,
                    scalar(&one),
                    plan.x,
                    x as *const c_void,
                    plan.filter,
                    w as *const c_void,
                    plan.conv,
                    plan.algo,
                    work,
                    plan.workspace_bytes,
                    scalar(&zero),
                    plan.y,
                    out as *mut c_void,
                )?;
                // out ← 1·bias + 1·out, the bias broadcast over batch and pixels.
                if let Some(b) = bias {
                    sys::cudnnAddTensor(
                        self.handle,
                        scalar(&one),
                        plan.bias,
                        b as *const c_void,
                        scalar(&one),
                        plan.y,
                        out as *mut c_void,
                    )
                    .result()?;
                }
                Ok(())
            }
        }));
        match ran {
            Ok(r) => r
                .map(|()| true)
                .map_err(|e: result::CudnnError| dnn_error("convolution", e)),
            Err(_) => Err(dnn_error("convolution", "libcudnn lacks a symbol")),
        }
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created in `open` and destroyed only here (the plans'
        // descriptors do not depend on it); a failure to destroy at teardown
        // leaves nothing to recover.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ops::nn::Conv2d;
    use crate::tensor::DType;
    use sys::cudnnConvolutionFwdAlgo_t as A;

    fn conv() -> Conv2d {
        Conv2d {
            batch: 2,
            cin: 3,
            h: 9,
            w: 7,
            cout: 5,
            k: 3,
            stride: 2,
            pad: 1,
            pad_after: 1,
        }
    }

    fn shape(g: Conv2d) -> Option<Shape> {
        Shape::of(&VendorConv::new(&g, DType::F32).unwrap())
    }

    #[test]
    fn cudnn_opens_only_when_present_and_not_disabled() {
        assert!(wanted(None, || true));
        assert!(wanted(Some("1"), || true));
        assert!(!wanted(None, || false), "library absent: the kernel");
        assert!(!wanted(Some(" 0 "), || panic!("probed although disabled")));
    }

    #[test]
    fn only_cudnn_9_is_loaded() {
        assert!(bindings_match(90_100), "9.1.0");
        assert!(bindings_match(92_100), "9.21.0");
        assert!(!bindings_match(8_907), "8.9.7: other status codes");
        assert!(!bindings_match(100_000), "10.0.0: unknown");
    }

    /// The probe `open` starts with: on a machine without libcudnn it says
    /// so, and nowhere does it panic.
    #[test]
    fn probing_for_libcudnn_never_panics() {
        // SAFETY: only probes whether the shared library loads.
        let present = unsafe { sys::is_culib_present() };
        println!("libcudnn loads here: {present}");
    }

    #[test]
    fn descriptor_sizes_follow_the_call_and_refuse_beyond_32_bits() {
        let s = shape(conv()).unwrap();
        assert_eq!(s.x, [2, 3, 9, 7]);
        assert_eq!(s.filter, [5, 3, 3, 3]);
        assert_eq!(s.y, [2, 5, 5, 4]);
        assert_eq!((s.stride, s.pad), (2, 1));
        // Each size fits, the tensor's element count does not.
        let wide = Conv2d {
            batch: 1 << 16,
            cin: 1 << 16,
            ..conv()
        };
        assert_eq!(shape(wide), None);
        let huge = Conv2d {
            cout: 1 << 31,
            ..conv()
        };
        assert_eq!(shape(huge), None);
    }

    /// f16 storage plans apart from f32 (its own descriptors), with HALF
    /// tensors on tensor cores; f32 keeps FLOAT and FMA; other dtypes are
    /// the kernel's.
    #[test]
    fn f16_storage_plans_half_tensors_on_tensor_cores() {
        let g = conv();
        let single = Shape::of(&VendorConv::new(&g, DType::F32).unwrap()).unwrap();
        let half = Shape::of(&VendorConv::new(&g, DType::F16).unwrap()).unwrap();
        assert_ne!(single, half, "one cache key for both storages");
        assert_eq!(Shape { f16: false, ..half }, single);
        assert_eq!(single.storage(), sys::cudnnDataType_t::CUDNN_DATA_FLOAT);
        assert_eq!(single.math(), sys::cudnnMathType_t::CUDNN_FMA_MATH);
        assert_eq!(half.storage(), sys::cudnnDataType_t::CUDNN_DATA_HALF);
        assert_eq!(half.math(), sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH);
        for other in [DType::F64, DType::U32] {
            assert_eq!(VendorConv::new(&g, other), None, "{other:?}");
        }
    }

    fn perf(
        algo: Algo,
        status: sys::cudnnStatus_t,
        memory: usize,
    ) -> sys::cudnnConvolutionFwdAlgoPerf_t {
        sys::cudnnConvolutionFwdAlgoPerf_t {
            algo,
            status,
            time: 0.0,
            memory,
            determinism: sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
            mathType: sys::cudnnMathType_t::CUDNN_FMA_MATH,
            reserved: [0; 3],
        }
    }

    /// The ranking's order is kept; transforms (FFT, Winograd), failures,
    /// non-deterministic and over-budget entries are skipped.
    #[test]
    fn only_gemm_family_algorithms_within_budget_are_taken() {
        use sys::cudnnStatus_t::{CUDNN_STATUS_NOT_SUPPORTED as NO, CUDNN_STATUS_SUCCESS as OK};
        let mut nondeterministic = perf(A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, OK, 0);
        nondeterministic.determinism = sys::cudnnDeterminism_t::CUDNN_NON_DETERMINISTIC;
        let ranked = [
            perf(A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, OK, 0),
            perf(A::CUDNN_CONVOLUTION_FWD_ALGO_FFT, OK, 0),
            perf(A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, NO, 0),
            nondeterministic,
            perf(A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM, OK, WORKSPACE_LIMIT + 1),
            perf(
                A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                OK,
                1024,
            ),
            perf(A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, OK, 0),
            perf(A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, OK, 0),
        ];
        let taken: Vec<Algo> = contract_algorithms(&ranked).collect();
        assert_eq!(
            taken,
            [
                A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM
            ]
        );
        assert_eq!(contract_algorithms(&ranked[..4]).count(), 0);
    }
}
