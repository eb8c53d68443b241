//! `diffinv unet`: run a checkpoint on stored inputs, for engine authors
//! validating a port — safetensors in (`x` [N, C, H, W] and `timesteps` [N],
//! any float dtype), safetensors out (`sample`, f32, the network's output).

use std::path::PathBuf;

use clap::Args;
use diffinv::unet::{Timesteps, UNet};
use diffinv::DType;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{fail, CliError, CliResult};

#[derive(Args)]
pub struct UnetArgs {
    /// A diffusers UNet2DModel folder (config.json + safetensors weights).
    #[arg(long)]
    model: PathBuf,
    /// Inputs: `x` [N, C, H, W] and `timesteps` [N].
    #[arg(long)]
    cases: PathBuf,
    /// Where the outputs go (`sample`, f32).
    #[arg(long)]
    out: PathBuf,
    /// f16 or f32 storage for the network.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// A stored tensor widened to f32, with its shape.
fn read(st: &SafeTensors<'_>, name: &str) -> CliResult<(Vec<f32>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .map_err(|e| CliError(format!("cases file: tensor {name:?}: {e}")))?;
    let d = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        other => {
            return fail!("cases file: tensor {name:?} has dtype {other:?} (want a float or int64)")
        }
    };
    Ok((v, t.shape().to_vec()))
}

pub fn run(args: UnetArgs) -> CliResult<()> {
    let dtype = match args.dtype.as_str() {
        "f16" => DType::F16,
        "f32" => DType::F32,
        other => return fail!("unknown dtype {other:?} (one of: f16, f32)"),
    };
    let mut net = UNet::load(&args.model, dtype).map_err(|e| {
        CliError(format!(
            "cannot load the model in {}: {e}",
            args.model.display()
        ))
    })?;
    let bytes = std::fs::read(&args.cases)
        .map_err(|e| CliError(format!("cannot read {}: {e}", args.cases.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        CliError(format!(
            "{} is not a safetensors file: {e}",
            args.cases.display()
        ))
    })?;
    let (x, dims) = read(&st, "x")?;
    let (t, _) = read(&st, "timesteps")?;
    let [n, c, h, w] = dims[..] else {
        return fail!("cases file: x must be [N, C, H, W], not {dims:?}");
    };
    if t.len() != n {
        return fail!("cases file: {} timesteps for {n} inputs", t.len());
    }
    let sample = net.forward(&x, [n, c, h, w], Timesteps::Float(&t))?;
    let out_dims = vec![n, sample.len() / (n * h * w), h, w];
    let raw: Vec<u8> = sample.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, out_dims, &raw)
        .map_err(|e| CliError(format!("output tensor: {e}")))?;
    let tmp = args.out.with_extension("tmp");
    safetensors::serialize_to_file([("sample", view)], None, &tmp)
        .map_err(|e| CliError(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &args.out)
        .map_err(|e| CliError(format!("cannot write {}: {e}", args.out.display())))?;
    println!(
        "{n} cases through {} → {}",
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
