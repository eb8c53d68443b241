//! The network: its layers built from a config and a weight source with the
//! channel bookkeeping of diffusers' `UNet2DModel`, and the forward pass.

use rayon::prelude::*;

use super::config::{BlockKind, UNetConfig};
use super::kernels::{Act, ConvGeom};
use super::layers::{silu_all, Attention, Conv, Linear, Norm, Resnet, Widths};
use super::pool::{Arena, Store};
use super::weights::Source;
use crate::error::Result;

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

impl<S: Store> Model<S> {
    pub fn build(config: &UNetConfig, src: &dyn Source) -> Result<Self> {
        let cfg = config;
        let boc = &cfg.block_out_channels;
        let levels = boc.len();
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let c0 = boc[0];
        let temb = cfg.time_embed_dim();
        let widths = |cin: usize, cout: usize| -> Result<Widths> {
            cfg.check_groups("norm_num_groups", groups, cin)?;
            cfg.check_groups("norm_num_groups", groups, cout)?;
            Ok(Widths {
                cin,
                cout,
                temb,
                groups,
                eps,
            })
        };
        let attention = |name: &str, c: usize, groups: usize, rescale: f64| {
            Attention::load(src, name, c, cfg.heads(c), groups, eps, rescale)
        };

        let mut down = Vec::with_capacity(levels);
        let mut out_ch = c0;
        for (i, kind) in cfg.down_blocks.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = boc[i];
            let mut level = Level {
                resnets: vec![],
                attentions: vec![],
                resample: None,
            };
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { in_ch } else { out_ch };
                let name = format!("down_blocks.{i}.resnets.{j}");
                level
                    .resnets
                    .push(Resnet::load(src, &name, widths(cin, out_ch)?, 1.0)?);
                if *kind == BlockKind::Attention {
                    let name = format!("down_blocks.{i}.attentions.{j}");
                    level
                        .attentions
                        .push(attention(&name, out_ch, groups, 1.0)?);
                }
            }
            if i + 1 < levels {
                let name = format!("down_blocks.{i}.downsamplers.0.conv");
                let geom = conv3(2, cfg.downsample_padding, 1);
                level.resample = Some(Conv::load(src, &name, out_ch, out_ch, geom)?);
            }
            down.push(level);
        }

        let cm = boc[levels - 1];
        let msf = cfg.mid_block_scale_factor;
        let mut mid = Level {
            resnets: vec![],
            attentions: vec![],
            resample: None,
        };
        for j in 0..2 {
            let name = format!("mid_block.resnets.{j}");
            mid.resnets
                .push(Resnet::load(src, &name, widths(cm, cm)?, msf)?);
        }
        if cfg.add_attention {
            let attn_groups = cfg.attn_norm_num_groups.unwrap_or(groups);
            cfg.check_groups("attn_norm_num_groups", attn_groups, cm)?;
            mid.attentions
                .push(attention("mid_block.attentions.0", cm, attn_groups, msf)?);
        }

        let mut up = Vec::with_capacity(levels);
        let reversed: Vec<usize> = boc.iter().rev().copied().collect();
        let mut out_ch = reversed[0];
        for (i, kind) in cfg.up_blocks.iter().enumerate() {
            let prev_out = out_ch;
            out_ch = reversed[i];
            let in_ch = reversed[(i + 1).min(levels - 1)];
            let mut level = Level {
                resnets: vec![],
                attentions: vec![],
                resample: None,
            };
            let layers = cfg.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j + 1 == layers { in_ch } else { out_ch };
                let resnet_in = if j == 0 { prev_out } else { out_ch };
                let name = format!("up_blocks.{i}.resnets.{j}");
                let wd = widths(resnet_in + skip, out_ch)?;
                level.resnets.push(Resnet::load(src, &name, wd, 1.0)?);
                if *kind == BlockKind::Attention {
                    let name = format!("up_blocks.{i}.attentions.{j}");
                    level
                        .attentions
                        .push(attention(&name, out_ch, groups, 1.0)?);
                }
            }
            if i + 1 < levels {
                let name = format!("up_blocks.{i}.upsamplers.0.conv");
                level.resample = Some(Conv::load(src, &name, out_ch, out_ch, conv3(1, 1, 2))?);
            }
            up.push(level);
        }

        cfg.check_groups("norm_num_groups", groups, c0)?;
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
    ) {
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
                let Some(skip) = skips.pop() else {
                    unreachable!("the config gives as many skips as up-block resnets")
                };
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
