//! The UNet forward on the backend that holds the sampler's tensors: the
//! same network as [`super::UNet`], built from the same
//! [`super::topology::Topology`], its layers composed of the nn family's
//! kernels (WGSL on wgpu, CUDA kernels, the CPU definitions on the CPU
//! backend), weights and activations in device buffers of one storage type:
//! f32, or f16 where the backend's nn family has it (f32 math either way). A
//! sampling loop on a device backend then never moves an image to the host.

mod arena;
mod layers;

use std::path::Path;

use arena::DeviceArena;
use layers::{Act, Attention, Conv, ConvShape, Dims, Linear, Norm, Resnet, Weights};

use super::config::UNetConfig;
use super::forward::Probe;
use super::topology::{LevelSpec, Resample, Topology};
use super::weights::{Checkpoint, Counting, Random, Source, Tensors};
use super::{check_call, locate, Timesteps};
use crate::error::{Error, Result};
use crate::guidance::ModelPoint;
use crate::ops::nn::{self, Concat, TimeProj};
use crate::sampler::{Denoiser, GuidedDenoiser};
use crate::solver::Prediction;
use crate::tensor::{DType, HostSlice, Tensor};

struct Level<B: nn::NnOps> {
    resnets: Vec<Resnet<B>>,
    attentions: Vec<Attention<B>>,
    resample: Option<(Resample, Conv<B>)>,
}

impl<B: nn::NnOps> Level<B> {
    fn load(weights: &Weights<'_, B>, spec: &LevelSpec) -> Result<Self> {
        let resnets = spec
            .resnets
            .iter()
            .map(|r| Resnet::load(weights, r))
            .collect::<Result<_>>()?;
        let attentions = spec
            .attentions
            .iter()
            .map(|a| Attention::load(weights, a))
            .collect::<Result<_>>()?;
        let resample = match &spec.resample {
            None => None,
            Some(r) => {
                let shape = match r.kind {
                    Resample::Down { pad } => ConvShape {
                        k: 3,
                        stride: 2,
                        pad,
                        pad_after: 1,
                    },
                    Resample::Up => ConvShape::SAME3,
                };
                let widths = (r.channels, r.channels);
                Some((r.kind, Conv::load(weights, &r.name, widths, shape)?))
            }
        };
        Ok(Level {
            resnets,
            attentions,
            resample,
        })
    }

    /// The resampled `x` (nearest ×2 first for an upsampler); gives `x` back.
    fn resample(&self, backend: &B, x: Act<B>, arena: &mut DeviceArena<B>) -> Result<Act<B>> {
        let Some((kind, conv)) = &self.resample else {
            return Ok(x);
        };
        let input = match kind {
            Resample::Down { .. } => x,
            Resample::Up => {
                let d = x.dims;
                let up_dims = Dims {
                    h: 2 * d.h,
                    w: 2 * d.w,
                    ..d
                };
                let mut buf = arena.take(backend, up_dims.len())?;
                nn::upsample2x(backend, d.b * d.c, d.h, d.w, &x.buf, &mut buf)?;
                arena.give(x.buf);
                Act { buf, dims: up_dims }
            }
        };
        let out = conv.run(backend, &input.buf, input.dims, arena)?;
        arena.give(input.buf);
        Ok(out)
    }

    fn flops(&self, x: Dims) -> (u64, Dims) {
        let blocks = self.resnets.iter().map(|r| r.flops(x)).sum::<u64>()
            + self.attentions.iter().map(|a| a.flops(x)).sum::<u64>();
        let out = x.with_c(self.resnets.last().map_or(x.c, |r| r.out_channels()));
        match &self.resample {
            None => (blocks, out),
            Some((kind, conv)) => {
                let input = match kind {
                    Resample::Down { .. } => out,
                    Resample::Up => Dims {
                        h: 2 * out.h,
                        w: 2 * out.w,
                        ..out
                    },
                };
                (blocks + conv.flops(input), conv.out_dims(input))
            }
        }
    }
}

