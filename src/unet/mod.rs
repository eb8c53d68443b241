//! The built-in network: diffusers' `UNet2DModel` (DDPM-style UNets such as
//! google/ddpm-cifar10-32 and the ddpm-*-256 models), loaded from a folder
//! with `config.json` and `diffusion_pytorch_model[.fp16].safetensors`.
//!
//! The forward runs on the CPU in f32 or f16 storage (f32 accumulation):
//! convolutions by im2col + GEMM (`gemm` crate, rayon threads), activations
//! from an arena that a repeated forward of the same shape reuses entirely.
//! [`UNet`] implements [`Denoiser`] for every backend (the network itself
//! runs on the CPU), so every sampler runs with it.
//!
//! ```no_run
//! use diffinv::unet::{Timesteps, UNet};
//! use diffinv::DType;
//! # fn main() -> diffinv::Result<()> {
//! let mut net = UNet::load("ddpm-cifar10-32", DType::F32)?;
//! let x = vec![0.0f32; 2 * 3 * 32 * 32];
//! let eps = net.forward(&x, [2, 3, 32, 32], Timesteps::Int(&[999, 500]))?;
//! assert_eq!(eps.len(), x.len());
//! # Ok(())
//! # }
//! ```

mod config;
mod device;
mod forward;
mod kernels;
mod layers;
mod pool;
mod topology;
mod weights;
mod winograd;

use std::any::Any;
use std::path::{Path, PathBuf};

use half::f16;

pub use config::{prediction_from_scheduler_json, BlockKind, UNetConfig};
pub use device::DeviceUNet;
pub use forward::Probe;

use crate::backend::cpu::CpuBuffer;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::guidance::ModelPoint;
use crate::sampler::{Denoiser, GuidedDenoiser};
use crate::solver::Prediction;
use crate::tensor::{DType, HostSlice, HostVec, Shape, Tensor};
use forward::Model;
use weights::{Checkpoint, Counting, Random, Source, Tensors};

/// One timestep per batch item, as diffusers accepts them (cast to f32).
#[derive(Clone, Copy, Debug)]
pub enum Timesteps<'a> {
    Int(&'a [i64]),
    Float(&'a [f32]),
}

impl Timesteps<'_> {
    fn len(&self) -> usize {
        match self {
            Timesteps::Int(t) => t.len(),
            Timesteps::Float(t) => t.len(),
        }
    }

    fn write_f32(&self, out: &mut [f32]) {
        match self {
            Timesteps::Int(t) => out.iter_mut().zip(*t).for_each(|(o, &v)| *o = v as f32),
            Timesteps::Float(t) => out.copy_from_slice(t),
        }
    }

    /// The times as f32, one per item of a batch of `b`.
    fn to_f32(self, b: usize) -> Result<Vec<f32>> {
        check_times(b, &self)?;
        let mut out = vec![0.0; b];
        self.write_f32(&mut out);
        Ok(out)
    }
}

fn check_times(b: usize, t: &Timesteps<'_>) -> Result<()> {
    if t.len() != b {
        return Err(Error::LengthMismatch {
            what: "unet timesteps (one per batch item)",
            expected: b,
            got: t.len(),
        });
    }
    Ok(())
}

/// A checkpoint folder: its config, the weight file to read for a storage
/// dtype, and what the network predicts.
struct Located {
    config: UNetConfig,
    weights: PathBuf,
    prediction: Prediction,
}

/// Read `dir/config.json`, pick the weight file beside it (the one that
/// needs no conversion to `dtype` first) and the prediction type from a
/// `scheduler_config.json` beside it or in `../scheduler/` (a pipeline's
/// layout), ε if there is none.
fn locate(dir: &Path, dtype: DType) -> Result<Located> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let config = UNetConfig::from_json(&read(&dir.join("config.json"))?)?;
    let files = weight_files(dtype);
    let weights = files
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| Error::Checkpoint {
            path: dir.display().to_string(),
            reason: format!("neither {} nor {} found", files[0], files[1]),
        })?;
    let scheduler = [
        dir.join("scheduler_config.json"),
        dir.join("../scheduler/scheduler_config.json"),
    ];
    let prediction = match scheduler.iter().find(|p| p.exists()) {
        Some(p) => prediction_from_scheduler_json(&read(p)?)?,
        None => Prediction::Epsilon,
    };
    Ok(Located {
        config,
        weights,
        prediction,
    })
}

