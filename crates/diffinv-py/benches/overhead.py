"""Per-call time of the fused step through the Python binding (timeit), f16 on
the CPU backend: step 5 of a 20-step DPM-Solver++ 2M plan, the case of
crates/diffinv-capi/benches/overhead.rs, so the two tables line up.

x is restored before every timed call (outside the timing) because the update
is expanding. Prints the median of `repeat` runs per shape.
Run: .venv/bin/python crates/diffinv-py/benches/overhead.py
"""

import statistics
import timeit

import numpy as np

import diffinv

STEP = 5
SHAPES = [(1, 1, 8, 8), (1, 3, 64, 64), (16, 3, 256, 256)]


def main():
    plan = diffinv.Plan(steps=20)
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x0 = rng.standard_normal(shape).astype(np.float16)
        eps = rng.standard_normal(shape).astype(np.float16)
        x = x0.copy()
        run = diffinv.Run(plan, list(shape), dtype="float16")
        calls = 2000 if x.size < 1 << 16 else 20
        times = []
        for _ in range(15):
            total = 0.0
            for _ in range(calls):
                np.copyto(x, x0)
                start = timeit.default_timer()
                run.step(STEP, x, eps)
                total += timeit.default_timer() - start
            times.append(total / calls)
        label = "x".join(map(str, shape))
        print(f"{label} f16: median {statistics.median(times) * 1e6:.2f} us per call "
              f"(min {min(times) * 1e6:.2f}, max {max(times) * 1e6:.2f})")


if __name__ == "__main__":
    main()
