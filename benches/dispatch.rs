//! Host-side cost of launching: CPU time per dispatch on wgpu (recording into
//! a batch, and submitting each dispatch alone) and per launch on CUDA (the
//! real host launcher on a null device that runs nothing, and on the CPU
//! emulation harness), and submissions / launches per sampler step on wgpu.
//!
//! Every case is a fused solver step on 1,024 f16 elements: small enough that
//! the kernel itself is noise next to what is measured.
//!
//! `cargo bench --bench dispatch` (a summary table goes to stderr at the end).

#[cfg(feature = "cuda")]
#[path = "../tests/common/cuda_emu.rs"]
#[allow(dead_code)]
mod cuda_emu;

use std::time::{Duration, Instant};

use criterion::Criterion;

use diffinv::ops::solver_step;
use diffinv::solver::{slot_stride, SolverStep, StepLaunch};
use diffinv::{DType, HostSlice, Ops, Shape, Tensor};

const N: usize = 1024;
/// Dispatches per timed iteration.
const BATCH: u32 = 200;

/// A mid-run second-order step (one history slot read, one written).
fn step() -> SolverStep {
    SolverStep {
        cx: 1.2,
        ce: 0.7,
        d_slot: Some(0),
        h1: Some(1),
        h2: None,
        xc_slot: None,
        corrector: None,
        a: 0.9,
        b: [0.3, -0.1, 0.0],
        noise: 0.0,
    }
}

/// Stand-in for `tests/common`'s skip: the emulated device module calls it.
pub fn skip(what: &str, reason: impl std::fmt::Display) {
    eprintln!("SKIPPED {what}: {reason}");
}

/// Tensors of one step.
struct Bufs<B: Ops> {
    x: Tensor<B>,
    m: Tensor<B>,
    state: Tensor<B>,
}

impl<B: Ops> Bufs<B> {
    fn new(b: &B) -> diffinv::Result<Self> {
        let v = vec![0.25f32; 2 * slot_stride(N)];
        Ok(Bufs {
            x: Tensor::from_host(b, Shape::flat(N), DType::F16, HostSlice::F32(&v[..N]))?,
            m: Tensor::from_host(b, Shape::flat(N), DType::F16, HostSlice::F32(&v[..N]))?,
            state: Tensor::from_host(b, Shape::flat(v.len()), DType::F16, HostSlice::F32(&v))?,
        })
    }

    fn step(&mut self, b: &B, k: u32) -> diffinv::Result<()> {
        let launch = StepLaunch { step: k, seed: 1 };
        solver_step(b, &step(), launch, &mut self.x, &self.m, &mut self.state)
    }
}

/// Median of `BATCH` calls of `launch`, per call, timing only the calls;
/// `settle` runs untimed after each batch (e.g. wait for the device).
fn per_call(
    c: &mut Criterion,
    name: &str,
    mut launch: impl FnMut(u32),
    mut settle: impl FnMut(),
    rows: &mut Vec<(String, Duration)>,
) {
    let mut samples = Vec::new();
    c.bench_function(name, |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                for k in 0..BATCH {
                    launch(k);
                }
                let dt = t.elapsed();
                settle();
                total += dt;
                samples.push(dt / BATCH);
            }
            total
        })
    });
    samples.sort();
    // Filtered out on the command line: no row.
    if let Some(&median) = samples.get(samples.len() / 2) {
        rows.push((name.to_string(), median));
    }
}

