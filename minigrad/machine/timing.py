"""Timing helpers: seconds per call, and the median with its interquartile range."""
import statistics
import time


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
