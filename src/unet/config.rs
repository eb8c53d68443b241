//! diffusers' `UNet2DModel` `config.json`: parsed key by key, so that every
//! value outside what the forward implements is reported as
//! [`Error::UnsupportedConfig`] with the key and the value that caused it.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::solver::Prediction;

/// Whether a down or up block interleaves self-attention with its resnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// `DownBlock2D` / `UpBlock2D`.
    Plain,
    /// `AttnDownBlock2D` / `AttnUpBlock2D`.
    Attention,
}

/// The architecture of a `UNet2DModel`, with diffusers' defaults for absent keys.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `x ↦ 2x − 1` before `conv_in`.
    pub center_input_sample: bool,
    /// `[cos, sin]` instead of `[sin, cos]` in the sinusoidal embedding.
    pub flip_sin_to_cos: bool,
    /// The embedding's frequencies are `exp(−ln(10⁴)·j/(half − freq_shift))`.
    pub freq_shift: f64,
    pub down_blocks: Vec<BlockKind>,
    pub up_blocks: Vec<BlockKind>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// Divides the mid block's residual sums.
    pub mid_block_scale_factor: f64,
    /// 1: stride-2 conv with padding 1; 0: pad right/bottom by one, then padding 0.
    pub downsample_padding: usize,
    /// Channels per attention head; `None`: one head per block.
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    /// Groups of the mid block's attention norm (`None`: `norm_num_groups`).
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    /// Whether the mid block has its attention layer.
    pub add_attention: bool,
    /// Width of the time embedding MLP (`None`: 4 × `block_out_channels[0]`).
    pub time_embedding_dim: Option<usize>,
}

/// Caps that keep a hostile config from asking for absurd allocations
/// before any weight is checked (no released UNet2DModel comes close).
const MAX_CHANNELS: usize = 1 << 14;
const MAX_BLOCKS: usize = 8;
const MAX_LAYERS: usize = 16;

fn unsupported(key: &str, value: &Value) -> Error {
    Error::UnsupportedConfig {
        key: key.to_string(),
        value: value.to_string(),
    }
}

