//! The fused DPM-Solver++ 2M update vs the unfused framework sequence.
//!
//! One real mid-run step (step 5 of a 20-step DPM-Solver++ 2M plan on the DDPM
//! linear schedule: reads x, ε and one history slot, writes x and one history
//! slot) at 1×3×256×256 and 16×3×256×256, f16 and f32, on every backend that
//! opens here (cpu always; wgpu if an adapter opens — lavapipe on a machine
//! without a GPU, which proves the shaders run, not how fast a GPU is).
//!
//! Baseline ("unfused"): one pass per elementwise op, the way a framework runs
//!
//! ```text
//! D = x/α;  D = D − (σ/α)·ε;  out = (σ_t/σ_s)·x;  out += b0·D;  out += b1·D_prev;  history ← D
//! ```
//!
//! - cpu: plain passes over `Vec<f32>` temporaries, each pass parallel over
//!   rayon chunks (a framework's parallel-for); f16 inputs are converted to f32
//!   first and the results back with `half`'s slice conversions, and those
//!   conversions are passes too (10 passes for f16, 6 for f32; in f32 the new x
//!   is the `out` temporary, as a framework rebinds it).
//! - wgpu: the crate's one kernel, one elementwise op per launch: a
//!   `SolverStep` with no history slots, `a = 0`, `b0 = 1` computes
//!   `x ← cx·x − ce·m` in place — a read-2-write-1 pass like a framework binary
//!   op (6 launches). Its temporaries are in the storage dtype, not f32, which
//!   favours the baseline for f16.
//!
//! Throughput is the minimum byte count of the fused step: read x, ε, D_prev
//! and write x, D_new = 5 tensors × n × dtype size. The same run measures the
//! copy bandwidth (a memcpy of twice the last-level cache on cpu, a
//! buffer-to-buffer copy on wgpu)
//! and prints, per case, the median time, GB/s of the minimum byte count, the
//! fraction of copy bandwidth and the launches per step; a summary table goes
//! to stderr at the end.
//!
//! Every timed iteration starts from the same inputs: x is restored (untimed)
//! before each step, because the update is expanding and repeating it would
//! run into f16 overflow.

use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use diffinv::backend::cpu::CpuBackend;
use diffinv::backend::Backend;
use diffinv::ops::{solver_step, SolverOps};
use diffinv::solver::{slot_stride, PlanStep, SolverStep, StepLaunch};
use diffinv::{rng, DType, HostSlice, NoiseSchedule, Plan, PlanConfig, Shape, Solver, Tensor};

/// The plan step benchmarked: mid-run, second order (reads one history slot).
const STEP: usize = 5;
const SHAPES: [[usize; 4]; 2] = [[1, 3, 256, 256], [16, 3, 256, 256]];
const DTYPES: [DType; 2] = [DType::F16, DType::F32];
/// Elements per task of the CPU baseline's parallel passes.
const GRAIN: usize = 1 << 15;
/// The largest data cache of CPU 0 (Linux sysfs), 32 MiB where it cannot be read.
static LAST_LEVEL_CACHE: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(last_level_cache_bytes);

fn last_level_cache_bytes() -> usize {
    let parse = |text: &str| {
        let text = text.trim();
        let (digits, unit) = text.split_at(text.trim_end_matches(['K', 'M', 'G']).len());
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1,
        };
        digits.parse::<usize>().ok().map(|v| v * scale)
    };
    (0..8)
        .filter_map(|i| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size"))
                .ok()
        })
        .filter_map(|t| parse(&t))
        .max()
        .unwrap_or(32 << 20)
}

/// Bytes of the CPU copy-bandwidth measurement (each of source and destination):
/// at least 256 MiB and twice the last-level cache, so the copy runs from DRAM.
static COPY_BYTES: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| (2 * *LAST_LEVEL_CACHE).max(256 << 20));

/// Bytes read and written between "cold" iterations to push the step's
/// tensors out of the caches: twice the last-level cache, at least 64 MiB.
static EVICT_BYTES: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| (2 * *LAST_LEVEL_CACHE).max(64 << 20));

