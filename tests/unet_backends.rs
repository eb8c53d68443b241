//! The built-in UNet as the denoiser of a sampler on every backend: a 5-step
//! DDIM loop whose fused updates run on the backend (wgpu on lavapipe,
//! emulated CUDA, …) and whose network runs on the CPU, against the same loop
//! on the CPU backend: bit-identical, f32 and f16.

mod common;

use common::fixtures::unet_folders;
use diffinv::backend::cpu::CpuBackend;
use diffinv::unet::UNet;
use diffinv::{
    sample, DType, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    SolverOps, Tensor,
};

/// `x_T` after the loop on `backend`, network and tensors in `dtype`.
fn ddim<B: SolverOps>(
    backend: &B,
    dir: &std::path::Path,
    dtype: DType,
    shape: Shape,
    x_t: &[f32],
) -> Vec<f64> {
    let mut net = UNet::load(dir, dtype).unwrap();
    let config = PlanConfig {
        solver: Solver::Ddim { eta: 0.0 },
        steps: 5,
        prediction: net.prediction(),
        ..PlanConfig::default()
    };
    let plan = Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap();
    let mut x = Tensor::from_host(backend, shape, dtype, HostSlice::F32(x_t)).unwrap();
    sample(
        backend,
        &plan,
        &mut net,
        &mut x,
        SamplerOptions::default(),
        |_| {},
    )
    .unwrap();
    x.to_f64(backend).unwrap()
}

fn ddim_with_the_unet<B: SolverOps>(backend: &B) {
    // The solver family's kernels are exact to the CPU definition on every
    // backend, and the network runs on the CPU: the loops agree bit for bit.
    for dtype in [DType::F32, DType::F16] {
        if !backend.supports(dtype) {
            continue;
        }
        for dir in unet_folders() {
            let probe = UNet::load(&dir, dtype).unwrap();
            let cfg = probe.config();
            let side = 16.max(1 << (cfg.levels() - 1));
            let shape = Shape::new(2, cfg.in_channels, side, side);
            let x_t = diffinv::rng::normal_vec(11, shape.checked_len().unwrap());
            let want = ddim(&CpuBackend::new(), &dir, dtype, shape, &x_t);
            let got = ddim(backend, &dir, dtype, shape, &x_t);
            let what = format!("{} {dtype:?} on {}", dir.display(), backend.device_name());
            assert_eq!(got, want, "{what}");
            assert!(want
                .iter()
                .zip(&x_t)
                .any(|(w, x)| (w - f64::from(*x)).abs() > 1e-2));
        }
    }
}

mod ddim {
    crate::for_each_backend!(super::ddim_with_the_unet);
}
