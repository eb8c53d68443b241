//! Where a UNet's weights come from: a memory-mapped safetensors checkpoint
//! (f32, f16, bf16 or f64 tensors) or seeded random values for benchmarks.
//! Every tensor is asked for by name with the shape the config implies, so a
//! missing or misshapen weight is an error naming it.

use std::cell::Cell;
use std::fs::File;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A provider of named f32 weights of a known shape.
pub trait Source {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// A safetensors file, memory-mapped (the weights are converted out of it
/// once, at load; the mapping is dropped after).
pub struct Checkpoint {
    map: memmap2::Mmap,
    path: String,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let fail = |reason: String| Error::Checkpoint {
            path: shown.clone(),
            reason,
        };
        let file = File::open(path).map_err(|e| fail(e.to_string()))?;
        // SAFETY: the map is read-only and lives no longer than this value;
        // a file truncated by another process while mapped is the one case
        // memmap2 cannot guard, as with every mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| fail(e.to_string()))?;
        Ok(Checkpoint { map, path: shown })
    }

    /// The parsed header over the mapped bytes (fails on a truncated or
    /// malformed file).
    pub fn tensors(&self) -> Result<Tensors<'_>> {
        Tensors::parse(&self.map, &self.path)
    }
}

/// The tensors of an open [`Checkpoint`].
pub struct Tensors<'a> {
    st: SafeTensors<'a>,
}

impl<'a> Tensors<'a> {
    /// The safetensors in `bytes`; `origin` names them in errors.
    pub fn parse(bytes: &'a [u8], origin: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Checkpoint {
            path: origin.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Tensors { st })
    }
}

/// Attention weights of checkpoints saved before diffusers renamed them
/// (google/ddpm-* among them), and the names they have now.
const LEGACY_ATTENTION: [(&str, &str); 4] = [
    ("to_q", "query"),
    ("to_k", "key"),
    ("to_v", "value"),
    ("to_out.0", "proj_attn"),
];

fn legacy_name(name: &str) -> Option<String> {
    LEGACY_ATTENTION.iter().find_map(|(new, old)| {
        let (head, tail) = name.rsplit_once('.')?;
        let stem = head.strip_suffix(new)?;
        stem.ends_with('.').then(|| format!("{stem}{old}.{tail}"))
    })
}

fn shape_text(shape: &[usize]) -> String {
    format!("shape {shape:?}")
}

impl Source for Tensors<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = match self.st.tensor(name) {
            Ok(v) => v,
            Err(_) => legacy_name(name)
                .and_then(|old| self.st.tensor(&old).ok())
                .ok_or_else(|| Error::MissingTensor { name: name.into() })?,
        };
        // diffusers stores linear weights as [out, in] and conv weights as
        // [out, in, kh, kw]; a 1×1 conv stands in for a linear layer in some
        // old checkpoints, so trailing unit dimensions are accepted.
        let got = view.shape();
        let squeezed = |s: &[usize]| -> Vec<usize> {
            let mut v = s.to_vec();
            while v.len() > 2 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        if got != shape && squeezed(got) != squeezed(shape) {
            return Err(Error::BadTensor {
                name: name.into(),
                expected: shape_text(shape),
                got: shape_text(got),
            });
        }
        let bytes = view.data();
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => {
                return Err(Error::BadTensor {
                    name: name.into(),
                    expected: "dtype F32, F16, BF16 or F64".into(),
                    got: format!("dtype {other:?}"),
                })
            }
        };
        Ok(out)
    }
}

/// Seeded random weights at PyTorch's default scale (uniform in ±1/√fan_in;
/// norms near identity), for benchmarks of architectures without a checkpoint.
pub struct Random {
    pub seed: u64,
}

impl Source for Random {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        // A per-name stream keeps a weight's values independent of the order
        // in which the builder asks for them.
        let key = name
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        let noise = crate::rng::normal_vec(key, n);
        let is_norm = name.contains("norm");
        Ok(if is_norm && name.ends_with(".weight") {
            noise.iter().map(|z| 1.0 + 0.1 * z).collect()
        } else if name.ends_with(".bias") {
            noise.iter().map(|z| 0.02 * z).collect()
        } else {
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let s = (fan_in as f32).sqrt().recip();
            noise.iter().map(|z| s * z).collect()
        })
    }
}

/// A weight source that counts the values it hands out: the parameters of
/// the network built from it.
pub struct Counting<'a> {
    inner: &'a dyn Source,
    values: Cell<usize>,
}

impl<'a> Counting<'a> {
    pub fn new(inner: &'a dyn Source) -> Self {
        Counting {
            inner,
            values: Cell::new(0),
        }
    }

    pub fn values(&self) -> usize {
        self.values.get()
    }
}

impl Source for Counting<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let v = self.inner.tensor(name, shape)?;
        self.values.set(self.values.get() + v.len());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_attention_names_map_to_the_old_spelling() {
        assert_eq!(
            legacy_name("mid_block.attentions.0.to_out.0.weight").as_deref(),
            Some("mid_block.attentions.0.proj_attn.weight")
        );
        assert_eq!(
            legacy_name("down_blocks.1.attentions.0.to_q.bias").as_deref(),
            Some("down_blocks.1.attentions.0.query.bias")
        );
        assert_eq!(legacy_name("conv_in.weight"), None);
    }
}