static EVICT: std::sync::LazyLock<std::sync::Mutex<Vec<u64>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(vec![1; *EVICT_BYTES / 8]));

/// Read-modify-write [`EVICT_BYTES`] (plain stores: a memset may bypass the cache).
fn evict_caches() {
    let mut v = EVICT.lock().expect("evict buffer");
    v.iter_mut().for_each(|e| *e = e.wrapping_mul(3));
    black_box(&mut *v);
}

fn suffix(cold: bool) -> &'static str {
    if cold {
        "-cold"
    } else {
        ""
    }
}

/// One measured case, for the summary table.
struct Row {
    backend: String,
    what: String,
    shape: [usize; 4],
    dtype: Option<DType>,
    /// Bytes the case moves at minimum (fused byte count, or 2× the copy size).
    bytes: u64,
    median: Duration,
    /// Launches (cpu baseline: passes) per step.
    launches: u64,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.median.as_secs_f64() / 1e9
    }
}

type Log = Rc<RefCell<Vec<Duration>>>;

fn median(log: &Log) -> Duration {
    let mut v = log.borrow().clone();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn shape_name(s: [usize; 4]) -> String {
    format!("{}x{}x{}x{}", s[0], s[1], s[2], s[3])
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::C64 => "c64",
        DType::U32 => "u32",
    }
}

/// The benchmarked plan step.
fn plan_step() -> PlanStep {
    let config = PlanConfig {
        solver: Solver::DPMPP_2M,
        steps: 20,
        ..PlanConfig::default()
    };
    let plan = Plan::new(&NoiseSchedule::ddpm_linear(), &config).expect("plan");
    let s = plan.steps[STEP];
    assert!(
        s.update.d_slot.is_some() && s.update.h1.is_some() && s.update.h2.is_none(),
        "step {STEP} must read one history slot and write one: {:?}",
        s.update
    );
    s
}

/// Scalars of the unfused sequence, from the plan step.
#[derive(Clone, Copy)]
struct Unfused {
    /// α of the point the model was evaluated at (D = x/α …).
    alpha: f32,
    /// σ/α.
    ce: f32,
    /// σ_t/σ_s.
    r: f32,
    b0: f32,
    b1: f32,
}

impl Unfused {
    fn new(p: &PlanStep) -> Self {
        Unfused {
            alpha: p.point.alpha as f32,
            ce: p.update.ce as f32,
            r: p.update.a as f32,
            b0: p.update.b[0] as f32,
            b1: p.update.b[1] as f32,
        }
    }
}

/// Host inputs of one case (f32; uploaded in the run dtype).
struct Inputs {
    x: Vec<f32>,
    eps: Vec<f32>,
    dprev: Vec<f32>,
}

impl Inputs {
    fn new(n: usize) -> Self {
        let scale = |v: Vec<f32>, s: f32| v.into_iter().map(|e| e * s).collect();
        Inputs {
            x: rng::normal_vec(1, n),
            eps: rng::normal_vec(2, n),
            dprev: scale(rng::normal_vec(3, n), 0.5),
        }
    }
}

/// Host data in a storage dtype, for untimed restores.
enum Stored {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Stored {
    fn new(v: &[f32], dtype: DType) -> Self {
        match dtype {
            DType::F16 => {
                let mut h = vec![f16::ZERO; v.len()];
                h.convert_from_f32_slice(v);
                Stored::F16(h)
            }
            _ => Stored::F32(v.to_vec()),
        }
    }

    fn slice(&self) -> HostSlice<'_> {
        match self {
            Stored::F16(v) => HostSlice::F16(v),
            Stored::F32(v) => HostSlice::F32(v),
        }
    }
}

/// Time `op` once per iteration after an untimed `restore`, logging each time.
fn timed<B: Backend>(
    backend: &B,
    log: &Log,
    launches: &Rc<RefCell<u64>>,
    iters: u64,
    mut restore: impl FnMut(),
    mut op: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        restore();
        backend.synchronize().expect("synchronize");
        let l0 = backend.launch_count();
        let t = Instant::now();
        op();
        backend.synchronize().expect("synchronize");
        let dt = t.elapsed();
        *launches.borrow_mut() = backend.launch_count() - l0;
        total += dt;
        log.borrow_mut().push(dt);
    }
    total
}

