//! The C side of the ABI, through the system C compiler (`cc`): the header
//! compiles with `-Wall -Werror` as C11 and as C++17, and `tests/c/sampling.c`
//! — linked against this crate's static library — runs full sampling loops on
//! the CPU backend whose results equal the Rust API's bit for bit, and makes
//! calls with bad arguments that must each return an error status and a
//! message without aborting; `tests/c/guidance.c` does the same for C-ΠGDM
//! (Jacobian dropped, and exact with the product computed in C) and DDS loops
//! against `cpgdm_sample` / `dds_sample`; `tests/c/cuda.c` calls the CUDA
//! entries, which on a machine without a driver must return `UNAVAILABLE`
//! with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::cuda::{driver_installed, CudaBackend};
use diffinv::guidance::{CpgdmConfig, CpgdmPlan, ModelPoint};
use diffinv::ops::Operator;
use diffinv::sampler::{cpgdm_sample, dds_sample, DdsConfig, DdsPlan, GuidedDenoiser, Jacobian};
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

/// `tests/c/<name>.c`, strict C11 with `extra` flags, linked against the
/// static library, as an executable in the test's scratch directory.
fn compile(name: &str, extra: &[&str]) -> PathBuf {
    let exe = out_dir().join(name);
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(extra)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join(format!("tests/c/{name}.c")))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s", "-o"])
        .arg(&exe));
    exe
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

/// The C loop's final values (f32 bits) equal the Rust loop's, every one.
fn assert_bits_equal(got: &[u32], want: &[u32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g,
            w,
            "{what}: element {i}: C {} vs Rust {}",
            f32::from_bits(*g),
            f32::from_bits(*w)
        );
    }
}

