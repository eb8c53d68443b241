//! The UNet forward on the sampler's backend (`DeviceUNet`, built from the nn
//! family's kernels) for every `tests/fixtures/unet_*/` folder, on every
//! backend that runs the nn family: each case of `cases.safetensors` within
//! the f32 tolerance of the float64 model (1e-4 abs) and, where the backend
//! stores f16, the f16 one (3e-2) in f16 storage, every block output
//! against diffusers' hooks where the folder has `intermediates.safetensors`,
//! no allocation after the first forward of a shape, the CPU network's
//! result within float rounding, a DDIM loop with it as the denoiser, and
//! bad calls as typed errors. A new folder is picked up without code changes.

mod common;

use common::fixtures::unet_folders;
use common::unet_cases::{cases, max_abs, read, Case};
use diffinv::ops::nn::NnOps;
use diffinv::unet::{DeviceUNet, Timesteps, UNet};
use diffinv::{
    sample, DType, Denoiser, Error, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions,
    Shape, Solver, SolverOps, Tensor,
};
use safetensors::SafeTensors;

/// The f32 bar of the UNet issue, for the network and every block output.
const F32_TOL: f64 = 1e-4;
/// Its f16-storage bar.
const F16_TOL: f64 = 3e-2;

fn tensor_as<B: diffinv::Backend>(
    backend: &B,
    dims: [usize; 4],
    v: &[f32],
    dtype: DType,
) -> Tensor<B> {
    let [b, c, h, w] = dims;
    Tensor::from_host(backend, Shape::new(b, c, h, w), dtype, HostSlice::F32(v)).unwrap()
}

fn tensor<B: diffinv::Backend>(backend: &B, dims: [usize; 4], v: &[f32]) -> Tensor<B> {
    tensor_as(backend, dims, v, DType::F32)
}

/// The device network's output for one case, from `x` in the network's dtype.
fn forward_from<B: NnOps>(
    backend: &B,
    net: &mut DeviceUNet<B>,
    case: &Case,
    x: &[f32],
) -> Vec<f32> {
    let x = tensor_as(backend, case.dims, x, net.dtype());
    let [b, _, h, w] = case.dims;
    let out_dims = [b, net.config().out_channels, h, w];
    let zeros = vec![0.0; out_dims.iter().product()];
    let mut out = tensor_as(backend, out_dims, &zeros, net.dtype());
    net.forward(backend, &x, case.times(), &mut out).unwrap();
    out.to_f32(backend).unwrap()
}

fn forward<B: NnOps>(backend: &B, net: &mut DeviceUNet<B>, case: &Case) -> Vec<f32> {
    forward_from(backend, net, case, &case.x)
}

fn every_case_matches_the_float64_model<B: NnOps>(backend: &B) {
    for dir in unet_folders() {
        let mut net = DeviceUNet::load(backend, &dir, DType::F32).unwrap();
        let mut host = UNet::load(&dir, DType::F32).unwrap();
        for case in cases(&dir) {
            let got = forward(backend, &mut net, &case);
            let err = max_abs(&got, &case.out_f64);
            let what = format!(
                "{} {} on {}",
                dir.display(),
                case.name,
                backend.device_name()
            );
            println!("{what}: max |out − out_f64| = {err:.3e}");
            assert!(err <= F32_TOL, "{what}: {err:e}");
            // The same network on the host, differing only in f32 rounding.
            let cpu = host.forward(&case.x, case.dims, case.times()).unwrap();
            let want: Vec<f64> = cpu.iter().map(|&v| f64::from(v)).collect();
            assert!(
                max_abs(&got, &want) <= F32_TOL,
                "{what}: vs the CPU network"
            );
        }
    }
}