/// The input `[b, c, h, w]` fits the network: its channels, and sizes that
/// halve evenly at every downsampler.
fn check_input(cfg: &UNetConfig, dims: [usize; 4], len: usize) -> Result<()> {
    let [b, c, h, w] = dims;
    let shape = Shape::new(b, c, h, w);
    if c != cfg.in_channels {
        return Err(Error::ShapeMismatch {
            what: "unet input (channels)",
            expected: Shape::new(b, cfg.in_channels, h, w),
            got: shape,
        });
    }
    let factor = 1usize << (cfg.levels() - 1);
    if b == 0 || h == 0 || w == 0 || h % factor != 0 || w % factor != 0 {
        return Err(Error::InvalidShape {
            shape,
            reason: "unet input: batch ≥ 1, and height and width multiples of 2^(levels − 1)",
        });
    }
    let expected = shape.checked_len()?;
    if len != expected {
        return Err(Error::LengthMismatch {
            what: "unet input",
            expected,
            got: len,
        });
    }
    Ok(())
}

/// A network call on tensors: `x` is `[b, c, h, w]` and fits the network,
/// `out` is `[b, out_channels, h, w]`, both of the network's storage dtype.
fn check_call<B: Backend>(
    cfg: &UNetConfig,
    dtype: DType,
    x: &Tensor<B>,
    out: &Tensor<B>,
) -> Result<[usize; 4]> {
    let shape = x.shape();
    let [b, c, h, w] = match *shape.dims() {
        [b, c, h, w] => [b, c, h, w],
        _ => {
            return Err(Error::InvalidShape {
                shape,
                reason: "unet input must be [batch, channels, height, width]",
            })
        }
    };
    check_input(cfg, [b, c, h, w], x.len())?;
    let expected = Shape::new(b, cfg.out_channels, h, w);
    if out.shape() != expected {
        return Err(Error::ShapeMismatch {
            what: "unet output",
            expected,
            got: out.shape(),
        });
    }
    for (t, what) in [(x.dtype(), "unet input"), (out.dtype(), "unet output")] {
        if t != dtype {
            return Err(Error::DTypeMismatch {
                what,
                expected: dtype,
                got: t,
            });
        }
    }
    Ok([b, c, h, w])
}

/// The conditional samplers need an ε-predicting network.
fn require_epsilon(prediction: Prediction) -> Result<()> {
    if prediction == Prediction::Epsilon {
        Ok(())
    } else {
        Err(Error::UnsupportedConfig {
            key: "prediction_type (conditional samplers need epsilon)".into(),
            value: format!("{prediction:?}"),
        })
    }
}

enum Net {
    F32(Model<f32>),
    F16(Model<f16>),
}

/// A `UNet2DModel` ready to run on the CPU.
pub struct UNet {
    config: UNetConfig,
    prediction: Prediction,
    net: Net,
    /// Per-item times of the current call (reused: no allocation per call).
    times: Vec<f32>,
    parameters: usize,
}

/// Weight files in the order they are tried for a storage dtype: the one
/// that needs no conversion first.
fn weight_files(dtype: DType) -> [&'static str; 2] {
    const FP32: &str = "diffusion_pytorch_model.safetensors";
    const FP16: &str = "diffusion_pytorch_model.fp16.safetensors";
    if dtype == DType::F16 {
        [FP16, FP32]
    } else {
        [FP32, FP16]
    }
}