/// A `UNet2DModel` whose forward runs on backend `B`, weights and activations
/// in f32 or f16 storage (f32 math); see the module docs.
pub struct DeviceUNet<B: nn::NnOps> {
    config: UNetConfig,
    prediction: Prediction,
    time_1: Linear<B>,
    time_2: Linear<B>,
    conv_in: Conv<B>,
    down: Vec<Level<B>>,
    mid: Level<B>,
    up: Vec<Level<B>>,
    norm_out: Norm<B>,
    conv_out: Conv<B>,
    arena: DeviceArena<B>,
    parameters: usize,
}

impl<B: nn::NnOps> DeviceUNet<B> {
    /// Load a checkpoint folder as [`super::UNet::load`] does (config,
    /// weights in either float type, the prediction type beside them) onto
    /// `backend`, stored as `dtype` (f32, or f16 where
    /// [`nn::NnOps::nn_supports`] says so).
    pub fn load(backend: &B, dir: impl AsRef<Path>, dtype: DType) -> Result<Self> {
        require_storage(backend, dtype)?;
        let found = locate(dir.as_ref(), dtype)?;
        let checkpoint = Checkpoint::open(&found.weights)?;
        let mut net = Self::build(backend, found.config, &checkpoint.tensors()?, dtype)?;
        net.prediction = found.prediction;
        Ok(net)
    }

    /// Build `config` with the weights of a safetensors file in memory.
    pub fn from_safetensors(
        backend: &B,
        config: UNetConfig,
        bytes: &[u8],
        dtype: DType,
    ) -> Result<Self> {
        Self::build(backend, config, &Tensors::parse(bytes, "<memory>")?, dtype)
    }

    /// `config` with the seeded random weights of [`super::UNet::random`]
    /// (the same values for the same seed).
    pub fn random(backend: &B, config: UNetConfig, dtype: DType, seed: u64) -> Result<Self> {
        config.validate()?;
        Self::build(backend, config, &Random { seed }, dtype)
    }

    fn build(backend: &B, config: UNetConfig, src: &dyn Source, dtype: DType) -> Result<Self> {
        require_storage(backend, dtype)?;
        let src = &Counting::new(src);
        let topology = Topology::of(&config)?;
        let weights = &Weights {
            backend,
            src,
            dtype,
        };
        let level = |spec| Level::load(weights, spec);
        let down = topology.down.iter().map(level).collect::<Result<_>>()?;
        let mid = level(&topology.mid)?;
        let up = topology.up.iter().map(level).collect::<Result<_>>()?;
        let c0 = config.block_out_channels[0];
        let temb = config.time_embed_dim();
        let norm = (config.norm_num_groups, config.norm_eps);
        let (cin, cout) = (config.in_channels, config.out_channels);
        let time_1 = Linear::load(weights, "time_embedding.linear_1", c0, temb)?;
        let time_2 = Linear::load(weights, "time_embedding.linear_2", temb, temb)?;
        let conv_in = Conv::load(weights, "conv_in", (cin, c0), ConvShape::SAME3)?;
        let norm_out = Norm::load(weights, "conv_norm_out", c0, norm)?;
        let conv_out = Conv::load(weights, "conv_out", (c0, cout), ConvShape::SAME3)?;
        Ok(DeviceUNet {
            config,
            prediction: Prediction::Epsilon,
            time_1,
            time_2,
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            arena: DeviceArena::new(dtype),
            parameters: src.values(),
        })
    }

    /// What the network's output is (ε or v).
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

    /// The storage type of the weights, activations, input and output.
    pub fn dtype(&self) -> DType {
        self.arena.dtype()
    }

    /// Values in the weights (biases and norms included).
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// Bytes of the weights on the device.
    pub fn weight_bytes(&self) -> usize {
        self.dtype().size() * self.parameters
    }

    /// Peak bytes of activations held at once by the forwards so far
    /// (weights not included).
    pub fn peak_bytes(&self) -> usize {
        self.arena.peak_bytes()
    }

