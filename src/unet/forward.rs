//! The network: its layers built from a config and a weight source with the
//! channel bookkeeping of diffusers' `UNet2DModel`, and the forward pass.

use rayon::prelude::*;

use super::config::UNetConfig;
use super::kernels::{Act, ConvGeom};
use super::layers::{silu_all, Attention, Conv, Linear, Norm, Resnet};
use super::pool::{Arena, Store};
use super::topology::{LevelSpec, Resample, Topology};
use super::weights::Source;
use crate::error::{Error, Result};

/// Receives intermediate tensors by diffusers module path, in `[B, C, H, W]`
/// (or `[B, C]`) order as f32.
pub type Probe<'a> = &'a mut dyn FnMut(&str, &[usize], &[f32]);

struct Level<S> {
    resnets: Vec<Resnet<S>>,
    attentions: Vec<Attention<S>>,
    /// Downsampler (down blocks) or upsampler (up blocks).
    resample: Option<Conv<S>>,
}

/// A built network in storage type `S`, with the arena its forwards run in.
pub struct Model<S> {
    config: UNetConfig,
    time_1: Linear,
    time_2: Linear,
    conv_in: Conv<S>,
    down: Vec<Level<S>>,
    mid: Level<S>,
    up: Vec<Level<S>>,
    norm_out: Norm,
    conv_out: Conv<S>,
    arena: Arena<S>,
}

fn conv3(stride: usize, pad: usize, up: usize) -> ConvGeom {
    ConvGeom {
        k: 3,
        stride,
        pad,
        pad_after: 1,
        up,
    }
}

impl<S: Store> Level<S> {
    fn load(spec: &LevelSpec, src: &dyn Source) -> Result<Self> {
        let resnets = spec
            .resnets
            .iter()
            .map(|r| Resnet::load(src, &r.name, r.widths, r.out_scale))
            .collect::<Result<_>>()?;
        let attentions = spec
            .attentions
            .iter()
            .map(|a| Attention::load(src, a))
            .collect::<Result<_>>()?;
        let resample = match &spec.resample {
            None => None,
            Some(r) => {
                let geom = match r.kind {
                    Resample::Down { pad } => conv3(2, pad, 1),
                    Resample::Up => conv3(1, 1, 2),
                };
                Some(Conv::load(src, &r.name, r.channels, r.channels, geom)?)
            }
        };
        Ok(Level {
            resnets,
            attentions,
            resample,
        })
    }
}

impl<S: Store> Model<S> {
    pub fn build(config: &UNetConfig, src: &dyn Source) -> Result<Self> {
        let cfg = config;
        let topology = Topology::of(cfg)?;
        let level = |spec| Level::load(spec, src);
        let down = topology.down.iter().map(level).collect::<Result<_>>()?;
        let mid = level(&topology.mid)?;
        let up = topology.up.iter().map(level).collect::<Result<_>>()?;
        let c0 = cfg.block_out_channels[0];
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let temb = cfg.time_embed_dim();
        Ok(Model {
            config: cfg.clone(),
            time_1: Linear::load(src, "time_embedding.linear_1", c0, temb)?,
            time_2: Linear::load(src, "time_embedding.linear_2", temb, temb)?,
            conv_in: Conv::load(src, "conv_in", cfg.in_channels, c0, conv3(1, 1, 1))?,
            down,
            mid,
            up,
            norm_out: Norm::load(src, "conv_norm_out", c0, groups, eps)?,
            conv_out: Conv::load(src, "conv_out", c0, cfg.out_channels, conv3(1, 1, 1))?,
            arena: Arena::default(),
        })
    }

    pub fn arena(&self) -> &Arena<S> {
        &self.arena
    }

