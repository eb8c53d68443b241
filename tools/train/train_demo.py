#!/usr/bin/env python3
"""Train diffinv's demo prior: a small, fully convolutional diffusers UNet2DModel
(ε prediction, DDPM linear betas, 1000 steps) on random crops of the colour
photographs bundled in the scikit-image wheel, on the CPU.

    python3 -m venv tools/train/.venv
    tools/train/.venv/bin/pip install -r tools/train/requirements.txt
    tools/train/.venv/bin/python tools/train/train_demo.py --out assets/demo-unet \
        --images assets/images

Everything is seeded (torch, numpy, the crop sampler), so the same versions on
the same CPU produce the same weights. The held-out photos never enter training;
their 4×-downscaled crops are written to --images for the demo and the tests.
The model is saved with save_pretrained in float16 (config.json and
diffusion_pytorch_model.safetensors), with the EMA weights, plus loss.csv.
"""

import argparse
import csv
import json
import os
import time

import numpy as np
import skimage.data
import skimage.io
import skimage.transform
import torch
from diffusers import DDPMScheduler, UNet2DModel

# Photographs of skimage.data (file names in skimage/data/): the colour ones,
# and grey ones (used as three equal channels) for texture. Synthetic images
# (logo, color, chessboards, text, page) are left out.
PHOTOS = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "moon.png",
]
# Held out for evaluation and the demo: never cropped for training.
HELD_OUT = ["astronaut.png", "coffee.png"]


def load(name):
    path = os.path.join(os.path.dirname(skimage.data.__file__), name)
    if not os.path.exists(path):
        # Some photos are fetched into the data directory on first use.
        getattr(skimage.data, name.split(".")[0])()
    img = skimage.io.imread(path)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3].astype(np.float32) / 255.0


def downscale(img, factor):
    """Area-average by an integer factor (crops the remainder)."""
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))


def model():
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 96),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        add_attention=False,
        norm_num_groups=16,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="assets/demo-unet")
    p.add_argument("--images", default="assets/images")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    # Training pyramid: every training photo at 1/2, 1/3 and 1/4 size.
    pyramid = []
    for name in PHOTOS:
        if name in HELD_OUT:
            continue
        img = load(name)
        for f in (2, 3, 4):
            small = downscale(img, f)
            if min(small.shape[:2]) > args.crop:
                pyramid.append(small)
    weights = np.array([s.shape[0] * s.shape[1] for s in pyramid], dtype=np.float64)
    weights /= weights.sum()

    def batch():
        out = np.empty((args.batch, 3, args.crop, args.crop), dtype=np.float32)
        for k in range(args.batch):
            img = pyramid[rng.choice(len(pyramid), p=weights)]
            i = rng.integers(0, img.shape[0] - args.crop + 1)
            j = rng.integers(0, img.shape[1] - args.crop + 1)
            crop = img[i : i + args.crop, j : j + args.crop]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[k] = crop.transpose(2, 0, 1) * 2.0 - 1.0
        return torch.from_numpy(out)

    net = model()
    ema = model()
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / 200) * 0.5 * (1 + np.cos(np.pi * s / args.steps))
    params = sum(p.numel() for p in net.parameters())
    print(f"{params / 1e6:.2f} M parameters, {len(pyramid)} training images, {args.steps} steps")

    os.makedirs(args.out, exist_ok=True)
    log = []
    start = time.time()
    running = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x0 = batch()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (args.batch,))
        xt = sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(net(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.mul_(decay).add_(pn, alpha=1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0:
            elapsed = time.time() - start
            log.append((step + 1, running, elapsed))
            print(f"step {step + 1}: loss {running:.4f}, {elapsed:.0f} s", flush=True)

    ema.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "loss.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss_ema", "seconds"])
        w.writerows(log)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(
            {
                "args": vars(args),
                "parameters": params,
                "train_photos": [n for n in PHOTOS if n not in HELD_OUT],
                "held_out": HELD_OUT,
                "seconds": time.time() - start,
                "torch": torch.__version__,
            },
            f,
            indent=1,
        )

    # The held-out photos, 4× downscaled (128×128 and 96×144 after a centre crop).
    os.makedirs(args.images, exist_ok=True)
    for name, (h, w) in zip(HELD_OUT, [(128, 128), (96, 144)]):
        small = downscale(load(name), 4)
        i, j = (small.shape[0] - h) // 2, (small.shape[1] - w) // 2
        crop = np.clip(small[i : i + h, j : j + w] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        skimage.io.imsave(os.path.join(args.images, name.split(".")[0] + ".png"), crop, check_contrast=False)


if __name__ == "__main__":
    main()
