"""How many threads a training run uses: a fixed count, or "auto" (chosen by measurement, and back to one thread
when the machine gets busy).

Why one thread by default. A two-thread step has its threads meet many times a step (the fused SGD step at barriers
after every layer, OpenBLAS at the end of every GEMM). When another program holds a core, one of the two threads
waits for the other to be scheduled again, a time slice of milliseconds: on the 2-core machine this was measured on
(bench/loop_bench.py --contention), steps took 10x to 100x longer on two threads than on one, at every batch size and
for both the study's model and 784-128-128-10, while one thread lost at most 2x. The two thread counts also round
sums differently (the fused step adds per-worker partial gradients; OpenBLAS splits some products along their inner
dimension), so a run is bitwise reproducible only at a fixed thread count.

"auto" times the run's own step (model, batch size, optimizer) on one and on two threads before training and takes
two only when they are at least AUTO_GAIN times faster; while training on two it times every chunk of steps and
drops to one thread for good when a step takes longer than FALLBACK times the one-thread step (the trace records the
step). Runs with "auto" are therefore reproducible only when the machine stays as it was measured.
"""
import time
from contextlib import contextmanager

import numpy as np

from minigrad.machine.checks import shown
from minigrad.machine.threads import available_cores, max_threads

AUTO_GAIN = 1.3     # two threads must be this much faster than one to be chosen
FALLBACK = 1.5      # a two-thread chunk slower than this times the one-thread step goes back to one thread
CHUNK_SECONDS = 0.05  # under "auto" on two threads, chunks of about this long at the measured speed, so a busy
#                       machine is noticed within a fraction of a second


def parse_threads(value):
    """None (leave the current settings), an int >= 1, or "auto"; a ValueError naming the problem otherwise."""
    if value is None or value == "auto":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(value).strip() != str(count):
        raise ValueError(f"threads must be a positive integer or 'auto', got {shown(value)}")
    if count > max_threads():  # Numba would run max_threads() and the run would record the count asked for
        raise ValueError(f"threads must lie between 1 and {max_threads()} (NUMBA_NUM_THREADS), got {shown(count)}")
    return count


def available_threads():
    return max(1, min(available_cores(), max_threads()))


@contextmanager
def thread_count(T):
    """BLAS (every loaded OpenBLAS) and Numba threads set to T inside the block, restored after it."""
    import numba

    from minigrad.machine.threads import limit_threads

    saved = numba.get_num_threads()
    limits = limit_threads(T)
    numba.set_num_threads(min(T, numba.config.NUMBA_NUM_THREADS))
    try:
        yield T
    finally:
        limits.restore_original_limits()
        numba.set_num_threads(saved)


def step_seconds(model, X, y, optimizer, min_time=0.02):
    """Mean seconds per MLP.train_step_trusted on the batch (X, y) at the current thread settings, on a copy of the model
    (the run's parameters stay untouched), after two warm-up steps."""
    from minigrad.engine.optim import make_optimizer

    twin, opt = model.copy(), make_optimizer(optimizer.name, optimizer.lr)
    for _ in range(2):
        twin.train_step_trusted(X, y, opt)
    n, started = 0, time.perf_counter()
    while True:
        twin.train_step_trusted(X, y, opt)
        n += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_time and n >= 3:
            return elapsed / n


def choose_threads(model, X, y, optimizer, rounds=3):
    """(threads, {threads: seconds per step}): one, or two when they are AUTO_GAIN times faster on this batch.
    The two counts are timed alternately, `rounds` times each, and compared by their medians."""
    top = min(2, available_threads())
    if top < 2:
        return 1, {}
    times = {1: [], 2: []}
    X, y = np.ascontiguousarray(X), np.ascontiguousarray(y)
    for _ in range(rounds):
        for T in (1, 2):
            with thread_count(T):
                times[T].append(step_seconds(model, X, y, optimizer))
    median = {T: float(np.median(v)) for T, v in times.items()}
    return (2 if median[1] >= AUTO_GAIN * median[2] else 1), median