impl UNetConfig {
    /// Parse and validate the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::UnsupportedConfig {
            key: "config.json".into(),
            value: format!("not valid JSON ({e})"),
        })?;
        let Value::Object(map) = value else {
            return Err(unsupported("config.json", &value));
        };
        Self::from_map(&map)
    }

    fn from_map(map: &Map<String, Value>) -> Result<Self> {
        let mut c = UNetConfig::default_values();
        for (key, v) in map {
            let k = key.as_str();
            match k {
                "_class_name" => {
                    if v.as_str() != Some("UNet2DModel") {
                        return Err(unsupported(k, v));
                    }
                }
                // Provenance and training-only keys: no effect on the forward.
                "_diffusers_version"
                | "_name_or_path"
                | "sample_size"
                | "dropout"
                | "num_train_timesteps" => {}
                "in_channels" => c.in_channels = channels(k, v)?,
                "out_channels" => c.out_channels = channels(k, v)?,
                "center_input_sample" => c.center_input_sample = boolean(k, v)?,
                "flip_sin_to_cos" => c.flip_sin_to_cos = boolean(k, v)?,
                "add_attention" => c.add_attention = boolean(k, v)?,
                "freq_shift" => c.freq_shift = number(k, v)?,
                "norm_eps" => c.norm_eps = positive(k, v)?,
                "mid_block_scale_factor" => c.mid_block_scale_factor = positive(k, v)?,
                "layers_per_block" => {
                    c.layers_per_block = count(k, v, MAX_LAYERS)?;
                    if c.layers_per_block == 0 {
                        return Err(unsupported(k, v));
                    }
                }
                "norm_num_groups" => c.norm_num_groups = channels(k, v)?,
                "attn_norm_num_groups" => c.attn_norm_num_groups = optional(k, v, channels)?,
                "attention_head_dim" => c.attention_head_dim = optional(k, v, channels)?,
                "time_embedding_dim" => c.time_embedding_dim = optional(k, v, channels)?,
                "downsample_padding" => {
                    c.downsample_padding = match v.as_u64() {
                        Some(p @ (0 | 1)) => p as usize,
                        _ => return Err(unsupported(k, v)),
                    }
                }
                "block_out_channels" => {
                    let list = v.as_array().ok_or_else(|| unsupported(k, v))?;
                    if list.is_empty() || list.len() > MAX_BLOCKS {
                        return Err(unsupported(k, v));
                    }
                    c.block_out_channels =
                        list.iter().map(|x| channels(k, x)).collect::<Result<_>>()?;
                }
                "down_block_types" => {
                    c.down_blocks = blocks(k, v, "DownBlock2D", "AttnDownBlock2D")?;
                }
                "up_block_types" => c.up_blocks = blocks(k, v, "UpBlock2D", "AttnUpBlock2D")?,
                "act_fn" => expect_str(k, v, &["silu", "swish"])?,
                "time_embedding_type" => expect_str(k, v, &["positional"])?,
                "resnet_time_scale_shift" => expect_str(k, v, &["default"])?,
                "downsample_type" | "upsample_type" => expect_str(k, v, &["conv"])?,
                "mid_block_type" => expect_str(k, v, &["UNetMidBlock2D"])?,
                "class_embed_type" | "num_class_embeds" => {
                    if !v.is_null() {
                        return Err(unsupported(k, v));
                    }
                }
                _ => return Err(unsupported(k, v)),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// diffusers' `UNet2DModel.__init__` defaults.
    fn default_values() -> Self {
        use BlockKind::*;
        UNetConfig {
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_blocks: vec![Plain, Attention, Attention, Attention],
            up_blocks: vec![Attention, Attention, Attention, Plain],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            add_attention: true,
            time_embedding_dim: None,
        }
    }

    /// The architecture of google/ddpm-cifar10-32 (35.7 M parameters).
    pub fn ddpm_cifar10_32() -> Self {
        use BlockKind::*;
        UNetConfig {
            down_blocks: vec![Plain, Attention, Plain, Plain],
            up_blocks: vec![Plain, Plain, Attention, Plain],
            block_out_channels: vec![128, 256, 256, 256],
            downsample_padding: 0,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            attention_head_dim: None,
            norm_eps: 1e-6,
            ..UNetConfig::default_values()
        }
    }

    /// The architecture of google/ddpm-celebahq-256 (and the church, bedroom
    /// and cat 256 models of the same paper).
    pub fn ddpm_celebahq_256() -> Self {
        use BlockKind::*;
        UNetConfig {
            down_blocks: vec![Plain, Plain, Plain, Plain, Attention, Plain],
            up_blocks: vec![Plain, Attention, Plain, Plain, Plain, Plain],
            block_out_channels: vec![128, 128, 256, 256, 512, 512],
            ..UNetConfig::ddpm_cifar10_32()
        }
    }

    /// Cross-key rules: block lists of one length, head sizes that divide
    /// the channels they split. (Group counts are checked where each norm's
    /// width is known, when the network is built.)
    pub fn validate(&self) -> Result<()> {
        let levels = self.block_out_channels.len();
        let list = |key: &str, n: usize| Error::UnsupportedConfig {
            key: key.into(),
            value: format!("{n} blocks for {levels} block_out_channels"),
        };
        if self.down_blocks.len() != levels {
            return Err(list("down_block_types", self.down_blocks.len()));
        }
        if self.up_blocks.len() != levels {
            return Err(list("up_block_types", self.up_blocks.len()));
        }
        let not_dividing = |key: &str, v: usize, c: usize| Error::UnsupportedConfig {
            key: key.into(),
            value: format!("{v} (does not divide {c} channels)"),
        };
        let mid = self.block_out_channels[levels - 1];
        if let Some(g) = self.attn_norm_num_groups {
            if !mid.is_multiple_of(g) {
                return Err(not_dividing("attn_norm_num_groups", g, mid));
            }
        }
        if let Some(d) = self.attention_head_dim {
            for &c in &self.block_out_channels {
                if c % d != 0 {
                    return Err(not_dividing("attention_head_dim", d, c));
                }
            }
        }
        Ok(())
    }

    /// A GroupNorm of `groups` groups over `channels` channels, as `key` asks.
    pub(crate) fn check_groups(&self, key: &str, groups: usize, channels: usize) -> Result<()> {
        if channels.is_multiple_of(groups) {
            Ok(())
        } else {
            Err(Error::UnsupportedConfig {
                key: key.into(),
                value: format!("{groups} (does not divide {channels} channels)"),
            })
        }
    }

    /// Number of resolution levels (blocks on each side).
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Width of the time embedding fed to every resnet.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Heads of an attention layer over `channels` channels.
    pub fn heads(&self, channels: usize) -> usize {
        self.attention_head_dim.map_or(1, |d| channels / d)
    }
}

/// What a checkpoint predicts, from the `prediction_type` of diffusers'
/// `scheduler_config.json` (absent: ε, diffusers' default). Only that key
/// is read: the rest of a scheduler config is the sampler's business.
pub fn prediction_from_scheduler_json(text: &str) -> Result<Prediction> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::UnsupportedConfig {
        key: "scheduler_config.json".into(),
        value: format!("not valid JSON ({e})"),
    })?;
    match value.get("prediction_type") {
        None => Ok(Prediction::Epsilon),
        Some(v) => match v.as_str() {
            Some("epsilon") => Ok(Prediction::Epsilon),
            Some("v_prediction") => Ok(Prediction::V),
            _ => Err(unsupported("prediction_type", v)),
        },
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| unsupported(key, v))
}