/// The fused step on any backend.
fn bench_fused<B: SolverOps>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    backend: &B,
    ps: &PlanStep,
    shape: [usize; 4],
    dtype: DType,
    cold: bool,
    rows: &mut Vec<Row>,
) -> diffinv::Result<()> {
    let sh = Shape::from_dims(&shape)?;
    let n = sh.checked_len()?;
    let inputs = Inputs::new(n);
    let stride = slot_stride(n);
    let slots = ps.update.slots_used() as usize;
    let mut state_host = vec![0f32; slots * stride];
    let h1 = ps.update.h1.expect("h1") as usize;
    state_host[h1 * stride..h1 * stride + n].copy_from_slice(&inputs.dprev);
    let x0 = Stored::new(&inputs.x, dtype);
    let mut x = Tensor::from_host(backend, sh, dtype, x0.slice())?;
    let eps = Tensor::from_host(backend, sh, dtype, HostSlice::F32(&inputs.eps))?;
    let mut state = Tensor::from_host(
        backend,
        Shape::flat(state_host.len()),
        dtype,
        HostSlice::F32(&state_host),
    )?;
    let launch = StepLaunch { step: 5, seed: 0 };
    let log: Log = Rc::default();
    let launches = Rc::new(RefCell::new(0));
    let id = format!(
        "{}/fused{}/{}/{}",
        backend.kind(),
        suffix(cold),
        shape_name(shape),
        dtype_name(dtype)
    );
    group.throughput(Throughput::Bytes(min_bytes(n, dtype)));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let x = RefCell::new(&mut x);
            timed(
                backend,
                &log,
                &launches,
                iters,
                || {
                    x.borrow_mut().upload(backend, x0.slice()).expect("restore");
                    if cold {
                        evict_caches();
                    }
                },
                || {
                    solver_step(
                        backend,
                        &ps.update,
                        launch,
                        &mut x.borrow_mut(),
                        &eps,
                        &mut state,
                    )
                    .expect("fused step");
                },
            )
        })
    });
    let launches = *launches.borrow();
    rows.push(Row {
        backend: backend.kind().to_string(),
        what: format!("fused{}", suffix(cold)),
        shape,
        dtype: Some(dtype),
        bytes: min_bytes(n, dtype),
        median: median(&log),
        launches,
    });
    Ok(())
}

/// 5 tensors (read x, ε, D_prev; write x, D_new) × n × dtype size.
fn min_bytes(n: usize, dtype: DType) -> u64 {
    (5 * n * dtype.size()) as u64
}

/// One elementwise launch of the crate's kernel: `dst ← cx·dst − ce·src`.
// Only device backends use it (wgpu today).
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
fn elementwise(cx: f64, ce: f64) -> SolverStep {
    SolverStep {
        cx,
        ce,
        d_slot: None,
        h1: None,
        h2: None,
        xc_slot: None,
        corrector: None,
        a: 0.0,
        b: [1.0, 0.0, 0.0],
        noise: 0.0,
    }
}

