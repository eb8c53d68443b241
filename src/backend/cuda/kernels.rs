//! The CUDA sources embedded in the crate and the NVRTC compilation every
//! caller (the driver device at run time, the tests ahead of time) shares.
//!
//! The runtime compiles a module to a cubin for the device's real architecture
//! (`sm_XY`): NVRTC assembles it, so the driver never has to JIT PTX — PTX from a
//! newer NVRTC than the driver (e.g. a pip-installed 12.9 on a 12.2 driver) is
//! rejected as an unsupported PTX version, a cubin is not. The tests compile the
//! same source with the same options to PTX for `compute_80`/`compute_90` and run
//! ptxas on it themselves, to see register and spill counts.

use std::ffi::{c_char, CString};

use cudarc::nvrtc::sys;

use super::launch::{Kernel, Module};
use super::{fft, guidance, krylov, nn, operator, solver};
use crate::error::{Error, Result};

/// The headers `kernels/*.cu` include, spliced in by [`module_source`].
pub const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    (
        "operator.cuh",
        include_str!("../../../kernels/operator.cuh"),
    ),
];

/// Every kernel module (`kernels/<family>.cu`); `MODULES[i].id == i`.
pub const MODULES: &[&Module] = &[
    &solver::MODULE,
    &operator::MODULE,
    &guidance::MODULE,
    &krylov::MODULE,
    &fft::MODULE,
    &nn::MODULE,
];

/// Every kernel entry point; `KERNELS[i].id == i`.
pub const KERNELS: &[&Kernel] = &[
    &solver::STEP_F32,
    &solver::STEP_F16,
    &operator::APPLY_F32,
    &operator::APPLY_F16,
    &guidance::PASS_F32,
    &guidance::PASS_F16,
    &krylov::CG_PASS,
    &krylov::TWEEDIE_F32,
    &krylov::TWEEDIE_F16,
    &krylov::RENOISE_F32,
    &krylov::RENOISE_F16,
    &fft::LINES_F32,
    &fft::POINTWISE_F32,
    &nn::CONV2D_F32,
    &nn::MATMUL_F32,
    &nn::GROUP_NORM_F32,
    &nn::SOFTMAX_F32,
    &nn::ADD_F32,
    &nn::SILU_F32,
    &nn::UPSAMPLE2X_F32,
    &nn::CONCAT_F32,
    &nn::TIME_PROJ_F32,
    &nn::ADD_BIAS_F32,
    &nn::AFFINE_F32,
    &fft::CENTRE_F32,
    &nn::CONV2D_F16,
    &nn::MATMUL_F16,
    &nn::GROUP_NORM_F16,
    &nn::SOFTMAX_F16,
    &nn::ADD_F16,
    &nn::SILU_F16,
    &nn::UPSAMPLE2X_F16,
    &nn::CONCAT_F16,
    &nn::TIME_PROJ_F16,
    &nn::ADD_BIAS_F16,
    &nn::AFFINE_F16,
];

/// A module's source as NVRTC compiles it: each header of [`HEADERS`] spliced
/// in where the file includes it (NVRTC sees no files, only this string).
pub fn module_source(module: &Module) -> String {
    HEADERS
        .iter()
        .fold(module.source.to_string(), |src, (name, text)| {
            src.replacen(
                &format!("#include \"{name}\""),
                &text.replace("#pragma once", ""),
                1,
            )
        })
}

/// The module of that name, if any.
pub fn module(name: &str) -> Result<&'static Module> {
    MODULES
        .iter()
        .copied()
        .find(|m| m.name == name)
        .ok_or_else(|| device_error(format!("no kernel module named {name:?}")))
}

fn device_error(message: String) -> Error {
    Error::Device {
        backend: "cuda",
        message,
    }
}

/// Directories searched for `cuda_fp16.h`, in order: `DIFFINV_CUDA_INCLUDE`,
/// `$CUDA_PATH/include`, `$CUDA_HOME/include`, then the usual toolkit and distro
/// locations. Only directories that hold `cuda_fp16.h` are returned.
pub fn include_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    if let Ok(d) = std::env::var("DIFFINV_CUDA_INCLUDE") {
        dirs.push(d);
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Ok(d) = std::env::var(var) {
            dirs.push(format!("{d}/include"));
        }
    }
    for d in [
        "/usr/local/cuda/include",
        "/opt/cuda/include",
        "/usr/include",
        "/usr/local/cuda/targets/x86_64-linux/include",
        "/usr/local/cuda/targets/sbsa-linux/include",
    ] {
        dirs.push(d.into());
    }
    dirs.retain(|d| std::path::Path::new(d).join("cuda_fp16.h").is_file());
    dirs.dedup();
    dirs
}

/// Whether libnvrtc can be loaded (it must be on the loader path before the process starts).
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library loads; no NVRTC call is made.
    unsafe { sys::is_culib_present() }
}

