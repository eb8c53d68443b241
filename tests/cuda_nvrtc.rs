//! Every CUDA kernel compiles with NVRTC (exactly the source and options the
//! runtime compiles) for compute_80 and compute_90, and ptxas assembles each
//! entry point without register spills; the runtime's cubin path works for
//! sm_80 and sm_90. Needs no GPU; skips (or fails under `DIFFINV_REQUIRE=nvrtc`)
//! when libnvrtc, cuda_fp16.h or ptxas is absent.
//!
//! Also the host launcher on a recording device (no kernel runs): argument
//! packing and launch configuration (the buffer checks that make
//! `solver_step_raw` safe to call directly run on every backend in
//! `tests/bad_input.rs`).
#![cfg(feature = "cuda")]

mod common;

use std::process::Command;

use std::sync::Mutex;

use diffinv::backend::cuda::{
    compile_cubin, compile_ptx, kernels, launch_config, Arg, CudaBackend, CudaDevice, Kernel,
    KernelArgs, LaunchConfig, Param, VendorConv, VendorGemm, DEFAULT_BLOCK_SIZE, KERNELS,
    MAX_GRID_BLOCKS, MODULES,
};
use diffinv::backend::params::SolverStepParams;
use diffinv::ops::solver_step_raw;
use diffinv::solver::StepLaunch;
use diffinv::{Backend, DType, Error, HostSlice, HostVec};

const ARCHES: [(&str, &str); 2] = [("compute_80", "sm_80"), ("compute_90", "sm_90")];

fn ptxas() -> Option<String> {
    let candidate = std::env::var("DIFFINV_PTXAS").unwrap_or_else(|_| "ptxas".into());
    Command::new(&candidate)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| candidate)
}

