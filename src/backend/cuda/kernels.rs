//! The CUDA sources embedded in the crate and the NVRTC compilation every
//! caller (the driver device at run time, the tests ahead of time) shares.

use crate::error::{Error, Result};

const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Every kernel module: (name, source of `kernels/<name>.cu`).
pub const MODULES: &[(&str, &str)] = &[("solver", include_str!("../../../kernels/solver.cu"))];

/// The line each `.cu` file includes the shared header with.
const COMMON_INCLUDE: &str = "#include \"common.cuh\"";

/// A module's source as NVRTC compiles it: `common.cuh` spliced in where the
/// file includes it (NVRTC sees no files, only this string).
pub fn module_source(module: &str) -> Result<String> {
    let (_, source) = MODULES
        .iter()
        .find(|(name, _)| *name == module)
        .ok_or_else(|| device_error(format!("no kernel module named {module:?}")))?;
    let common = COMMON.replace("#pragma once", "");
    Ok(source.replacen(COMMON_INCLUDE, &common, 1))
}

fn device_error(message: String) -> Error {
    Error::Device {
        backend: "cuda",
        message,
    }
}

/// Directories searched for `cuda_fp16.h`: `DIFFINV_CUDA_INCLUDE`, then
/// `$CUDA_PATH/include`, then the usual toolkit location (only existing ones).
pub fn include_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    if let Ok(d) = std::env::var("DIFFINV_CUDA_INCLUDE") {
        dirs.push(d);
    }
    if let Ok(d) = std::env::var("CUDA_PATH") {
        dirs.push(format!("{d}/include"));
    }
    dirs.push("/usr/local/cuda/include".into());
    dirs.retain(|d| std::path::Path::new(d).join("cuda_fp16.h").is_file());
    dirs
}

/// Whether libnvrtc can be loaded (it must be on the loader path before the process starts).
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library loads; no NVRTC call is made.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compile `module` to PTX for a virtual or real architecture such as
/// `compute_80` or `sm_90`.
pub fn compile_ptx(module: &str, arch: &str) -> Result<String> {
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
    let opts = cudarc::nvrtc::CompileOptions {
        include_paths: includes,
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(format!("{module}.cu")),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(module_source(module)?, opts)
        .map_err(|e| device_error(format!("NVRTC compiling {module}.cu for {arch}: {e}")))?;
    Ok(ptx.to_src())
}
