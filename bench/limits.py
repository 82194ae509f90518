"""How far the two roofs of `bench throughput` are from what any step could reach on this machine.

    python bench/limits.py floor [--threads 2] [--rounds 5]
    python bench/limits.py gemm  [--threads 2] [--rounds 5] [--batch-sizes 1024,4096] [--frameworks-python PY]

floor: at B = 1 the roof is memory. `bench throughput` puts the step's least traffic (the weights three times: read by
the forward pass, read and written by the update) at the STREAM-triad L2 bandwidth. This times, in the same run,
(1) the bare three passes over the weights of 784-256-256-10 and nothing else (a dot product per weight row, then
each row updated in place; the rows split between the threads in one parallel region, no barrier), (2) the fused
step in the compiled training loop, and (3) the L2 triad. Printed per round: each time as a multiple of the floor,
and the step as a multiple of the bare passes (what the step's other work costs: barriers between layers, the
input gradient, the loss).

gemm: at large B the roof is the GEMM ceiling. This times the five big GEMMs of a 784-256-256-10 step, with the
operand layouts the step uses, through minigrad's BLAS (np.dot in Numba: scipy's OpenBLAS) and through torch.mm (the
BLAS PyTorch ships, MKL in the x86 wheels) in --frameworks-python, one process after the other on the first
--threads cores, alternating over rounds; the median time of each and their ratio. The step's GEMMs are about 90% of
its time at B >= 1024, so this ratio bounds what fusions outside the GEMMs can win against PyTorch there.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's minigrad

SIZES = [784, 256, 256, 10]


# ------------------------------------------------------------------------------------------------------- floor
def _passes_kernels():
    from numba import njit, prange

    from minigrad.engine.kernels import FASTMATH

    @njit(fastmath=FASTMATH)
    def forward_rows(W, x, out, lo, hi):
        # W (OC,C), x (C,) -> out[lo:hi] = W[lo:hi] x   (reads the rows once)
        for o in range(lo, hi):
            s = W.dtype.type(0)
            for c in range(W.shape[1]):
                s += W[o, c] * x[c]
            out[o] = s

    @njit(fastmath=FASTMATH)
    def update_rows(W, x, d, lo, hi):
        # W[lo:hi] -= d[lo:hi] x^T   (reads and writes the rows once)
        for o in range(lo, hi):
            a = d[o] * W.dtype.type(1e-6)
            for c in range(W.shape[1]):
                W[o, c] -= a * x[c]

    @njit(parallel=True)
    def three_passes(T, Ws, xs, outs):
        # every layer's rows split between T threads: the forward reads, then the update reads and writes
        for t in prange(T):
            for l in range(len(Ws)):
                n = Ws[l].shape[0]
                forward_rows(Ws[l], xs[l], outs[l], n * t // T, n * (t + 1) // T)
            for l in range(len(Ws)):
                n = Ws[l].shape[0]
                update_rows(Ws[l], xs[l], outs[l], n * t // T, n * (t + 1) // T)

    return three_passes


def floor(args):
    import numba
    import numpy as np

    from minigrad.machine.threads import limit_threads
    from minigrad.profile.roofline import cache_bandwidth, step_traffic

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from step_paths import seconds_per_step  # the compiled-loop timing step_paths.py uses

    T = args.threads
    three_passes = _passes_kernels()
    r = np.random.default_rng(0)
    Ws = tuple((r.standard_normal((o, c)) * 0.05).astype(np.float32) for c, o in zip(SIZES[:-1], SIZES[1:]))
    xs = tuple(r.standard_normal(c).astype(np.float32) for c in SIZES[:-1])
    outs = tuple(np.zeros(o, np.float32) for o in SIZES[1:])
    traffic, _ = step_traffic(SIZES, 1, 4)
    rows = []
    with limit_threads(T):
        numba.set_num_threads(T)
        three_passes(T, Ws, xs, outs)
        print(f"B = 1, {'-'.join(map(str, SIZES))} float32, {T} thread(s); least traffic {traffic / 1e6:.2f} MB "
              "(bench throughput's floor: that at the L2 triad bandwidth)", flush=True)
        for k in range(args.rounds):
            n = 2000
            started = time.perf_counter()
            for _ in range(n):
                three_passes(T, Ws, xs, outs)
            bare = (time.perf_counter() - started) / n
            step, path = seconds_per_step(SIZES, 1, True, 4000)
            l2 = cache_bandwidth(T)
            floor_s = traffic / (l2 * 1e9)
            rows.append(dict(bare_s=bare, step_s=step, l2_gbs=l2, floor_s=floor_s, path=path))
            print(f"round {k + 1}: L2 triad {l2:6.1f} GB/s, floor {floor_s * 1e6:5.1f} us | bare passes "
                  f"{bare * 1e6:5.1f} us = {bare / floor_s:4.2f}x floor | {path} step {step * 1e6:5.1f} us = "
                  f"{step / floor_s:4.2f}x floor = {step / bare:4.2f}x the bare passes", flush=True)
    med = {key: statistics.median(row[key] / row["floor_s"] for row in rows) for key in ("bare_s", "step_s")}
    print(f"median of {len(rows)} rounds: bare passes {med['bare_s']:.2f}x the floor, the step {med['step_s']:.2f}x; "
          f"the step / the bare passes {statistics.median(row['step_s'] / row['bare_s'] for row in rows):.2f}")
    return rows


# -------------------------------------------------------------------------------------------------------- gemm
# (name, M, N, K, how the step lays out the operands): a (M,K) @ b (K,N); "aT" = a is the transpose of a row-major
# (K,M) array, "bT" = b is the transpose of a row-major (N,K) array (the weights in PyTorch's (OC,C) layout).
def gemm_shapes(B):
    C, H = SIZES[0], SIZES[1]
    return [("layer 1 forward  X @ W1^T", B, H, C, "bT"), ("layer 1 weight gradient  dZ1^T @ X", H, C, B, "aT"),
            ("layer 2 forward  A1 @ W2^T", B, H, H, "bT"), ("layer 2 input gradient  dZ2 @ W2", B, H, H, ""),
            ("layer 2 weight gradient  dZ2^T @ A1", H, H, B, "aT")]


GEMM_WORKER = r"""
import json, os, sys, time
import numpy as np
spec = json.loads(sys.argv[1])
os.sched_setaffinity(0, set(range(spec["threads"])))
if spec["lib"] == "torch":
    import torch
    torch.set_num_threads(spec["threads"])
    def make(shape): return torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    def gemm(a, b, out): torch.mm(a, b, out=out)
    def T(x): return x.t()
