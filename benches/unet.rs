//! UNet forward latency on the CPU: the tiny fixture model and the
//! google/ddpm-cifar10-32 architecture (random weights), batch 1 and 8, f32
//! and f16 storage. Throughput is in FLOPs computed from the config (2 per
//! multiply-add of the direct convolutions), so criterion's "elem/s" reads
//! as FLOP/s — effective FLOP/s on the CPU, whose Winograd 3×3 convolutions
//! do 2.25× fewer multiplies than that count; beside it, a
//! square f32 GEMM of the same `gemm` crate measures the ceiling this machine
//! gives the forward's dominant operation, in the same run; each case prints
//! its own median beside that ceiling timed just before and after it.
//!
//! Then the same networks as `DeviceUNet` (the forward built from the nn
//! family's kernels; f32, and f16 where the backend stores it) on each device
//! backend that opens here: wgpu (lavapipe
//! on a machine without a GPU, where it proves the shaders rather than their
//! speed) and CUDA where a driver exists. A device forward is timed up to a
//! `synchronize`, so it includes the whole queue.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use diffinv::ops::nn::NnOps;
use diffinv::unet::{DeviceUNet, Timesteps, UNet, UNetConfig};
use diffinv::{DType, HostSlice, Shape, Tensor};

/// A square f32 GEMM through the same `gemm` crate and threads as the
/// forward: what this machine gives the forward's dominant operation.
struct Ceiling {
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    out: Vec<f32>,
}

impl Ceiling {
    fn new(n: usize) -> Self {
        Ceiling {
            n,
            a: diffinv::rng::normal_vec(1, n * n),
            b: diffinv::rng::normal_vec(2, n * n),
            out: vec![0f32; n * n],
        }
    }

    fn flops(&self) -> u64 {
        2 * (self.n * self.n * self.n) as u64
    }

    fn run(&mut self) {
        let n = self.n;
        // SAFETY: three n×n row-major matrices of n·n elements each.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                self.out.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                1,
                n as isize,
                self.b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            )
        };
        black_box(&mut self.out);
    }

    /// GFLOP/s, median of 5 runs.
    fn gflops(&mut self) -> f64 {
        let flops = self.flops() as f64;
        flops * 1e-9 / median_seconds(5, || self.run())
    }
}

fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_tiny");
    let mut ceiling = Ceiling::new(1024);
    let models: [(&str, usize); 2] = [("unet_tiny", 16), ("ddpm-cifar10-32", 32)];
    for (name, side) in models {
        for dtype in [DType::F32, DType::F16] {
            let mut net = match name {
                "unet_tiny" => UNet::load(&tiny, dtype),
                _ => UNet::random(UNetConfig::ddpm_cifar10_32(), dtype, 7),
            }
            .expect("model");
            for batch in [1usize, 8] {
                let dims = [batch, net.config().in_channels, side, side];
                let x: Vec<f32> = diffinv::rng::normal_vec(3, dims.iter().product());
                let t: Vec<i64> = (0..batch as i64).map(|i| 999 - 97 * i).collect();
                let flops = net.flops(batch, side, side);
                net.forward(&x, dims, Timesteps::Int(&t)).expect("forward");
                // The machine is shared: the GEMM ceiling is timed right
                // before and after the forwards, so the fraction compares
                // the two under the same load.
                let before = ceiling.gflops();
                let forward = median_seconds(3, || {
                    black_box(net.forward(&x, dims, Timesteps::Int(&t)).unwrap());
                });
                let after = ceiling.gflops();
                let rate = flops as f64 * 1e-9 / forward;
                eprintln!(
                    "unet/{name}/b{batch}/{dtype:?}: {:.3} GFLOP per forward, peak activations {:.1} MiB; \
                     median of 3: {:.1} ms = {rate:.1} GFLOP/s = {:.0}% of the f32 GEMM ceiling \
                     ({before:.0} / {after:.0} GFLOP/s before / after)",
                    flops as f64 * 1e-9,
                    net.peak_bytes() as f64 / (1 << 20) as f64,
                    forward * 1e3,
                    100.0 * rate / (0.5 * (before + after)),
                );
                let mut g = c.benchmark_group(format!("unet/{name}/b{batch}"));
                g.sample_size(10)
                    .warm_up_time(Duration::from_millis(500))
                    .measurement_time(Duration::from_secs(3))
                    .throughput(Throughput::Elements(flops));
                g.bench_function(format!("cpu/{dtype:?}").to_lowercase(), |b| {
                    b.iter(|| {
                        black_box(
                            net.forward(black_box(&x), dims, Timesteps::Int(&t))
                                .unwrap(),
                        )
                    })
                });
                g.finish();
            }
        }
    }

    #[cfg(feature = "wgpu")]
    {
        use diffinv::backend::wgpu::{WgpuBackend, WgpuOptions};
        let opts = WgpuOptions {
            force_packed_f16: false,
            allow_software: true,
        };
        match WgpuBackend::with_options(opts) {
            Ok(b) => bench_device(&mut c, &b, "wgpu", &tiny),
            Err(e) => eprintln!("unet/wgpu: skipped ({e})"),
        }
    }

    #[cfg(feature = "cuda")]
    match diffinv::backend::cuda::CudaBackend::new(0) {
        Ok(b) => bench_device(&mut c, &b, "cuda", &tiny),
        Err(e) => eprintln!("unet/cuda: skipped ({e})"),
    }

    let mut g = c.benchmark_group("unet/gemm-ceiling");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(ceiling.flops()));
    g.bench_function("f32-1024", |b| b.iter(|| ceiling.run()));
    g.finish();
    c.final_summary();
}