/// The unfused sequence on a device backend, one kernel launch per op.
// Only device backends use it (wgpu today).
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
fn bench_unfused_device<B: SolverOps>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    backend: &B,
    ps: &PlanStep,
    shape: [usize; 4],
    dtype: DType,
    rows: &mut Vec<Row>,
) -> diffinv::Result<()> {
    let sh = Shape::from_dims(&shape)?;
    let n = sh.checked_len()?;
    let inputs = Inputs::new(n);
    let k = Unfused::new(ps);
    let x0 = Stored::new(&inputs.x, dtype);
    let mut x = Tensor::from_host(backend, sh, dtype, x0.slice())?;
    let eps = Tensor::from_host(backend, sh, dtype, HostSlice::F32(&inputs.eps))?;
    let dprev = Tensor::from_host(backend, sh, dtype, HostSlice::F32(&inputs.dprev))?;
    let mut d = Tensor::zeros(backend, sh, dtype)?;
    let mut out = Tensor::zeros(backend, sh, dtype)?;
    let mut hist = Tensor::zeros(backend, sh, dtype)?;
    let mut none = Tensor::zeros(backend, Shape::flat(1), dtype)?;
    let ops = [
        elementwise(0.0, -1.0 / f64::from(k.alpha)), // D = x/α
        elementwise(1.0, f64::from(k.ce)),           // D −= (σ/α)·ε
        elementwise(0.0, -f64::from(k.r)),           // out = (σ_t/σ_s)·x
        elementwise(1.0, -f64::from(k.b0)),          // out += b0·D
        elementwise(1.0, -f64::from(k.b1)),          // out += b1·D_prev
        elementwise(0.0, -1.0),                      // history ← D
    ];
    let launch = StepLaunch { step: 5, seed: 0 };
    let log: Log = Rc::default();
    let launches = Rc::new(RefCell::new(0));
    let id = format!(
        "{}/unfused/{}/{}",
        backend.kind(),
        shape_name(shape),
        dtype_name(dtype)
    );
    group.throughput(Throughput::Bytes(min_bytes(n, dtype)));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let x = RefCell::new(&mut x);
            timed(
                backend,
                &log,
                &launches,
                iters,
                || x.borrow_mut().upload(backend, x0.slice()).expect("restore"),
                || {
                    let x = x.borrow();
                    let r = (|| {
                        solver_step(backend, &ops[0], launch, &mut d, &x, &mut none)?;
                        solver_step(backend, &ops[1], launch, &mut d, &eps, &mut none)?;
                        solver_step(backend, &ops[2], launch, &mut out, &x, &mut none)?;
                        solver_step(backend, &ops[3], launch, &mut out, &d, &mut none)?;
                        solver_step(backend, &ops[4], launch, &mut out, &dprev, &mut none)?;
                        solver_step(backend, &ops[5], launch, &mut hist, &d, &mut none)
                    })();
                    r.expect("unfused step");
                },
            )
        })
    });
    let launches = *launches.borrow();
    rows.push(Row {
        backend: backend.kind().to_string(),
        what: "unfused".into(),
        shape,
        dtype: Some(dtype),
        bytes: min_bytes(n, dtype),
        median: median(&log),
        launches,
    });
    Ok(())
}

// ---- CPU baseline: parallel passes over f32 temporaries -------------------

fn pass_to_f32(dst: &mut [f32], src: &[f16]) {
    dst.par_chunks_mut(GRAIN)
        .zip(src.par_chunks(GRAIN))
        .for_each(|(d, s)| s.convert_to_f32_slice(d));
}

fn pass_to_f16(dst: &mut [f16], src: &[f32]) {
    dst.par_chunks_mut(GRAIN)
        .zip(src.par_chunks(GRAIN))
        .for_each(|(d, s)| d.convert_from_f32_slice(s));
}

/// `dst = f(a)`.
fn pass_unary(dst: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    dst.par_chunks_mut(GRAIN)
        .zip(a.par_chunks(GRAIN))
        .for_each(|(d, a)| d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(a)));
}

/// `dst = f(dst, a)`.
fn pass_binary(dst: &mut [f32], a: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    dst.par_chunks_mut(GRAIN)
        .zip(a.par_chunks(GRAIN))
        .for_each(|(d, a)| d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(*d, a)));
}