/// The NVRTC options of `module` for `arch` (`compute_XY` or `sm_XY`).
///
/// `--fmad=false` unless the module allows contraction: the CPU reference
/// computes every `a·b + c` as a rounded multiply then a rounded add; with
/// FMAs the f32 results drift from it by an ulp. Element-wise families are
/// bandwidth-bound, so the extra instructions cost nothing measurable;
/// GEMM-like families keep FMAs and state tolerances instead.
pub fn nvrtc_options(module: &Module, arch: &str, include_dirs: &[String]) -> Vec<String> {
    let fmad = if module.contract_fma { "true" } else { "false" };
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        format!("--fmad={fmad}"),
    ];
    opts.extend(include_dirs.iter().map(|d| format!("--include-path={d}")));
    opts
}

/// What [`compile`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Ptx,
    Cubin,
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        unsafe {
            let _ = sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

fn check(what: &str, r: sys::nvrtcResult) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(device_error(format!("{what} failed: {r:?}")))
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| device_error(format!("NUL byte in NVRTC input {s:?}")))
}

/// Bytes of an NVRTC output buffer read with a size query and a fill call.
fn read_output(
    size: impl FnOnce(&mut usize) -> sys::nvrtcResult,
    fill: impl FnOnce(*mut c_char) -> sys::nvrtcResult,
    what: &str,
) -> Result<Vec<u8>> {
    let mut len = 0usize;
    check(what, size(&mut len))?;
    let mut buf = vec![0u8; len];
    check(what, fill(buf.as_mut_ptr().cast()))?;
    Ok(buf)
}

fn compile(module: &Module, arch: &str, output: Output) -> Result<Vec<u8>> {
    if !nvrtc_available() {
        return Err(Error::BackendUnavailable {
            backend: "cuda",
            reason: "libnvrtc is not loadable (is it on LD_LIBRARY_PATH?)".into(),
        });
    }
    let includes = include_dirs();
    if includes.is_empty() {
        return Err(Error::BackendUnavailable {
            backend: "cuda",
            reason: "cuda_fp16.h not found: set DIFFINV_CUDA_INCLUDE or CUDA_PATH".into(),
        });
    }
    let src = cstring(&module_source(module))?;
    let name = cstring(&format!("{}.cu", module.name))?;
    let opts = nvrtc_options(module, arch, &includes);
    let c_opts = opts
        .iter()
        .map(|o| cstring(o))
        .collect::<Result<Vec<_>>>()?;
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();

    let mut raw = std::ptr::null_mut();
    // SAFETY: src and name are NUL-terminated and outlive the program (dropped after it).
    check("nvrtcCreateProgram", unsafe {
        sys::nvrtcCreateProgram(
            &mut raw,
            src.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    })?;
    let prog = Program(raw);
    // SAFETY: opt_ptrs holds opts.len() pointers to live NUL-terminated strings.
    let compiled =
        unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        // SAFETY: the program is live; the buffer is sized by the size query.
        let log = read_output(
            |n| unsafe { sys::nvrtcGetProgramLogSize(prog.0, n) },
            |p| unsafe { sys::nvrtcGetProgramLog(prog.0, p) },
            "nvrtcGetProgramLog",
        )
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .to_string()
        })
        .unwrap_or_default();
        return Err(device_error(format!(
            "NVRTC compiling {}.cu for {arch} failed ({compiled:?}), options {opts:?}:\n{log}",
            module.name
        )));
    }
    // SAFETY (both arms): the program compiled; each buffer is sized by its size query.
    let mut bytes = match output {
        Output::Ptx => read_output(
            |n| unsafe { sys::nvrtcGetPTXSize(prog.0, n) },
            |p| unsafe { sys::nvrtcGetPTX(prog.0, p) },
            "nvrtcGetPTX",
        )?,
        Output::Cubin => read_output(
            |n| unsafe { sys::nvrtcGetCUBINSize(prog.0, n) },
            |p| unsafe { sys::nvrtcGetCUBIN(prog.0, p) },
            "nvrtcGetCUBIN",
        )?,
    };
    if output == Output::Ptx {
        // PTX comes NUL-terminated.
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(device_error(format!(
            "NVRTC produced no {output:?} for {}.cu at {arch}",
            module.name
        )));
    }
    Ok(bytes)
}

/// Compile `module` to PTX for an architecture such as `compute_80`, with
/// exactly the source and [`nvrtc_options`] the runtime uses. A compile error
/// is [`Error::Device`] carrying NVRTC's log.
pub fn compile_ptx(module: &Module, arch: &str) -> Result<String> {
    let bytes = compile(module, arch, Output::Ptx)?;
    String::from_utf8(bytes).map_err(|e| device_error(format!("PTX is not UTF-8: {e}")))
}

/// Compile `module` to a cubin for a real architecture such as `sm_90` (what
/// the driver device loads).
pub fn compile_cubin(module: &Module, arch: &str) -> Result<Vec<u8>> {
    compile(module, arch, Output::Cubin)
}
