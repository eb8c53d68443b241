//! The nn family on real layers: the first layers of `tests/fixtures/unet_tiny`
//! (time embedding MLP, conv_in, the first resnet's norm1 and conv1, the
//! attention block's group norm and q projection) built from nn ops on every
//! backend, against diffusers' float32 forward hooks in
//! `intermediates.safetensors` (≤ 1e-4 abs, the UNet's f32 tolerance). Each
//! layer starts from diffusers' own input to it, so errors do not compound.

mod common;

use std::path::PathBuf;

use diffinv::ops::nn::{self, Conv2d, GroupNorm, Matmul, NnOps, TimeProj};
use diffinv::unet::UNetConfig;
use diffinv::{DType, HostSlice, Shape, Tensor};
use safetensors::{Dtype, SafeTensors};

const LAYER_TOL: f64 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_tiny")
}

/// A tensor widened to f64 (f32 and i64 are what these files hold).
fn read(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    let d = t.data();
    match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("tensor {name}: unexpected dtype {other:?}"),
    }
}

fn up<B: NnOps>(b: &B, v: &[f64]) -> Tensor<B> {
    Tensor::from_host(b, Shape::flat(v.len()), DType::F32, HostSlice::F64(v)).unwrap()
}

fn zeros<B: NnOps>(b: &B, n: usize) -> Tensor<B> {
    Tensor::zeros(b, Shape::flat(n), DType::F32).unwrap()
}

fn check<B: NnOps>(what: &str, got: &Tensor<B>, b: &B, want: &[f64]) {
    let got = got.to_f64(b).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    eprintln!("{what}: max abs {err:.3e}");
    assert!(
        err <= LAYER_TOL,
        "{what}: max abs {err:.3e} > {LAYER_TOL:.0e}"
    );
}

/// `y = x·Wᵀ + b` for `rows` rows: a linear layer as one matmul.
fn linear<B: NnOps>(
    b: &B,
    w: &SafeTensors<'_>,
    name: &str,
    x: &Tensor<B>,
    rows: usize,
    inp: usize,
    out: usize,
) -> Tensor<B> {
    let wt = up(b, &read(w, &format!("{name}.weight")));
    let bias = up(b, &read(w, &format!("{name}.bias")));
    let mut y = zeros(b, rows * out);
    let g = Matmul {
        batch: 1,
        m: rows,
        n: out,
        k: inp,
        trans_a: false,
        trans_b: true,
        alpha: 1.0,
        accumulate: false,
    };
    nn::matmul(
        b,
        g,
        x.buffer(),
        wt.buffer(),
        Some(bias.buffer()),
        y.buffer_mut(),
    )
    .unwrap();
    y
}