/// In f16 storage (weights, activations, input and output; f32 math) every
/// case from its f16 input is within the f16 bar of the float64
/// model, and within f16 rounding of the CPU network in f16 storage. A
/// backend whose nn family stores f32 only refuses the load with a typed
/// error.
fn every_case_in_f16_storage<B: NnOps>(backend: &B) {
    for dir in unet_folders() {
        let loaded = DeviceUNet::load(backend, &dir, DType::F16);
        if !backend.nn_supports(DType::F16) {
            assert!(
                matches!(loaded, Err(Error::UnsupportedDType { .. })),
                "{:?}",
                loaded.err()
            );
            println!("{}: no f16 nn family, refused", backend.device_name());
            return;
        }
        let mut net = loaded.unwrap();
        assert_eq!(net.dtype(), DType::F16);
        let mut host = UNet::load(&dir, DType::F16).unwrap();
        for case in cases(&dir) {
            let got = forward_from(backend, &mut net, &case, &case.x_f16);
            let err = max_abs(&got, &case.out_f64);
            let what = format!(
                "{} {} in f16 on {}",
                dir.display(),
                case.name,
                backend.device_name()
            );
            println!("{what}: max |out − out_f64| = {err:.3e}");
            assert!(err <= F16_TOL, "{what}: {err:e}");
            let cpu = host.forward(&case.x_f16, case.dims, case.times()).unwrap();
            let want: Vec<f64> = cpu.iter().map(|&v| f64::from(v)).collect();
            let diff = max_abs(&got, &want);
            assert!(diff <= F16_TOL, "{what}: vs the CPU network, {diff:e}");
        }
        // Half the weight bytes of the f32 network.
        let f32_net = DeviceUNet::load(backend, &dir, DType::F32).unwrap();
        assert_eq!(2 * net.weight_bytes(), f32_net.weight_bytes());
    }
}

fn every_block_output_matches_the_diffusers_hooks<B: NnOps>(backend: &B) {
    for dir in unet_folders() {
        let path = dir.join("intermediates.safetensors");
        if !path.exists() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (x, _, shape) = read(&st, "input.sample");
        let (t, _, _) = read(&st, "input.timestep");
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let t: Vec<i64> = t.iter().map(|&v| v as i64).collect();
        let dims = [shape[0], shape[1], shape[2], shape[3]];
        let mut net = DeviceUNet::load(backend, &dir, DType::F32).unwrap();
        let xt = tensor(backend, dims, &x);
        let out_dims = [dims[0], net.config().out_channels, dims[2], dims[3]];
        let mut out = tensor(backend, out_dims, &vec![0.0; out_dims.iter().product()]);
        let mut compared = 0;
        let mut probe = |name: &str, d: &[usize], got: &[f32]| {
            if let Ok(view) = st.tensor(name) {
                assert_eq!(view.shape(), d, "{name}: shape");
                let (want, _, _) = read(&st, name);
                let err = max_abs(got, &want);
                assert!(
                    err <= F32_TOL,
                    "{name} on {}: {err:e}",
                    backend.device_name()
                );
                compared += 1;
            }
        };
        net.forward_probed(backend, &xt, Timesteps::Int(&t), &mut out, Some(&mut probe))
            .unwrap();
        // The embedding, the stem, each down block's outputs, the mid block,
        // each up block and the head at least.
        let levels = net.config().levels();
        assert!(
            compared >= 5 + 2 * levels,
            "{} block outputs compared",
            compared
        );
        let (want, _, _) = read(&st, "output.sample");
        assert!(max_abs(&out.to_f32(backend).unwrap(), &want) <= F32_TOL);
    }
}

fn repeated_forwards_reuse_every_buffer<B: NnOps>(backend: &B) {
    for dir in unet_folders() {
        let case = &cases(&dir)[0];
        let mut net = DeviceUNet::load(backend, &dir, DType::F32).unwrap();
        let first = forward(backend, &mut net, case);
        let (allocations, peak) = (net.allocations(), net.peak_bytes());
        let second = forward(backend, &mut net, case);
        assert_eq!(net.allocations(), allocations);
        assert_eq!(net.peak_bytes(), peak);
        assert!(peak > 0 && net.weight_bytes() > 0);
        // Bit-identical: stale arena contents never reach a result.
        assert_eq!(first, second);
        println!(
            "{} on {}: peak activations {peak} B, weights {} B, {allocations} buffers",
            dir.display(),
            backend.device_name(),
            net.weight_bytes()
        );
    }
}