    /// The sinusoidal embedding, `[b, c0]`, with diffusers' float32 rounding
    /// at each step (its f64 model embeds in f32 too).
    fn time_proj(&mut self, t: &[f32]) -> Vec<f32> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let shift = (half as f64 - self.config.freq_shift) as f32;
        let ln = 10000f64.ln() as f32;
        let mut out = self.arena.take_f32(t.len() * dim);
        for (row, &ti) in out.chunks_mut(dim).zip(t) {
            for j in 0..half {
                let freq = ((-ln * j as f32) / shift).exp();
                let arg = ti * freq;
                let (s, c) = (arg.sin(), arg.cos());
                let (first, second) = if self.config.flip_sin_to_cos {
                    (c, s)
                } else {
                    (s, c)
                };
                row[j] = first;
                row[half + j] = second;
            }
            if dim % 2 == 1 {
                row[dim - 1] = 0.0;
            }
        }
        out
    }

    /// ε (or v) for `x` (`[b, in, h, w]`, BCHW) at per-item times `t`, into
    /// `out` (`[b, out, h, w]`). The caller checked every size.
    pub fn forward(
        &mut self,
        x: &[S],
        (b, h, w): (usize, usize, usize),
        t: &[f32],
        out: &mut [S],
        mut probe: Option<Probe<'_>>,
    ) -> Result<()> {
        let cin = self.config.in_channels;
        let hw = h * w;
        let n = b * hw;
        let mut input = self.arena.take(cin * n);
        let center = self.config.center_input_sample;
        input.par_chunks_mut(n).enumerate().for_each(|(c, row)| {
            for (bi, seg) in row.chunks_mut(hw).enumerate() {
                let src = &x[(bi * cin + c) * hw..][..hw];
                for (d, s) in seg.iter_mut().zip(src) {
                    *d = if center {
                        S::from_f32(2.0 * s.to_f32() - 1.0)
                    } else {
                        *s
                    };
                }
            }
        });
        let input = Act {
            data: input,
            c: cin,
            b,
            h,
            w,
        };

        let tp = self.time_proj(t);
        emit_rows(&mut probe, "time_proj", &tp, b);
        let a = self.time_1.run(&tp, b, &mut self.arena);
        let a_act = silu_all(&a, &mut self.arena);
        let temb = self.time_2.run(&a_act, b, &mut self.arena);
        emit_rows(&mut probe, "time_embedding", &temb, b);
        let temb_act = silu_all(&temb, &mut self.arena);
        for v in [tp, a, a_act, temb] {
            self.arena.give_f32(v);
        }

        let Model {
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            arena,
            ..
        } = self;
        let arena: &mut Arena<S> = arena;
        let first = conv_in.run(&input, None, arena);
        arena.give(input.data);
        emit(&mut probe, "conv_in", &first);
        let mut skips = vec![first];
        for (i, level) in down.iter().enumerate() {
            let start = skips.len();
            for (j, resnet) in level.resnets.iter().enumerate() {
                let mut hcur = resnet.run(last(&skips), &temb_act, arena);
                emit(&mut probe, &format!("down_blocks.{i}.resnets.{j}"), &hcur);
                if let Some(attn) = level.attentions.get(j) {
                    let next = attn.run(&hcur, arena);
                    arena.give(std::mem::replace(&mut hcur, next).data);
                    emit(
                        &mut probe,
                        &format!("down_blocks.{i}.attentions.{j}"),
                        &hcur,
                    );
                }
                skips.push(hcur);
            }
            if let Some(conv) = &level.resample {
                let next = conv.run(last(&skips), None, arena);
                skips.push(next);
            }
            if probe.is_some() {
                for (k, s) in skips[start..].iter().enumerate() {
                    emit(&mut probe, &format!("down_blocks.{i}.out.1.{k}"), s);
                }
                emit(&mut probe, &format!("down_blocks.{i}.out.0"), last(&skips));
            }
        }

        let mut hcur = mid.resnets[0].run(last(&skips), &temb_act, arena);
        emit(&mut probe, "mid_block.resnets.0", &hcur);
        if let Some(attn) = mid.attentions.first() {
            let next = attn.run(&hcur, arena);
            arena.give(std::mem::replace(&mut hcur, next).data);
            emit(&mut probe, "mid_block.attentions.0", &hcur);
        }
        let next = mid.resnets[1].run(&hcur, &temb_act, arena);
        arena.give(std::mem::replace(&mut hcur, next).data);
        emit(&mut probe, "mid_block", &hcur);

        for (i, level) in up.iter().enumerate() {
            for (j, resnet) in level.resnets.iter().enumerate() {
                // The topology gives as many skips as up-block resnets.
                let skip = skips.pop().ok_or_else(|| Error::Device {
                    backend: "unet",
                    message: "an up-block resnet without its skip".into(),
                })?;
                let cat = concat(&hcur, &skip, arena);
                arena.give(skip.data);
                arena.give(std::mem::replace(&mut hcur, cat).data);
                let next = resnet.run(&hcur, &temb_act, arena);
                arena.give(std::mem::replace(&mut hcur, next).data);
                emit(&mut probe, &format!("up_blocks.{i}.resnets.{j}"), &hcur);
                if let Some(attn) = level.attentions.get(j) {
                    let next = attn.run(&hcur, arena);
                    arena.give(std::mem::replace(&mut hcur, next).data);
                    emit(&mut probe, &format!("up_blocks.{i}.attentions.{j}"), &hcur);
                }
            }
            if let Some(conv) = &level.resample {
                let next = conv.run(&hcur, None, arena);
                arena.give(std::mem::replace(&mut hcur, next).data);
            }
            emit(&mut probe, &format!("up_blocks.{i}"), &hcur);
        }
        arena.give_f32(temb_act);

        let normed = norm_out.run(&hcur, true, arena);
        arena.give(hcur.data);
        let result = conv_out.run(&normed, None, arena);
        arena.give(normed.data);
        let cout = result.c;
        // Back to [b, c, h, w].
        out.par_chunks_mut(hw).enumerate().for_each(|(row, dst)| {
            let (bi, c) = (row / cout, row % cout);
            dst.copy_from_slice(&result.data[c * n + bi * hw..][..hw]);
        });
        emit(&mut probe, "conv_out", &result);
        arena.give(result.data);
        Ok(())
    }

    /// FLOPs (2 per multiply-add) of one forward of a `b × in × h × w` batch.
    pub fn flops(&self, b: usize, h: usize, w: usize) -> u64 {
        let mut total = self.time_1.flops(b) + self.time_2.flops(b);
        let (mut hh, mut ww) = (h, w);
        total += self.conv_in.flops(b * hh * ww);
        let level_flops = |level: &Level<S>, hh: usize, ww: usize| -> u64 {
            let n = b * hh * ww;
            level.resnets.iter().map(|r| r.flops(n, b)).sum::<u64>()
                + level.attentions.iter().map(|a| a.flops(n, b)).sum::<u64>()
        };
        for level in &self.down {
            total += level_flops(level, hh, ww);
            if let Some(conv) = &level.resample {
                (hh, ww) = conv.out_size(hh, ww);
                total += conv.flops(b * hh * ww);
            }
        }
        total += level_flops(&self.mid, hh, ww);
        for level in &self.up {
            total += level_flops(level, hh, ww);
            if let Some(conv) = &level.resample {
                (hh, ww) = conv.out_size(hh, ww);
                total += conv.flops(b * hh * ww);
            }
        }
        total + self.conv_out.flops(b * hh * ww)
    }
}

