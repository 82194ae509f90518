"""Which plain-SGD step is faster per batch size: kernels_small's fused step against kernels_large's BLAS step.

    python bench/step_paths.py [THREADS] [B,B,...]     # default: 1 thread, B = 1,2,4,8,12,16,24,32,40

For three models (the default study's 32-64-64-10, 784-128-128-10 and 784-256-256-10, float32) it times both paths
in the compiled training loop (engine.loop.Stepper: the steps between two evaluations in one call), the median of
three runs of about 0.3 s each, and prints their ratio. steps.FUSED_SGD_MAX and FUSED_SGD_MIN_PARAMS, which decide
MLP.step_for, were set from this script's output; run it to see where they sit on another machine.
"""
import statistics
import sys
import time

import numba
import numpy as np

from minigrad.engine import loop as L
from minigrad.engine import model as M

try:
    from minigrad.engine import steps as S  # the thresholds, with the step registry
except ImportError:  # an older checkout: they were in model.py
    S = M
from minigrad.engine.model import MLP
from minigrad.engine.optim import make_optimizer
from minigrad.machine.threads import limit_threads
from minigrad.training.schedules import BatchSchedule, LRSchedule
from minigrad.training.train import Budget

MODELS = ([32, 64, 64, 10], [784, 128, 128, 10], [784, 256, 256, 10])


def seconds_per_step(sizes, B, fused, steps):
    """Seconds per step of `steps` compiled-loop steps, the fused step forced on (fused) or off."""
    r = np.random.default_rng(0)
    X, y = r.standard_normal((4096, sizes[0])).astype(np.float32), r.integers(0, sizes[-1], 4096)
    saved = dict(S.FUSED_SGD_MAX), S.FUSED_SGD_MIN_PARAMS
    S.FUSED_SGD_MAX.update({1: 10**9, 2: 10**9} if fused else {1: 0, 2: 0})
    S.FUSED_SGD_MIN_PARAMS = 0
    try:
        model, opt = MLP(list(sizes), seed=0), make_optimizer("sgd", 1e-3)
        sampler = L.SamplerState("shuffle", y, seed=0, drop_last=True)
        stepper = L.Stepper(model, X, y, opt, sampler, LRSchedule(1e-3), BatchSchedule(B), Budget(steps=10**9))
        stepper.run(50)  # compile and warm up
        path = model.step_path(B, opt)
        started = time.perf_counter()
        stepper.run(50 + steps)
        return (time.perf_counter() - started) / steps, path
    finally:
        S.FUSED_SGD_MAX.clear()
        S.FUSED_SGD_MAX.update(saved[0])
        S.FUSED_SGD_MIN_PARAMS = saved[1]


def main():
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    batch_sizes = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,2,4,8,12,16,24,32,40").split(",")]
    with limit_threads(T):
        numba.set_num_threads(T)
        for sizes in MODELS:
            for B in batch_sizes:
                steps = max(200, int(0.3 / (2e-6 * B * sizes[1] / 64 + 5e-6)))
                times = {}
                for fused in (True, False):
                    runs = [seconds_per_step(sizes, B, fused, steps) for _ in range(3)]
                    times[fused] = statistics.median(t for t, _ in runs), runs[0][1]
                (tf, pf), (tl, pl) = times[True], times[False]
                print(f"threads {T}  {'-'.join(map(str, sizes)):16s} B={B:4d}  {pf:18s} {tf * 1e6:8.1f} us  "
                      f"{pl:14s} {tl * 1e6:8.1f} us  fused / large {tf / tl:5.2f}", flush=True)


if __name__ == "__main__":
    main()
