#!/usr/bin/env python3
"""The PyTorch peer of `cargo bench --bench unet`, and a checkpoint of the
google/ddpm-cifar10-32 architecture for the crate's fixture test.

1. Builds diffusers' UNet2DModel with the ddpm-cifar10-32 architecture (the same
   config as `UNetConfig::ddpm_cifar10_32()`), random weights from seed 0.
2. `--save DIR`: writes DIR/config.json + diffusion_pytorch_model.safetensors
   (save_pretrained) and DIR/cases.safetensors in the format of
   tests/fixtures/unet_tiny (case0: int64 timesteps, case1: float timesteps;
   `x`, `x_f16`, `t`, `out_f64` from the model in float64). The crate checks such
   a folder with `DIFFINV_UNET_FIXTURES=DIR cargo test --test unet_fixtures`.
3. Times the float32 forward on CPU torch (torch.inference_mode, `--threads`,
   default 2): median and minimum over `--reps` calls after a warm-up, batch 1
   and 8, 32x32, one timestep per item.
4. `--onnx`: the same model exported to ONNX (torch's TorchScript exporter,
   dynamic batch) and timed the same way in ONNX Runtime's CPU provider
   (`intra_op_num_threads = --threads`, one inter-op thread), after checking
   its output against torch's (max abs difference printed).

Setup: tools/README.md (a venv at tools/.venv with torch + diffusers from PyPI).
"""

import argparse
import os
import statistics
import time

import torch
from diffusers import UNet2DModel

CIFAR10_32 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    attention_head_dim=None,
    norm_eps=1e-6,
    norm_num_groups=32,
)


def save_cases(model, path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    tensors = {}
    double = UNet2DModel(**CIFAR10_32)
    double.load_state_dict(model.state_dict())
    double = double.double().eval()
    for k, t in enumerate([torch.tensor([999, 17]), torch.tensor([10.5, 741.25])]):
        x = torch.randn(2, 3, 32, 32, generator=g)
        with torch.inference_mode():
            out = double(x.double(), t).sample
        tensors[f"case{k}.x"] = x
        tensors[f"case{k}.x_f16"] = x.half()
        tensors[f"case{k}.t"] = t
        tensors[f"case{k}.out_f64"] = out
    save_file(tensors, os.path.join(path, "cases.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--save", help="write the checkpoint and cases here")
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet2DModel(**CIFAR10_32).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {args.threads} threads, {params / 1e6:.2f} M params")
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        model.save_pretrained(args.save, safe_serialization=True)
        save_cases(model, args.save)
        print(f"saved {args.save}")
    for batch in (1, 8):
        x = torch.randn(batch, 3, 32, 32)
        t = torch.arange(batch) * 97 + 2
        with torch.inference_mode():
            times = timed(lambda: model(x, t), args.reps)
        report("diffusers UNet2DModel", batch, times, args.reps)
    if args.onnx:
        onnx_runtime(model, args)


def timed(call, reps):
    """Seconds of `reps` calls after one warm-up call."""
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def report(who, batch, times, reps):
    print(
        f"{who} cifar10-32 b{batch} f32: median {statistics.median(times) * 1e3:.1f} ms, "
        f"min {min(times) * 1e3:.1f} ms over {reps}"
    )


class Eps(torch.nn.Module):
    """The UNet as a function of (sample, timestep) returning the tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        return self.model(x, t).sample


def onnx_runtime(model, args):
    import tempfile

    import onnxruntime as ort

    path = os.path.join(tempfile.mkdtemp(), "unet.onnx")
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([3, 500])
    torch.onnx.export(
        Eps(model),
        (x, t),
        path,
        input_names=["x", "t"],
        output_names=["eps"],
        dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "eps": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        want = model(x, t).sample.numpy()
    got = session.run(None, {"x": x.numpy(), "t": t.numpy()})[0]
    print(f"onnxruntime {ort.__version__}: max |ort − torch| = {abs(got - want).max():.2e}")
    for batch in (1, 8):
        feeds = {
            "x": torch.randn(batch, 3, 32, 32).numpy(),
            "t": (torch.arange(batch) * 97 + 2).numpy(),
        }
        times = timed(lambda: session.run(None, feeds), args.reps)
        report("ONNX Runtime", batch, times, args.reps)


if __name__ == "__main__":
    main()
