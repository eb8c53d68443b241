//! The C side of the ABI, through the system C compiler (`cc`): the header
//! compiles with `-Wall -Werror` as C11 and as C++17, and `tests/c/sampling.c`
//! — linked against this crate's static library — runs full sampling loops on
//! the CPU backend whose results equal the Rust API's bit for bit, and makes
//! calls with bad arguments that must each return an error status and a
//! message without aborting; `tests/c/cuda.c` calls the CUDA entries, which on
//! a machine without a driver must return `UNAVAILABLE` with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::cuda::{driver_installed, CudaBackend};
use diffinv::{
    DType, Error, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    SolverRun, Tensor,
};

const DIMS: [usize; 4] = [2, 3, 8, 8];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The static library cargo built with this test binary, beside it in
/// target/<profile>/deps (the copy one level up is refreshed only by builds
/// that name the library itself).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.with_file_name("libdiffinv_capi.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn header_compiles_as_c11_and_cxx17() {
    let include = crate_dir().join("include");
    let src = crate_dir().join("tests/c/header_only.c");
    for (compiler, std, lang) in [("cc", "-std=c11", "c"), ("c++", "-std=c++17", "c++")] {
        run(Command::new(compiler)
            .args([
                std,
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-fsyntax-only",
                "-x",
                lang,
            ])
            .arg("-I")
            .arg(&include)
            .arg(&src));
    }
}

/// The Rust API's loop, as `sampling.c` runs it through the C ABI.
fn rust_loop(solver: usize, dtype: DType) -> Vec<u32> {
    let backend = CpuBackend::new();
    let solver = match solver {
        0 => Solver::DPMPP_3M,
        1 => Solver::UniPc,
        _ => Solver::Ddim { eta: 0.5 },
    };
    let config = PlanConfig {
        solver,
        steps: 8,
        ..PlanConfig::default()
    };
    let plan = Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap();
    let shape = Shape::from_dims(&DIMS).unwrap();
    let n = shape.checked_len().unwrap();
    let x0: Vec<f32> = (0..n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let mut x = Tensor::from_host(&backend, shape, dtype, HostSlice::F32(&x0)).unwrap();
    let options = SamplerOptions {
        seed: 11,
        check_finite: false,
    };
    let mut run = SolverRun::new(&backend, &plan, shape, dtype, options).unwrap();
    for k in 0..plan.len() {
        let eps: Vec<f32> = x
            .to_f32(&backend)
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, &v)| 0.6 * v + 0.05 * ((i % 13) as f32 - 6.0))
            .collect();
        run.model_out_mut()
            .upload(&backend, HostSlice::F32(&eps))
            .unwrap();
        run.step(&backend, k, &mut x).unwrap();
    }
    let out = x.to_f32(&backend).unwrap();
    assert!(out.iter().zip(&x0).any(|(a, b)| a != b), "the loop ran");
    out.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn c_sampling_loop_matches_rust_and_bad_calls_return_errors() {
    let exe = out_dir().join("sampling");
    run(Command::new("cc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/sampling.c"))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s", "-o"])
        .arg(&exe));
    let stdout = run(&mut Command::new(&exe));
    let mut loops = 0;
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let dtype = match words.next() {
            Some("f32") => DType::F32,
            Some("f16") => DType::F16,
            _ => continue,
        };
        let solver: usize = words.next().unwrap().parse().unwrap();
        let got: Vec<u32> = words.map(|w| u32::from_str_radix(w, 16).unwrap()).collect();
        let want = rust_loop(solver, dtype);
        assert_eq!(got.len(), want.len(), "{dtype:?} solver {solver}: length");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "{dtype:?} solver {solver}: element {i}: C {} vs Rust {}",
                f32::from_bits(*g),
                f32::from_bits(*w)
            );
        }
        loops += 1;
    }
    assert_eq!(loops, 6, "three solvers × two dtypes:\n{stdout}");
    let bad = stdout.lines().filter(|l| l.starts_with("bad ")).count();
    assert_eq!(bad, 17, "every bad call reported an error:\n{stdout}");
}

/// `cuda.c`, told what the Rust API finds here (no driver, a driver but no
/// device, or a device) and the reason it gives: the C entries must agree.
#[test]
fn c_cuda_entries_report_what_this_machine_has() {
    let exe = out_dir().join("cuda");
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/cuda.c"))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s", "-o"])
        .arg(&exe));
    let mut cmd = Command::new(&exe);
    match CudaBackend::new(0) {
        Ok(_) => cmd.arg("device"),
        Err(Error::BackendUnavailable { reason, .. }) => {
            let mode = if driver_installed() {
                "no-device"
            } else {
                "no-driver"
            };
            cmd.args([mode, reason.as_str()])
        }
        Err(e) => panic!("opening CUDA device 0: {e}"),
    };
    let stdout = run(&mut cmd);
    assert!(stdout.contains("cuda device 0:"), "{stdout}");
}
