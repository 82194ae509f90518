"""Timing helpers: seconds per call, and the median with its interquartile range."""
import statistics
import time

ROUNDS = 3          # a step time is measured in this many rounds; their medians are its repeated measurements
BUSY_SPREAD = 0.25  # rounds whose medians differ by more than 25% (max/min - 1) mean another program took the cores


def round_sizes(repeats):
    """Timed calls per round: `repeats` split over ROUNDS rounds (exactly `repeats` in all), None when adaptive."""
    if repeats is None:
        return [None] * ROUNDS
    n = min(ROUNDS, repeats)
    return [repeats // n + (k < repeats % n) for k in range(n)]


def time_rounds(step, repeats=None, min_time=0.3, min_repeats=5):
    """Seconds per call of step() in ROUNDS rounds (a list of sample lists), the budget split over them: each
    round's median is one repeated measurement, which the answer's intervals resample."""
    return [time_calls(step, n, min_time / ROUNDS, max(2, min_repeats // ROUNDS)) for n in round_sizes(repeats)]


def time_calls(step, repeats=None, min_time=0.3, min_repeats=5, max_repeats=100_000):
    """Seconds per call of step(), one sample per call: exactly `repeats` calls, or (adaptive) at least
    `min_repeats` calls and at least `min_time` seconds."""
    samples = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
        n = len(samples)
        if repeats is not None:
            if n >= repeats:
                break
        elif (n >= min_repeats and time.perf_counter() - started >= min_time) or n >= max_repeats:
            break
    return samples


def median_iqr(samples):
    if len(samples) == 1:
        return samples[0], 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q3 - q1


def settle():
    """BLAS and OpenMP worker threads spin for a while after their last job before they sleep; a short pause keeps
    them from competing with the next measurement."""
    time.sleep(0.1)