/// The device forward of both networks, batch 1 and 8, in f32 and (where the
/// backend's nn family stores it) f16; on a software adapter (lavapipe)
/// cifar10-32 runs at batch 1 in f32 only (a forward there takes tens of
/// seconds and proves nothing more).
fn bench_device<B: NnOps>(c: &mut Criterion, backend: &B, label: &str, tiny: &Path) {
    let software = backend.device_name().contains("llvmpipe");
    let models: [(&str, usize); 2] = [("unet_tiny", 16), ("ddpm-cifar10-32", 32)];
    for (name, side) in models {
        for dtype in [DType::F32, DType::F16] {
            if !backend.nn_supports(dtype)
                || (software && name != "unet_tiny" && dtype != DType::F32)
            {
                continue;
            }
            let mut net = match name {
                "unet_tiny" => DeviceUNet::load(backend, tiny, dtype),
                _ => DeviceUNet::random(backend, UNetConfig::ddpm_cifar10_32(), dtype, 7),
            }
            .expect("model");
            for batch in [1usize, 8] {
                if software && name != "unet_tiny" && batch > 1 {
                    continue;
                }
                bench_device_case(c, backend, label, &mut net, (name, side), batch);
            }
            eprintln!(
                "unet/{name}/{label}/{dtype:?}: weights {:.1} MiB, peak activations {:.1} MiB",
                net.weight_bytes() as f64 / (1 << 20) as f64,
                net.peak_bytes() as f64 / (1 << 20) as f64,
            );
        }
    }
}

fn bench_device_case<B: NnOps>(
    c: &mut Criterion,
    backend: &B,
    label: &str,
    net: &mut DeviceUNet<B>,
    (name, side): (&str, usize),
    batch: usize,
) {
    let dtype = net.dtype();
    let cin = net.config().in_channels;
    let cout = net.config().out_channels;
    let x: Vec<f32> = diffinv::rng::normal_vec(3, batch * cin * side * side);
    let x = Tensor::from_host(
        backend,
        Shape::new(batch, cin, side, side),
        dtype,
        HostSlice::F32(&x),
    )
    .expect("input");
    let mut out =
        Tensor::zeros(backend, Shape::new(batch, cout, side, side), dtype).expect("output");
    let t: Vec<i64> = (0..batch as i64).map(|i| 999 - 97 * i).collect();
    let flops = net.flops(batch, side, side);
    let mut forward = || {
        net.forward(backend, &x, Timesteps::Int(&t), &mut out)
            .expect("forward");
        backend.synchronize().expect("synchronize");
    };
    forward();
    let launches = backend.launch_count();
    forward();
    let launches = backend.launch_count() - launches;
    let seconds = median_seconds(3, &mut forward);
    eprintln!(
        "unet/{name}/b{batch}/{label} ({}): {dtype:?}, {launches} launches per forward; \
         median of 3: {:.1} ms = {:.1} GFLOP/s",
        backend.device_name(),
        seconds * 1e3,
        flops as f64 * 1e-9 / seconds,
    );
    let mut g = c.benchmark_group(format!("unet/{name}/b{batch}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(flops));
    let id = format!("{label}/{dtype:?}").to_lowercase();
    g.bench_function(id, |b| b.iter(&mut forward));
    g.finish();
}
