//! The CPU emulation harness for kernels/*.cu (crates/cuda-emu, tests/cuda_emu):
//! self-tests of its CUDA semantics (barrier divergence, block reduction at
//! blockDim 96, shuffle lane semantics, missing lanes, partial masks, launch
//! limits), and every kernel of kernels/ run through the real CUDA host
//! launcher on the emulated device against the CPU backend, at the launcher's
//! block size and at block sizes that are not powers of two.
#![cfg(feature = "cuda")]

mod common;

use std::ffi::c_void;

use common::cuda_emu::{new_cuda_emu, new_cuda_emu_with, EmuDevice};
use common::{values, SIZES};
use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::cuda::{
    launch_config, CudaBackend, CudaDevice, Kernel, KernelArgs, Module, Param, DEFAULT_BLOCK_SIZE,
    KERNELS, MODULES,
};
use diffinv::ops::solver_step;
use diffinv::solver::{slot_stride, SolverStep, StepLaunch};
use diffinv::{Backend, DType, HostSlice, Ops, Shape, Tensor};

/// The harness, or `None` after a printed skip (a failure under DIFFINV_REQUIRE=cuda-emu).
fn harness() -> Option<()> {
    match cuda_emu::unavailable() {
        Some(reason) => {
            common::skip("cuda-emu", reason);
            None
        }
        None => Some(()),
    }
}

/// A pointer to one kernel argument, as cuLaunchKernel's kernelParams holds it.
fn arg<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

/// Launch a self-test kernel with a 1-D grid and block.
fn run(kernel: &str, grid: u32, block: u32, args: &mut [*mut c_void]) -> Result<(), String> {
    // SAFETY: each caller passes arguments of the kernel's parameter types, and
    // output buffers sized for grid·block threads as the kernel indexes them.
    unsafe { cuda_emu::launch("selftest", kernel, (grid, 1, 1), (block, 1, 1), 0, args) }
        .map_err(|e| e.message)
}

