"""A diffusers sampling loop with `scheduler.step` replaced by diffinv's fused step.

The network stays the caller's (here a diffusers UNet on PyTorch's CPU); the
sample and the model output go to diffinv by DLPack, and the step writes the
sample tensor in place: no copy, one fused pass per step.

Needs torch and diffusers (not installed by CI; the fixture replay in
tests/test_sched_fixtures.py checks the same plans against diffusers' own
trajectories). Run: python examples/diffusers_loop.py
"""

import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel

import diffinv

STEPS = 20

unet = UNet2DModel.from_pretrained("google/ddpm-cifar10-32").eval()
scheduler = DPMSolverMultistepScheduler.from_pretrained("google/ddpm-cifar10-32")
scheduler.set_timesteps(STEPS)
cfg = scheduler.config

# The same solver and time grid as the scheduler's configuration.
plan = diffinv.Plan(
    steps=STEPS,
    solver="dpmpp",
    order=cfg.solver_order,
    heun=cfg.solver_type == "heun",
    lower_order_final=cfg.lower_order_final,
    euler_at_final=cfg.euler_at_final,
    beta_schedule=cfg.beta_schedule,
    beta_start=cfg.beta_start,
    beta_end=cfg.beta_end,
    train_steps=cfg.num_train_timesteps,
    timestep_spacing=cfg.timestep_spacing,
    steps_offset=cfg.steps_offset,
    final_sigma=cfg.final_sigmas_type,
    prediction=cfg.prediction_type,
)
assert plan.timesteps == [float(t) for t in scheduler.timesteps]

x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
run = diffinv.Run(plan, list(x.shape), dtype="float32")
with torch.no_grad():
    for k, t in enumerate(scheduler.timesteps):
        eps = unet(x, t).sample.contiguous()
        # Was: x = scheduler.step(eps, t, x).prev_sample
        run.step(k, x, eps)

print("sample range", float(x.min()), float(x.max()))
