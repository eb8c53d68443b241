#!/usr/bin/env python3
"""Time diffusers' DPMSolverMultistepScheduler.step on CPU torch: the peer of
`cargo bench --bench solver` (the fused DPM-Solver++ 2M update).

Same configuration as the bench: DDPM linear schedule (1000 train steps,
betas 1e-4..0.02), DPM-Solver++ 2M (solver_order=2, algorithm_type
"dpmsolver++", solver_type "midpoint", lower_order_final, final sigma zero),
20 steps with "leading" spacing, epsilon prediction; the same mid-run step
(index 5: one history entry is read, one written), on 1x3x256x256 and
16x3x256x256, float32 and float16.

The scheduler is stepped through steps 0..4 to fill its history, then its
state (step index, model_outputs, lower_order_nums) is saved and restored
before every timed call of step(5); each call is timed with
time.perf_counter and the median is reported.

Setup: see tools/README.md (a venv at tools/.venv with torch + diffusers from PyPI).
"""

import argparse
import statistics
import sys
import time

import torch
from diffusers import DPMSolverMultistepScheduler

STEP = 5
SHAPES = [(1, 3, 256, 256), (16, 3, 256, 256)]
DTYPES = [torch.float32, torch.float16]


def make_scheduler():
    s = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        solver_order=2,
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        timestep_spacing="leading",
        steps_offset=0,
    )
    s.set_timesteps(20)
    return s


def time_case(shape, dtype, reps, warmup):
    g = torch.Generator().manual_seed(0)
    sched = make_scheduler()
    sample = torch.randn(shape, generator=g).to(dtype)
    eps = torch.randn(shape, generator=g).to(dtype)
    # Fill the history with real steps 0..STEP-1.
    for i in range(STEP):
        t = sched.timesteps[i]
        sample = sched.step(eps, t, sample, return_dict=False)[0]
    assert sched.step_index == STEP
    saved = (sched._step_index, list(sched.model_outputs), sched.lower_order_nums)
    t = sched.timesteps[STEP]
    times = []
    for r in range(warmup + reps):
        sched._step_index, outs, sched.lower_order_nums = saved[0], saved[1], saved[2]
        sched.model_outputs = list(outs)
        t0 = time.perf_counter()
        out = sched.step(eps, t, sample, return_dict=False)[0]
        dt = time.perf_counter() - t0
        if r >= warmup:
            times.append(dt)
    assert out.dtype == dtype and out.shape == sample.shape
    return statistics.median(times), min(times), len(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--reps-small", type=int, default=300)
    ap.add_argument("--reps-big", type=int, default=40)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import diffusers

    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"{torch.get_num_threads()} threads, DPMSolverMultistepScheduler.step (2M midpoint, dpmsolver++), "
        f"step {STEP} of 20"
    )
    print(f"{'shape':<14} {'dtype':<8} {'median':>11} {'min':>11} {'GB/s(min bytes)':>16} {'reps':>5}")
    with torch.no_grad():
        for shape in SHAPES:
            n = 1
            for d in shape:
                n *= d
            for dtype in DTYPES:
                reps = args.reps_small if shape[0] == 1 else args.reps_big
                try:
                    med, mn, k = time_case(shape, dtype, reps, warmup=max(3, reps // 10))
                except RuntimeError as e:  # e.g. an op without a CPU half kernel
                    print(f"{'x'.join(map(str, shape)):<14} {str(dtype)[6:]:<8} unsupported: {e}")
                    continue
                size = torch.tensor([], dtype=dtype).element_size()
                gbps = 5 * n * size / med / 1e9
                ms = f"{med * 1e3:.3f} ms"
                mns = f"{mn * 1e3:.3f} ms"
                print(
                    f"{'x'.join(map(str, shape)):<14} {str(dtype)[6:]:<8} {ms:>11} {mns:>11} {gbps:>16.2f} {k:>5}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