#[test]
fn divergent_syncthreads_is_detected() {
    let Some(()) = harness() else { return };
    let mut out = vec![0i32; 64];
    let mut p = out.as_mut_ptr();
    // Every thread reaches the barrier: fine.
    let mut all = 64u32;
    run(
        "selftest_divergent_sync",
        1,
        64,
        &mut [arg(&mut all), arg(&mut p)],
    )
    .unwrap();
    assert!(out.iter().all(|&v| v == 1));
    // Threads 16.. skip it and exit: a deadlock on a GPU, an error here.
    let mut limit = 16u32;
    let err = run(
        "selftest_divergent_sync",
        3,
        64,
        &mut [arg(&mut limit), arg(&mut p)],
    )
    .unwrap_err();
    for want in [
        "selftest_divergent_sync",
        "block (0,0,0) of grid (3,1,1)",
        "divergent __syncthreads",
        "threads 0-15 wait at selftest.cu:",
        "threads 16-63 exited without reaching it",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn block_reduction_at_blockdim_96_is_exact() {
    let Some(()) = harness() else { return };
    for n in [1usize, 95, 96, 97, 10_000, 100_003] {
        let input: Vec<i32> = values(n as u64, n, 1e6).iter().map(|&v| v as i32).collect();
        let want: i64 = input.iter().map(|&v| i64::from(v)).sum();
        let mut sum = 0i64;
        let (mut inp, mut len, mut out) = (input.as_ptr(), n as u32, &mut sum as *mut i64);
        run(
            "selftest_block_sum",
            4,
            96,
            &mut [arg(&mut inp), arg(&mut len), arg(&mut out)],
        )
        .unwrap();
        assert_eq!(sum, want, "n = {n}");
    }
}

/// CUDA's documented shuffle semantics, written independently of the harness
/// (which follows PTX's shfl.sync definition).
fn expected_shuffles(lane: i32, width: i32) -> [i32; 8] {
    let v = |l: i32| 100 * l + 7;
    let base = lane / width * width;
    let idx = |src: i32| v(base + src.rem_euclid(width));
    let up = if lane - base >= 3 {
        v(lane - 3)
    } else {
        v(lane)
    };
    let down = if lane - base + 3 < width {
        v(lane + 3)
    } else {
        v(lane)
    };
    // xor may read earlier groups, never later ones.
    let xor = if (lane ^ 5) / width <= lane / width {
        v(lane ^ 5)
    } else {
        v(lane)
    };
    let ballot = (0..32).filter(|l| l % 3 == 0).fold(0u32, |m, l| m | 1 << l) as i32;
    let f = 0.5
        + f64::from(if (lane ^ 1) / width <= lane / width {
            lane ^ 1
        } else {
            lane
        });
    let h = if lane - base + 1 < width {
        lane + 1
    } else {
        lane
    };
    [
        idx(3),
        idx(lane + 5),
        up,
        down,
        xor,
        ballot,
        1 + 2,
        (f * 4.0) as i32 * 1000 + h,
    ]
}

#[test]
fn shuffles_match_cuda_semantics() {
    let Some(()) = harness() else { return };
    for width in [32, 16, 8, 4, 2, 1] {
        let mut out = vec![0i32; 8 * 64];
        let (mut w, mut p) = (width, out.as_mut_ptr());
        run("selftest_shuffles", 1, 64, &mut [arg(&mut w), arg(&mut p)]).unwrap();
        for t in 0..64 {
            let want = expected_shuffles(t % 32, width);
            assert_eq!(
                out[8 * t as usize..8 * t as usize + 8],
                want,
                "thread {t}, width {width}"
            );
        }
    }
    // Width must be a power of two.
    let mut out = vec![0i32; 8 * 32];
    let (mut w, mut p) = (12, out.as_mut_ptr());
    let err = run("selftest_shuffles", 1, 32, &mut [arg(&mut w), arg(&mut p)]).unwrap_err();
    assert!(err.contains("width 12"), "{err}");
}

#[test]
fn reading_a_missing_lane_is_detected() {
    let Some(()) = harness() else { return };
    let mut out = vec![0f32; 4];
    let mut p = out.as_mut_ptr();
    run("selftest_partial_warp", 1, 64, &mut [arg(&mut p)]).unwrap();
    assert_eq!(out[..2], [496.0, 1520.0]);
    // blockDim 48: lanes 0-15 of warp 1 shuffle down from lanes 16-31, which do not exist.
    let err = run("selftest_partial_warp", 1, 48, &mut [arg(&mut p)]).unwrap_err();
    for want in [
        "selftest_partial_warp",
        "__shfl_down_sync",
        "of warp 1 reads lane",
        "does not exist",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    // The same block reduction as the 96-thread test: correct only for whole warps.
    let input = [1i32; 100];
    let mut sum = 0i64;
    let (mut inp, mut len, mut o) = (input.as_ptr(), 100u32, &mut sum as *mut i64);
    let err = run(
        "selftest_block_sum",
        1,
        100,
        &mut [arg(&mut inp), arg(&mut len), arg(&mut o)],
    )
    .unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn partial_masks_and_exited_lanes_are_detected() {
    let Some(()) = harness() else { return };
    let mut out = vec![0i32; 64];
    let mut p = out.as_mut_ptr();
    let err = run("selftest_partial_mask", 1, 64, &mut [arg(&mut p)]).unwrap_err();
    assert!(
        err.contains("mask 0x0000ffff") && err.contains("only full-mask"),
        "{err}"
    );
    let err = run("selftest_warp_exit", 2, 64, &mut [arg(&mut p)]).unwrap_err();
    for want in [
        "warp 0: lanes 0-15 wait at __shfl_xor_sync",
        "lanes 16-31 exited",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn block_barrier_reductions_2d_blocks_and_dynamic_shared_memory() {
    let Some(()) = harness() else { return };
    let (bx, by, grid) = (8u32, 4u32, 3u32);
    let n = (bx * by) as usize;
    let mut out = vec![0i32; 4 * n];
    let mut p = out.as_mut_ptr();
    for b in 0..grid {
        // One block per launch so each block's output is checked (they share `out`).
        let mut args = [arg(&mut p)];
        // SAFETY: one int* argument; `out` holds 4 ints per thread of the block.
        unsafe {
            cuda_emu::launch(
                "selftest",
                "selftest_block_ops",
                (b + 1, 1, 1),
                (bx, by, 1),
                4 * n as u32,
                &mut args,
            )
        }
        .unwrap();
        for t in 0..n {
            let got = &out[4 * t..4 * t + 4];
            assert_eq!(
                got,
                [16, 1, 1, (n - 1 - t) as i32 + 1000 * b as i32],
                "thread {t}"
            );
        }
    }
}

#[test]
fn launch_errors_are_reported() {
    let Some(()) = harness() else { return };
    let mut out = vec![0i32; 64];
    let mut p = out.as_mut_ptr();
    let mut limit = 64u32;
    let mut args = [arg(&mut limit), arg(&mut p)];
    let launch = |grid: (u32, u32, u32),
                  block: (u32, u32, u32),
                  shared: u32,
                  kernel: &str,
                  args: &mut [*mut c_void]| {
        // SAFETY: the launches below either fail validation before running or
        // pass selftest_divergent_sync's (unsigned, int*) with 64 ints of output.
        unsafe { cuda_emu::launch("selftest", kernel, grid, block, shared, args) }
            .map_err(|e| e.message)
    };
    let cases = [
        (
            (1, 1, 1),
            (1025, 1, 1),
            0,
            "selftest_divergent_sync",
            "blockDim (1025,1,1)",
        ),
        (
            (1, 1, 1),
            (64, 32, 1),
            0,
            "selftest_divergent_sync",
            "blockDim (64,32,1)",
        ),
        (
            (0, 1, 1),
            (64, 1, 1),
            0,
            "selftest_divergent_sync",
            "gridDim (0,1,1)",
        ),
        (
            (1, 70_000, 1),
            (64, 1, 1),
            0,
            "selftest_divergent_sync",
            "gridDim (1,70000,1)",
        ),
        (
            (1, 1, 1),
            (64, 1, 1),
            64 * 1024,
            "selftest_divergent_sync",
            "shared memory",
        ),
        (
            (1, 1, 1),
            (64, 1, 1),
            0,
            "no_such_kernel",
            "no kernel no_such_kernel",
        ),
    ];
    for (grid, block, shared, kernel, want) in cases {
        let err = launch(grid, block, shared, kernel, &mut args).unwrap_err();
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    let err = launch(
        (1, 1, 1),
        (64, 1, 1),
        0,
        "selftest_divergent_sync",
        &mut args[..1],
    )
    .unwrap_err();
    assert!(
        err.contains("takes 2 parameters, the launch passed 1"),
        "{err}"
    );
    // SAFETY: fails before running: the module does not exist.
    let err =
        unsafe { cuda_emu::launch("nope", "k", (1, 1, 1), (1, 1, 1), 0, &mut []) }.unwrap_err();
    assert!(err.message.contains("no kernel module nope.cu"), "{err}");
}

/// The harness's own kernels, declared like the backend declares its families.
const SELFTEST: Module = Module {
    id: usize::MAX,
    name: "selftest",
    source: "",
    contract_fma: false,
};

/// `selftest_write_past(float* out, unsigned n)`.
const WRITE_PAST: Kernel = Kernel {
    id: usize::MAX,
    module: &SELFTEST,
    name: "selftest_write_past",
    params: &[Param::Out, Param::Value(4)],
};

#[test]
fn writes_past_an_allocation_are_detected() {
    let Some(()) = harness() else { return };
    let dev = EmuDevice::default();
    let n = 100u32;
    let mut mem = dev.alloc_zeroed(4 * n as usize).unwrap();
    for (count, ok) in [(n - 1, true), (n, false)] {
        let args = KernelArgs::new().output(&mut mem).value(&count);
        args.check(&WRITE_PAST).unwrap();
        let cfg = launch_config(1, 32, 1);
        // SAFETY: (float*, unsigned) as the kernel takes; the write at index n lands in
        // the allocation's red zone (256 bytes past its 400), still inside the mapping.
        let res = unsafe { dev.launch(&WRITE_PAST, cfg, args) };
        match res {
            Ok(()) => assert!(ok, "write past the end not detected"),
            Err(e) => assert!(
                !ok && e
                    .to_string()
                    .contains("wrote past the end of a 400-byte buffer (at byte 400)"),
                "{e}"
            ),
        }
    }
}

/// One fused step on `backend` at storage `dtype`; returns the raw bits of (x', state').
fn solver_bits<B: Ops>(
    backend: &B,
    dtype: DType,
    step: &SolverStep,
    n: usize,
) -> (Vec<u32>, Vec<u32>) {
    let mut m = values(2, n, 2.0);
    if n > 3 {
        m[1] = f64::NAN;
        m[n - 2] = f64::INFINITY;
    }
    let up = |len: usize, v: &[f64]| {
        Tensor::from_host(backend, Shape::flat(len), dtype, HostSlice::F64(v)).unwrap()
    };
    let state_len = 4 * slot_stride(n);
    let mut x = up(n, &values(1, n, 2.0));
    let mo = up(n, &m);
    let mut state = up(state_len, &values(3, state_len, 2.0));
    solver_step(
        backend,
        step,
        StepLaunch {
            step: 3,
            seed: 0x5eed,
        },
        &mut x,
        &mo,
        &mut state,
    )
    .unwrap();
    let bits = |t: &Tensor<B>| -> Vec<u32> {
        t.to_f64(backend)
            .unwrap()
            .iter()
            .map(|&v| {
                if v.is_nan() {
                    u32::MAX
                } else {
                    (v as f32).to_bits()
                }
            })
            .collect()
    };
    (bits(&x), bits(&state))
}

/// solver_step_{f16,f32} over the size sweep against the CPU backend at the same
/// storage type. The emulated kernel computes the same f32 expressions in the same
/// order as the CPU reference, without FMA contraction (-ffp-contract=off, as the
/// runtime's NVRTC --fmad=false), with the same glibc logf/cosf for the noise, and
/// converts f16 with IEEE round-to-nearest-even, so results are bit-identical. (On a
/// GPU, logf/cosf may differ by an ulp: the parity tests' tolerances cover that.)
fn solver_kernels_match_cpu_bitwise(backend: &CudaBackend<EmuDevice>) {
    let cpu = CpuBackend::new();
    for dtype in [DType::F32, DType::F16] {
        for &n in &SIZES {
            for (kind, step) in common::steps::step_kinds() {
                let want = solver_bits(&cpu, dtype, &step, n);
                let got = solver_bits(backend, dtype, &step, n);
                assert!(
                    got == want,
                    "{dtype:?} n={n} {kind}: emulated kernel differs from the CPU backend"
                );
            }
        }
    }
}

/// The bits of every mode of every operator on `item` (batch 2) at `dtype`.
fn operator_bits<B: Ops>(backend: &B, dtype: DType, item: [usize; 3]) -> Vec<Vec<u64>> {
    use diffinv::ops::{Mode, Operator};
    let shape = Shape::from_dims(&item).unwrap();
    let n = shape.checked_len().unwrap();
    let mask: Vec<f32> = (0..n).map(|i| if i % 5 == 2 { 0.0 } else { 1.0 }).collect();
    let mut ops = vec![
        Operator::inpaint(backend, shape, &mask, true).unwrap(),
        Operator::inpaint(backend, shape, &mask, false).unwrap(),
        Operator::colorize(backend, shape, [0.3, 0.6, 0.1]).unwrap(),
    ];
    if item[1] >= 3 && item[2] >= 3 {
        ops.push(Operator::blur(backend, shape, &[0.25, 0.5, 0.25]).unwrap());
    }
    ops.extend(
        [3].into_iter()
            .filter(|s| item[1].is_multiple_of(*s) && item[2].is_multiple_of(*s))
            .map(|s| Operator::bicubic(backend, shape, s).unwrap()),
    );
    ops.extend(
        [2, 3]
            .into_iter()
            .filter(|s| item[1].is_multiple_of(*s) && item[2].is_multiple_of(*s))
            .map(|s| Operator::avg_pool(backend, shape, s).unwrap()),
    );
    let batch = |i: Shape| Shape::from_dims(&[&[2][..], i.dims()].concat()).unwrap();
    let mut out = Vec::new();
    for op in &ops {
        for mode in Mode::ALL {
            let (i, o) = match mode {
                Mode::Forward => (op.x_item(), op.y_item()),
                Mode::Adjoint | Mode::PseudoInverse => (op.y_item(), op.x_item()),
                Mode::Project => (op.x_item(), op.x_item()),
            };
            let len = batch(i).checked_len().unwrap();
            let x = Tensor::from_host(
                backend,
                batch(i),
                dtype,
                HostSlice::F64(&values(len as u64, len, 2.0)),
            )
            .unwrap();
            let mut y = Tensor::zeros(backend, batch(o), dtype).unwrap();
            op.apply(backend, mode, &x, &mut y).unwrap();
            out.push(
                y.to_f64(backend)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            );
        }
    }
    out
}

/// operator_apply_{f16,f32}: every program, at an even and an odd item, equals
/// the CPU backend bit for bit (same sums in the same order, no contraction).
fn operator_kernels_match_cpu_bitwise(backend: &CudaBackend<EmuDevice>) {
    let cpu = CpuBackend::new();
    for dtype in [DType::F32, DType::F16] {
        for item in [[3, 6, 12], [3, 9, 15], [3, 1, 1]] {
            assert!(
                operator_bits(backend, dtype, item) == operator_bits(&cpu, dtype, item),
                "{dtype:?} {item:?}: emulated operator kernel differs from the CPU backend"
            );
        }
    }
}

/// cpgdm_pass_{f16,f32}: every pass (with and without g) for every operator
/// equals the CPU backend bit for bit.
fn guidance_kernels_match_cpu_bitwise(backend: &CudaBackend<EmuDevice>) {
    use diffinv::guidance::{CpgdmConfig, CpgdmPlan};
    use diffinv::ops::{CpgdmSampler, Operator};
    fn outputs<B: Ops>(b: &B, dtype: DType) -> Vec<Vec<u64>> {
        let plan = CpgdmPlan::new(CpgdmConfig {
            steps: 2,
            ..CpgdmConfig::default()
        })
        .unwrap();
        let item = Shape::from_dims(&[3, 8, 12]).unwrap();
        let mask: Vec<f32> = (0..288)
            .map(|i| if i % 3 == 0 { 0.0 } else { 1.0 })
            .collect();
        let ops = [
            Operator::inpaint(b, item, &mask, true).unwrap(),
            Operator::avg_pool(b, item, 4).unwrap(),
            Operator::colorize(b, item, [0.3, 0.6, 0.1]).unwrap(),
        ];
        let x_shape = Shape::new(2, 3, 8, 12);
        let t = |seed: u64, shape: Shape| {
            let n = shape.checked_len().unwrap();
            Tensor::from_host(b, shape, dtype, HostSlice::F64(&values(seed, n, 1.0))).unwrap()
        };
        let bits = |t: &Tensor<B>| t.to_f64(b).unwrap().iter().map(|v| v.to_bits()).collect();
        let mut out = Vec::new();
        for op in &ops {
            let y_shape = Shape::from_dims(&[&[2][..], op.y_item().dims()].concat()).unwrap();
            let (y, z, eps, g) = (t(1, y_shape), t(2, x_shape), t(3, x_shape), t(4, x_shape));
            let mut run = CpgdmSampler::new(b, &plan, op, &y).unwrap();
            run.init(b, &z).unwrap();
            out.push(bits(run.x()));
            out.push(bits(run.residual(b, &eps).unwrap()));
            run.update(b, &eps, Some(&g)).unwrap();
            out.push(bits(run.x()));
            run.update(b, &eps, None).unwrap();
            out.push(bits(run.x()));
        }
        out
    }
    let cpu = CpuBackend::new();
    for dtype in [DType::F32, DType::F16] {
        assert!(
            outputs(backend, dtype) == outputs(&cpu, dtype),
            "{dtype:?}: emulated C-ΠGDM passes differ from the CPU backend"
        );
    }
}

fn krylov_kernels_match_cpu_bitwise(backend: &CudaBackend<EmuDevice>) {
    use diffinv::ops::krylov::{dds_renoise, dds_tweedie};
    use diffinv::ops::{CgOptions, ConjugateGradient, NormalSystem, Operator};
    fn outputs<B: Ops>(b: &B, dtype: DType) -> Vec<Vec<u64>> {
        // Two chunks of 1024 per sample, the second partial.
        let item = Shape::from_dims(&[3, 24, 24]).unwrap();
        let x_shape = Shape::new(2, 3, 24, 24);
        let mask: Vec<f32> = (0..1728)
            .map(|i| if i % 3 == 0 { 0.0 } else { 1.0 })
            .collect();
        let ops = [
            Operator::inpaint(b, item, &mask, true).unwrap(),
            Operator::avg_pool(b, item, 4).unwrap(),
            Operator::colorize(b, item, [0.3, 0.6, 0.1]).unwrap(),
        ];
        let t = |seed: u64, dtype: DType| {
            let n = x_shape.checked_len().unwrap();
            Tensor::from_host(b, x_shape, dtype, HostSlice::F64(&values(seed, n, 1.0))).unwrap()
        };
        let bits = |t: &Tensor<B>| t.to_f64(b).unwrap().iter().map(|v| v.to_bits()).collect();
        let (xt, eps, z) = (t(1, dtype), t(2, dtype), t(3, dtype));
        let mut x0 = t(4, DType::F32);
        dds_tweedie(b, &xt, &eps, 0.6, 0.8, &mut x0).unwrap();
        let mut out = vec![bits(&x0)];
        let d = t(5, DType::F32);
        for op in &ops {
            let options = CgOptions {
                iterations: 3,
                tolerance: Some(1e-2),
            };
            let system = NormalSystem::tikhonov(1.5);
            let mut cg = ConjugateGradient::new(b, op, 2, DType::F32, system, options).unwrap();
            let mut x = t(6, DType::F32);
            cg.solve(b, &mut x, &d, 1.0, 1.5).unwrap();
            out.push(bits(&x));
            let counts = cg.iterations_run(b).unwrap();
            out.push(counts.iter().map(|&c| c as u64).collect());
            let dots = cg.inner_products(b, &x, &d).unwrap();
            out.push(dots.iter().map(|v| v.to_bits()).collect());
        }
        let mut next = t(7, dtype);
        dds_renoise(b, &x0, &eps, &z, [0.9, 0.3, 0.2], &mut next).unwrap();
        out.push(bits(&next));
        out
    }
    let cpu = CpuBackend::new();
    for dtype in [DType::F32, DType::F16] {
        assert!(
            outputs(backend, dtype) == outputs(&cpu, dtype),
            "{dtype:?}: emulated CG / DDS passes differ from the CPU backend"
        );
    }
}

/// fft_lines_f32 and fft_pointwise_f32: forward and inverse transforms of
/// radix-2, radix-5 and mixed planes, and the multi-coil MRI operator (every
/// product program), against the CPU backend (rustfft, so within the f32
/// tolerance of the parity tests rather than bit for bit).
fn fft_kernels_match_cpu(backend: &CudaBackend<EmuDevice>) {
    use diffinv::ops::mri::MultiCoil;
    use diffinv::ops::{Direction, Fft2};
    fn outputs<B: Ops>(b: &B) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        for (h, w) in [(8, 16), (5, 40), (1, 2)] {
            let shape = Shape::from_dims(&[2, h, w, 2]).unwrap();
            let n = shape.checked_len().unwrap();
            let x = Tensor::from_host(b, shape, DType::F32, HostSlice::F64(&values(9, n, 1.0)))
                .unwrap();
            let mut y = Tensor::zeros(b, shape, DType::F32).unwrap();
            let fft = Fft2::new(b, h, w).unwrap();
            for direction in [Direction::Forward, Direction::Inverse] {
                fft.transform(b, direction, &x, &mut y).unwrap();
                out.push(y.to_f64(b).unwrap());
            }
            let mask: Vec<f64> = (0..h * w).map(|i| f64::from(i % 3 != 1)).collect();
            let maps = values(10, 3 * h * w * 2, 1.0);
            let op = MultiCoil::new(b, DType::F32, h, w, &mask, &maps, 3).unwrap();
            let k_shape = Shape::from_dims(&[2, 3, h, w, 2]).unwrap();
            let mut k = Tensor::zeros(b, k_shape, DType::F32).unwrap();
            op.forward(b, &x, &mut k).unwrap();
            out.push(k.to_f64(b).unwrap());
            op.adjoint(b, &k, &mut y).unwrap();
            out.push(y.to_f64(b).unwrap());
            let planar_shape = Shape::from_dims(&[2, 2, h, w]).unwrap();
            let mut planar = Tensor::zeros(b, planar_shape, DType::F32).unwrap();
            diffinv::ops::to_planar(b, &y, &mut planar).unwrap();
            out.push(planar.to_f64(b).unwrap());
            diffinv::ops::to_interleaved(b, &planar, &mut y).unwrap();
            out.push(y.to_f64(b).unwrap());
        }
        out
    }
    let want = outputs(&CpuBackend::new());
    for (i, (got, want)) in outputs(backend).iter().zip(&want).enumerate() {
        common::compare(&format!("fft output {i}"), got, want, 1e-6, 1e-5);
    }
}

/// Every nn kernel in f32 storage against the CPU backend: conv2d (stride 1
/// and 2, padded and not, with and without bias) and matmul (every transpose /
/// bias / accumulate combination) on sizes that are not multiples of the 64×64
/// tile, GroupNorm with and without SiLU, softmax, within the parity tests'
/// f32 tolerance (the CPU sums in f64); the element-wise ops bit for bit (the
/// same f32 expressions and glibc expf/sinf/cosf on both sides). conv2d and
/// matmul launch 256-thread blocks at every configuration (their thread
/// layout is fixed); only the grid cap varies for them.
fn nn_kernels_match_cpu(backend: &CudaBackend<EmuDevice>) {
    nn_kernels_match_cpu_in(backend, DType::F32);
}

/// The same calls in f16 storage (f32 math; time_proj's timesteps stay f32)
/// against the CPU definition in f16 storage: the GEMMs, GroupNorm and
/// softmax round values within the f32 tolerance to f16, so each output is
/// the CPU's f16 or its neighbour (one f16 ulp, plus the f32 tolerance where
/// an ulp is smaller than it); the element-wise ops and the time embedding
/// round the same f32 bits, so they match bit for bit.
fn nn_f16_kernels_match_cpu(backend: &CudaBackend<EmuDevice>) {
    nn_kernels_match_cpu_in(backend, DType::F16);
}

fn nn_kernels_match_cpu_in(backend: &CudaBackend<EmuDevice>, dt: DType) {
    use diffinv::ops::nn::{self, Concat, Conv2d, GroupNorm, Matmul, Softmax, TimeProj};
    /// (outputs compared within a tolerance, outputs compared bit for bit).
    fn outputs<B: diffinv::ops::nn::NnOps>(b: &B, dt: DType) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        // Values rounded once on the host (to f32, then to `storage`), so
        // both backends read the same ones.
        let up_as = |seed: u64, n: usize, amp: f64, storage: DType| {
            let v: Vec<f64> = values(seed, n, amp)
                .iter()
                .map(|&v| f64::from(v as f32))
                .collect();
            Tensor::from_host(b, Shape::flat(n), storage, HostSlice::F64(&v)).unwrap()
        };
        let up = |seed: u64, n: usize, amp: f64| up_as(seed, n, amp, dt);
        let zeros = |n: usize| Tensor::zeros(b, Shape::flat(n), dt).unwrap();
        let mut close = Vec::new();
        // The second pads only after (diffusers' downsample_padding = 0).
        for (i, &(batch, cin, h, w, cout, k, stride, pad, pad_after)) in
            [(2, 3, 9, 7, 67, 3, 1, 1, 1), (1, 5, 8, 9, 5, 3, 2, 0, 1)]
                .iter()
                .enumerate()
        {
            let g = Conv2d {
                batch,
                cin,
                h,
                w,
                cout,
                k,
                stride,
                pad,
                pad_after,
            };
            let (ho, wo) = g.out_size();
            let x = up(1, batch * cin * h * w, 1.0);
            let wt = up(2, cout * cin * k * k, 0.3);
            let bias = up(3, cout, 1.0);
            let mut out = zeros(batch * cout * ho * wo);
            let bias = (i == 0).then(|| bias.buffer());
            nn::conv2d(b, g, x.buffer(), wt.buffer(), bias, out.buffer_mut()).unwrap();
            close.push(out.to_f64(b).unwrap());
        }
        for flags in 0..8u32 {
            let (batch, m, n, k) = (2, 65, 70, 19);
            let g = Matmul {
                batch,
                m,
                n,
                k,
                trans_a: flags & 1 != 0,
                trans_b: flags & 2 != 0,
                alpha: 0.5,
                accumulate: flags & 4 != 0,
            };
            let (a, bm, bias) = (
                up(4, batch * m * k, 1.0),
                up(5, batch * k * n, 0.25),
                up(6, n, 1.0),
            );
            let mut out = up(7, batch * m * n, 1.0);
            let bias = (flags % 3 != 0).then(|| bias.buffer());
            nn::matmul(b, g, a.buffer(), bm.buffer(), bias, out.buffer_mut()).unwrap();
            close.push(out.to_f64(b).unwrap());
        }
        for silu in [false, true] {
            let g = GroupNorm {
                batch: 2,
                channels: 6,
                hw: 301,
                groups: 3,
                eps: 1e-5,
                silu,
            };
            let (x, gamma, beta) = (up(8, 2 * 6 * 301, 2.0), up(9, 6, 1.0), up(10, 6, 1.0));
            let mut out = zeros(2 * 6 * 301);
            nn::group_norm(
                b,
                g,
                x.buffer(),
                gamma.buffer(),
                beta.buffer(),
                out.buffer_mut(),
            )
            .unwrap();
            close.push(out.to_f64(b).unwrap());
        }
        let g = Softmax {
            rows: 9,
            cols: 517,
            scale: 0.25,
        };
        let x = up(11, 9 * 517, 10.0);
        let mut out = zeros(9 * 517);
        nn::softmax(b, g, x.buffer(), out.buffer_mut()).unwrap();
        close.push(out.to_f64(b).unwrap());

        let n = 1003;
        let (a, c) = (up(12, n, 4.0), up(13, n, 4.0));
        let mut exact = Vec::new();
        let mut out = zeros(n);
        nn::add(b, n, a.buffer(), c.buffer(), out.buffer_mut()).unwrap();
        exact.push(out.to_f64(b).unwrap());
        nn::silu(b, n, a.buffer(), out.buffer_mut()).unwrap();
        exact.push(out.to_f64(b).unwrap());
        // The product rounded before the sum, as the definition does it.
        nn::affine(b, n, 0.37, -1.25, a.buffer(), out.buffer_mut()).unwrap();
        exact.push(out.to_f64(b).unwrap());
        let mut big = zeros(4 * n);
        nn::upsample2x(b, 17, 59, 1, a.buffer(), big.buffer_mut()).unwrap();
        exact.push(big.to_f64(b).unwrap());
        let mut cat = zeros(3 * 5 * 59);
        let part = Concat {
            batch: 3,
            c: 2,
            hw: 59,
            c_total: 5,
            c_offset: 3,
        };
        nn::concat_into(b, part, a.buffer(), cat.buffer_mut()).unwrap();
        exact.push(cat.to_f64(b).unwrap());
        nn::add_bias(b, 17, 59, a.buffer(), c.buffer(), out.buffer_mut()).unwrap();
        exact.push(out.to_f64(b).unwrap());
        // The timesteps are f32 in either storage.
        let t = up_as(14, 7, 1000.0, DType::F32);
        let g = TimeProj {
            batch: 7,
            dim: 33,
            freq_shift: 1.0,
            flip_sin_to_cos: true,
        };
        let mut emb = zeros(7 * 33);
        nn::time_proj(b, g, t.buffer(), emb.buffer_mut()).unwrap();
        exact.push(emb.to_f64(b).unwrap());
        (close, exact)
    }
    let (close, exact) = outputs(backend, dt);
    let (want_close, want_exact) = outputs(&CpuBackend::new(), dt);
    assert_eq!(close.len(), want_close.len());
    for (i, (got, want)) in close.iter().zip(&want_close).enumerate() {
        let what = format!("nn output {i} ({dt:?})");
        match dt {
            DType::F16 => compare_f16_neighbour(&what, got, want, 1e-5),
            _ => common::compare(&what, got, want, 1e-6, 1e-5),
        }
    }
    assert_eq!(exact.len(), want_exact.len());
    for (i, (got, want)) in exact.iter().zip(&want_exact).enumerate() {
        assert!(
            got == want,
            "nn element-wise output {i} ({dt:?}) differs from the CPU backend"
        );
    }
}

/// f16 storage: each element of `got` is `want` (an f16 value) or one of its
/// f16 neighbours, give or take `abs` (the f32 tolerance: it lets an element
/// be more than one f16 ulp off only below 2⁻⁶, where an ulp is smaller).
fn compare_f16_neighbour(what: &str, got: &[f64], want: &[f64], abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // One f16 ulp at w's magnitude (subnormal spacing below 2⁻¹⁴).
        let ulp = 2f64.powf(w.abs().log2().floor().max(-14.0) - 10.0);
        let d = (g - w).abs();
        assert!(
            d <= ulp + abs,
            "{what}: element {i} is {g}, expected {w} (± one f16 ulp {ulp:e} + {abs:e})"
        );
        if d > worst.0 {
            worst = (d, i);
        }
    }
    let differ = got.iter().zip(want).filter(|(g, w)| g != w).count();
    eprintln!(
        "{what}: {differ} of {} elements differ, max abs {:.3e} at {}",
        got.len(),
        worst.0,
        worst.1
    );
}

/// fft_centre_f32, the cuFFT path's centring: the device's host FFT standing
/// in for cuFFT, then the kernel, against the CPU backend's transforms —
/// even, odd (5, 25) and length-1 axes, both directions.
fn fft_centre_matches_cpu(backend: &CudaBackend<EmuDevice>) {
    use diffinv::ops::{Direction, Fft2, FftOps, FftPath};
    fn transformed<B: Ops>(b: &B, h: usize, w: usize, direction: Direction) -> Vec<f64> {
        let shape = Shape::from_dims(&[2, h, w, 2]).unwrap();
        let data = values(11, shape.checked_len().unwrap(), 1.0);
        let x = Tensor::from_host(b, shape, DType::F32, HostSlice::F64(&data)).unwrap();
        let mut y = Tensor::zeros(b, shape, DType::F32).unwrap();
        let fft = Fft2::new(b, h, w).unwrap();
        fft.transform(b, direction, &x, &mut y).unwrap();
        y.to_f64(b).unwrap()
    }
    let cpu = CpuBackend::new();
    backend.device().set_host_fft(true);
    assert_eq!(backend.fft_path(), FftPath::Cufft);
    for (h, w) in [(8, 16), (5, 40), (25, 5), (1, 2)] {
        for direction in [Direction::Forward, Direction::Inverse] {
            common::compare(
                &format!("centred {direction:?} {h}x{w}"),
                &transformed(backend, h, w, direction),
                &transformed(&cpu, h, w, direction),
                1e-6,
                1e-5,
            );
        }
    }
    backend.device().set_host_fft(false);
}

/// Launch configurations every kernel is run at: the launcher's default (and the
/// grid it computes), then blockDim 96 and 100 (not powers of two; 100 is not a
/// multiple of 32) and 1, with few blocks so grid-stride loops wrap.
const CONFIGS: [(u32, u32); 4] = [(DEFAULT_BLOCK_SIZE, 65_535), (96, 5), (100, 3), (1, 7)];

type Runner = fn(&CudaBackend<EmuDevice>);

/// Every kernel of kernels/ and the test that runs it here. A kernel added to
/// kernels/ without an entry fails `every_kernel_runs_against_the_cpu_backend`.
const RUNNERS: &[(&str, Runner)] = &[
    ("solver_step_f16", solver_kernels_match_cpu_bitwise),
    ("solver_step_f32", solver_kernels_match_cpu_bitwise),
    ("operator_apply_f16", operator_kernels_match_cpu_bitwise),
    ("operator_apply_f32", operator_kernels_match_cpu_bitwise),
    ("cpgdm_pass_f16", guidance_kernels_match_cpu_bitwise),
    ("cpgdm_pass_f32", guidance_kernels_match_cpu_bitwise),
    ("cg_pass_f32", krylov_kernels_match_cpu_bitwise),
    ("dds_tweedie_f16", krylov_kernels_match_cpu_bitwise),
    ("dds_tweedie_f32", krylov_kernels_match_cpu_bitwise),
    ("dds_renoise_f16", krylov_kernels_match_cpu_bitwise),
    ("dds_renoise_f32", krylov_kernels_match_cpu_bitwise),
    ("fft_lines_f32", fft_kernels_match_cpu),
    ("fft_pointwise_f32", fft_kernels_match_cpu),
    ("nn_conv2d_f32", nn_kernels_match_cpu),
    ("nn_matmul_f32", nn_kernels_match_cpu),
    ("nn_group_norm_f32", nn_kernels_match_cpu),
    ("nn_softmax_f32", nn_kernels_match_cpu),
    ("nn_add_f32", nn_kernels_match_cpu),
    ("nn_silu_f32", nn_kernels_match_cpu),
    ("nn_upsample2x_f32", nn_kernels_match_cpu),
    ("nn_concat_f32", nn_kernels_match_cpu),
    ("nn_time_proj_f32", nn_kernels_match_cpu),
    ("nn_add_bias_f32", nn_kernels_match_cpu),
    ("nn_affine_f32", nn_kernels_match_cpu),
    ("fft_centre_f32", fft_centre_matches_cpu),
    ("nn_conv2d_f16", nn_f16_kernels_match_cpu),
    ("nn_matmul_f16", nn_f16_kernels_match_cpu),
    ("nn_group_norm_f16", nn_f16_kernels_match_cpu),
    ("nn_softmax_f16", nn_f16_kernels_match_cpu),
    ("nn_add_f16", nn_f16_kernels_match_cpu),
    ("nn_silu_f16", nn_f16_kernels_match_cpu),
    ("nn_upsample2x_f16", nn_f16_kernels_match_cpu),
    ("nn_concat_f16", nn_f16_kernels_match_cpu),
    ("nn_time_proj_f16", nn_f16_kernels_match_cpu),
    ("nn_add_bias_f16", nn_f16_kernels_match_cpu),
    ("nn_affine_f16", nn_f16_kernels_match_cpu),
];

#[test]
fn every_kernel_runs_against_the_cpu_backend() {
    let Some(()) = harness() else { return };
    let kernels: Vec<_> = cuda_emu::kernels()
        .into_iter()
        .filter(|k| k.module != "selftest")
        .collect();
    // The harness compiled every module the CUDA backend embeds, and nothing else.
    for module in MODULES {
        assert!(
            kernels.iter().any(|k| k.module == module.name),
            "kernels/{}.cu has no kernel in the harness",
            module.name
        );
    }
    for k in &kernels {
        assert!(
            MODULES.iter().any(|m| m.name == k.module),
            "kernels/{}.cu is not embedded by the CUDA backend",
            k.module
        );
        // The backend's kernel table declares every entry point with the
        // parameter count the compiled source has.
        let declared = KERNELS
            .iter()
            .find(|d| d.name == k.name && d.module.name == k.module)
            .unwrap_or_else(|| panic!("kernel {} is not in the backend's KERNELS table", k.name));
        assert_eq!(declared.params.len(), k.params, "parameters of {}", k.name);
        assert!(
            RUNNERS.iter().any(|(name, _)| *name == k.name),
            "kernel {} (kernels/{}.cu) has no emulated test: add it to RUNNERS",
            k.name,
            k.module
        );
    }
    for (block, max_blocks) in CONFIGS {
        let Some(backend) = new_cuda_emu_with(block, max_blocks) else {
            return;
        };
        let mut done: Vec<Runner> = Vec::new();
        for (_, runner) in RUNNERS {
            if !done.contains(runner) {
                runner(&backend);
                done.push(*runner);
            }
        }
        let launched = backend.device().launched();
        for k in &kernels {
            assert!(
                launched.get(&k.name).copied().unwrap_or(0) > 0,
                "{} never launched at block {block}",
                k.name
            );
        }
    }
}

/// The launcher's grid for the largest size: one thread per element (f32) or pair (f16).
#[test]
fn launcher_config_covers_the_work() {
    let Some(()) = harness() else { return };
    let n = 3 * 256 * 256;
    let cfg = launch_config(n, DEFAULT_BLOCK_SIZE, 65_535);
    assert_eq!(cfg.grid.0 * cfg.block.0, n as u32);
    // An emulated backend reports launch failures as errors, never panics.
    let Some(backend) = new_cuda_emu() else {
        return;
    };
    assert!(backend.device_name().contains("cuda-emu"));
}

/// A launch through the typed argument builder reaches the emulated device as
/// the kernel declares it: params block first (its bytes, 96 of them), then x
/// written, the model output read and the state written — at the addresses of
/// the tensors given.
#[test]
fn typed_launches_carry_order_sizes_and_write_intent() {
    use diffinv::backend::params::SolverStepParams;
    let Some(backend) = new_cuda_emu() else {
        return;
    };
    let n = 77;
    let step = common::steps::full_step();
    let launch = StepLaunch { step: 4, seed: 11 };
    for dtype in [DType::F32, DType::F16] {
        let mut x = Tensor::zeros(&backend, Shape::flat(n), dtype).unwrap();
        let m = Tensor::zeros(&backend, Shape::flat(n), dtype).unwrap();
        let mut s = Tensor::zeros(&backend, Shape::flat(4 * slot_stride(n)), dtype).unwrap();
        solver_step(&backend, &step, launch, &mut x, &m, &mut s).unwrap();
        let rec = backend
            .device()
            .last_launch()
            .expect("a launch was recorded");
        let params = SolverStepParams::new(&step, launch, n as u32, slot_stride(n) as u32);
        let dev = backend.device();
        let expected = vec![
            (Param::Value(96), bytemuck::bytes_of(&params).to_vec(), 0),
            (Param::Out, vec![], dev.device_ptr(x.buffer().mem())),
            (Param::In, vec![], dev.device_ptr(m.buffer().mem())),
            (Param::Out, vec![], dev.device_ptr(s.buffer().mem())),
        ];
        assert_eq!(rec.args, expected, "{dtype:?}");
        let kernel = KERNELS.iter().find(|k| k.name == rec.kernel).unwrap();
        assert_eq!(
            kernel.params,
            expected.iter().map(|(p, ..)| *p).collect::<Vec<_>>()
        );
        assert_eq!(
            rec.cfg,
            backend.launch_config(if dtype == DType::F16 { 39 } else { 77 })
        );
        // Args that do not fit the declaration are refused before the device sees them.
        let bad = KernelArgs::<common::cuda_emu::EmuMem>::new()
            .value(&params)
            .input(x.buffer().mem());
        assert!(bad.check(kernel).is_err());
    }
}
