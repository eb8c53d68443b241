//! Every CUDA kernel compiles with NVRTC (exactly the source the runtime
//! compiles) for compute_80 and compute_90, and ptxas assembles each entry
//! point without register spills. Needs no GPU; skips (or fails under
//! `DIFFINV_REQUIRE=nvrtc`) when libnvrtc, cuda_fp16.h or ptxas is absent.
#![cfg(feature = "cuda")]

mod common;

use std::process::Command;

use diffinv::backend::cuda::{compile_ptx, kernels, CudaBackend, MODULES};
use diffinv::Error;

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

/// `extern "C" __global__` entry points declared in a module's source.
fn entry_points(source: &str) -> Vec<String> {
    source
        .split("extern \"C\" __global__ void ")
        .skip(1)
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
    for (module, source) in MODULES {
        let entries = entry_points(source);
        assert!(!entries.is_empty(), "{module}: no entry points found");
        for (virt, real) in ARCHES {
            let ptx =
                compile_ptx(module, virt).unwrap_or_else(|e| panic!("{module} for {virt}: {e}"));
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

#[test]
fn module_sources_splice_in_the_common_header() {
    for (module, _) in MODULES {
        let src = kernels::module_source(module).unwrap();
        assert!(!src.contains("#include \"common.cuh\""), "{module}");
        assert!(src.contains("struct SolverStepParams"), "{module}");
    }
    assert!(kernels::module_source("nope").is_err());
}
