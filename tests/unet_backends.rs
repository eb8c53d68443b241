//! The built-in UNet as the denoiser of a sampler on every backend: a 5-step
//! DDIM loop whose fused updates run on the backend (wgpu on lavapipe,
//! emulated CUDA, …) and whose network runs on the CPU, against the same loop
//! on the CPU backend.

mod common;

use common::compare;
use common::fixtures::unet_folders;
use diffinv::backend::cpu::CpuBackend;
use diffinv::unet::UNet;
use diffinv::{
    sample, DType, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    SolverOps, Tensor,
};

/// `x_T` after the loop on `backend`, in f32 storage.
fn ddim<B: SolverOps>(backend: &B, dir: &std::path::Path, shape: Shape, x_t: &[f32]) -> Vec<f64>
where
    B::Buffer: 'static,
{
    let mut net = UNet::load(dir, DType::F32).unwrap();
    let config = PlanConfig {
        solver: Solver::Ddim { eta: 0.0 },
        steps: 5,
        prediction: net.prediction(),
        ..PlanConfig::default()
    };
    let plan = Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap();
    let mut x = Tensor::from_host(backend, shape, DType::F32, HostSlice::F32(x_t)).unwrap();
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

fn ddim_with_the_unet<B: SolverOps>(backend: &B)
where
    B::Buffer: 'static,
{
    if !backend.supports(DType::F32) {
        return;
    }
    for dir in unet_folders() {
        let probe = UNet::load(&dir, DType::F32).unwrap();
        let cfg = probe.config();
        let side = 4 << cfg.levels();
        let shape = Shape::new(2, cfg.in_channels, side, side);
        let x_t = diffinv::rng::normal_vec(11, shape.checked_len().unwrap());
        let want = ddim(&CpuBackend::new(), &dir, shape, &x_t);
        let got = ddim(backend, &dir, shape, &x_t);
        // The fused f32 updates of two backends differ by rounding, which five
        // network calls carry forward.
        compare(
            &format!("{} on {}", dir.display(), backend.device_name()),
            &got,
            &want,
            1e-5,
            1e-4,
        );
        assert!(want
            .iter()
            .zip(&x_t)
            .any(|(w, x)| (w - f64::from(*x)).abs() > 1e-3));
    }
}

mod ddim {
    crate::for_each_backend!(super::ddim_with_the_unet);
}
