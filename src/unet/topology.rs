//! The block structure of a `UNet2DModel` as diffusers builds it from a
//! config: every resnet, attention and resampler with its module path and
//! widths, in forward order. The CPU network and the device network both
//! build their layers from this one description, so the channel bookkeeping
//! (which skip joins which up-block resnet, how wide each one is) lives in
//! one place.

use super::config::{BlockKind, UNetConfig};
use crate::error::Result;

/// Widths and norm settings of one resnet.
#[derive(Clone, Copy, Debug)]
pub struct Widths {
    pub cin: usize,
    pub cout: usize,
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
}

/// A `ResnetBlock2D`: its output is divided by `out_scale`.
#[derive(Clone, Debug)]
pub struct ResnetSpec {
    pub name: String,
    pub widths: Widths,
    pub out_scale: f64,
}

/// An `Attention` over `channels` channels in `heads` heads; its output is
/// divided by `rescale`.
#[derive(Clone, Debug)]
pub struct AttentionSpec {
    pub name: String,
    pub channels: usize,
    pub heads: usize,
    pub groups: usize,
    pub eps: f64,
    pub rescale: f64,
}

/// How a level changes resolution after its blocks: a stride-2 3×3 conv
/// (`pad` rows before, one after), or nearest ×2 followed by a 3×3 conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    Down { pad: usize },
    Up,
}

/// The conv of a resampler and the change it makes.
#[derive(Clone, Debug)]
pub struct ResampleSpec {
    pub name: String,
    pub channels: usize,
    pub kind: Resample,
}

/// One level: resnets (each followed by its attention, if the block has
/// them), then an optional resampler.
#[derive(Clone, Debug, Default)]
pub struct LevelSpec {
    pub resnets: Vec<ResnetSpec>,
    pub attentions: Vec<AttentionSpec>,
    pub resample: Option<ResampleSpec>,
}

/// Every block of the network, in forward order.
#[derive(Clone, Debug)]
pub struct Topology {
    pub down: Vec<LevelSpec>,
    pub mid: LevelSpec,
    pub up: Vec<LevelSpec>,
}

impl Topology {
    /// The blocks `cfg` describes; a norm whose group count does not divide
    /// its channels is an `UnsupportedConfig` error naming the key.
    pub fn of(cfg: &UNetConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let levels = boc.len();
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let temb = cfg.time_embed_dim();
        let resnet = |name: String, cin: usize, cout: usize, out_scale: f64| -> Result<_> {
            cfg.check_groups("norm_num_groups", groups, cin)?;
            cfg.check_groups("norm_num_groups", groups, cout)?;
            let widths = Widths {
                cin,
                cout,
                temb,
                groups,
                eps,
            };
            Ok(ResnetSpec {
                name,
                widths,
                out_scale,
            })
        };
        let attention =
            |name: String, channels: usize, groups: usize, rescale: f64| AttentionSpec {
                name,
                channels,
                heads: cfg.heads(channels),
                groups,
                eps,
                rescale,
            };

        let mut down = Vec::with_capacity(levels);
        let mut out_ch = boc[0];
        for (i, kind) in cfg.down_blocks.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = boc[i];
            let mut level = LevelSpec::default();
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { in_ch } else { out_ch };
                let name = format!("down_blocks.{i}.resnets.{j}");
                level.resnets.push(resnet(name, cin, out_ch, 1.0)?);
                if *kind == BlockKind::Attention {
                    let name = format!("down_blocks.{i}.attentions.{j}");
                    level.attentions.push(attention(name, out_ch, groups, 1.0));
                }
            }
            if i + 1 < levels {
                level.resample = Some(ResampleSpec {
                    name: format!("down_blocks.{i}.downsamplers.0.conv"),
                    channels: out_ch,
                    kind: Resample::Down {
                        pad: cfg.downsample_padding,
                    },
                });
            }
            down.push(level);
        }

        let cm = boc[levels - 1];
        let msf = cfg.mid_block_scale_factor;
        let mut mid = LevelSpec::default();
        for j in 0..2 {
            let name = format!("mid_block.resnets.{j}");
            mid.resnets.push(resnet(name, cm, cm, msf)?);
        }
        if cfg.add_attention {
            let attn_groups = cfg.attn_norm_num_groups.unwrap_or(groups);
            cfg.check_groups("attn_norm_num_groups", attn_groups, cm)?;
            let name = "mid_block.attentions.0".to_string();
            mid.attentions.push(attention(name, cm, attn_groups, msf));
        }

        let mut up = Vec::with_capacity(levels);
        let reversed: Vec<usize> = boc.iter().rev().copied().collect();
        let mut out_ch = reversed[0];
        for (i, kind) in cfg.up_blocks.iter().enumerate() {
            let prev_out = out_ch;
            out_ch = reversed[i];
            let in_ch = reversed[(i + 1).min(levels - 1)];
            let mut level = LevelSpec::default();
            let layers = cfg.layers_per_block + 1;
            for j in 0..layers {
                // The last resnet of a level takes the skip from before the
                // matching down level; the others, skips of its own width.
                let skip = if j + 1 == layers { in_ch } else { out_ch };
                let resnet_in = if j == 0 { prev_out } else { out_ch };
                let name = format!("up_blocks.{i}.resnets.{j}");
                level
                    .resnets
                    .push(resnet(name, resnet_in + skip, out_ch, 1.0)?);
                if *kind == BlockKind::Attention {
                    let name = format!("up_blocks.{i}.attentions.{j}");
                    level.attentions.push(attention(name, out_ch, groups, 1.0));
                }
            }
            if i + 1 < levels {
                level.resample = Some(ResampleSpec {
                    name: format!("up_blocks.{i}.upsamplers.0.conv"),
                    channels: out_ch,
                    kind: Resample::Up,
                });
            }
            up.push(level);
        }
        cfg.check_groups("norm_num_groups", groups, boc[0])?;
        Ok(Topology { down, mid, up })
    }
}