    /// Activation buffers allocated so far; constant once each input shape
    /// has run once.
    pub fn allocations(&self) -> u64 {
        self.arena.allocations()
    }

    /// FLOPs (2 per multiply-add) of one forward of a `[b, in, h, w]` batch.
    pub fn flops(&self, b: usize, h: usize, w: usize) -> u64 {
        let c0 = self.config.block_out_channels[0];
        let mut x = Dims { b, c: c0, h, w };
        let mut total = self.time_1.flops(b)
            + self.time_2.flops(b)
            + self.conv_in.flops(x.with_c(self.config.in_channels));
        for level in self.down.iter().chain([&self.mid]).chain(&self.up) {
            let (f, next) = level.flops(x);
            total += f;
            x = next;
        }
        total + self.conv_out.flops(x)
    }

    /// The network's output for `x` (`[b, c, h, w]`) at per-item times `t`,
    /// into `out` (`[b, out_channels, h, w]`), both in the network's dtype.
    pub fn forward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        t: Timesteps<'_>,
        out: &mut Tensor<B>,
    ) -> Result<()> {
        self.forward_probed(backend, x, t, out, None)
    }

    /// [`DeviceUNet::forward`], also handing every block's output to
    /// `probe` (read back to the host) under its diffusers module path.
    pub fn forward_probed(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        t: Timesteps<'_>,
        out: &mut Tensor<B>,
        probe: Option<Probe<'_>>,
    ) -> Result<()> {
        let dims = check_call(&self.config, self.dtype(), x, out)?;
        let times = t.to_f32(dims[0])?;
        self.run(backend, x.buffer(), dims, &times, out.buffer_mut(), probe)
    }

    fn run(
        &mut self,
        backend: &B,
        x: &B::Buffer,
        [b, cin, h, w]: [usize; 4],
        times: &[f32],
        out: &mut B::Buffer,
        mut probe: Option<Probe<'_>>,
    ) -> Result<()> {
        let arena = &mut self.arena;
        arena.begin();
        let c0 = self.config.block_out_channels[0];
        let x_dims = Dims { b, c: cin, h, w };

        let mut t_buf = arena.take_as(backend, b, DType::F32)?;
        backend.write(&mut t_buf, DType::F32, 0, HostSlice::F32(times))?;
        let proj_dims = Dims {
            b,
            c: c0,
            h: 1,
            w: 1,
        };
        let mut tp = arena.take(backend, proj_dims.len())?;
        let g = TimeProj {
            batch: b,
            dim: c0,
            freq_shift: self.config.freq_shift as f32,
            flip_sin_to_cos: self.config.flip_sin_to_cos,
        };
        nn::time_proj(backend, g, &t_buf, &mut tp)?;
        arena.give(t_buf);
        let tp = Act {
            buf: tp,
            dims: proj_dims,
        };
        emit(backend, &mut probe, "time_proj", &tp)?;
        let a = self.time_1.run(backend, &tp.buf, b, arena)?;
        arena.give(tp.buf);
        let a = silu(backend, a, arena)?;
        let temb = self.time_2.run(backend, &a.buf, b, arena)?;
        arena.give(a.buf);
        emit(backend, &mut probe, "time_embedding", &temb)?;
        let temb = silu(backend, temb, arena)?;

        let first = if self.config.center_input_sample {
            let mut centred = arena.take(backend, x_dims.len())?;
            nn::affine(backend, x_dims.len(), 2.0, -1.0, x, &mut centred)?;
            let first = self.conv_in.run(backend, &centred, x_dims, arena)?;
            arena.give(centred);
            first
        } else {
            self.conv_in.run(backend, x, x_dims, arena)?
        };
        emit(backend, &mut probe, "conv_in", &first)?;

        let mut skips = vec![first];
        for (i, level) in self.down.iter().enumerate() {
            let start = skips.len();
            for (j, resnet) in level.resnets.iter().enumerate() {
                let prev = &skips[skips.len() - 1];
                let mut hcur = resnet.run(backend, &prev.buf, prev.dims, &temb.buf, arena)?;
                emit(
                    backend,
                    &mut probe,
                    &format!("down_blocks.{i}.resnets.{j}"),
                    &hcur,
                )?;
                if let Some(attn) = level.attentions.get(j) {
                    let next = attn.run(backend, &hcur.buf, hcur.dims, arena)?;
                    arena.give(std::mem::replace(&mut hcur, next).buf);
                    let name = format!("down_blocks.{i}.attentions.{j}");
                    emit(backend, &mut probe, &name, &hcur)?;
                }
                skips.push(hcur);
            }
            if let Some((_, conv)) = &level.resample {
                let prev = &skips[skips.len() - 1];
                let next = conv.run(backend, &prev.buf, prev.dims, arena)?;
                skips.push(next);
            }
            if probe.is_some() {
                for (k, s) in skips[start..].iter().enumerate() {
                    emit(
                        backend,
                        &mut probe,
                        &format!("down_blocks.{i}.out.1.{k}"),
                        s,
                    )?;
                }
                let name = format!("down_blocks.{i}.out.0");
                emit(backend, &mut probe, &name, &skips[skips.len() - 1])?;
            }
        }

        let prev = &skips[skips.len() - 1];
        let mid = &self.mid;
        let mut hcur = mid.resnets[0].run(backend, &prev.buf, prev.dims, &temb.buf, arena)?;
        emit(backend, &mut probe, "mid_block.resnets.0", &hcur)?;
        if let Some(attn) = mid.attentions.first() {
            let next = attn.run(backend, &hcur.buf, hcur.dims, arena)?;
            arena.give(std::mem::replace(&mut hcur, next).buf);
            emit(backend, &mut probe, "mid_block.attentions.0", &hcur)?;
        }
        let next = mid.resnets[1].run(backend, &hcur.buf, hcur.dims, &temb.buf, arena)?;
        arena.give(std::mem::replace(&mut hcur, next).buf);
        emit(backend, &mut probe, "mid_block", &hcur)?;

        for (i, level) in self.up.iter().enumerate() {
            for (j, resnet) in level.resnets.iter().enumerate() {
                // The topology gives as many skips as up-block resnets.
                let skip = skips.pop().ok_or_else(|| Error::Device {
                    backend: "unet",
                    message: "an up-block resnet without its skip".into(),
                })?;
                let cat = concat(backend, hcur, skip, arena)?;
                hcur = resnet.run(backend, &cat.buf, cat.dims, &temb.buf, arena)?;
                arena.give(cat.buf);
                emit(
                    backend,
                    &mut probe,
                    &format!("up_blocks.{i}.resnets.{j}"),
                    &hcur,
                )?;
                if let Some(attn) = level.attentions.get(j) {
                    let next = attn.run(backend, &hcur.buf, hcur.dims, arena)?;
                    arena.give(std::mem::replace(&mut hcur, next).buf);
                    let name = format!("up_blocks.{i}.attentions.{j}");
                    emit(backend, &mut probe, &name, &hcur)?;
                }
            }
            hcur = level.resample(backend, hcur, arena)?;
            emit(backend, &mut probe, &format!("up_blocks.{i}"), &hcur)?;
        }
        arena.give(temb.buf);

        let normed = self
            .norm_out
            .run(backend, &hcur.buf, hcur.dims, true, arena)?;
        arena.give(hcur.buf);
        self.conv_out
            .run_into(backend, &normed.buf, normed.dims, out)?;
        let out_dims = self.conv_out.out_dims(normed.dims);
        arena.give(normed.buf);
        emit_buffer(backend, &mut probe, "conv_out", out, out_dims)
    }
}

