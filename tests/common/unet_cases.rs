//! The cases of a UNet fixture folder (`cases.safetensors`: inputs, times
//! and the float64 model's outputs) and its layer dumps.

use std::path::Path;

use diffinv::unet::Timesteps;
use safetensors::{Dtype, SafeTensors};

/// A tensor of a fixture file, widened to f64, with its dtype and shape.
pub fn read(st: &SafeTensors<'_>, name: &str) -> (Vec<f64>, Dtype, Vec<usize>) {
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
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("tensor {name}: unsupported dtype {other:?}"),
    };
    (v, t.dtype(), t.shape().to_vec())
}

pub fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

pub struct Case {
    pub name: String,
    pub x: Vec<f32>,
    pub x_f16: Vec<f32>,
    pub dims: [usize; 4],
    pub t_int: Option<Vec<i64>>,
    pub t_float: Vec<f32>,
    pub out_f64: Vec<f64>,
}

impl Case {
    pub fn times(&self) -> Timesteps<'_> {
        match &self.t_int {
            Some(t) => Timesteps::Int(t),
            None => Timesteps::Float(&self.t_float),
        }
    }
}

pub fn cases(dir: &Path) -> Vec<Case> {
    let bytes = std::fs::read(dir.join("cases.safetensors")).expect("cases.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".x").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let (x, _, shape) = read(&st, &format!("{name}.x"));
            let (x_f16, _, _) = read(&st, &format!("{name}.x_f16"));
            let (t, t_dtype, _) = read(&st, &format!("{name}.t"));
            let (out_f64, _, _) = read(&st, &format!("{name}.out_f64"));
            let dims = [shape[0], shape[1], shape[2], shape[3]];
            Case {
                x: x.iter().map(|&v| v as f32).collect(),
                x_f16: x_f16.iter().map(|&v| v as f32).collect(),
                dims,
                t_int: (t_dtype == Dtype::I64).then(|| t.iter().map(|&v| v as i64).collect()),
                t_float: t.iter().map(|&v| v as f32).collect(),
                out_f64,
                name,
            }
        })
        .collect()
}
