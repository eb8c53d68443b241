//! Checkpoints and inputs the UNet must refuse with a typed error (never a
//! panic), and the `.fp16.safetensors` spelling of a checkpoint. Built from
//! every `tests/fixtures/unet_*/` folder by rewriting its files in a temp dir.

mod common;

use common::fixtures::unet_folders;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use diffinv::backend::cpu::CpuBackend;
use diffinv::unet::{Timesteps, UNet};
use diffinv::{DType, Denoiser, Error, HostSlice, Shape, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// A temp folder, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// A fresh folder holding `config` and `files` (name → bytes).
fn folder(tag: &str, config: &str, files: &[(&str, Vec<u8>)]) -> TempDir {
    let dir = std::env::temp_dir().join(format!("diffinv-unet-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    TempDir(dir)
}

/// The folder's weights re-serialised after `edit` changed the tensor list
/// (name → (dtype, shape, bytes)).
fn rewritten(
    bytes: &[u8],
    edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView<'_>)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_err(dir: &Path) -> Error {
    match UNet::load(dir, DType::F32) {
        Err(e) => e,
        Ok(_) => panic!("{} loaded", dir.display()),
    }
}

#[test]
fn broken_checkpoints_are_typed_errors() {
    for src in unet_folders() {
        let config = std::fs::read_to_string(src.join("config.json")).unwrap();
        let weights = std::fs::read(src.join(WEIGHTS)).unwrap();

        let truncated = weights[..weights.len() - 100].to_vec();
        let dir = folder("truncated", &config, &[(WEIGHTS, truncated)]);
        assert!(matches!(load_err(&dir), Error::Checkpoint { .. }));

        let dir = folder("header", &config, &[(WEIGHTS, weights[..5].to_vec())]);
        assert!(matches!(load_err(&dir), Error::Checkpoint { .. }));

        let dir = folder("absent", &config, &[]);
        assert!(matches!(load_err(&dir), Error::Checkpoint { .. }));

        let ints = rewritten(&weights, |m| {
            let (_, shape, bytes) = m.remove("conv_in.weight").unwrap();
            m.insert("conv_in.weight".into(), (Dtype::I32, shape, bytes));
        });
        let dir = folder("dtype", &config, &[(WEIGHTS, ints)]);
        match load_err(&dir) {
            Error::BadTensor { name, got, .. } => {
                assert_eq!(name, "conv_in.weight");
                assert!(got.contains("I32"), "{got}");
            }
            e => panic!("{e}"),
        }

        let missing = rewritten(&weights, |m| {
            m.remove("conv_out.bias");
        });
        let dir = folder("missing", &config, &[(WEIGHTS, missing)]);
        assert!(matches!(load_err(&dir), Error::MissingTensor { name } if name == "conv_out.bias"));

        let misshapen = rewritten(&weights, |m| {
            let (d, mut shape, bytes) = m.remove("conv_in.weight").unwrap();
            shape.swap(0, 1);
            m.insert("conv_in.weight".into(), (d, shape, bytes));
        });
        let dir = folder("shape", &config, &[(WEIGHTS, misshapen)]);
        assert!(
            matches!(load_err(&dir), Error::BadTensor { name, .. } if name == "conv_in.weight")
        );

        let other_class = config.replace("\"UNet2DModel\"", "\"UNet2DConditionModel\"");
        let dir = folder("class", &other_class, &[(WEIGHTS, weights.clone())]);
        assert!(matches!(
            load_err(&dir),
            Error::UnsupportedConfig { key, value } if key == "_class_name" && value.contains("UNet2DConditionModel")
        ));

        let dir = folder("json", "{\"in_channels\": ", &[(WEIGHTS, weights.clone())]);
        assert!(matches!(load_err(&dir), Error::UnsupportedConfig { .. }));
    }
}

/// The checkpoint's f32 weights rounded to f16, stored as `dtype` (F16 or F32).
fn rounded(weights: &[u8], dtype: Dtype) -> Vec<u8> {
    rewritten(weights, |m| {
        for (d, _, bytes) in m.values_mut() {
            if *d == Dtype::F32 {
                *bytes = bytes
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let v = f32::from_le_bytes(c.try_into().unwrap());
                        let h = half::f16::from_f32(v);
                        match dtype {
                            Dtype::F16 => h.to_le_bytes().to_vec(),
                            _ => h.to_f32().to_le_bytes().to_vec(),
                        }
                    })
                    .collect();
                *d = dtype;
            }
        }
    })
}

#[test]
fn the_fp16_file_spelling_loads_the_same_weights() {
    for src in unet_folders() {
        let config = std::fs::read_to_string(src.join("config.json")).unwrap();
        let weights = std::fs::read(src.join(WEIGHTS)).unwrap();
        let fp16_name = "diffusion_pytorch_model.fp16.safetensors";
        let fp16 = folder(
            "fp16",
            &config,
            &[(fp16_name, rounded(&weights, Dtype::F16))],
        );
        let fp32 = folder("fp32", &config, &[(WEIGHTS, rounded(&weights, Dtype::F32))]);
        for dtype in [DType::F32, DType::F16] {
            let mut from_fp16 = UNet::load(&*fp16, dtype).unwrap();
            let mut from_fp32 = UNet::load(&*fp32, dtype).unwrap();
            let cfg = from_fp32.config().clone();
            let side = 1 << cfg.levels();
            let dims = [1, cfg.in_channels, side, side];
            let x: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let t = Timesteps::Int(&[250]);
            // Same values, read from f16 or from f32 tensors: the same network.
            assert_eq!(
                from_fp16.forward(&x, dims, t).unwrap(),
                from_fp32.forward(&x, dims, t).unwrap(),
                "{dtype:?}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    for src in unet_folders() {
        let mut net = UNet::load(&src, DType::F32).unwrap();
        let cfg = net.config().clone();
        let side = 1 << cfg.levels();
        let c = cfg.in_channels;
        let x = |dims: [usize; 4]| vec![0.5f32; dims.iter().product()];

        let dims = [2, c + 1, side, side];
        let e = net
            .forward(&x(dims), dims, Timesteps::Int(&[1, 2]))
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");

        let dims = [2, c, side + 1, side];
        let e = net
            .forward(&x(dims), dims, Timesteps::Int(&[1, 2]))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidShape { .. }), "{e}");

        let dims = [2, c, side, side];
        let e = net
            .forward(&x(dims), dims, Timesteps::Int(&[1, 2, 3]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    expected: 2,
                    got: 3,
                    ..
                }
            ),
            "{e}"
        );

        let e = net
            .forward(&x(dims)[1..], dims, Timesteps::Float(&[1.0, 2.0]))
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");

        // Through the Denoiser: a tensor of the wrong dtype or output shape.
        let backend = CpuBackend::new();
        let shape = Shape::new(2, c, side, side);
        let xt = Tensor::from_host(&backend, shape, DType::F16, HostSlice::F32(&x(dims))).unwrap();
        let mut out = Tensor::zeros(&backend, shape, DType::F16).unwrap();
        let e = net.predict(&backend, &xt, 10.0, &mut out).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { .. }), "{e}");
        let xt = Tensor::from_host(&backend, shape, DType::F32, HostSlice::F32(&x(dims))).unwrap();
        let mut small = Tensor::zeros(&backend, Shape::new(1, c, side, side), DType::F32).unwrap();
        let e = net.predict(&backend, &xt, 10.0, &mut small).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    }
}