fn pass_copy(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(GRAIN)
        .zip(src.par_chunks(GRAIN))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// f32 temporaries of the CPU baseline.
struct Temps {
    xf: Vec<f32>,
    ef: Vec<f32>,
    pf: Vec<f32>,
    d: Vec<f32>,
    out: Vec<f32>,
}

impl Temps {
    fn new(n: usize) -> Self {
        let v = || vec![0f32; n];
        Temps {
            xf: v(),
            ef: v(),
            pf: v(),
            d: v(),
            out: v(),
        }
    }
}

/// The six ops on f32 operands (5 passes: D, D, out, out, out).
fn ops_f32(k: Unfused, t_d: &mut [f32], t_out: &mut [f32], x: &[f32], e: &[f32], p: &[f32]) {
    let Unfused {
        alpha,
        ce,
        r,
        b0,
        b1,
    } = k;
    pass_unary(t_d, x, |x| x / alpha);
    pass_binary(t_d, e, |d, e| d - ce * e);
    pass_unary(t_out, x, |x| r * x);
    pass_binary(t_out, t_d, |o, d| o + b0 * d);
    pass_binary(t_out, p, |o, p| o + b1 * p);
}

/// f16 storage: 3 conversions in, 5 ops, 2 conversions out (history, x) = 10 passes.
fn unfused_cpu_f16(
    k: Unfused,
    t: &mut Temps,
    x: &mut [f16],
    eps: &[f16],
    dprev: &[f16],
    hist: &mut [f16],
) {
    pass_to_f32(&mut t.xf, x);
    pass_to_f32(&mut t.ef, eps);
    pass_to_f32(&mut t.pf, dprev);
    ops_f32(k, &mut t.d, &mut t.out, &t.xf, &t.ef, &t.pf);
    pass_to_f16(hist, &t.d);
    pass_to_f16(x, &t.out);
}

/// f32 storage: 5 ops and the history copy = 6 passes; the new x is `out`.
fn unfused_cpu_f32(
    k: Unfused,
    t: &mut Temps,
    x: &[f32],
    eps: &[f32],
    dprev: &[f32],
    hist: &mut [f32],
) {
    ops_f32(k, &mut t.d, &mut t.out, x, eps, dprev);
    pass_copy(hist, &t.d);
}

fn bench_unfused_cpu(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    cpu: &CpuBackend,
    ps: &PlanStep,
    shape: [usize; 4],
    dtype: DType,
    cold: bool,
    rows: &mut Vec<Row>,
) -> diffinv::Result<()> {
    let n = Shape::from_dims(&shape)?.checked_len()?;
    let inputs = Inputs::new(n);
    let k = Unfused::new(ps);
    let mut t = Temps::new(n);
    let x0 = Stored::new(&inputs.x, dtype);
    let (eps, dprev) = (
        Stored::new(&inputs.eps, dtype),
        Stored::new(&inputs.dprev, dtype),
    );
    let mut x = Stored::new(&inputs.x, dtype);
    let mut hist = Stored::new(&vec![0f32; n], dtype);
    let passes = match dtype {
        DType::F16 => 10,
        _ => 6,
    };

    // Sanity: the baseline computes what the fused step computes.
    check_unfused_matches(cpu, ps, k, &inputs, dtype, &mut t)?;

    let log: Log = Rc::default();
    let launches = Rc::new(RefCell::new(0));
    let id = format!(
        "cpu/unfused{}/{}/{}",
        suffix(cold),
        shape_name(shape),
        dtype_name(dtype)
    );
    group.throughput(Throughput::Bytes(min_bytes(n, dtype)));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let state = RefCell::new((&mut x, &mut hist, &mut t));
            timed(
                cpu,
                &log,
                &launches,
                iters,
                || {
                    let mut s = state.borrow_mut();
                    match (&mut *s.0, &x0) {
                        (Stored::F16(d), Stored::F16(s)) => d.copy_from_slice(s),
                        (Stored::F32(d), Stored::F32(s)) => d.copy_from_slice(s),
                        _ => unreachable!(),
                    }
                    if cold {
                        evict_caches();
                    }
                },
                || {
                    let mut s = state.borrow_mut();
                    let (x, hist, t) = &mut *s;
                    match (&mut **x, &eps, &dprev, &mut **hist) {
                        (Stored::F16(x), Stored::F16(e), Stored::F16(p), Stored::F16(h)) => {
                            unfused_cpu_f16(k, t, x, e, p, h)
                        }
                        (Stored::F32(x), Stored::F32(e), Stored::F32(p), Stored::F32(h)) => {
                            unfused_cpu_f32(k, t, x, e, p, h)
                        }
                        _ => unreachable!(),
                    }
                    black_box(&mut **x);
                },
            )
        })
    });
    rows.push(Row {
        backend: "cpu".into(),
        what: format!("unfused{}", suffix(cold)),
        shape,
        dtype: Some(dtype),
        bytes: min_bytes(n, dtype),
        median: median(&log),
        launches: passes,
    });
    Ok(())
}