impl UNet {
    /// Load `dir/config.json` and the weights beside it, stored as `dtype`
    /// (F32 or F16) whatever the file's own float type. What the network
    /// predicts comes from a `scheduler_config.json` beside it or in
    /// `../scheduler/` (a pipeline's layout), ε if there is none.
    pub fn load(dir: impl AsRef<Path>, dtype: DType) -> Result<Self> {
        let found = locate(dir.as_ref(), dtype)?;
        let mut net = Self::from_file(found.config, &found.weights, dtype)?;
        net.prediction = found.prediction;
        Ok(net)
    }

    /// Build `config` with the weights of one safetensors file.
    pub fn from_file(config: UNetConfig, path: &Path, dtype: DType) -> Result<Self> {
        let checkpoint = Checkpoint::open(path)?;
        let tensors = checkpoint.tensors()?;
        Self::build(config, &tensors, dtype)
    }

    /// Build `config` with the weights of a safetensors file already in memory.
    pub fn from_safetensors(config: UNetConfig, bytes: &[u8], dtype: DType) -> Result<Self> {
        Self::build(config, &Tensors::parse(bytes, "<memory>")?, dtype)
    }

    /// `config` with seeded random weights (benchmarks of released
    /// architectures without their checkpoints).
    pub fn random(config: UNetConfig, dtype: DType, seed: u64) -> Result<Self> {
        config.validate()?;
        Self::build(config, &Random { seed }, dtype)
    }

    fn build(config: UNetConfig, src: &dyn Source, dtype: DType) -> Result<Self> {
        let src = &Counting::new(src);
        let net = match dtype {
            DType::F32 => Net::F32(Model::build(&config, src)?),
            DType::F16 => Net::F16(Model::build(&config, src)?),
            other => {
                return Err(Error::UnsupportedDType {
                    backend: "cpu unet",
                    dtype: other,
                })
            }
        };
        Ok(UNet {
            config,
            prediction: Prediction::Epsilon,
            net,
            times: Vec::new(),
            parameters: src.values(),
        })
    }

