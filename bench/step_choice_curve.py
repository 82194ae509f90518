"""Samples/s against B with the step paths of the thresholds (steps.choose) and of this machine's timings
(engine/step_choice.py), side by side in one run, and whether each curve is non-decreasing in B within 5%.

    python bench/step_choice_curve.py [THREADS] [B,B,...]   # default: 1 thread, B = 1,2,4,8,12,16,24,32,48,64,128,256

For the three models of bench/step_paths.py (float32, plain SGD) it first measures the choices (kept beside
Numba's cache, so a second run reuses them), then times each B in the compiled training loop, both ways
interleaved, the median of three rounds of about 0.2 s. A curve "dips" where samples/s at a B falls more than 5%
below the best at any smaller B.
"""
import contextlib
import statistics
import sys
import time

import numba
import numpy as np

from minigrad.engine import loop as L
from minigrad.engine import step_choice
from minigrad.engine.model import MLP
from minigrad.engine.optim import make_optimizer
from minigrad.machine.threads import limit_threads
from minigrad.training.schedules import BatchSchedule, LRSchedule
from minigrad.training.train import Budget

MODELS = ([32, 64, 64, 10], [784, 128, 128, 10], [784, 256, 256, 10])
TOLERANCE = 0.05


def stepper(sizes, B, measured):
    r = np.random.default_rng(0)
    X, y = r.standard_normal((4096, sizes[0])).astype(np.float32), r.integers(0, sizes[-1], 4096)
    model, opt = MLP(list(sizes), seed=0), make_optimizer("sgd", 1e-3)
    with way(measured):
        path = model.step_path(B, opt)
        sampler = L.SamplerState("shuffle", y, seed=0, drop_last=True)
        s = L.Stepper(model, X, y, opt, sampler, LRSchedule(1e-3), BatchSchedule(B), Budget(steps=10**9))
        s.run(20)  # compile and warm up
    return s, path


def way(measured):
    """The measured choices (as MLP.step_for takes them) or the thresholds only, for the steps in the block."""
    return contextlib.nullcontext() if measured else step_choice.disabled()


def samples_per_s(s, B, done, measured):
    n = max(20, int(0.2 / max(s.probe_s, 1e-6)))
    started = time.perf_counter()
    with way(measured):
        s.run(done + n)
    s.probe_s = (time.perf_counter() - started) / n
    return B / s.probe_s, done + n


def dips(curve):
    """The batch sizes whose samples/s falls more than TOLERANCE below the best at a smaller B."""
    best, out = 0.0, []
    for B, v in curve:
        if v < (1 - TOLERANCE) * best:
            out.append(B)
        best = max(best, v)
    return out


def main():
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    sizes_b = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,2,4,8,12,16,24,32,48,64,128,256").split(",")]
    with limit_threads(T):
        numba.set_num_threads(T)
        for sizes in MODELS:
            started = time.perf_counter()
            step_choice.ensure(MLP(list(sizes), seed=0), sizes_b, make_optimizer("sgd", 1e-3), T)
            print(f"\n{'-'.join(map(str, sizes))}, {T} thread(s): choices measured/loaded in "
                  f"{time.perf_counter() - started:.1f} s; samples/s, median of 3 rounds")
            print(f"{'B':>5} {'thresholds path':>22} {'samples/s':>10}   {'measured path':>22} {'samples/s':>10}  ratio")
            curves = {False: [], True: []}
            for B in sizes_b:
                runs = {m: stepper(sizes, B, m) for m in (False, True)}
                done = {m: 20 for m in runs}
                for s, _ in runs.values():
                    s.probe_s = 1e-4
                rates = {m: [] for m in runs}
                for _ in range(3):
                    for m, (s, _) in runs.items():
                        v, done[m] = samples_per_s(s, B, done[m], m)
                        rates[m].append(v)
                med = {m: statistics.median(v) for m, v in rates.items()}
                for m in runs:
                    curves[m].append((B, med[m]))
                print(f"{B:>5} {runs[False][1]:>22} {med[False]:>10,.0f}   {runs[True][1]:>22} {med[True]:>10,.0f}"
                      f"  {med[True] / med[False]:.2f}x")
            for m, label in ((False, "thresholds"), (True, "measured")):
                d = dips(curves[m])
                print(f"  {label}: " + (f"dips (>5% below a smaller B's best) at B = {d}" if d else
                                        "non-decreasing within 5%"))


if __name__ == "__main__":
    main()