/// The CPU baseline's new x and history must match the fused step's.
fn check_unfused_matches(
    cpu: &CpuBackend,
    ps: &PlanStep,
    k: Unfused,
    inputs: &Inputs,
    dtype: DType,
    t: &mut Temps,
) -> diffinv::Result<()> {
    let n = inputs.x.len();
    let sh = Shape::flat(n);
    let stride = slot_stride(n);
    let slots = ps.update.slots_used() as usize;
    let mut state_host = vec![0f32; slots * stride];
    let (h1, ds) = (
        ps.update.h1.expect("h1") as usize,
        ps.update.d_slot.expect("d_slot") as usize,
    );
    state_host[h1 * stride..h1 * stride + n].copy_from_slice(&inputs.dprev);
    let mut x = Tensor::from_host(cpu, sh, dtype, HostSlice::F32(&inputs.x))?;
    let eps = Tensor::from_host(cpu, sh, dtype, HostSlice::F32(&inputs.eps))?;
    let mut state = Tensor::from_host(
        cpu,
        Shape::flat(state_host.len()),
        dtype,
        HostSlice::F32(&state_host),
    )?;
    solver_step(
        cpu,
        &ps.update,
        StepLaunch { step: 5, seed: 0 },
        &mut x,
        &eps,
        &mut state,
    )?;
    let fx = x.to_f32(cpu)?;
    let fh = state.to_f32(cpu)?[ds * stride..ds * stride + n].to_vec();

    let (mut ux, mut uh) = (
        Stored::new(&inputs.x, dtype),
        Stored::new(&vec![0f32; n], dtype),
    );
    let (e, p) = (
        Stored::new(&inputs.eps, dtype),
        Stored::new(&inputs.dprev, dtype),
    );
    let (ux, uh): (Vec<f32>, Vec<f32>) = match (&mut ux, &e, &p, &mut uh) {
        (Stored::F16(x), Stored::F16(e), Stored::F16(p), Stored::F16(h)) => {
            unfused_cpu_f16(k, t, x, e, p, h);
            (
                x.iter().map(|v| v.to_f32()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        (Stored::F32(x), Stored::F32(e), Stored::F32(p), Stored::F32(h)) => {
            unfused_cpu_f32(k, t, x, e, p, h);
            (t.out.clone(), h.clone())
        }
        _ => unreachable!(),
    };
    let rel = |a: &[f32], b: &[f32]| {
        let num = a
            .iter()
            .zip(b)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>();
        let den = b.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>();
        (num / den).sqrt()
    };
    let (ex, eh) = (rel(&ux, &fx), rel(&uh, &fh));
    let tol = match dtype {
        DType::F16 => 2e-3,
        _ => 1e-5,
    };
    assert!(
        ex < tol && eh < tol,
        "cpu baseline disagrees with the fused step ({dtype:?}): x {ex:.2e}, history {eh:.2e}"
    );
    Ok(())
}

// ---- copy bandwidth ------------------------------------------------------

/// memcpy of [`COPY_BYTES`], single-threaded and split over the rayon pool;
/// the faster is the machine's copy bandwidth.
fn bench_copy_cpu(c: &mut Criterion, rows: &mut Vec<Row>) {
    let len = *COPY_BYTES / 4;
    let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let mut dst = vec![1f32; len];
    let cpu = CpuBackend::new();
    let mut group = c.benchmark_group("copy");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(2 * *COPY_BYTES as u64));
    for (name, parallel) in [("cpu/memcpy-1-thread", false), ("cpu/memcpy-rayon", true)] {
        let log: Log = Rc::default();
        let launches = Rc::new(RefCell::new(0));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(
                    &cpu,
                    &log,
                    &launches,
                    iters,
                    || {},
                    || {
                        if parallel {
                            dst.par_chunks_mut(1 << 18)
                                .zip(src.par_chunks(1 << 18))
                                .for_each(|(d, s)| d.copy_from_slice(s));
                        } else {
                            dst.copy_from_slice(&src);
                        }
                        black_box(&mut dst);
                    },
                )
            })
        });
        rows.push(Row {
            backend: "cpu".into(),
            what: name.trim_start_matches("cpu/").into(),
            shape: [0, 0, 0, *COPY_BYTES],
            dtype: None,
            bytes: 2 * *COPY_BYTES as u64,
            median: median(&log),
            launches: 1,
        });
    }
    group.finish();
}