/// The fuzzer's seed (`fuzz/seeds/tiny`, written by `fuzz/make_seed.py`): a
/// one-level network (no resampling) with f16 weights, loaded from memory.
#[test]
fn the_fuzz_seed_loads_from_memory_and_runs() {
    let seed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/tiny")).unwrap();
    let len = u16::from_le_bytes([seed[0], seed[1]]) as usize;
    let (config, weights) = seed[2..].split_at(len);
    let config =
        diffinv::unet::UNetConfig::from_json(std::str::from_utf8(config).unwrap()).unwrap();
    assert_eq!(config.levels(), 1);
    for dtype in [DType::F32, DType::F16] {
        let mut net = UNet::from_safetensors(config.clone(), weights, dtype).unwrap();
        let out = net
            .forward(&[0.5; 4], [1, 1, 2, 2], Timesteps::Float(&[10.0]))
            .unwrap();
        assert!(out.iter().all(|v| v.is_finite() && *v != 0.0), "{out:?}");
    }
    let e = UNet::from_safetensors(config, &weights[..weights.len() / 2], DType::F32);
    assert!(matches!(e, Err(Error::Checkpoint { .. })));
}

/// `prediction_type` from `scheduler_config.json` beside the weights or in a
/// pipeline's `../scheduler/`; ε without one; other values refused.
#[test]
fn the_prediction_type_comes_from_the_scheduler_config() {
    use diffinv::Prediction;
    for src in unet_folders() {
        let config = std::fs::read_to_string(src.join("config.json")).unwrap();
        let weights = std::fs::read(src.join(WEIGHTS)).unwrap();
        assert_eq!(
            UNet::load(&src, DType::F32).unwrap().prediction(),
            Prediction::Epsilon
        );

        let v = r#"{"_class_name": "DDPMScheduler", "prediction_type": "v_prediction"}"#;
        let beside = folder(
            "pred-beside",
            &config,
            &[
                (WEIGHTS, weights.clone()),
                ("scheduler_config.json", v.into()),
            ],
        );
        assert_eq!(
            UNet::load(&*beside, DType::F32).unwrap().prediction(),
            Prediction::V
        );

        let pipeline = folder("pred-pipeline", "{}", &[]);
        for (sub, name, bytes) in [
            ("unet", "config.json", config.clone().into_bytes()),
            ("unet", WEIGHTS, weights.clone()),
            ("scheduler", "scheduler_config.json", v.as_bytes().to_vec()),
        ] {
            std::fs::create_dir_all(pipeline.join(sub)).unwrap();
            std::fs::write(pipeline.join(sub).join(name), bytes).unwrap();
        }
        let net = UNet::load(pipeline.join("unet"), DType::F32).unwrap();
        assert_eq!(net.prediction(), Prediction::V);

        let sample = r#"{"prediction_type": "sample"}"#;
        let dir = folder(
            "pred-sample",
            &config,
            &[(WEIGHTS, weights), ("scheduler_config.json", sample.into())],
        );
        assert!(matches!(
            load_err(&dir),
            Error::UnsupportedConfig { key, .. } if key == "prediction_type"
        ));
    }
}