#[cfg(feature = "wgpu")]
fn bench_wgpu(c: &mut Criterion, rows: &mut Vec<(String, Duration)>) {
    use diffinv::backend::wgpu::WgpuBackend;
    let mut b = match WgpuBackend::new() {
        Ok(b) => b,
        Err(e) => return skip("wgpu", e),
    };
    for (budget, name) in [(256, "wgpu/record (batched)"), (1, "wgpu/submit each")] {
        b.set_submit_budget(budget).expect("valid budget");
        let mut bufs = Bufs::new(&b).expect("wgpu buffers");
        per_call(
            c,
            name,
            |k| bufs.step(&b, k).expect("step"),
            || diffinv::Backend::synchronize(&b).expect("sync"),
            rows,
        );
    }
    // Submissions and launches per sampler step, with the network on the host
    // (GMM, which downloads x and uploads ε every step) and with the network
    // output already on the device (a device network records into the batch).
    b.set_submit_budget(256).expect("valid budget");
    let mut bufs = Bufs::new(&b).expect("wgpu buffers");
    let eps = vec![0.1f32; N];
    let steps = 20u64;
    let (s0, l0) = (b.submission_count(), diffinv::Backend::launch_count(&b));
    for k in 0..steps {
        let x = bufs.x.to_f32(&b).expect("read x");
        bufs.m.upload(&b, HostSlice::F32(&eps)).expect("write eps");
        black_box_f32(&x);
        bufs.step(&b, k as u32).expect("step");
    }
    let host = (
        b.submission_count() - s0,
        diffinv::Backend::launch_count(&b) - l0,
    );
    let (s0, l0) = (b.submission_count(), diffinv::Backend::launch_count(&b));
    for k in 0..steps {
        bufs.step(&b, k as u32).expect("step");
    }
    diffinv::Backend::synchronize(&b).expect("sync");
    let device = (
        b.submission_count() - s0,
        diffinv::Backend::launch_count(&b) - l0,
    );
    eprintln!(
        "wgpu per sampler step ({steps} steps): host network {:.2} submissions, {:.2} launches; \
         device network {:.2} submissions, {:.2} launches",
        host.0 as f64 / steps as f64,
        host.1 as f64 / steps as f64,
        device.0 as f64 / steps as f64,
        device.1 as f64 / steps as f64,
    );
}

fn black_box_f32(v: &[f32]) {
    std::hint::black_box(v);
}

#[cfg(feature = "cuda")]
mod null_device {
    //! A CUDA device that stores nothing and runs nothing: what remains is the
    //! host launcher (checks, params, typed arguments, launch configuration).
    use diffinv::backend::cuda::{CudaDevice, Kernel, KernelArgs, LaunchConfig};

    pub struct Null;

    impl CudaDevice for Null {
        type Mem = usize;
        fn name(&self) -> String {
            "null".into()
        }
        fn alloc_zeroed(&self, bytes: usize) -> diffinv::Result<usize> {
            Ok(bytes)
        }
        fn write(&self, _: &mut usize, _: usize, _: &[u8]) -> diffinv::Result<()> {
            Ok(())
        }
        fn read(&self, _: &usize, _: usize, _: &mut [u8]) -> diffinv::Result<()> {
            Ok(())
        }
        fn copy(&self, _: &usize, _: &mut usize, _: usize) -> diffinv::Result<()> {
            Ok(())
        }
        fn zero(&self, _: &mut usize) -> diffinv::Result<()> {
            Ok(())
        }
        fn device_ptr(&self, mem: &usize) -> u64 {
            *mem as u64
        }
        unsafe fn launch(
            &self,
            _: &'static Kernel,
            cfg: LaunchConfig,
            args: KernelArgs<'_, usize>,
        ) -> diffinv::Result<()> {
            std::hint::black_box((cfg, args.as_slice().len()));
            Ok(())
        }
        fn synchronize(&self) -> diffinv::Result<()> {
            Ok(())
        }
    }
}

#[cfg(feature = "cuda")]
fn bench_cuda(c: &mut Criterion, rows: &mut Vec<(String, Duration)>) {
    use diffinv::backend::cuda::CudaBackend;
    let null = CudaBackend::with_device(null_device::Null);
    let mut bufs = Bufs::new(&null).expect("null buffers");
    per_call(
        c,
        "cuda/host launcher (null device)",
        |k| bufs.step(&null, k).expect("step"),
        || {},
        rows,
    );
    if let Some(emu) = cuda_emu::new_cuda_emu() {
        let mut bufs = Bufs::new(&emu).expect("emu buffers");
        per_call(
            c,
            "cuda/emulated launch (1024 elements)",
            |k| bufs.step(&emu, k).expect("step"),
            || {},
            rows,
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut rows = Vec::new();
    #[cfg(feature = "wgpu")]
    bench_wgpu(&mut c, &mut rows);
    #[cfg(feature = "cuda")]
    bench_cuda(&mut c, &mut rows);
    c.final_summary();
    eprintln!("\n| case | CPU time per dispatch / launch (median) |\n|---|---|");
    for (name, t) in rows {
        eprintln!("| {name} | {:.2} µs |", t.as_secs_f64() * 1e6);
    }
}