#[cfg(feature = "wgpu")]
mod gpu {
    //! wgpu parts: the backend's cases and a buffer-to-buffer copy on the
    //! backend's device.

    use super::*;
    use diffinv::backend::wgpu::WgpuBackend;

    pub fn open() -> Option<WgpuBackend> {
        match WgpuBackend::new() {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("wgpu skipped: {e}");
                None
            }
        }
    }

    /// Copy `bytes` buffer to buffer on the backend's own device.
    pub fn bench_copy(c: &mut Criterion, backend: &WgpuBackend, rows: &mut Vec<Row>) {
        let (device, queue) = (backend.device(), backend.queue());
        let bytes = (*COPY_BYTES as u64).min(device.limits().max_buffer_size) / 4 * 4;
        let buf = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (buf("src"), buf("dst"));
        let copy = || {
            let mut enc = device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
            queue.submit([enc.finish()]);
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("poll");
        };
        copy();
        let mut group = c.benchmark_group("copy");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(2 * bytes));
        let log: Log = Rc::default();
        group.bench_function("wgpu/buffer-copy", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    copy();
                    let dt = t.elapsed();
                    total += dt;
                    log.borrow_mut().push(dt);
                }
                total
            })
        });
        group.finish();
        rows.push(Row {
            backend: "wgpu".into(),
            what: "buffer-copy".into(),
            shape: [0, 0, 0, bytes as usize],
            dtype: None,
            bytes: 2 * bytes,
            median: median(&log),
            launches: 1,
        });
    }
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    big: bool,
    slow: bool,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(if slow { 300 } else { 500 }))
        .measurement_time(Duration::from_millis(match (big, slow) {
            (true, true) => 1000,
            (false, true) | (true, false) => 1500,
            (false, false) => 2000,
        }));
    if big {
        g.sampling_mode(SamplingMode::Flat);
    }
    g
}