fn layers<B: NnOps>(b: &B) {
    let cfg = UNetConfig::from_json(&std::fs::read_to_string(dir().join("config.json")).unwrap())
        .unwrap();
    let wbytes = std::fs::read(dir().join("diffusion_pytorch_model.safetensors")).unwrap();
    let ibytes = std::fs::read(dir().join("intermediates.safetensors")).unwrap();
    let w = SafeTensors::deserialize(&wbytes).unwrap();
    let im = SafeTensors::deserialize(&ibytes).unwrap();
    let (batch, cin, h, wd) = (2, cfg.in_channels, 16, 16);
    let c0 = cfg.block_out_channels[0];
    let temb = cfg.time_embed_dim();
    let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps as f32);

    // Time embedding: sinusoids, linear, SiLU, linear.
    let t = up(b, &read(&im, "input.timestep"));
    let mut tp = zeros(b, batch * c0);
    let g = TimeProj {
        batch,
        dim: c0,
        freq_shift: cfg.freq_shift as f32,
        flip_sin_to_cos: cfg.flip_sin_to_cos,
    };
    nn::time_proj(b, g, t.buffer(), tp.buffer_mut()).unwrap();
    check("time_proj", &tp, b, &read(&im, "time_proj"));
    let tp = up(b, &read(&im, "time_proj"));
    let l1 = linear(b, &w, "time_embedding.linear_1", &tp, batch, c0, temb);
    check(
        "time_embedding.linear_1",
        &l1,
        b,
        &read(&im, "time_embedding.linear_1"),
    );
    let mut a = zeros(b, batch * temb);
    nn::silu(b, batch * temb, l1.buffer(), a.buffer_mut()).unwrap();
    let l2 = linear(b, &w, "time_embedding.linear_2", &a, batch, temb, temb);
    check("time_embedding", &l2, b, &read(&im, "time_embedding"));

    // conv_in: 3×3, stride 1, padding 1, with bias.
    let conv3 = |cin, cout, hh, ww| Conv2d {
        batch,
        cin,
        h: hh,
        w: ww,
        cout,
        k: 3,
        stride: 1,
        pad: 1,
        pad_after: 1,
    };
    let x = up(b, &read(&im, "input.sample"));
    let cw = up(b, &read(&w, "conv_in.weight"));
    let cb = up(b, &read(&w, "conv_in.bias"));
    let mut y = zeros(b, batch * c0 * h * wd);
    nn::conv2d(
        b,
        conv3(cin, c0, h, wd),
        x.buffer(),
        cw.buffer(),
        Some(cb.buffer()),
        y.buffer_mut(),
    )
    .unwrap();
    check("conv_in", &y, b, &read(&im, "conv_in"));

    // The first resnet's norm1 (GroupNorm; the hook sees it before SiLU) and
    // conv1 (on SiLU of diffusers' norm1 output).
    let r = "down_blocks.0.resnets.0";
    let x = up(b, &read(&im, "conv_in"));
    let gamma = up(b, &read(&w, &format!("{r}.norm1.weight")));
    let beta = up(b, &read(&w, &format!("{r}.norm1.bias")));
    let gn = |c, hw, silu| GroupNorm {
        batch,
        channels: c,
        hw,
        groups,
        eps,
        silu,
    };
    let mut n1 = zeros(b, batch * c0 * h * wd);
    nn::group_norm(
        b,
        gn(c0, h * wd, false),
        x.buffer(),
        gamma.buffer(),
        beta.buffer(),
        n1.buffer_mut(),
    )
    .unwrap();
    check(
        &format!("{r}.norm1"),
        &n1,
        b,
        &read(&im, &format!("{r}.norm1")),
    );
    let n1 = up(b, &read(&im, &format!("{r}.norm1")));
    let n = batch * c0 * h * wd;
    let mut act = zeros(b, n);
    nn::silu(b, n, n1.buffer(), act.buffer_mut()).unwrap();
    let w1 = up(b, &read(&w, &format!("{r}.conv1.weight")));
    let b1 = up(b, &read(&w, &format!("{r}.conv1.bias")));
    let mut c1 = zeros(b, n);
    nn::conv2d(
        b,
        conv3(c0, c0, h, wd),
        act.buffer(),
        w1.buffer(),
        Some(b1.buffer()),
        c1.buffer_mut(),
    )
    .unwrap();
    check(
        &format!("{r}.conv1"),
        &c1,
        b,
        &read(&im, &format!("{r}.conv1")),
    );

    // The attention block's group norm and q projection: tokens are pixels,
    // so q = x̂ᵀ·Wqᵀ + b is a matmul with A stored transposed ([c, hw] per item).
    let a = "down_blocks.1.attentions.0";
    let c1w = cfg.block_out_channels[1];
    let hw = 8 * 8;
    let x = up(b, &read(&im, "down_blocks.1.resnets.0"));
    let gamma = up(b, &read(&w, &format!("{a}.group_norm.weight")));
    let beta = up(b, &read(&w, &format!("{a}.group_norm.bias")));
    let attn_groups = cfg.attn_norm_num_groups.unwrap_or(groups);
    let mut xn = zeros(b, batch * c1w * hw);
    let g = GroupNorm {
        groups: attn_groups,
        ..gn(c1w, hw, false)
    };
    nn::group_norm(
        b,
        g,
        x.buffer(),
        gamma.buffer(),
        beta.buffer(),
        xn.buffer_mut(),
    )
    .unwrap();
    // diffusers normalises the [b, c, hw] view before moving tokens last, so
    // this hook holds channel-major values, like ours.
    let ours = xn.to_f64(b).unwrap();
    check(
        &format!("{a}.group_norm"),
        &xn,
        b,
        &read(&im, &format!("{a}.group_norm")),
    );
    let wq = up(b, &read(&w, &format!("{a}.to_q.weight")));
    let bq = up(b, &read(&w, &format!("{a}.to_q.bias")));
    let g = Matmul {
        batch: 1,
        m: hw,
        n: c1w,
        k: c1w,
        trans_a: true,
        trans_b: true,
        alpha: 1.0,
        accumulate: false,
    };
    // One matmul per item: the weights are shared, and the family's batched
    // matmul strides both operands.
    let mut q = Vec::with_capacity(batch * hw * c1w);
    for item in ours.chunks(c1w * hw) {
        let xi = up(b, item);
        let mut qi = zeros(b, hw * c1w);
        nn::matmul(
            b,
            g,
            xi.buffer(),
            wq.buffer(),
            Some(bq.buffer()),
            qi.buffer_mut(),
        )
        .unwrap();
        q.extend(qi.to_f64(b).unwrap());
    }
    let q = up(b, &q);
    check(
        &format!("{a}.to_q"),
        &q,
        b,
        &read(&im, &format!("{a}.to_q")),
    );
}

crate::for_each_backend!(layers);
