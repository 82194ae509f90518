"""Compute speed: how long one training step takes at each batch size B, on this machine.

`measure` times the training loop's own path (MLP._train_step on a batch validated once) for every backend, thread
count and batch size asked for, and reports per row the median step time and its interquartile range, samples/s,
the executed GFLOP/s (model.flops_per_step(B) / median: GEMM arithmetic only, the elementwise work is not counted)
and that as a percentage of the GEMM ceiling measured in the same run. Timing starts after the JIT has compiled
everything for that B (the first call, reported apart as first_call_s) and a short warm-up; the number of timed
steps adapts to the step time (at least `min_repeats`, and at least `min_time` seconds), unless `repeats` fixes it.

The GEMM ceiling is the median GFLOP/s of n x n float32 matrix products (n = 2048) through the BLAS the model uses
(Numba lowers np.dot to scipy's OpenBLAS; numpy's own OpenBLAS is a second copy and may differ: both are listed in
env["blas"]), with the same thread count. Threads: BLAS threads are set with threadpoolctl (it reaches both OpenBLAS
copies), Numba threads with numba.set_num_threads; each row records the count, which is both.

Inputs are standard-normal float32 (or float64) rows and uniform random labels: step time does not depend on the
values, except through ReLU's sparsity, which standard-normal inputs keep realistic.
"""
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

BACKEND_NAMES = ("blas", "loops", "loops-parallel", "per-example")
LR = 1e-4  # small enough that no optimizer diverges on random data in the few thousand steps a measurement takes


# -------------------------------------------------------------------------------------------------- validation
def _backends(backends):
    if isinstance(backends, str):
        backends = list(BACKEND_NAMES) if backends == "all" else [backends]
    backends = list(backends)
    if not backends:
        raise ValueError("no backend given; choose from " + ", ".join(BACKEND_NAMES) + " or all")
    for name in backends:
        if name not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_NAMES)} or all")
    return list(dict.fromkeys(backends))


def _max_threads():
    import numba

    return numba.config.NUMBA_NUM_THREADS


def _threads(threads):
    top = _max_threads()
    if threads is None:
        return [min(top, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())]
    if isinstance(threads, int):
        threads = [threads]
    threads = [int(t) for t in threads]
    if not threads:
        raise ValueError("no thread count given")
    for t in threads:
        if not 1 <= t <= top:
            raise ValueError(f"threads must lie between 1 and {top} (NUMBA_NUM_THREADS), got {t}")
    return list(dict.fromkeys(threads))


