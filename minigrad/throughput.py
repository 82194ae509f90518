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


def limit_threads(T):
    """threadpool_limits(T) (a context manager) over every BLAS the model may call. Numba loads scipy's OpenBLAS
    lazily, at the first np.dot it compiles, and a limit set before that load does not reach it; so load it first."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's OpenBLAS)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=T)


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


def _validate(sizes, batch_sizes, dtypes, activation, optimizer, repeats):
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
    if isinstance(dtypes, str) or not hasattr(dtypes, "__iter__"):
        dtypes = [dtypes]
    if not list(dtypes):
        raise ValueError("no dtype given; choose float32, float64 or both")
    checked = []
    for dtype in dtypes:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        checked.append(dtype)
    if activation not in K.ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(K.ACTIVATIONS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if repeats is not None and int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return sizes, list(dict.fromkeys(batch_sizes)), list(dict.fromkeys(checked))


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
def measure(sizes, batch_sizes, backends="blas", threads=None, dtypes="float32", activation="relu",
            optimizer="sgd", repeats=None, *, min_time=0.3, min_repeats=5, ceiling_n=2048, seed=0,
            breakdown=(), compare=(), compare_python=None, progress=None, echo=None):
    """Time one training step of MLP(sizes) per (threads, dtype, backend, batch size); see the module docstring.

    backends: "blas", "loops", "loops-parallel", "per-example", "all" or a list; threads: None (all cores), an int
    or a list; dtypes: "float32", "float64" or a list. breakdown: batch sizes for which every op of the step is timed
    (minigrad.breakdown) and its GEMMs placed on the roofline; compare: frameworks to time alongside ("torch",
    "jax"; minigrad.frameworks, in subprocesses of compare_python), skipped with a message when missing.
    Returns a dict:
        rows              one flat dict per (backend, threads, dtype, batch size), with the step's peak memory,
                          measured and counted; the frameworks' rows after minigrad's
        ceilings          {threads: float32 GEMM GFLOP/s}; ceiling_gflops: that of the largest thread count
        dtype_ceilings    {threads: {dtype: GEMM GFLOP/s}}
        bandwidths        {threads: DRAM GB/s}; cache_bandwidths: {threads: L2 GB/s}
        thread_settings   {threads: the Numba and per-library BLAS thread counts in effect}
        breakdowns        one dict per (threads, dtype, backend, breakdown B): ops, step times, roofline rows
        skipped           {framework: why}; compile_s: {"backend/threads/dtype": seconds}; config; env
    progress: True, False or None (a bar on stderr when it is a terminal).
    Raises ValueError (one line) for bad input."""
    sizes, batch_sizes, dtypes = _validate(sizes, batch_sizes, dtypes, activation, optimizer, repeats)
    backends, thread_counts = _backends(backends), _threads(threads)
    breakdown = _breakdown_sizes(breakdown)
    repeats = None if repeats is None else int(repeats)
    if compare:
        from minigrad import frameworks

        compare = frameworks.parse_compare(compare)

    import numba

    from minigrad import roofline
    from minigrad.breakdown import breakdown as time_ops
    from minigrad.model import MLP
    from minigrad.optim import make_optimizer

    if progress is None:
        progress = sys.stderr.isatty()
    rows, ceilings, dtype_ceilings, bandwidths, cache_bandwidths, compile_s, breakdowns = [], {}, {}, {}, {}, {}, []
    thread_settings = {}
    saved_threads = numba.get_num_threads()
    groups = len(dtypes) * len(backends)
    total = len(thread_counts) * (1 + groups * (len(batch_sizes) + len(breakdown)))
    with _progress(progress, "timing train steps", total) as advance:
        try:
            for T in thread_counts:
                with limit_threads(T):
                    numba.set_num_threads(T)
                    thread_settings[T] = _thread_settings()
                    ceilings[T] = gemm_ceiling(ceiling_n, dtype="float32")
                    dtype_ceilings[T] = {d.name: ceilings[T] if d.name == "float32" else
                                         gemm_ceiling(ceiling_n, dtype=d) for d in dtypes}
                    bandwidths[T] = roofline.memory_bandwidth()
                    cache_bandwidths[T] = roofline.cache_bandwidth(T)
                    _settle()
                    advance()
                    for dtype in dtypes:
                        batches = make_batches(sizes, sorted(set(batch_sizes) | set(breakdown)), dtype, seed)
                        ceiling = dtype_ceilings[T][dtype.name]
                        for backend in backends:
                            model = MLP(sizes, activation=activation, dtype=dtype, backend=backend, seed=seed)
                            opt = make_optimizer(optimizer, LR)
                            first_total = 0.0
                            for B in batch_sizes:
                                row = _time_step(model, opt, *batches[B], repeats, min_time, min_repeats)
                                first_total += max(row["first_call_s"] - row["step_time_s"], 0.0)
                                gflops = model.flops_per_step(B) / row["step_time_s"] / 1e9
                                row = dict(backend=backend, threads=T, dtype=dtype.name, batch_size=B, **row,
                                           samples_per_s=B / row["step_time_s"], gflops=gflops,
                                           ceiling_gflops=ceiling, pct_of_ceiling=100.0 * gflops / ceiling,
                                           **_memory(sizes, activation, dtype, backend, optimizer, seed, *batches[B]))
                                rows.append(row)
                                advance()
                            compile_s[f"{backend}/{T}/{dtype.name}"] = first_total
                            for B in breakdown:
                                X, y = batches[B]
                                model.check_batch(X, y)
                                result = time_ops(model, opt, X, y)
                                breakdowns.append(_breakdown_entry(result, backend, T, dtype, B, ceiling,
                                                                   bandwidths[T]))
                                advance()
                            _settle()
        finally:
            numba.set_num_threads(saved_threads)
    skipped = {}
    if compare:
        from minigrad import frameworks

        framework_rows, skipped = frameworks.measure(
            compare, sizes, batch_sizes, thread_counts, [d.name for d in dtypes], activation=activation,
            optimizer=optimizer, lr=LR, seed=seed, repeats=repeats, min_time=min_time, min_repeats=min_repeats,
            python=compare_python, echo=echo)
        flops = MLP(sizes).flops_per_step
        for row in framework_rows:
            gflops = flops(row["batch_size"]) / row["step_time_s"] / 1e9
            ceiling = dtype_ceilings[row["threads"]][row["dtype"]]
            rows.append(dict(row, gflops=gflops, ceiling_gflops=ceiling, pct_of_ceiling=100.0 * gflops / ceiling))
    return {"rows": rows, "ceiling_gflops": ceilings[max(ceilings)], "ceilings": ceilings, "bandwidths": bandwidths,
            "dtype_ceilings": dtype_ceilings, "cache_bandwidths": cache_bandwidths, "thread_settings": thread_settings,
            "breakdowns": breakdowns, "skipped": skipped, "compile_s": compile_s,
            "config": dict(sizes=sizes, batch_sizes=batch_sizes, backends=backends, threads=thread_counts,
                           dtypes=[d.name for d in dtypes], activation=activation, optimizer=optimizer,
                           loss="cross_entropy", repeats=repeats, min_time=min_time, min_repeats=min_repeats,
                           ceiling_n=ceiling_n, lr=LR, seed=seed, breakdown=breakdown, compare=compare),
            "env": environment()}


def _thread_settings():
    # what the limits really set, as the libraries report it
    import numba
    from threadpoolctl import threadpool_info

    return dict(numba=numba.get_num_threads(),
                blas={os.path.basename(i.get("filepath", "")): i.get("num_threads") for i in threadpool_info()})


def _time_step(model, opt, X, y, repeats, min_time, min_repeats):
    model.check_batch(X, y)  # once, as the training loop does
    t0 = time.perf_counter()
    model._train_step(X, y, opt)  # compiles what this B needs
    first = time.perf_counter() - t0
    time_calls(lambda: model._train_step(X, y, opt), min_time=0.02, min_repeats=2)  # warm-up
    samples = time_calls(lambda: model._train_step(X, y, opt), repeats, min_time, min_repeats)
    median, iqr = median_iqr(samples)
    return dict(step_time_s=median, iqr_s=iqr, repeats=len(samples), first_call_s=first)


def _memory(sizes, activation, dtype, backend, optimizer, seed, X, y):
    """Peak bytes of training at this batch size: measured (tracemalloc: every NumPy and Numba allocation from a
    fresh model's construction through two train steps; the batch itself and the float64 draws of the
    initialisation excluded) and counted (MLP.memory_count, by part)."""
    import tracemalloc

    from minigrad.model import MLP
    from minigrad.optim import make_optimizer

    tracemalloc.start()
    try:
        model = MLP(sizes, activation=activation, dtype=dtype, backend=backend, seed=seed)
        tracemalloc.reset_peak()  # the initialisation's float64 temporaries are gone by now
        opt = make_optimizer(optimizer, LR)
        model._train_step(X, y, opt)
        model._train_step(X, y, opt)
        measured = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    counted = model.memory_count(X.shape[0], optimizer)
    return dict(mem_measured_bytes=measured, mem_counted_bytes=counted.pop("total"),
                **{f"mem_{part}_bytes": n for part, n in counted.items()})


def _breakdown_sizes(sizes):
    sizes = [int(b) for b in (sizes or [])]
    if sizes and min(sizes) < 1:
        raise ValueError(f"breakdown batch sizes must be >= 1, got {min(sizes)}")
    return list(dict.fromkeys(sizes))


def _breakdown_entry(result, backend, T, dtype, B, ceiling, bandwidth):
    from minigrad import roofline

    ops = [dict(name=op.name, kind=op.kind, shape=list(op.shape), repeat=op.repeat, flops=op.flops,
                bytes=op.bytes(dtype.itemsize), seconds=s) for op, s in zip(result["ops"], result["op_s"])]
    return dict(backend=backend, threads=T, dtype=dtype.name, batch_size=B, ops=ops,
                compiled_step_s=result["compiled_step_s"], python_call_s=result["python_call_s"],
                train_step_s=result["train_step_s"], fused=result["fused"],
                roofline=roofline.gemm_rows(result, dtype.itemsize, ceiling, bandwidth))


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
def _seconds(s):
    if s is None or not math.isfinite(s):
        return "-"
    if abs(s) >= 1:
        return f"{s:.2f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _paths(result):
    # (threads, dtype) -> {path: {B: row}}, paths in the order measured (backends first, then frameworks)
    out = {}
    for row in result["rows"]:
        out.setdefault((row["threads"], row["dtype"]), {}).setdefault(row["backend"], {})[row["batch_size"]] = row
    return out


def _table(file, title, columns, cells):
    """Print a table: rich on a terminal, aligned plain text otherwise."""
    if file.isatty():
        from rich.console import Console
        from rich.table import Table

    text_first = not cells[0][0].isdigit()  # op names go left, batch sizes right
    if file.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for i, name in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 and text_first else "right")
        for row in cells:
            table.add_row(*row)
        Console(file=file, width=200).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(title, file=file)
    for line in [columns, *cells]:
        first = line[0].ljust(widths[0]) if text_first else line[0].rjust(widths[0])
        print("  ".join([first] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]), file=file)
    print(file=file)


def print_result(result, file=None):
    """Step times side by side per path (one table per thread count and dtype; one detailed table when a single
    path was timed), peak memory, the per-op breakdowns and their roofline, then the ceilings and environment."""
    file = file or sys.stdout
    cfg = result.get("config", {})
    model = f"MLP {cfg.get('sizes')}, {cfg.get('activation', '')}, {cfg.get('optimizer', '')}"
    paths = _paths(result)
    if len(paths) == 1 and len(next(iter(paths.values()))) == 1:
        (T, dtype), by_path = next(iter(paths.items()))
        (path, by_b), = by_path.items()
        _table(file, f"{model}: one training step [{path}, {T} thread(s), {dtype}]",
               ["B", "median step", "IQR", "samples/s", "GFLOP/s", "% ceiling", "peak memory"],
               [[str(B), _seconds(r["step_time_s"]), _seconds(r["iqr_s"]), f"{r['samples_per_s']:,.0f}",
                 f"{r['gflops']:.1f}", f"{r['pct_of_ceiling']:.0f}", _bytes(r.get("mem_measured_bytes", 0))]
                for B, r in by_b.items()])
    else:
        for (T, dtype), by_path in paths.items():
            sizes = list(dict.fromkeys(B for by_b in by_path.values() for B in by_b))
            columns = ["B"] + [c for p in by_path for c in (p, "%ceil")] + ["best samples/s"]
            cells = []
            for B in sizes:
                line = [str(B)]
                for by_b in by_path.values():
                    r = by_b.get(B)
                    line += [_seconds(r["step_time_s"]), f"{r['pct_of_ceiling']:.0f}"] if r else ["-", "-"]
                best = max((by_b[B] for by_b in by_path.values() if B in by_b), key=lambda r: r["samples_per_s"])
                cells.append(line + [f"{best['samples_per_s']:,.0f} ({best['backend']})"])
            _table(file, f"{model}: median time of one training step [{T} thread(s), {dtype}]; %ceil = executed "
                   f"GEMM GFLOP/s as % of the {dtype} GEMM ceiling", columns, cells)
    _print_memory(result, file)
    _print_breakdowns(result, file)
    for name, why in result.get("skipped", {}).items():
        print(f"--compare {name}: {why}", file=file)
    for line in _footer(result):
        print(line, file=file)


def _print_memory(result, file):
    rows = [r for r in result["rows"] if "mem_counted_bytes" in r]
    if not rows:
        return
    T, dtype = max(r["threads"] for r in rows), rows[0]["dtype"]
    rows = [r for r in rows if r["threads"] == T and r["dtype"] == dtype]
    by_path = {}
    for r in rows:
        by_path.setdefault(r["backend"], {})[r["batch_size"]] = r
    first = rows[0]
    columns = ["B", "activations", "workspace"] + [c for p in by_path for c in (f"{p} counted", "measured")]
    cells = []
    for B in dict.fromkeys(r["batch_size"] for r in rows):
        ref = next(by_b[B] for by_b in by_path.values() if B in by_b)
        line = [str(B), _bytes(ref["mem_activations_bytes"]), _bytes(ref["mem_workspace_bytes"])]
        for by_b in by_path.values():
            r = by_b.get(B)
            line += [_bytes(r["mem_counted_bytes"]), _bytes(r["mem_measured_bytes"])] if r else ["-", "-"]
        cells.append(line)
    _table(file, f"Peak memory of training [{T} thread(s), {dtype}]: parameters "
           f"{_bytes(first['mem_parameters_bytes'])}, "
           f"gradients {_bytes(first['mem_gradients_bytes'])}, optimizer state "
           f"{_bytes(first['mem_optimizer_state_bytes'])} at every B; counted = MLP.memory_count, measured = "
           "tracemalloc peak (workspace columns: the first path's)", columns, cells)


def _print_breakdowns(result, file):
    groups = {}
    for entry in result.get("breakdowns", []):
        groups.setdefault((entry["batch_size"], entry["threads"], entry["dtype"]), []).append(entry)
    for (B, T, dtype), entries in groups.items():
        names = [op["name"] for op in entries[0]["ops"]]
        for e in entries[1:]:
            names += [op["name"] for op in e["ops"] if op["name"] not in names]
        columns = ["op"] + [c for e in entries for c in (e["backend"], "%")]
        cells = []
        for name in names:
            line = [name]
            for e in entries:
                op = next((op for op in e["ops"] if op["name"] == name), None)
                line += ([_seconds(op["seconds"]), f"{100 * op['seconds'] / e['compiled_step_s']:.0f}"] if op
                         else ["-", "-"])
            cells.append(line)
        cells.append(["compiled step (sum of the ops)"] + [c for e in entries for c in
                                                           (_seconds(e["compiled_step_s"]), "100")])
        cells.append(["the step called once from Python"] + [c for e in entries for c in (
            _seconds(e["python_call_s"]), f"{100 * e['python_call_s'] / e['compiled_step_s']:.0f}")])
        cells.append(["MLP._train_step (training loop)"] + [c for e in entries for c in (
            _seconds(e["train_step_s"]) + (" fused" if e["fused"] else ""),
            f"{100 * e['train_step_s'] / e['compiled_step_s']:.0f}")])
        cells.append(["  share outside compiled code"] + [c for e in entries for c in (
            f"{100 * max(e['python_call_s'] - e['compiled_step_s'], 0) / e['python_call_s']:.0f}%", "")])
        _table(file, f"Where the time of one step goes: B={B}, {T} thread(s), {dtype} (each op timed in place; "
               "per-example: B x the ops of a single-example pass)", columns, cells)
        for line in _loops_against_blas(entries):
            print(line, file=file)
        gemms = [r["op"] for r in entries[0]["roofline"]]
        columns = ["GEMM", "M x N x K", "flop/byte"] + [c for e in entries for c in (f"{e['backend']} GF/s",
                                                                                        "% roof")]
        cells = []
        for name in gemms:
            ref = next(r for r in entries[0]["roofline"] if r["op"] == name)
            line = [name, ref["shape"], f"{ref['intensity']:.1f}"]
            for e in entries:
                r = next((r for r in e["roofline"] if r["op"] == name), None)
                line += [f"{r['gflops']:.1f}", f"{r['pct_of_attainable']:.0f}"] if r else ["-", "-"]
            cells.append(line)
        ceiling, bandwidth = result["dtype_ceilings"][T][dtype], result["bandwidths"][T]
        _table(file, f"Roofline: B={B}, {T} thread(s), {dtype}; GEMM ceiling {ceiling:.1f} GFLOP/s, memory "
               f"bandwidth {bandwidth:.1f} GB/s, ridge at {ceiling / bandwidth:.1f} flop/byte; % roof = achieved / "
               "min(ceiling, intensity x bandwidth); shape and intensity of the batched GEMM"
               + ("; per-example runs each as B products of one row (1 x N x K, intensity < 0.5 in float32, "
                  "its own roof)" if any(e["backend"] == "per-example" for e in entries) else ""), columns, cells)


def _loops_against_blas(entries):
    # where the loops paths lose to BLAS: GEMMs or the rest, and why
    blas = next((e for e in entries if e["backend"] == "blas"), None)
    if blas is None:
        return []

    def split(e):
        gemm = sum(op["seconds"] for op in e["ops"] if op["kind"] == "gemm")
        return gemm, e["compiled_step_s"] - gemm

    blas_gemm, blas_rest = split(blas)
    lines = []  # absolute times: the other ops are a few percent, where a ratio would be mostly noise
    for e in entries:
        if e["backend"].startswith("loops") and blas_gemm > 0:
            gemm, rest = split(e)
            lines.append(f"{e['backend']} against blas: GEMMs {_seconds(gemm)} against {_seconds(blas_gemm)} "
                         f"({gemm / blas_gemm:.1f}x), other ops {_seconds(rest)} against {_seconds(blas_rest)} (the "
                         "loops have no register tiling and no packing: see the README, 'Why the loops path is "
                         "slower')")
    return lines + ([""] if lines else [])


def _footer(result):
    cfg, env = result.get("config", {}), result.get("env", {})
    lines = []
    for T, g in sorted(result.get("ceilings", {}).items(), key=lambda kv: int(kv[0])):
        bandwidth = result.get("bandwidths", {}).get(T)
        settings = result.get("thread_settings", {}).get(T)
        if settings:
            lines.append(f"{T} thread(s) in effect: Numba {settings['numba']}; " +
                         ", ".join(f"{lib} {n}" for lib, n in settings["blas"].items()))
        cache = result.get("cache_bandwidths", {}).get(T)
        f64 = result.get("dtype_ceilings", {}).get(T, {}).get("float64")
        memory = f", memory bandwidth {bandwidth:.1f} GB/s DRAM, {cache:.0f} GB/s L2 (STREAM triad)" \
            if bandwidth and cache else ""
        lines.append(f"{T} thread(s): GEMM ceiling {g:.1f} GFLOP/s float32" + (f", {f64:.1f} float64" if f64 else "")
                     + f" ({cfg.get('ceiling_n', 2048)}^3 GEMMs through the model's BLAS){memory}")
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
