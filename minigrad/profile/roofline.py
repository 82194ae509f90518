"""The roofline of this machine, measured, and where each GEMM of a train step sits under it.

A kernel that does F flops and must move at least Q bytes has arithmetic intensity I = F / Q (flop/byte). It cannot
run faster than the compute roof (the GEMM ceiling, measured by throughput.gemm_ceiling) nor than memory can feed
it (I x the memory bandwidth): attainable(I) = min(ceiling, I x bandwidth). Below the ridge point
I = ceiling / bandwidth a kernel is memory-bound, above it compute-bound.

For a GEMM out (M,N) = a (M,K) @ b (K,N), Q is the least traffic (each operand read and the result written once), so
I = 2MNK / ((MK + KN + MN) x itemsize). With B on one of the three dimensions, a batch of 1 is a matrix-vector
product (I below 0.5 flop/byte for float32: memory-bound), and I grows with B until the weights are the smaller part
of the traffic: that is why a batch of 64 costs little more than one.

The bandwidth is the STREAM triad a = b + s c over arrays far larger than the caches, with the thread count of the
run (Numba threads), counting 3 x N x itemsize bytes per pass (the STREAM convention: the write-allocate read of
`a` is not counted). The GEMMs of a small MLP work mostly in cache, where bandwidth is higher: a point above the
DRAM roof means its data came from cache. So a second roof is measured the same way on arrays that stay in each
core's L2 (3 x 64 KiB per thread), which no kernel of the step can beat while its data lives there.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True)
def _triad(a, b, c, s):
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


def memory_bandwidth(n_bytes=256 * 2**20, repeats=10):
    """GB/s of the STREAM triad over three float64 arrays of n_bytes / 3 each (default: 256 MiB in all), at the
    current Numba thread count; the median of `repeats` passes after a warm-up pass."""
    from minigrad.machine.timing import median_iqr, time_calls

    n = max(n_bytes // 3 // 8, 1)
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    _triad(a, b, c, 3.0)  # compile (parallel code is not cached) and touch every page
    median, _ = median_iqr(time_calls(lambda: _triad(a, b, c, 3.0), repeats=repeats))
    return 3 * n * 8 / median / 1e9


@njit(parallel=True, fastmath=True)
def _cache_triad(a, b, c, reps):
    # a, b, c (T, n): each thread triads its own rows, `reps` times (the scale changes, so no pass can be skipped)
    for t in prange(a.shape[0]):
        for r in range(reps):
            s = 1.0 + r * 1e-9
            for i in range(a.shape[1]):
                a[t, i] = b[t, i] + s * c[t, i]


def cache_bandwidth(threads, n_bytes=192 * 2**10, reps=2000, repeats=7):
    """GB/s of the STREAM triad with each of `threads` threads on its own three float64 arrays of n_bytes / 3 in
    all (default 192 KiB: inside a core's L2), at the current Numba thread count."""
    from minigrad.machine.timing import median_iqr, time_calls

    n = max(n_bytes // 3 // 8, 1)
    a, b, c = np.zeros((threads, n)), np.ones((threads, n)), np.full((threads, n), 2.0)
    _cache_triad(a, b, c, 1)
    median, _ = median_iqr(time_calls(lambda: _cache_triad(a, b, c, reps), repeats=repeats))
    return 3 * threads * n * 8 * reps / median / 1e9


def attainable(intensity, ceiling_gflops, bandwidth_gbs):
    return min(ceiling_gflops, intensity * bandwidth_gbs)


def gemm_rows(breakdown_result, itemsize, ceiling_gflops, bandwidth_gbs):
    """One row per GEMM of a breakdown (see breakdown.breakdown): name, shape, flops, bytes, intensity, seconds,
    achieved GFLOP/s, the roofline's attainable GFLOP/s at that intensity, and achieved as a % of it."""
    rows = []
    for op, seconds in zip(breakdown_result["ops"], breakdown_result["op_s"]):
        if op.kind != "gemm":
            continue
        flops, traffic = op.flops, op.bytes(itemsize)
        intensity = flops / traffic
        achieved = flops / seconds / 1e9 if seconds > 0 else float("nan")
        roof = attainable(intensity, ceiling_gflops, bandwidth_gbs)
        rows.append(dict(op=op.name, shape="x".join(map(str, op.shape)), repeat=op.repeat, flops=flops,
                         bytes=traffic, intensity=intensity, seconds=seconds, gflops=achieved,
                         attainable_gflops=roof, pct_of_attainable=100.0 * achieved / roof))
    return rows