def _validate(sizes, batch_sizes, dtype, activation, optimizer, repeats):
    import numpy as np

    from minigrad import kernels as K
    from minigrad.optim import OPTIMIZERS

    sizes = [int(n) for n in (sizes or [])]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least 2 positive layer widths (inputs, ..., outputs), got {sizes}")
    batch_sizes = [int(b) for b in (batch_sizes or [])]
    if not batch_sizes:
        raise ValueError("no batch sizes given")
    if min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {min(batch_sizes)}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if activation not in K.ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(K.ACTIVATIONS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if repeats is not None and int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return sizes, list(dict.fromkeys(batch_sizes)), dtype


def make_batches(sizes, batch_sizes, dtype, seed=0):
    """{B: (X (B, sizes[0]) standard-normal of `dtype`, y (B,) int64 uniform labels)}, drawn in the order of
    batch_sizes from one generator: every path timed in a run (and the frameworks of --compare) gets these."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {B: (rng.standard_normal((B, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], B))
            for B in batch_sizes}


# ------------------------------------------------------------------------------------------------------ timing
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


_gemm = None


def gemm_ceiling(n=2048, repeats=5, dtype="float32"):
    """Median GFLOP/s of n x n x n GEMMs (2 n^3 flops each) through the BLAS the model uses, at the current
    thread settings."""
    global _gemm
    import numpy as np
    from numba import njit

    if _gemm is None:
        @njit(cache=True)
        def gemm(a, b, c):
            np.dot(a, b, c)

        _gemm = gemm
    r = np.random.default_rng(0)
    a, b = r.standard_normal((n, n)).astype(dtype), r.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    _gemm(a, b, c)  # compile (or load) and warm up
    _gemm(a, b, c)
    median, _ = median_iqr(time_calls(lambda: _gemm(a, b, c), repeats=repeats))
    return 2.0 * n**3 / median / 1e9


def _settle():
    # BLAS and OpenMP worker threads spin for a while after their last job before they sleep; a short pause keeps
    # them from competing with the next measurement
    time.sleep(0.1)


# ----------------------------------------------------------------------------------------------------- measure
def measure(sizes, batch_sizes, backends="blas", threads=None, dtype="float32", activation="relu",
            optimizer="sgd", repeats=None, *, min_time=0.3, min_repeats=5, ceiling_n=2048, seed=0,
            progress=None):
    """Time one training step of MLP(sizes) per (backend, threads, batch size); see the module docstring.

    backends: "blas", "loops", "loops-parallel", "all" or a list; threads: None (all cores), an int or a list.
    Returns {"rows": [one dict per (backend, threads, dtype, batch size)], "ceiling_gflops": (for the largest
    thread count), "ceilings": {threads: GFLOP/s}, "compile_s": {"backend/threads": seconds}, "config": {...},
    "env": {...}}. progress: True, False or None (a bar on stderr when it is a terminal).
    Raises ValueError (one line) for bad input."""
    sizes, batch_sizes, dtype = _validate(sizes, batch_sizes, dtype, activation, optimizer, repeats)
    backends, thread_counts = _backends(backends), _threads(threads)
    repeats = None if repeats is None else int(repeats)

    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    from minigrad.model import MLP
    from minigrad.optim import make_optimizer

    if progress is None:
        progress = sys.stderr.isatty()
    batches = make_batches(sizes, batch_sizes, dtype, seed)

    rows, ceilings, compile_s = [], {}, {}
    saved_threads = numba.get_num_threads()
    total = len(thread_counts) * (1 + len(backends) * len(batch_sizes))
    with _progress(progress, "timing train steps", total) as advance:
        try:
            for T in thread_counts:
                with threadpool_limits(limits=T):
                    numba.set_num_threads(T)
                    ceilings[T] = gemm_ceiling(ceiling_n, dtype=np.float32)
                    _settle()
                    advance()
                    for backend in backends:
                        model = MLP(sizes, activation=activation, dtype=dtype, backend=backend, seed=seed)
                        opt = make_optimizer(optimizer, LR)
                        first_total = 0.0
                        for B in batch_sizes:
                            X, y = batches[B]
                            model.check_batch(X, y)  # once, as the training loop does
                            t0 = time.perf_counter()
                            model._train_step(X, y, opt)  # compiles what this B needs
                            first = time.perf_counter() - t0
                            time_calls(lambda: model._train_step(X, y, opt), min_time=0.02, min_repeats=2)  # warm-up
                            samples = time_calls(lambda: model._train_step(X, y, opt), repeats, min_time, min_repeats)
                            median, iqr = median_iqr(samples)
                            first_total += max(first - median, 0.0)
                            gflops = model.flops_per_step(B) / median / 1e9
                            rows.append(dict(backend=backend, threads=T, dtype=dtype.name, batch_size=B,
                                             step_time_s=median, iqr_s=iqr, samples_per_s=B / median,
                                             gflops=gflops, ceiling_gflops=ceilings[T],
                                             pct_of_ceiling=100.0 * gflops / ceilings[T], repeats=len(samples),
                                             first_call_s=first))
                            advance()
                        compile_s[f"{backend}/{T}"] = first_total
                        _settle()
        finally:
            numba.set_num_threads(saved_threads)
    return {"rows": rows, "ceiling_gflops": ceilings[max(ceilings)], "ceilings": ceilings, "compile_s": compile_s,
            "config": dict(sizes=sizes, batch_sizes=batch_sizes, backends=backends, threads=thread_counts,
                           dtype=dtype.name, activation=activation, optimizer=optimizer, loss="cross_entropy",
                           repeats=repeats, min_time=min_time, min_repeats=min_repeats, ceiling_n=ceiling_n,
                           lr=LR, seed=seed),
            "env": environment()}


class _progress:
    """progress_bar from minigrad.progress when wanted, else a no-op; yields advance()."""

    def __init__(self, wanted, description, total):
        self.wanted, self.description, self.total, self.cm = wanted, description, total, None

    def __enter__(self):
        if not self.wanted:
            return lambda *a, **k: None
        from minigrad.progress import progress_bar

        self.cm = progress_bar(self.description, self.total)
        step = self.cm.__enter__()
        return lambda: step(advance=1)

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm is not None else False


# ------------------------------------------------------------------------------------------------- environment
def environment():
    """What the numbers depend on: CPU, BLAS libraries (vendor, version, kernel architecture, threads), Numba's
    threading layer and thread count, and versions."""
    import llvmlite
    import numba
    import numpy as np
    import scipy
    from threadpoolctl import threadpool_info

    import minigrad

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        layer = "not yet chosen"
    blas = [dict(library=os.path.basename(i.get("filepath", "")), user_api=i.get("user_api"),
                 vendor=i.get("internal_api"), version=i.get("version"), architecture=i.get("architecture"),
                 threads=i.get("num_threads"), threading_layer=i.get("threading_layer"))
            for i in threadpool_info()]
    return dict(cpu=_cpu_model(), cores=os.cpu_count(), machine=platform.machine(), system=platform.system(),
                python=platform.python_version(), minigrad=minigrad.__version__, numpy=np.__version__,
                scipy=scipy.__version__, numba=numba.__version__, llvmlite=llvmlite.__version__,
                numba_threading_layer=layer, numba_num_threads=numba.config.NUMBA_NUM_THREADS,
                numba_cpu=_numba_cpu(), blas=blas,
                env_vars={k: os.environ[k] for k in sorted(os.environ)
                          if k.startswith(("OPENBLAS_", "OMP_", "NUMBA_", "MKL_"))})


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _numba_cpu():
    try:
        import llvmlite.binding as ll

        return ll.get_host_cpu_name()
    except Exception:  # pragma: no cover - informational only
        return ""


# ------------------------------------------------------------------------------------------------------ output
COLUMNS = ("B", "median step", "IQR", "samples/s", "GFLOP/s", "% ceiling")


def _cells(row):
    return (str(row["batch_size"]), _seconds(row["step_time_s"]), _seconds(row["iqr_s"]),
            f"{row['samples_per_s']:,.0f}", f"{row['gflops']:.1f}", f"{row['pct_of_ceiling']:.0f}")


def _seconds(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _groups(result):
    groups = {}
    for row in result["rows"]:
        groups.setdefault((row["backend"], row["threads"], row["dtype"]), []).append(row)
    return groups


def _footer(result):
    cfg, env = result.get("config", {}), result.get("env", {})
    lines = []
    for T, g in sorted(result.get("ceilings", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"GEMM ceiling, {T} thread(s): {g:.1f} GFLOP/s (float32 {cfg.get('ceiling_n', 2048)}^3 "
                     "GEMMs through the model's BLAS)")
    if result.get("compile_s"):
        lines.append("compile (first calls, minus a step): " +
                     ", ".join(f"{k} {v:.1f} s" for k, v in result["compile_s"].items()))
    blas = [f"{b['vendor']} {b['version']} ({b['architecture']}, {b['library']})" for b in env.get("blas", [])]
    if blas:
        lines.append("BLAS: " + "; ".join(blas))
    if env:
        lines.append(f"Numba {env.get('numba')} ({env.get('numba_threading_layer')} threading layer, "
                     f"NUMBA_NUM_THREADS={env.get('numba_num_threads')}, target {env.get('numba_cpu')}); "
                     f"CPU: {env.get('cpu')}")
    return lines


def print_result(result, file=None):
    """A table per backend / thread count: B, median step, IQR, samples/s, GFLOP/s, % of the GEMM ceiling; then
    the ceiling, compile times and environment. Rich tables on a terminal, plain text otherwise."""
    file = file or sys.stdout
    cfg = result.get("config", {})
    title = (f"MLP {cfg.get('sizes')}, {cfg.get('activation', '')}, {cfg.get('optimizer', '')}: "
             "one training step")
    if file.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console(file=file)
        for (backend, T, dtype), rows in _groups(result).items():
            table = Table(title=f"{title} [{backend}, {T} thread(s), {dtype}]")
            for name in COLUMNS:
                table.add_column(name, justify="right")
            for row in rows:
                table.add_row(*_cells(row))
            console.print(table)
        for line in _footer(result):
            console.print(line, highlight=False)
        return
    widths = (6, 12, 11, 12, 9, 9)
    for (backend, T, dtype), rows in _groups(result).items():
        print(f"{title} [{backend}, {T} thread(s), {dtype}]", file=file)
        print("  ".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths)), file=file)
        for row in rows:
            print("  ".join(f"{c:>{w}}" for c, w in zip(_cells(row), widths)), file=file)
        print(file=file)
    for line in _footer(result):
        print(line, file=file)


def _plain(value):
    # numpy scalars and the like -> JSON types; dict keys -> str
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(result, path):
    """Write the result as JSON ({"rows": [...], "ceiling_gflops": ..., "env": ...}), atomically: to a temporary
    file in the same directory, then renamed over `path`, so a reader never sees half a file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".throughput-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_plain(result), fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
