//! The cases of a UNet fixture folder (`cases.safetensors`: inputs, times
//! and the float64 model's outputs) and its layer dumps.

use std::path::Path;

use diffinv::unet::Timesteps;
use safetensors::{Dtype, SafeTensors};

pub use super::fixtures::read;

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
