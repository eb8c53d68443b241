//! The built-in UNet against diffusers, for every `tests/fixtures/unet_*/`
//! folder: each case of `cases.safetensors` in f32 (≤ 1e-4 abs vs the float64
//! model) and f16 storage (≤ 3e-2), and every block output the forward reports
//! against `intermediates.safetensors` where the folder has one. A new folder
//! is picked up without code changes.

mod common;

use common::fixtures::unet_folders;
use common::unet_cases::{cases, max_abs, read};

use diffinv::backend::cpu::CpuBackend;
use diffinv::unet::{Timesteps, UNet};
use diffinv::{
    sample, DType, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    Tensor,
};
use safetensors::SafeTensors;

const F32_TOL: f64 = 1e-4;
const F16_TOL: f64 = 3e-2;
/// Block outputs of our f32 forward vs diffusers' f32 forward hooks.
const LAYER_TOL: f64 = 1e-4;

#[test]
fn every_case_matches_the_float64_model_in_f32_and_f16_storage() {
    for dir in unet_folders() {
        let cases = cases(&dir);
        assert!(!cases.is_empty(), "{}: no cases", dir.display());
        for (dtype, tol) in [(DType::F32, F32_TOL), (DType::F16, F16_TOL)] {
            let mut net = UNet::load(&dir, dtype).expect("load");
            for case in &cases {
                let x = if dtype == DType::F16 {
                    &case.x_f16
                } else {
                    &case.x
                };
                let out = net.forward(x, case.dims, case.times()).expect("forward");
                let err = max_abs(&out, &case.out_f64);
                println!(
                    "{} {} {dtype:?}: max |out − out_f64| = {err:.3e} (tolerance {tol:e})",
                    dir.display(),
                    case.name
                );
                assert!(
                    err <= tol,
                    "{} {} {dtype:?}: {err:e}",
                    dir.display(),
                    case.name
                );
            }
        }
    }
}

#[test]
fn every_reported_block_output_matches_the_diffusers_hooks() {
    for dir in unet_folders() {
        let path = dir.join("intermediates.safetensors");
        if !path.exists() {
            println!("{}: no intermediates, skipped", dir.display());
            continue;
        }
        let bytes = std::fs::read(&path).expect("intermediates");
        let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let (x, _, shape) = read(&st, "input.sample");
        let (t, _, _) = read(&st, "input.timestep");
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let t: Vec<i64> = t.iter().map(|&v| v as i64).collect();
        let mut net = UNet::load(&dir, DType::F32).expect("load");
        let mut compared = Vec::new();
        let mut probe = |name: &str, dims: &[usize], got: &[f32]| {
            if let Ok(view) = st.tensor(name) {
                assert_eq!(view.shape(), dims, "{name}: shape");
                let (want, _, _) = read(&st, name);
                let err = max_abs(got, &want);
                println!("{} {name}: max abs error {err:.3e}", dir.display());
                assert!(err <= LAYER_TOL, "{name}: {err:e}");
                compared.push(name.to_string());
            }
        };
        let dims = [shape[0], shape[1], shape[2], shape[3]];
        let out = net
            .forward_probed(&x, dims, Timesteps::Int(&t), Some(&mut probe))
            .expect("forward");
        let (want, _, _) = read(&st, "output.sample");
        assert!(max_abs(&out, &want) <= LAYER_TOL);
        // The embedding, the stem, every down block, the mid block and every
        // up block are reported under names the hooks recorded.
        let levels = net.config().levels();
        for name in [
            "time_proj",
            "time_embedding",
            "conv_in",
            "mid_block",
            "conv_out",
        ]
        .into_iter()
        .map(String::from)
        .chain((0..levels).map(|i| format!("down_blocks.{i}.out.0")))
        .chain((0..levels).map(|i| format!("up_blocks.{i}")))
        {
            assert!(compared.contains(&name), "{name} was not compared");
        }
        println!(
            "{}: {} block outputs compared",
            dir.display(),
            compared.len()
        );
    }
}

#[test]
fn repeated_forwards_reuse_every_buffer() {
    for dir in unet_folders() {
        let case = &cases(&dir)[0];
        for dtype in [DType::F32, DType::F16] {
            let mut net = UNet::load(&dir, dtype).expect("load");
            let first = net.forward(&case.x, case.dims, case.times()).unwrap();
            let allocations = net.allocations();
            let peak = net.peak_bytes();
            let second = net.forward(&case.x, case.dims, case.times()).unwrap();
            assert_eq!(net.allocations(), allocations, "{dtype:?}");
            assert_eq!(net.peak_bytes(), peak, "{dtype:?}");
            assert!(peak > 0);
            // Bit-identical: the arena's stale contents never leak into a result.
            assert_eq!(first, second, "{dtype:?}");
            println!(
                "{} {dtype:?}: peak activation bytes {peak}, {allocations} buffers, {} FLOP/forward",
                dir.display(),
                net.flops(case.dims[0], case.dims[2], case.dims[3])
            );
        }
    }
}

/// A 5-step DDIM loop with the UNet as the sampler's denoiser equals the same
/// loop with a closure that calls the host forward, and its steps after the
/// first allocate nothing in the network.
#[test]
fn ddim_runs_with_the_unet_as_denoiser() {
    for dir in unet_folders() {
        let case = &cases(&dir)[0];
        let backend = CpuBackend::new();
        let schedule = NoiseSchedule::ddpm_linear();
        let config = PlanConfig {
            solver: Solver::Ddim { eta: 0.0 },
            steps: 5,
            ..PlanConfig::default()
        };
        let mut net = UNet::load(&dir, DType::F32).unwrap();
        let config = PlanConfig {
            prediction: net.prediction(),
            ..config
        };
        let plan = Plan::new(&schedule, &config).unwrap();
        let [b, c, h, w] = case.dims;
        let shape = Shape::new(b, c, h, w);

        let mut x =
            Tensor::from_host(&backend, shape, DType::F32, HostSlice::F32(&case.x)).unwrap();
        let mut allocations = Vec::new();
        {
            let mut counting = |bk: &CpuBackend,
                                x: &Tensor<CpuBackend>,
                                tau: f64,
                                out: &mut Tensor<CpuBackend>| {
                diffinv::Denoiser::predict(&mut net, bk, x, tau, out)?;
                allocations.push(net.allocations());
                Ok(())
            };
            sample(
                &backend,
                &plan,
                &mut counting,
                &mut x,
                SamplerOptions::default(),
                |_| {},
            )
            .unwrap();
        }
        assert_eq!(allocations.len(), 5);
        assert!(
            allocations.windows(2).all(|w| w[0] == w[1]),
            "{allocations:?}"
        );
        let got = x.to_f32(&backend).unwrap();
        assert!(got.iter().all(|v| v.is_finite()));

        let mut host_net = UNet::load(&dir, DType::F32).unwrap();
        let mut y =
            Tensor::from_host(&backend, shape, DType::F32, HostSlice::F32(&case.x)).unwrap();
        let mut host =
            |bk: &CpuBackend, x: &Tensor<CpuBackend>, tau: f64, out: &mut Tensor<CpuBackend>| {
                let times = vec![tau as f32; b];
                let eps =
                    host_net.forward(&x.to_f32(bk)?, [b, c, h, w], Timesteps::Float(&times))?;
                out.upload(bk, HostSlice::F32(&eps))
            };
        sample(
            &backend,
            &plan,
            &mut host,
            &mut y,
            SamplerOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(got, y.to_f32(&backend).unwrap());
        assert_ne!(got, case.x, "the loop changed the sample");
    }
}