else:
    sys.path.insert(0, spec["root"])
    from numba import njit
    from minigrad.machine.threads import limit_threads
    limit_threads(spec["threads"]).__enter__()
    @njit
    def gemm(a, b, out):
        np.dot(a, b, out)   # Numba lowers this to scipy's BLAS sgemm, as in the step
    def make(shape): return np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    def T(x): return x.T
out = {}
for name, M, N, K, layout in spec["shapes"]:
    a = T(make((K, M))) if "aT" in layout else make((M, K))
    b = T(make((N, K))) if "bT" in layout else make((K, N))
    c = make((M, N))
    gemm(a, b, c)
    n = max(3, int(0.1 / max(1e-7, 2.0 * M * N * K / 100e9)))
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            gemm(a, b, c)
        times.append((time.perf_counter() - t0) / n)
    out[name] = sorted(times)[3]
print(json.dumps(out))
"""


def gemm(args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    shapes = [s for B in batch_sizes for s in [(f"B={B} {n}", M, N, K, lay) for n, M, N, K, lay in gemm_shapes(B)]]
    times = {"minigrad": [], "torch": []}
    for k in range(args.rounds):
        order = ("minigrad", "torch") if k % 2 == 0 else ("torch", "minigrad")
        for lib in order:
            python = sys.executable if lib == "minigrad" else args.frameworks_python
            spec = json.dumps(dict(lib=lib, threads=args.threads, shapes=shapes, root=root))
            done = subprocess.run([python, "-c", GEMM_WORKER, spec], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {lib} worker failed ({python}): {done.stderr.strip().splitlines()[-1:]}")
            times[lib].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {k + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"The step's GEMMs, float32, {args.threads} thread(s): median of {args.rounds} rounds (one process per "
          "library and round, alternating); ratio = minigrad's time / torch's, per round in brackets")
    print(f"{'GEMM':44s} {'M x N x K':>16s} {'minigrad':>10s} {'GFLOP/s':>8s} {'torch.mm':>10s} {'GFLOP/s':>8s}  ratio")
    summary = []
    for name, M, N, K, _ in shapes:
        mg = statistics.median(t[name] for t in times["minigrad"])
        th = statistics.median(t[name] for t in times["torch"])
        per_round = [m[name] / t[name] for m, t in zip(times["minigrad"], times["torch"])]
        flop = 2.0 * M * N * K
        summary.append(dict(gemm=name, shape=(M, N, K), minigrad_s=mg, torch_s=th, ratio=mg / th,
                            ratios=per_round))
        print(f"{name:44s} {f'{M}x{N}x{K}':>16s} {mg * 1e6:8.0f}us {flop / mg / 1e9:8.1f} {th * 1e6:8.0f}us "
              f"{flop / th / 1e9:8.1f}  {mg / th:.2f} [{', '.join(f'{x:.2f}' for x in per_round)}]")
    for B in batch_sizes:
        rows = [s for s in summary if s["gemm"].startswith(f"B={B} ")]
        mg, th = sum(s["minigrad_s"] for s in rows), sum(s["torch_s"] for s in rows)
        print(f"B={B}: the five GEMMs take {mg * 1e3:.2f} ms through minigrad's BLAS and {th * 1e3:.2f} ms through "
              f"torch.mm: {mg / th:.2f}x")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["floor", "gemm"])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1024,4096")
    parser.add_argument("--frameworks-python", default=sys.executable,
                        help="interpreter with torch installed (gemm; default: this one)")
    parser.add_argument("--json", default=None, help="also write what was measured here")
    args = parser.parse_args(argv)
    if not 1 <= args.threads <= len(os.sched_getaffinity(0)):
        parser.error(f"--threads must lie between 1 and {len(os.sched_getaffinity(0))}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = floor(args) if args.what == "floor" else gemm(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