/// `extern "C" __global__` entry points declared in a module's source (after
/// an optional `__launch_bounds__(…)`).
fn entry_points(source: &str) -> Vec<String> {
    source
        .split("extern \"C\" __global__ void ")
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start();
            match rest.strip_prefix("__launch_bounds__(") {
                Some(bounded) => bounded.split_once(')').map_or("", |(_, r)| r),
                None => rest,
            }
        })
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    if !kernels::nvrtc_available() {
        common::skip("nvrtc", "libnvrtc is not loadable (LD_LIBRARY_PATH)");
        return;
    }
    if kernels::include_dirs().is_empty() {
        common::skip(
            "nvrtc",
            "cuda_fp16.h not found (DIFFINV_CUDA_INCLUDE / CUDA_PATH)",
        );
        return;
    }
    let ptxas = ptxas();
    if ptxas.is_none() {
        common::skip(
            "nvrtc",
            "ptxas not found (DIFFINV_PTXAS / PATH): spill check skipped",
        );
    }
    let dir = std::env::temp_dir().join(format!("diffinv-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for m in MODULES {
        let module = m.name;
        let entries = entry_points(m.source);
        assert!(!entries.is_empty(), "{module}: no entry points found");
        for (virt, real) in ARCHES {
            let ptx = compile_ptx(m, virt).unwrap_or_else(|e| panic!("{module} for {virt}: {e}"));
            for e in &entries {
                assert!(
                    ptx.contains(&format!(".entry {e}(")),
                    "{module}/{virt}: {e} missing from the PTX"
                );
            }
            let Some(ptxas) = &ptxas else { continue };
            let path = dir.join(format!("{module}_{virt}.ptx"));
            std::fs::write(&path, &ptx).unwrap();
            let out = Command::new(ptxas)
                .args(["-v", "--gpu-name", real, "-o"])
                .arg(dir.join(format!("{module}_{real}.cubin")))
                .arg(&path)
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "ptxas {module} {real} failed:\n{log}");
            for e in &entries {
                let section = log
                    .split("Compiling entry function")
                    .find(|s| s.contains(&format!("'{e}'")))
                    .unwrap_or_else(|| panic!("ptxas reported nothing for {e}:\n{log}"));
                assert!(
                    section.contains("0 bytes spill stores, 0 bytes spill loads"),
                    "{module}/{real}/{e} spills:\n{section}"
                );
                let regs = section
                    .lines()
                    .find(|l| l.contains("Used"))
                    .unwrap_or("")
                    .trim();
                eprintln!("{module} {real} {e}: {regs}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn opening_a_gpu_without_one_is_an_error_not_a_panic() {
    match CudaBackend::new(0) {
        Ok(b) => eprintln!(
            "a CUDA device is present: {}",
            diffinv::Backend::device_name(&b)
        ),
        Err(Error::BackendUnavailable {
            backend: "cuda",
            reason,
        }) => eprintln!("cuda unavailable: {reason}"),
        Err(other) => panic!("expected BackendUnavailable, got {other}"),
    }
}

/// `from_raw` refuses a null context, and without a driver reports the
/// backend unavailable before touching the handle; on a GPU it opens on a
/// context and stream made here.
#[test]
fn a_raw_context_is_checked_and_never_panics() {
    // SAFETY: a null context is refused before anything uses it.
    let e = unsafe { CudaBackend::from_raw(std::ptr::null_mut(), std::ptr::null_mut()) };
    assert!(matches!(e, Err(Error::NullPointer { .. })), "{:?}", e.err());
    if !diffinv::backend::cuda::driver_installed() {
        let fake = std::ptr::NonNull::<u8>::dangling().as_ptr().cast();
        // SAFETY: without a driver the handle is never used.
        match unsafe { CudaBackend::from_raw(fake, std::ptr::null_mut()) } {
            Err(Error::BackendUnavailable {
                backend: "cuda",
                reason,
            }) => {
                assert!(reason.contains("libcuda"), "{reason}")
            }
            other => panic!("expected BackendUnavailable, got {:?}", other.err()),
        }
        return;
    }
    let ctx = match cudarc::driver::CudaContext::new(0) {
        Ok(ctx) => ctx,
        Err(e) => return eprintln!("a driver but no usable device: {e}"),
    };
    let stream = ctx.new_stream().unwrap();
    // SAFETY: ctx and stream outlive the backend (dropped after it).
    let b = unsafe { CudaBackend::from_raw(ctx.cu_ctx(), stream.cu_stream()) }.unwrap();
    assert_eq!(b.device().stream().cu_stream(), stream.cu_stream());
    drop(b);
}

#[test]
fn module_sources_splice_in_the_common_header() {
    for m in MODULES {
        let src = kernels::module_source(m);
        assert!(!src.contains("#include \"common.cuh\""), "{}", m.name);
        assert!(src.contains("struct SolverStepParams"), "{}", m.name);
        assert_eq!(kernels::module(m.name).unwrap().id, m.id);
    }
    assert!(kernels::module("nope").is_err());
}

/// Kernel and module ids are their positions (devices cache by id), and every
/// declared entry point exists in its module's source.
#[test]
fn the_kernel_table_is_consistent() {
    for (i, m) in MODULES.iter().enumerate() {
        assert_eq!(m.id, i, "module {}", m.name);
    }
    for (i, k) in KERNELS.iter().enumerate() {
        assert_eq!(k.id, i, "kernel {}", k.name);
        assert!(
            entry_points(k.module.source).contains(&k.name.to_string()),
            "{} is not an entry point of kernels/{}.cu",
            k.name,
            k.module.name
        );
    }
    for m in MODULES {
        for e in entry_points(m.source) {
            assert!(
                KERNELS
                    .iter()
                    .any(|k| k.name == e && std::ptr::eq(k.module, *m)),
                "kernels/{}.cu entry {e} is not in KERNELS",
                m.name
            );
        }
    }
}

#[test]
fn the_runtime_cubin_path_compiles_for_sm80_and_sm90() {
    if !kernels::nvrtc_available() || kernels::include_dirs().is_empty() {
        common::skip("nvrtc", "libnvrtc or cuda_fp16.h unavailable");
        return;
    }
    for m in MODULES {
        let module = m.name;
        for arch in ["sm_80", "sm_90"] {
            let cubin = compile_cubin(m, arch).unwrap_or_else(|e| panic!("{module} {arch}: {e}"));
            assert_eq!(&cubin[..4], b"\x7fELF", "{module} {arch}: not an ELF cubin");
        }
    }
    // A bad architecture is a Device error carrying NVRTC's message, not a panic.
    match compile_ptx(MODULES[0], "compute_1") {
        Err(Error::Device { message, .. }) => assert!(message.contains("compute_1"), "{message}"),
        other => panic!("expected a Device error, got {other:?}"),
    }
}

#[test]
fn options_are_per_module_and_forbid_contraction_where_exactness_is_promised() {
    let solver = kernels::module("solver").unwrap();
    assert!(
        !solver.contract_fma,
        "the solver family promises CPU-exact f32"
    );
    let opts = kernels::nvrtc_options(solver, "sm_90", &["/inc".to_string()]);
    assert!(opts.contains(&"--gpu-architecture=sm_90".to_string()));
    assert!(opts.contains(&"--fmad=false".to_string()));
    assert!(opts.contains(&"--include-path=/inc".to_string()));
    let gemm_like = diffinv::backend::cuda::Module {
        contract_fma: true,
        ..*solver
    };
    let opts = kernels::nvrtc_options(&gemm_like, "sm_90", &[]);
    assert!(opts.contains(&"--fmad=true".to_string()));
}

#[test]
fn launch_config_caps_the_grid_and_never_launches_zero_blocks() {
    let c = launch_config(1000, 256, 65_535);
    assert_eq!(
        (c.grid, c.block, c.shared_bytes),
        ((4, 1, 1), (256, 1, 1), 0)
    );
    assert_eq!(launch_config(1000, 96, 65_535).grid.0, 11);
    assert_eq!(launch_config(0, 256, 65_535).grid.0, 1);
    assert_eq!(launch_config(usize::MAX / 2, 160, 528).grid.0, 528);
    // Degenerate arguments are clamped, not a division by zero.
    assert_eq!(launch_config(10, 0, 0).grid, (1, 1, 1));
    assert_eq!(launch_config(10, 0, 0).block, (1, 1, 1));
}

const LAUNCH: StepLaunch = StepLaunch {
    step: 7,
    seed: 0x1234_5678_9abc_def0,
};

/// One recorded launch: kernel, configuration, and each argument's kind with
/// its value bytes or buffer address, in order.
type Recorded = (&'static str, LaunchConfig, Vec<(Param, Vec<u8>, u64)>);

/// A device that stores bytes in host memory and records launches without
/// running them; with `vendor` set it also takes (and records) the GEMMs a
/// vendor library would run, and with `convs` the convolutions (whether
/// each had a bias).
#[derive(Default)]
struct Recorder {
    launches: Mutex<Vec<Recorded>>,
    vendor: Option<Mutex<Vec<VendorGemm>>>,
    convs: Option<Mutex<Vec<(VendorConv, bool)>>>,
}

impl CudaDevice for Recorder {
    type Mem = Vec<u8>;

    fn name(&self) -> String {
        "recorder".into()
    }

    fn alloc_zeroed(&self, bytes: usize) -> diffinv::Result<Vec<u8>> {
        Ok(vec![0; bytes.max(1)])
    }

    fn write(&self, mem: &mut Vec<u8>, offset: usize, src: &[u8]) -> diffinv::Result<()> {
        mem[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, mem: &Vec<u8>, offset: usize, dst: &mut [u8]) -> diffinv::Result<()> {
        dst.copy_from_slice(&mem[offset..offset + dst.len()]);
        Ok(())
    }

    fn copy(&self, src: &Vec<u8>, dst: &mut Vec<u8>, bytes: usize) -> diffinv::Result<()> {
        dst[..bytes].copy_from_slice(&src[..bytes]);
        Ok(())
    }

    fn zero(&self, mem: &mut Vec<u8>) -> diffinv::Result<()> {
        mem.fill(0);
        Ok(())
    }

    fn device_ptr(&self, mem: &Vec<u8>) -> u64 {
        mem.as_ptr() as u64
    }

    unsafe fn launch(
        &self,
        kernel: &'static Kernel,
        cfg: LaunchConfig,
        args: KernelArgs<'_, Vec<u8>>,
    ) -> diffinv::Result<()> {
        let args = args
            .as_slice()
            .iter()
            .map(|a| match a {
                Arg::Value(b) => (a.param(), b.to_vec(), 0),
                Arg::In(m) => (a.param(), Vec::new(), self.device_ptr(m)),
                Arg::Out(m) => (a.param(), Vec::new(), self.device_ptr(m)),
            })
            .collect();
        self.launches.lock().unwrap().push((kernel.name, cfg, args));
        Ok(())
    }

    unsafe fn vendor_gemm(
        &self,
        gemm: &VendorGemm,
        _a: &Vec<u8>,
        _b: &Vec<u8>,
        _c: &mut Vec<u8>,
    ) -> diffinv::Result<bool> {
        let Some(calls) = &self.vendor else {
            return Ok(false);
        };
        calls.lock().unwrap().push(*gemm);
        Ok(true)
    }

    unsafe fn vendor_conv(
        &self,
        conv: &VendorConv,
        _x: &Vec<u8>,
        _w: &Vec<u8>,
        bias: Option<&Vec<u8>>,
        _out: &mut Vec<u8>,
    ) -> diffinv::Result<bool> {
        let Some(calls) = &self.convs else {
            return Ok(false);
        };
        calls.lock().unwrap().push((*conv, bias.is_some()));
        Ok(true)
    }

    fn has_library_conv(&self) -> bool {
        self.convs.is_some()
    }

    fn synchronize(&self) -> diffinv::Result<()> {
        Ok(())
    }
}

/// A conv2d, f32 or f16, goes to the device's convolution library when it
/// has one (cuDNN on a GPU), counted as one launch plus one for the bias,
/// unless the padding is one the library cannot express or
/// `set_library_conv(false)` asks for the kernel; without a library (the
/// recorder's default, like a GPU without libcudnn) the kernel runs.
#[test]
fn nn_conv2d_prefers_a_vendor_convolution_where_it_serves() {
    use diffinv::ops::nn::{self, Conv2d, ConvPath, NnOps};
    let g = Conv2d {
        batch: 2,
        cin: 3,
        h: 8,
        w: 6,
        cout: 4,
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    // diffusers' stride-2 downsampling with padding (0, 1): 4×3 outputs,
    // where cuDNN's (0, 0) would give 3×2.
    let down = Conv2d {
        stride: 2,
        pad: 0,
        ..g
    };
    let with_library = || Recorder {
        convs: Some(Mutex::default()),
        ..Recorder::default()
    };
    let last = |b: &CudaBackend<Recorder>| b.device().launches.lock().unwrap().pop();
    let convs =
        |b: &CudaBackend<Recorder>| b.device().convs.as_ref().unwrap().lock().unwrap().clone();

    for library in [false, true] {
        let mut b = CudaBackend::with_device(if library {
            with_library()
        } else {
            Recorder::default()
        });
        let buf = |n, dtype| b.alloc(n, dtype).unwrap();
        let (x, w, bias) = (
            buf(2 * 3 * 48, DType::F32),
            buf(4 * 27, DType::F32),
            buf(4, DType::F32),
        );
        let mut out = buf(2 * 4 * 48, DType::F32);
        let before = b.launch_count();
        nn::conv2d(&b, g, &x, &w, None, &mut out).unwrap();
        nn::conv2d(&b, g, &x, &w, Some(&bias), &mut out).unwrap();
        let path = if library {
            ConvPath::Cudnn
        } else {
            ConvPath::Kernels
        };
        assert_eq!(b.conv_path(), path);
        if !library {
            // No library: both calls launch the kernel.
            assert_eq!(b.launch_count(), before + 2);
            assert_eq!(b.device().launches.lock().unwrap().len(), 2);
            continue;
        }
        assert_eq!(b.launch_count(), before + 3, "conv, conv + bias add");
        assert!(b.device().launches.lock().unwrap().is_empty());
        let want = VendorConv::new(&g, DType::F32).unwrap();
        assert_eq!((*want.conv(), want.f16()), (g, false));
        assert_eq!(convs(&b), [(want, false), (want, true)]);

        // Padding cuDNN cannot express: the kernel.
        let mut small = buf(2 * 4 * 12, DType::F32);
        nn::conv2d(&b, down, &x, &w, Some(&bias), &mut small).unwrap();
        assert_eq!(last(&b).unwrap().0, "nn_conv2d_f32");
        // f16 storage: the library too, told so; with padding it cannot
        // express, the f16 kernel.
        let h = |n| b.alloc(n, DType::F16).unwrap();
        let (xh, wh, mut outh) = (h(2 * 3 * 48), h(4 * 27), h(2 * 4 * 48));
        nn::conv2d(&b, g, &xh, &wh, None, &mut outh).unwrap();
        let half = VendorConv::new(&g, DType::F16).unwrap();
        assert!(half.f16());
        assert_eq!(convs(&b)[2], (half, false));
        let mut small_h = h(2 * 4 * 12);
        nn::conv2d(&b, down, &xh, &wh, None, &mut small_h).unwrap();
        assert_eq!(last(&b).unwrap().0, "nn_conv2d_f16");
        // Switched off: the kernel, for the same call the library took.
        b.set_library_conv(false);
        assert_eq!(b.conv_path(), ConvPath::Kernels);
        nn::conv2d(&b, g, &x, &w, None, &mut out).unwrap();
        assert_eq!(last(&b).unwrap().0, "nn_conv2d_f32");
        assert_eq!(convs(&b).len(), 3);
    }
}

/// The nn GEMM kernels launch 256-thread blocks whatever the backend's block
/// size, on a grid capped per dimension; a matmul without bias goes to the
/// device's vendor GEMM when it has one (β = 1 when accumulating), counted as
/// one launch, and with a bias — or without a vendor GEMM — to the kernel;
/// f16 storage likewise, the vendor GEMM told it is f16.
#[test]
fn nn_gemms_launch_fixed_blocks_and_prefer_a_vendor_gemm_without_bias() {
    use diffinv::ops::nn::{self, Conv2d, Matmul};
    let last = |b: &CudaBackend<Recorder>| b.device().launches.lock().unwrap().pop();
    let mut b = CudaBackend::with_device(Recorder::default());
    b.set_block_size(96).unwrap();
    b.set_max_blocks(3).unwrap();
    let g = Conv2d {
        batch: 5,
        cin: 2,
        h: 20,
        w: 20,
        cout: 70,
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    let x = b.alloc(5 * 2 * 400, DType::F32).unwrap();
    let w = b.alloc(70 * 18, DType::F32).unwrap();
    let mut out = b.alloc(5 * 70 * 400, DType::F32).unwrap();
    nn::conv2d(&b, g, &x, &w, None, &mut out).unwrap();
    let (kernel, cfg, _) = last(&b).unwrap();
    assert_eq!(kernel, "nn_conv2d_f32");
    // 400 pixels = 7 tiles of 64 and 70 channels = 2 tiles, 5 items; cap 3.
    assert_eq!((cfg.grid, cfg.block), ((3, 2, 3), (256, 1, 1)));

    let mm = Matmul {
        batch: 2,
        m: 3,
        n: 4,
        k: 5,
        trans_a: true,
        trans_b: false,
        alpha: 0.5,
        accumulate: true,
    };
    let a = b.alloc(2 * 15, DType::F32).unwrap();
    let bm = b.alloc(2 * 20, DType::F32).unwrap();
    let mut c = b.alloc(2 * 12, DType::F32).unwrap();
    // No vendor GEMM on this device: the kernel.
    nn::matmul(&b, mm, &a, &bm, None, &mut c).unwrap();
    assert_eq!(last(&b).unwrap().0, "nn_matmul_f32");

    let v = CudaBackend::with_device(Recorder {
        vendor: Some(Mutex::default()),
        ..Recorder::default()
    });
    let (a, bm, bias) = (
        v.alloc(30, DType::F32).unwrap(),
        v.alloc(40, DType::F32).unwrap(),
        v.alloc(4, DType::F32).unwrap(),
    );
    let mut c = v.alloc(24, DType::F32).unwrap();
    let before = v.launch_count();
    nn::matmul(&v, mm, &a, &bm, None, &mut c).unwrap();
    let plain = Matmul {
        accumulate: false,
        ..mm
    };
    nn::matmul(&v, plain, &a, &bm, None, &mut c).unwrap();
    assert_eq!(v.launch_count(), before + 2);
    assert!(v.device().launches.lock().unwrap().is_empty());
    let calls = v.device().vendor.as_ref().unwrap().lock().unwrap().clone();
    let want = VendorGemm {
        batch: 2,
        m: 3,
        n: 4,
        k: 5,
        trans_a: true,
        trans_b: false,
        alpha: 0.5,
        beta: 1.0,
        f16: false,
    };
    assert_eq!(calls, [want, VendorGemm { beta: 0.0, ..want }]);
    // A bias: the kernel, which adds it.
    nn::matmul(&v, mm, &a, &bm, Some(&bias), &mut c).unwrap();
    assert_eq!(last(&v).unwrap().0, "nn_matmul_f32");
    assert_eq!(v.device().vendor.as_ref().unwrap().lock().unwrap().len(), 2);

    // f16 storage: the vendor GEMM too, told so (f16 in, f32 compute);
    // with a bias the f16 kernel.
    let h = |n| v.alloc(n, DType::F16).unwrap();
    let (a, bm, bias, mut c) = (h(30), h(40), h(4), h(24));
    let before = v.launch_count();
    nn::matmul(&v, mm, &a, &bm, None, &mut c).unwrap();
    let calls = v.device().vendor.as_ref().unwrap().lock().unwrap().clone();
    assert_eq!(calls[2], VendorGemm { f16: true, ..want });
    nn::matmul(&v, mm, &a, &bm, Some(&bias), &mut c).unwrap();
    assert_eq!(last(&v).unwrap().0, "nn_matmul_f16");
    assert_eq!(v.launch_count(), before + 2);
    assert_eq!(v.device().vendor.as_ref().unwrap().lock().unwrap().len(), 3);
    let (x, w, mut out) = (h(5 * 2 * 400), h(70 * 18), h(5 * 70 * 400));
    nn::conv2d(&v, g, &x, &w, None, &mut out).unwrap();
    let (kernel, cfg, _) = last(&v).unwrap();
    assert_eq!(kernel, "nn_conv2d_f16");
    assert_eq!(cfg.block, (256, 1, 1));
}

/// The typed builder passes (params, x, model_out, state) in the kernel's
/// order, with write intent exactly on x and the state.
#[test]
fn the_launcher_passes_typed_arguments_and_counts_launches() {
    let mut b = CudaBackend::with_device(Recorder::default());
    assert_eq!(b.block_size(), DEFAULT_BLOCK_SIZE);
    assert_eq!(b.max_blocks(), MAX_GRID_BLOCKS);
    assert!(!b.supports(DType::F64));
    assert!(matches!(
        b.alloc(4, DType::F64),
        Err(Error::UnsupportedDType { .. })
    ));
    let step = common::steps::full_step();
    for (dtype, n, kernel, work) in [
        (DType::F16, 1001usize, "solver_step_f16", 501usize),
        (DType::F32, 1001, "solver_step_f32", 1001),
    ] {
        for block in [DEFAULT_BLOCK_SIZE, 96] {
            b.set_block_size(block).unwrap();
            let stride = diffinv::solver::slot_stride(n);
            let mut x = b.alloc(n, dtype).unwrap();
            let m = b.alloc(n, dtype).unwrap();
            let mut s = b.alloc(4 * stride, dtype).unwrap();
            let before = b.launch_count();
            solver_step_raw(&b, &step, LAUNCH, dtype, n, stride, &mut x, &m, &mut s).unwrap();
            assert_eq!(b.launch_count(), before + 1);
            let (k, cfg, args) = b.device().launches.lock().unwrap().pop().unwrap();
            assert_eq!(k, kernel);
            assert_eq!(cfg, launch_config(work, block, MAX_GRID_BLOCKS));
            let params = SolverStepParams::new(&step, LAUNCH, n as u32, stride as u32);
            let dev = b.device();
            let expected = vec![
                (Param::Value(96), bytemuck::bytes_of(&params).to_vec(), 0),
                (Param::Out, Vec::new(), dev.device_ptr(x.mem())),
                (Param::In, Vec::new(), dev.device_ptr(m.mem())),
                (Param::Out, Vec::new(), dev.device_ptr(s.mem())),
            ];
            assert_eq!(args, expected);
        }
    }
    assert!(b.set_block_size(0).is_err());
    assert!(b.set_block_size(1025).is_err());
    assert!(b.set_max_blocks(0).is_err());
}

/// Arguments that do not match a kernel's declared signature are a typed
/// error before anything reaches the device.
#[test]
fn arguments_that_do_not_match_the_signature_are_rejected() {
    let kernel = KERNELS[0];
    let (mut x, m, mut s) = (vec![0u8; 8], vec![0u8; 8], vec![0u8; 8]);
    let params = [0u32; 24];
    let ok = KernelArgs::new()
        .value(&params)
        .output(&mut x)
        .input(&m)
        .output(&mut s);
    ok.check(kernel).unwrap();
    let (mut x, mut m2, mut s) = (vec![0u8; 8], vec![0u8; 8], vec![0u8; 8]);
    let cases: [KernelArgs<'_, Vec<u8>>; 3] = [
        // model_out passed as an output: wrong intent.
        KernelArgs::new()
            .value(&params)
            .output(&mut x)
            .output(&mut m2)
            .output(&mut s),
        // A params block of the wrong size.
        KernelArgs::new().value(&0u32),
        // Too few arguments.
        KernelArgs::new().value(&params),
    ];
    for args in cases {
        match args.check(kernel) {
            Err(Error::KernelSignature { kernel: k, .. }) => assert_eq!(k, kernel.name),
            other => panic!("expected KernelSignature, got {other:?}"),
        }
    }
}

#[test]
fn host_round_trips_convert_once_and_check_lengths() {
    let b = CudaBackend::with_device(Recorder::default());
    let data = [1.0f32, -2.5, 65504.0, 1e-8];
    let mut buf = b.alloc(4, DType::F16).unwrap();
    b.write(&mut buf, DType::F16, 0, HostSlice::F32(&data))
        .unwrap();
    match b.read(&buf, DType::F16, 0, 4).unwrap() {
        HostVec::F16(v) => {
            let want: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            assert_eq!(v, want);
        }
        other => panic!("expected f16, got {other:?}"),
    }
    // A partial write at an offset keeps the rest.
    b.write(&mut buf, DType::F16, 1, HostSlice::F32(&data[..2]))
        .unwrap();
    let got = b.read(&buf, DType::F16, 0, 4).unwrap().into_f32();
    assert_eq!(got, vec![1.0, 1.0, -2.5, 0.0]); // 1e-8 is below f16's smallest subnormal
    assert!(b
        .write(&mut buf, DType::F16, 2, HostSlice::F32(&data[..3]))
        .is_err());
    assert!(b
        .write(&mut buf, DType::F32, 0, HostSlice::F32(&data))
        .is_err());
    assert!(b.read(&buf, DType::F16, 0, 5).is_err());
    assert!(b.read(&buf, DType::F16, usize::MAX, 2).is_err());
}