/// `x_T` of a 5-step DDIM loop from the case's input with `denoiser`.
fn ddim<B: SolverOps, D: Denoiser<B>>(backend: &B, case: &Case, denoiser: &mut D) -> Vec<f32> {
    let config = PlanConfig {
        solver: Solver::Ddim { eta: 0.0 },
        steps: 5,
        ..PlanConfig::default()
    };
    let plan = Plan::new(&NoiseSchedule::ddpm_linear(), &config).unwrap();
    let mut x = tensor(backend, case.dims, &case.x);
    let options = SamplerOptions::default();
    sample(backend, &plan, denoiser, &mut x, options, |_| {}).unwrap();
    x.to_f32(backend).unwrap()
}

/// A 5-step DDIM loop with the device network as the denoiser stays within
/// float rounding of the same loop with the CPU network.
fn ddim_with_the_device_network<B: NnOps + SolverOps>(backend: &B) {
    for dir in unet_folders() {
        let case = &cases(&dir)[0];
        let got = ddim(
            backend,
            case,
            &mut DeviceUNet::load(backend, &dir, DType::F32).unwrap(),
        );
        let want = ddim(backend, case, &mut UNet::load(&dir, DType::F32).unwrap());
        let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        let err = max_abs(&got, &want);
        let on = backend.device_name();
        println!("{} DDIM on {on}: max diff {err:.3e}", dir.display());
        assert!(err <= 1e-3, "{err:e}");
        let start: Vec<f64> = case.x.iter().map(|&v| f64::from(v)).collect();
        assert!(max_abs(&got, &start) > 1e-2, "the loop changed the sample");
    }
}

fn bad_calls_are_typed_errors<B: NnOps>(backend: &B) {
    let dir = &unet_folders()[0];
    let mut net = DeviceUNet::load(backend, dir, DType::F32).unwrap();
    let case = &cases(dir)[0];
    let [b, c, h, w] = case.dims;
    let cout = net.config().out_channels;
    let x = tensor(backend, case.dims, &case.x);
    let mut out = tensor(backend, [b, cout, h, w], &vec![0.0; b * cout * h * w]);
    // One timestep too few.
    let short = vec![1.0f32; b - 1];
    let e = net.forward(backend, &x, Timesteps::Float(&short), &mut out);
    assert!(matches!(e, Err(Error::LengthMismatch { .. })), "{e:?}");
    // A channel count the network does not take.
    let wrong = tensor(backend, [b, c + 1, h, w], &vec![0.0; b * (c + 1) * h * w]);
    let e = net.forward(backend, &wrong, case.times(), &mut out);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    // A side that does not halve evenly at every downsampler.
    let odd = tensor(backend, [b, c, h + 1, w], &vec![0.0; b * c * (h + 1) * w]);
    let mut odd_out = tensor(
        backend,
        [b, cout, h + 1, w],
        &vec![0.0; b * cout * (h + 1) * w],
    );
    let e = net.forward(backend, &odd, case.times(), &mut odd_out);
    assert!(matches!(e, Err(Error::InvalidShape { .. })), "{e:?}");
    // An output of the wrong shape, and f16 tensors given to an f32 network.
    let mut small = tensor(
        backend,
        [b, cout, h / 2, w],
        &vec![0.0; b * cout * h / 2 * w],
    );
    let e = net.forward(backend, &x, case.times(), &mut small);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    if backend.supports(DType::F16) {
        let x16 = Tensor::zeros(backend, Shape::new(b, c, h, w), DType::F16).unwrap();
        let e = net.forward(backend, &x16, case.times(), &mut out);
        assert!(matches!(e, Err(Error::DTypeMismatch { .. })), "{e:?}");
    }
    // The network still works after the refused calls.
    assert!(max_abs(&forward(backend, &mut net, case), &case.out_f64) <= F32_TOL);
}

mod every_case {
    crate::for_each_backend!(super::every_case_matches_the_float64_model);
}
mod f16_storage {
    crate::for_each_backend!(super::every_case_in_f16_storage);
}
mod block_outputs {
    crate::for_each_backend!(super::every_block_output_matches_the_diffusers_hooks);
}
mod buffer_reuse {
    crate::for_each_backend!(super::repeated_forwards_reuse_every_buffer);
}
mod ddim {
    crate::for_each_backend!(super::ddim_with_the_device_network);
}
mod bad_calls {
    crate::for_each_backend!(super::bad_calls_are_typed_errors);
}
