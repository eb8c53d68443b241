"""A diffusers sampling loop with `scheduler.step` replaced by diffinv's fused step,
and the two timed against each other on the same arrays in one run.

The network stays the caller's: a diffusers UNet2DModel on PyTorch's CPU — by
default the crate's bundled demo model (assets/demo-unet, ε-prediction, DDPM's
linear betas), so nothing is downloaded. The sample and the model output go to
diffinv by DLPack, and the step writes the sample tensor in place: no copy, one
fused pass per step.

At every step k, with eps = unet(x, t):
  diffusers: x_next = scheduler.step(eps, t, x).prev_sample
  diffinv:   run.step(k, x_mine, eps), x_mine a copy of the same x (copied untimed)
each call timed alone with time.perf_counter. The loop continues from diffusers'
x_next, so both steppers see the same x and eps at every step (teacher-forced);
the largest difference between their results is printed with the times. Then
the same run.step once more, 200 times on copies made beforehand, with no torch
op just before it: the difference to the loop's time is what meeting torch's
thread pool (still spinning after its op) costs our own on the same cores.

Needs torch and diffusers (not installed by CI; tests/test_sched_fixtures.py
checks the same plans against diffusers' stored trajectories). Run:
  python crates/diffinv-py/examples/diffusers_loop.py [--model DIR] [--steps N]
      [--batch B] [--size S] [--repeats R]
"""

import argparse
import pathlib
import statistics
import time

import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel

import diffinv

ROOT = pathlib.Path(__file__).resolve().parents[3]


def plan_of(scheduler, steps):
    """diffinv's plan with the scheduler's solver, schedule and time grid."""
    cfg = scheduler.config
    return diffinv.Plan(
        steps=steps,
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


def microseconds(samples):
    return f"median {statistics.median(samples) * 1e6:9.1f} us, mean {statistics.fmean(samples) * 1e6:9.1f} us"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "demo-unet"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=32, help="height and width of the sample")
    parser.add_argument("--repeats", type=int, default=5, help="whole loops, each from fresh noise")
    args = parser.parse_args()

    # low_cpu_mem_usage=False: the default needs `accelerate`, which adds nothing here.
    unet = UNet2DModel.from_pretrained(
        args.model, torch_dtype=torch.float32, low_cpu_mem_usage=False
    ).eval()
    # DDPM's linear schedule (the demo model's training schedule) with
    # diffusers' default DPM-Solver++ 2M settings.
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02
    )
    scheduler.set_timesteps(args.steps)
    plan = plan_of(scheduler, args.steps)
    assert plan.timesteps == [float(t) for t in scheduler.timesteps]

    shape = [args.batch, unet.config.in_channels, args.size, args.size]
    net, theirs, ours = [], [], []
    worst = 0.0
    with torch.no_grad():
        for repeat in range(args.repeats):
            scheduler.set_timesteps(args.steps)  # also resets its multistep history
            run = diffinv.Run(plan, shape, dtype="float32")
            x = torch.randn(shape, generator=torch.Generator().manual_seed(repeat))
            for k, t in enumerate(scheduler.timesteps):
                start = time.perf_counter()
                eps = unet(x, t).sample.contiguous()
                net.append(time.perf_counter() - start)
                mine = x.clone()
                start = time.perf_counter()
                x_next = scheduler.step(eps, t, x).prev_sample
                theirs.append(time.perf_counter() - start)
                start = time.perf_counter()
                run.step(k, mine, eps)
                ours.append(time.perf_counter() - start)
                worst = max(worst, float((mine - x_next).abs().max()))
                x = x_next
        copies = [x.clone() for _ in range(200)]
        run = diffinv.Run(plan, shape, dtype="float32")
        alone = []
        for mine in copies:
            start = time.perf_counter()
            run.step(args.steps // 2, mine, eps)
            alone.append(time.perf_counter() - start)

    print(
        f"shape {'x'.join(map(str, shape))} float32, {args.steps} steps x {args.repeats} loops, "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads"
    )
    print(f"unet forward             {microseconds(net)}")
    print(f"diffusers scheduler.step {microseconds(theirs)}")
    print(f"diffinv run.step         {microseconds(ours)}")
    print(f"  the same, no torch op before it {microseconds(alone)}")
    print(f"scheduler.step / run.step: {statistics.median(theirs) / statistics.median(ours):.1f}x (medians)")
    print(f"largest |diffinv - diffusers| over all steps: {worst:.2e}")


if __name__ == "__main__":
    main()
