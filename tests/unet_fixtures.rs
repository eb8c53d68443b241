//! The built-in UNet against diffusers, for every `tests/fixtures/unet_*/`
//! folder: each case of `cases.safetensors` in f32 (≤ 1e-4 abs vs the float64
//! model) and f16 storage (≤ 3e-2), and every block output the forward reports
//! against `intermediates.safetensors` where the folder has one. A new folder
//! is picked up without code changes.

mod common;

use common::fixtures::unet_folders;
use std::path::Path;

use diffinv::backend::cpu::CpuBackend;
use diffinv::unet::{Timesteps, UNet};
use diffinv::{
    sample, DType, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    Tensor,
};
use safetensors::{Dtype, SafeTensors};

const F32_TOL: f64 = 1e-4;
const F16_TOL: f64 = 3e-2;
/// Block outputs of our f32 forward vs diffusers' f32 forward hooks.
const LAYER_TOL: f64 = 1e-4;

/// A tensor of a fixture file, widened to f64, with its dtype and shape.
fn read(st: &SafeTensors<'_>, name: &str) -> (Vec<f64>, Dtype, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    let d = t.data();
    let v = match t.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("tensor {name}: unsupported dtype {other:?}"),
    };
    (v, t.dtype(), t.shape().to_vec())
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

struct Case {
    name: String,
    x: Vec<f32>,
    x_f16: Vec<f32>,
    dims: [usize; 4],
    t_int: Option<Vec<i64>>,
    t_float: Vec<f32>,
    out_f64: Vec<f64>,
}

impl Case {
    fn times(&self) -> Timesteps<'_> {
        match &self.t_int {
            Some(t) => Timesteps::Int(t),
            None => Timesteps::Float(&self.t_float),
        }
    }
}

fn cases(dir: &Path) -> Vec<Case> {
    let bytes = std::fs::read(dir.join("cases.safetensors")).expect("cases.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".x").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let (x, _, shape) = read(&st, &format!("{name}.x"));
            let (x_f16, _, _) = read(&st, &format!("{name}.x_f16"));
            let (t, t_dtype, _) = read(&st, &format!("{name}.t"));
            let (out_f64, _, _) = read(&st, &format!("{name}.out_f64"));
            let dims = [shape[0], shape[1], shape[2], shape[3]];
            Case {
                x: x.iter().map(|&v| v as f32).collect(),
                x_f16: x_f16.iter().map(|&v| v as f32).collect(),
                dims,
                t_int: (t_dtype == Dtype::I64).then(|| t.iter().map(|&v| v as i64).collect()),
                t_float: t.iter().map(|&v| v as f32).collect(),
                out_f64,
                name,
            }
        })
        .collect()
}

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