    /// What the network's output is (ε or v): set the plan's
    /// [`crate::PlanConfig::prediction`] to it.
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// Declare what the network predicts (for weights loaded without their
    /// scheduler config).
    pub fn set_prediction(&mut self, prediction: Prediction) {
        self.prediction = prediction;
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Storage dtype of weights and activations.
    pub fn dtype(&self) -> DType {
        match self.net {
            Net::F32(_) => DType::F32,
            Net::F16(_) => DType::F16,
        }
    }

    /// Values in the weights (biases and norms included).
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// FLOPs (2 per multiply-add) of one forward of a `[b, in, h, w]` batch.
    pub fn flops(&self, b: usize, h: usize, w: usize) -> u64 {
        match &self.net {
            Net::F32(m) => m.flops(b, h, w),
            Net::F16(m) => m.flops(b, h, w),
        }
    }

    /// Peak bytes of activations and scratch held at once by the forwards
    /// so far (weights not included).
    pub fn peak_bytes(&self) -> usize {
        match &self.net {
            Net::F32(m) => m.arena().peak_bytes(),
            Net::F16(m) => m.arena().peak_bytes(),
        }
    }

    /// Buffers the forwards have allocated so far; constant once each input
    /// shape has run once.
    pub fn allocations(&self) -> u64 {
        match &self.net {
            Net::F32(m) => m.arena().allocations(),
            Net::F16(m) => m.arena().allocations(),
        }
    }

    fn set_times(&mut self, b: usize, t: Timesteps<'_>) -> Result<()> {
        check_times(b, &t)?;
        self.times.resize(b, 0.0);
        t.write_f32(&mut self.times);
        Ok(())
    }

    /// The network's output for `x` (`dims = [b, c, h, w]`, BCHW, f32; an
    /// f16 network rounds it to f16 first) at per-item times `t`.
    pub fn forward(&mut self, x: &[f32], dims: [usize; 4], t: Timesteps<'_>) -> Result<Vec<f32>> {
        self.forward_probed(x, dims, t, None)
    }

    /// [`UNet::forward`], also handing every block's output to `probe` under
    /// its diffusers module path (for layer-by-layer comparisons).
    pub fn forward_probed(
        &mut self,
        x: &[f32],
        dims: [usize; 4],
        t: Timesteps<'_>,
        probe: Option<Probe<'_>>,
    ) -> Result<Vec<f32>> {
        check_input(&self.config, dims, x.len())?;
        let [b, _, h, w] = dims;
        self.set_times(b, t)?;
        let out_len = b * self.config.out_channels * h * w;
        let times = &self.times;
        Ok(match &mut self.net {
            Net::F32(m) => {
                let mut out = vec![0f32; out_len];
                m.forward(x, (b, h, w), times, &mut out, probe)?;
                out
            }
            Net::F16(m) => {
                let xs: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let mut out = vec![f16::ZERO; out_len];
                m.forward(&xs, (b, h, w), times, &mut out, probe)?;
                out.iter().map(|v| v.to_f32()).collect()
            }
        })
    }
}

/// ε or v, as [`UNet::prediction`] says (the plan's [`crate::Prediction`]
/// must match), at network time `tau` for every item, on the CPU whatever the
/// sampler's backend. Tensors must be of the network's storage dtype. On the
/// CPU backend the forward reads and writes the tensors' own buffers, so after
/// the first call of a shape a sampling loop allocates nothing here; on a
/// device backend `x` is downloaded and the output uploaded each call.
impl<B: Backend> Denoiser<B> for UNet {
    fn predict(&mut self, backend: &B, x: &Tensor<B>, tau: f64, out: &mut Tensor<B>) -> Result<()> {
        let [b, _, h, w] = check_call(&self.config, self.dtype(), x, out)?;
        self.times.clear();
        self.times.resize(b, tau as f32);
        let times = &self.times;
        let dims = (b, h, w);
        let (n_in, n_out) = (x.len(), out.len());
        let xb = x.buffer() as &dyn Any;
        let ob = out.buffer_mut() as &mut dyn Any;
        if let (Some(xs), Some(os)) = (xb.downcast_ref::<CpuBuffer>(), ob.downcast_mut()) {
            // The dtypes were checked, so one of these arms runs; anything
            // else would fall through to the host path below.
            match (&mut self.net, xs, os) {
                (Net::F32(m), CpuBuffer::F32(xs), CpuBuffer::F32(os)) => {
                    m.forward(&xs[..n_in], dims, times, &mut os[..n_out], None)?;
                    return Ok(());
                }
                (Net::F16(m), CpuBuffer::F16(xs), CpuBuffer::F16(os)) => {
                    m.forward(&xs[..n_in], dims, times, &mut os[..n_out], None)?;
                    return Ok(());
                }
                _ => {}
            }
        }
        // The download is in the storage dtype, checked above to be the
        // network's; any other answer is converted, never trusted.
        match (&mut self.net, x.download(backend)?) {
            (Net::F32(m), host) => {
                let xs = host.into_f32();
                let mut os = vec![0f32; n_out];
                m.forward(&xs, dims, times, &mut os, None)?;
                out.upload(backend, HostSlice::F32(&os))
            }
            (Net::F16(m), host) => {
                let xs = match host {
                    HostVec::F16(v) => v,
                    other => other.into_f32().into_iter().map(f16::from_f32).collect(),
                };
                let mut os = vec![f16::ZERO; n_out];
                m.forward(&xs, dims, times, &mut os, None)?;
                out.upload(backend, HostSlice::F16(&os))
            }
        }
    }
}

/// The conditional samplers' view of an ε-predicting UNet: ε at the model
/// point's network time. It has no backward pass, so the guided samplers run
/// it with [`crate::sampler::Jacobian::FiniteDifference`] or `Dropped`
/// (`Exact` is an error).
impl<B: Backend> GuidedDenoiser<B> for UNet {
    fn eps(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        out: &mut Tensor<B>,
    ) -> Result<()> {
        require_epsilon(self.prediction)?;
        self.predict(backend, x, point.tau, out)
    }
}