/// An nn family that stores `dtype` on `backend`, before any weight is uploaded.
fn require_storage<B: nn::NnOps>(backend: &B, dtype: DType) -> Result<()> {
    if backend.nn_supports(dtype) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            backend: backend.kind().name(),
            dtype,
        })
    }
}

/// `silu(x)` in a new buffer; gives `x` back.
fn silu<B: nn::NnOps>(backend: &B, x: Act<B>, arena: &mut DeviceArena<B>) -> Result<Act<B>> {
    let mut buf = arena.take(backend, x.dims.len())?;
    nn::silu(backend, x.dims.len(), &x.buf, &mut buf)?;
    arena.give(x.buf);
    Ok(Act { buf, dims: x.dims })
}

/// `cat([a, b], dim = channels)`; gives both back.
fn concat<B: nn::NnOps>(
    backend: &B,
    a: Act<B>,
    b: Act<B>,
    arena: &mut DeviceArena<B>,
) -> Result<Act<B>> {
    let dims = a.dims.with_c(a.dims.c + b.dims.c);
    let mut buf = arena.take(backend, dims.len())?;
    for (part, c_offset) in [(&a, 0), (&b, a.dims.c)] {
        let g = Concat {
            batch: dims.b,
            c: part.dims.c,
            hw: dims.hw(),
            c_total: dims.c,
            c_offset,
        };
        nn::concat_into(backend, g, &part.buf, &mut buf)?;
    }
    arena.give(a.buf);
    arena.give(b.buf);
    Ok(Act { buf, dims })
}