fn number(key: &str, v: &Value) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| unsupported(key, v))
}

fn positive(key: &str, v: &Value) -> Result<f64> {
    number(key, v)
        .ok()
        .filter(|&x| x > 0.0)
        .ok_or_else(|| unsupported(key, v))
}

fn count(key: &str, v: &Value, max: usize) -> Result<usize> {
    v.as_u64()
        .filter(|&n| n as usize <= max)
        .map(|n| n as usize)
        .ok_or_else(|| unsupported(key, v))
}

fn channels(key: &str, v: &Value) -> Result<usize> {
    match count(key, v, MAX_CHANNELS)? {
        0 => Err(unsupported(key, v)),
        n => Ok(n),
    }
}

fn optional(
    key: &str,
    v: &Value,
    parse: fn(&str, &Value) -> Result<usize>,
) -> Result<Option<usize>> {
    if v.is_null() {
        Ok(None)
    } else {
        parse(key, v).map(Some)
    }
}

fn expect_str(key: &str, v: &Value, allowed: &[&str]) -> Result<()> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(unsupported(key, v)),
    }
}

fn blocks(key: &str, v: &Value, plain: &str, attention: &str) -> Result<Vec<BlockKind>> {
    let list = v.as_array().ok_or_else(|| unsupported(key, v))?;
    if list.is_empty() || list.len() > MAX_BLOCKS {
        return Err(unsupported(key, v));
    }
    list.iter()
        .map(|b| match b.as_str() {
            Some(s) if s == plain => Ok(BlockKind::Plain),
            Some(s) if s == attention => Ok(BlockKind::Attention),
            _ => Err(unsupported(key, b)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_absent_keys_and_other_classes_are_refused() {
        let c = UNetConfig::from_json(r#"{"_class_name": "UNet2DModel"}"#).unwrap();
        assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
        let err = UNetConfig::from_json(r#"{"_class_name": "UNet2DConditionModel"}"#);
        assert!(matches!(err, Err(Error::UnsupportedConfig { key, .. }) if key == "_class_name"));
    }

    #[test]
    fn unsupported_values_name_their_key() {
        for (text, key) in [
            (r#"{"act_fn": "gelu"}"#, "act_fn"),
            (r#"{"downsample_padding": 2}"#, "downsample_padding"),
            (
                r#"{"time_embedding_type": "fourier"}"#,
                "time_embedding_type",
            ),
            (
                r#"{"resnet_time_scale_shift": "scale_shift"}"#,
                "resnet_time_scale_shift",
            ),
            (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
            (
                r#"{"down_block_types": ["CrossAttnDownBlock2D"]}"#,
                "down_block_types",
            ),
            (r#"{"attention_head_dim": 9}"#, "attention_head_dim"),
            (r#"{"cross_attention_dim": 768}"#, "cross_attention_dim"),
        ] {
            match UNetConfig::from_json(text) {
                Err(Error::UnsupportedConfig { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
