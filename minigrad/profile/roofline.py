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


# ------------------------------------------------------------------------------------------ the whole step's roof
# A training step is under two roofs at once: its GEMMs cannot beat the GEMM ceiling (flops / ceiling), and it cannot
# move its data faster than memory delivers it (least traffic / bandwidth). The larger of the two floors is the roof
# that applies: the memory floor at small B (every weight is streamed for a few flops), the GEMM floor at large B.

def l2_bytes(default=1 << 20):
    """Bytes of one core's L2 cache (Linux sysfs), or `default` where it cannot be read."""
    import glob

    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/")):
        try:
            with open(path + "level") as fh:
                if fh.read().strip() != "2":
                    continue
            with open(path + "size") as fh:
                text = fh.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
    return default


def step_traffic(sizes, B, itemsize):
    """(least bytes one SGD train step of an MLP with these layer widths must move, bytes it keeps live):
    the parameters 3 times (read by the forward pass, read and written again by the update, which can share its read
    with the input gradient's), the batch read once (inputs and int64 labels), and every layer's output written and
    read once in each direction (forward activation, then its gradient)."""
    params = sum(o * c + o for o, c in zip(sizes[1:], sizes[:-1])) * itemsize
    batch = B * (sizes[0] * itemsize + 8)
    outputs = B * sum(sizes[1:]) * itemsize
    return 3 * params + batch + 4 * outputs, params + batch + 2 * outputs


def step_roof(sizes, B, itemsize, flops, step_s, ceiling_gflops, dram_gbs, l2_gbs, threads, l2_size=None):
    """Where one step of `step_s` seconds sits under the two roofs: its least traffic (step_traffic), the memory
    floor (that traffic at the L2 bandwidth while what the step keeps live fits the `threads` cores' L2, else at
    the DRAM bandwidth) as a % of the measured time, the GEMM floor (flops / ceiling; as a % of the time it is the
    row's pct_of_ceiling), and which one applies (the larger floor) with the time's % of it. With dram_gbs None
    (not measured) the memory columns and the roof are NaN and ""."""
    traffic, live = step_traffic(sizes, B, itemsize)
    gemm_floor = flops / (ceiling_gflops * 1e9)
    if dram_gbs is None:  # bandwidths not measured (a study's first run on a machine): the GEMM floor alone
        nan = float("nan")
        return dict(traffic_bytes=traffic, memory_level="", floor_bandwidth_gbs=nan, memory_floor_s=nan,
                    gemm_floor_s=gemm_floor, pct_of_memory_floor=nan, roof="", pct_of_roof=nan)
    in_l2 = live <= threads * (l2_size or l2_bytes())
    bandwidth = l2_gbs if in_l2 and l2_gbs else dram_gbs
    memory_floor = traffic / (bandwidth * 1e9)
    return dict(traffic_bytes=traffic, memory_level="L2" if bandwidth == l2_gbs else "DRAM",
                floor_bandwidth_gbs=bandwidth, memory_floor_s=memory_floor, gemm_floor_s=gemm_floor,
                pct_of_memory_floor=100.0 * memory_floor / step_s,
                roof="memory" if memory_floor >= gemm_floor else "GEMM",
                pct_of_roof=100.0 * max(memory_floor, gemm_floor) / step_s)