fn emit<B: nn::NnOps>(
    backend: &B,
    probe: &mut Option<Probe<'_>>,
    name: &str,
    a: &Act<B>,
) -> Result<()> {
    emit_buffer(backend, probe, name, &a.buf, a.dims)
}

/// Hand `buf` (holding `dims`) to the probe, if there is one.
fn emit_buffer<B: nn::NnOps>(
    backend: &B,
    probe: &mut Option<Probe<'_>>,
    name: &str,
    buf: &B::Buffer,
    d: Dims,
) -> Result<()> {
    if let Some(p) = probe {
        let v = backend
            .read(buf, B::buffer_info(buf).dtype, 0, d.len())?
            .into_f32();
        // A time-path activation is `[b, c]`, as the CPU forward reports it.
        let shape: &[usize] = if d.h == 1 && d.w == 1 && name.starts_with("time") {
            &[d.b, d.c]
        } else {
            &[d.b, d.c, d.h, d.w]
        };
        p(name, shape, &v);
    }
    Ok(())
}

/// ε or v, as [`DeviceUNet::prediction`] says, at network time `tau` for
/// every item; `x` and `out` are tensors of the network's backend and dtype,
/// and nothing leaves the device but the times.
impl<B: nn::NnOps> Denoiser<B> for DeviceUNet<B> {
    fn predict(&mut self, backend: &B, x: &Tensor<B>, tau: f64, out: &mut Tensor<B>) -> Result<()> {
        let dims = check_call(&self.config, self.dtype(), x, out)?;
        let times = vec![tau as f32; dims[0]];
        self.run(backend, x.buffer(), dims, &times, out.buffer_mut(), None)
    }
}

/// ε at the model point's network time, for the conditional samplers (no
/// backward pass: `Jacobian::FiniteDifference` or `Dropped`).
impl<B: nn::NnOps> GuidedDenoiser<B> for DeviceUNet<B> {
    fn eps(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        point: ModelPoint,
        out: &mut Tensor<B>,
    ) -> Result<()> {
        super::require_epsilon(self.prediction)?;
        self.predict(backend, x, point.tau, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FLOP count walks the same blocks as the CPU network's.
    #[test]
    fn flops_match_the_cpu_network() {
        let backend = crate::backend::cpu::CpuBackend::new();
        let config = UNetConfig::ddpm_cifar10_32();
        let device = DeviceUNet::random(&backend, config.clone(), DType::F32, 1).unwrap();
        let cpu = super::super::UNet::random(config, DType::F32, 1).unwrap();
        assert_eq!(device.flops(2, 32, 32), cpu.flops(2, 32, 32));
    }
}