#[test]
fn c_sampling_loop_matches_rust_and_bad_calls_return_errors() {
    let exe = compile("sampling", &["-O1"]);
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
        assert_bits_equal(&got, &want, &format!("{dtype:?} solver {solver}"));
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
    let exe = compile("cuda", &[]);
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

// `guidance.c`'s data and network, in the same f32 arithmetic.
fn start(i: usize) -> f32 {
    ((i * 37) % 101) as f32 / 50.0 - 1.0
}

fn measured(i: usize) -> f32 {
    ((i * 53) % 97) as f32 / 48.0 - 1.0
}

fn observed(i: usize) -> f32 {
    if (i * 7) % 5 < 3 {
        1.0
    } else {
        0.0
    }
}

fn net(x: f32, i: usize) -> f32 {
    0.6 * x + 0.05 * ((i % 13) as f32 - 6.0)
}

/// ε = 0.6·x + offset, and its exact VJP 0.6·m: what `guidance.c` computes.
struct LinearNet;

impl GuidedDenoiser<CpuBackend> for LinearNet {
    fn eps(
        &mut self,
        backend: &CpuBackend,
        x: &Tensor<CpuBackend>,
        _point: ModelPoint,
        out: &mut Tensor<CpuBackend>,
    ) -> diffinv::Result<()> {
        let eps: Vec<f32> = x
            .to_f32(backend)?
            .iter()
            .enumerate()
            .map(|(i, &v)| net(v, i))
            .collect();
        out.upload(backend, HostSlice::F32(&eps))
    }

    fn vjp(
        &mut self,
        backend: &CpuBackend,
        _x: &Tensor<CpuBackend>,
        _point: ModelPoint,
        m: &Tensor<CpuBackend>,
        out: &mut Tensor<CpuBackend>,
    ) -> diffinv::Result<bool> {
        let g: Vec<f32> = m.to_f32(backend)?.iter().map(|&v| 0.6 * v).collect();
        out.upload(backend, HostSlice::F32(&g))?;
        Ok(true)
    }
}

/// `guidance.c`'s operator `kind` (0: inpainting, kept entries; 1: 2× pooling),
/// its measurements y and start z.
fn problem(
    backend: &CpuBackend,
    kind: usize,
    dtype: DType,
) -> (Operator<CpuBackend>, Tensor<CpuBackend>, Tensor<CpuBackend>) {
    let item = Shape::from_dims(&DIMS[1..]).unwrap();
    let op = if kind == 0 {
        let mask: Vec<f32> = (0..item.checked_len().unwrap()).map(observed).collect();
        Operator::inpaint(backend, item, &mask, true).unwrap()
    } else {
        Operator::avg_pool(backend, item, 2).unwrap()
    };
    let tensor = |item: Shape, f: fn(usize) -> f32| {
        let shape = Shape::from_dims(&[&DIMS[..1], item.dims()].concat()).unwrap();
        let values: Vec<f32> = (0..shape.checked_len().unwrap()).map(f).collect();
        Tensor::from_host(backend, shape, dtype, HostSlice::F32(&values)).unwrap()
    };
    let y = tensor(op.y_item(), measured);
    let z = tensor(item, start);
    (op, y, z)
}

fn bits(backend: &CpuBackend, x: &Tensor<CpuBackend>) -> Vec<u32> {
    let out = x.to_f32(backend).unwrap();
    let z: Vec<f32> = (0..out.len()).map(start).collect();
    assert!(out.iter().zip(&z).any(|(a, b)| a != b), "the loop ran");
    assert!(out.iter().all(|v| v.is_finite()), "a finite sample");
    out.iter().map(|v| v.to_bits()).collect()
}

/// The Rust API's C-ΠGDM loop (default plan), as `guidance.c` runs it.
fn rust_guided(kind: usize, exact: bool, dtype: DType) -> Vec<u32> {
    let backend = CpuBackend::new();
    let (op, y, z) = problem(&backend, kind, dtype);
    let plan = CpgdmPlan::new(CpgdmConfig::default()).unwrap();
    let jacobian = if exact {
        Jacobian::Exact
    } else {
        Jacobian::Dropped
    };
    let x = cpgdm_sample(&backend, &plan, &op, &y, &z, &mut LinearNet, jacobian).unwrap();
    bits(&backend, &x)
}

/// The Rust API's DDS loop (8 steps, the other settings the defaults, seed 5).
fn rust_dds(kind: usize, dtype: DType) -> Vec<u32> {
    let backend = CpuBackend::new();
    let (op, y, z) = problem(&backend, kind, dtype);
    let plan = DdsPlan::new(DdsConfig {
        steps: 8,
        ..DdsConfig::default()
    })
    .unwrap();
    let x = dds_sample(&backend, &plan, &op, &y, &z, &mut LinearNet, 5, |_| {}).unwrap();
    bits(&backend, &x)
}

#[test]
fn c_guidance_and_dds_loops_match_rust_and_bad_calls_return_errors() {
    let exe = compile("guidance", &["-O1"]);
    let stdout = run(&mut Command::new(&exe));
    let (mut guided, mut dds) = (0, 0);
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let dtype_of = |w: &str| if w == "f16" { DType::F16 } else { DType::F32 };
        let (want, label, rest) = match words.as_slice() {
            ["guided", kind, jac, dtype, rest @ ..] => {
                guided += 1;
                let want = rust_guided(kind.parse().unwrap(), *jac == "1", dtype_of(dtype));
                (want, words[..4].join(" "), rest)
            }
            ["dds", kind, dtype, rest @ ..] => {
                dds += 1;
                (
                    rust_dds(kind.parse().unwrap(), dtype_of(dtype)),
                    words[..3].join(" "),
                    rest,
                )
            }
            _ => continue,
        };
        let got: Vec<u32> = rest
            .iter()
            .map(|w| u32::from_str_radix(w, 16).unwrap())
            .collect();
        assert_bits_equal(&got, &want, &label);
    }
    assert_eq!(
        guided, 8,
        "two operators × two Jacobian modes × two dtypes:\n{stdout}"
    );
    assert_eq!(dds, 4, "two operators × two dtypes:\n{stdout}");
    let bad = stdout.lines().filter(|l| l.starts_with("bad ")).count();
    assert_eq!(bad, 40, "every bad call reported an error:\n{stdout}");
}