fn summary(rows: &[Row]) {
    // Benches left out by a name filter never ran: their rows have no samples.
    let rows: Vec<&Row> = rows.iter().filter(|r| !r.median.is_zero()).collect();
    let copy_of = |backend: &str| {
        rows.iter()
            .filter(|r| r.backend == backend && r.dtype.is_none())
            .map(|r| r.gbps())
            .fold(0.0, f64::max)
    };
    eprintln!();
    eprintln!("== diffinv solver bench summary (DPM-Solver++ 2M, step {STEP} of 20) ==");
    eprintln!("min bytes = 5 tensors x n x dtype size (read x, eps, D_prev; write x, D_new)");
    for r in rows.iter().filter(|r| r.dtype.is_none()) {
        eprintln!(
            "copy bandwidth {:<5} {:<16} {:>8.1} GB/s (read+write of {} MiB, median {:.2} ms)",
            r.backend,
            r.what,
            r.gbps(),
            r.shape[3] >> 20,
            r.median.as_secs_f64() * 1e3
        );
    }
    eprintln!(
        "{:<7} {:<12} {:<14} {:<5} {:>11} {:>9} {:>8} {:>9} {:>8}",
        "backend", "variant", "shape", "dtype", "median", "GB/s", "% copy", "launches", "speedup"
    );
    for r in rows.iter().filter(|r| r.dtype.is_some()) {
        let copy = copy_of(&r.backend);
        let pct = if copy > 0.0 {
            format!("{:.0}%", 100.0 * r.gbps() / copy)
        } else {
            "-".into()
        };
        // Speedup of the fused step over the unfused sequence of the same case.
        let speedup = if r.what.starts_with("fused") {
            let unfused = r.what.replacen("fused", "unfused", 1);
            rows.iter()
                .find(|u| {
                    u.what == unfused
                        && u.backend == r.backend
                        && u.shape == r.shape
                        && u.dtype == r.dtype
                })
                .map(|u| format!("{:.2}x", u.median.as_secs_f64() / r.median.as_secs_f64()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let t = r.median.as_secs_f64();
        let time = if t < 1e-3 {
            format!("{:.1} us", t * 1e6)
        } else {
            format!("{:.3} ms", t * 1e3)
        };
        eprintln!(
            "{:<7} {:<12} {:<14} {:<5} {:>11} {:>9.1} {:>8} {:>9} {:>8}",
            r.backend,
            r.what,
            shape_name(r.shape),
            dtype_name(r.dtype.unwrap_or(DType::F32)),
            time,
            r.gbps(),
            pct,
            r.launches,
            speedup
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let ps = plan_step();
    let mut rows = Vec::new();
    eprintln!(
        "step {STEP}: D = {:.6}·x − {:.6}·eps; x' = {:.6}·x + {:.6}·D + {:.6}·D_prev",
        ps.update.cx, ps.update.ce, ps.update.a, ps.update.b[0], ps.update.b[1]
    );

    eprintln!(
        "last-level cache {} MiB: copy {} MiB, cold flush {} MiB",
        *LAST_LEVEL_CACHE >> 20,
        *COPY_BYTES >> 20,
        *EVICT_BYTES >> 20
    );
    bench_copy_cpu(&mut c, &mut rows);
    let cpu = CpuBackend::new();
    eprintln!("cpu: {}", cpu.device_name());
    for shape in SHAPES {
        let big = shape[0] > 1;
        let mut g = group(&mut c, "solver_step", big, false);
        // Hot: inputs left in cache by the previous iteration (the 16× f16 working
        // set, 25 MiB, fits a 32 MiB L3). Cold (16× only): caches flushed before
        // each step, as after a network forward in a real loop.
        for cold in if big {
            &[false, true][..]
        } else {
            &[false][..]
        } {
            if *cold {
                // The untimed flush dominates the wall time of a cold iteration;
                // a short timed budget keeps the run short (the fused step still
                // gets ~100 timed iterations, the unfused sequence ≥ 10).
                g.warm_up_time(Duration::from_millis(100))
                    .measurement_time(Duration::from_millis(200));
            }
            for dtype in DTYPES {
                bench_fused(&mut g, &cpu, &ps, shape, dtype, *cold, &mut rows).expect("cpu fused");
                bench_unfused_cpu(&mut g, &cpu, &ps, shape, dtype, *cold, &mut rows)
                    .expect("cpu unfused");
            }
        }
        g.finish();
    }

    #[cfg(feature = "wgpu")]
    if let Some(wgpu) = gpu::open() {
        eprintln!(
            "wgpu: {} (f16 as {}){}",
            wgpu.device_name(),
            if wgpu.uses_native_f16() {
                "array<f16>"
            } else {
                "packed u32"
            },
            if wgpu.is_software() {
                " — a software rasterizer: these numbers prove the shaders, not GPU speed"
            } else {
                ""
            }
        );
        gpu::bench_copy(&mut c, &wgpu, &mut rows);
        let slow = wgpu.is_software();
        for shape in SHAPES {
            let big = shape[0] > 1;
            let mut g = group(&mut c, "solver_step", big, slow);
            for dtype in DTYPES {
                let r = bench_fused(&mut g, &wgpu, &ps, shape, dtype, false, &mut rows).and_then(
                    |()| bench_unfused_device(&mut g, &wgpu, &ps, shape, dtype, &mut rows),
                );
                if let Err(e) = r {
                    eprintln!("wgpu {} {dtype:?} skipped: {e}", shape_name(shape));
                }
            }
            g.finish();
        }
    }

    c.final_summary();
    summary(&rows);
}
