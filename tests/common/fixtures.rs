//! Loading the diffusers oracle fixtures copied into `tests/fixtures/`.

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// Path of a file under `tests/fixtures/`.
pub fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A safetensors file held in memory.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn open(rel: &str) -> Fixture {
        let p = path(rel);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        Fixture { bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// A tensor widened to f64, with its shape.
    pub fn f64(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
        let st = self.tensors();
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
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("tensor {name}: unsupported dtype {other:?}"),
        };
        (v, t.shape().to_vec())
    }
}

/// `tests/fixtures/sched/manifest.json`.
pub fn sched_manifest() -> serde_json::Value {
    let p = path("sched/manifest.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    // Python's json writes non-finite numbers as bare tokens (e.g. `lambda_min_clipped: -Infinity`),
    // which strict JSON rejects; none of them is read by the tests.
    let text = text
        .replace("-Infinity", "null")
        .replace("Infinity", "null")
        .replace("NaN", "null");
    serde_json::from_str(&text).expect("manifest is JSON")
}