fn last<S>(skips: &[Act<S>]) -> &Act<S> {
    &skips[skips.len() - 1]
}

/// `cat([a, b], dim = channels)`: in the channel-major layout, two copies.
fn concat<S: Store>(a: &Act<S>, b: &Act<S>, arena: &mut Arena<S>) -> Act<S> {
    let mut data = arena.take(a.data.len() + b.data.len());
    let (head, tail) = data.split_at_mut(a.data.len());
    head.copy_from_slice(&a.data);
    tail.copy_from_slice(&b.data);
    Act {
        data,
        c: a.c + b.c,
        ..*a
    }
}

fn emit<S: Store>(probe: &mut Option<Probe<'_>>, name: &str, a: &Act<S>) {
    if let Some(p) = probe {
        let (hw, n) = (a.h * a.w, a.n());
        let mut v = vec![0f32; a.data.len()];
        for (row, dst) in v.chunks_mut(hw).enumerate() {
            let (bi, c) = (row / a.c, row % a.c);
            for (d, s) in dst.iter_mut().zip(&a.data[c * n + bi * hw..][..hw]) {
                *d = s.to_f32();
            }
        }
        p(name, &[a.b, a.c, a.h, a.w], &v);
    }
}

fn emit_rows(probe: &mut Option<Probe<'_>>, name: &str, v: &[f32], b: usize) {
    if let Some(p) = probe {
        p(name, &[b, v.len() / b], v);
    }
}
