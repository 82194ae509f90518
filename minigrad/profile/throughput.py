"""Compute speed: how long one training step takes at each batch size B, on this machine.

`measure` times the training loop's own path (MLP.train_step_trusted on a batch validated once) for every backend, thread
count and batch size asked for, and reports per row the median step time and its interquartile range, samples/s,
the executed GFLOP/s (model.flops_per_step(B) / median: GEMM arithmetic only, the elementwise work is not counted)
and that as a percentage of the GEMM ceiling measured in the same run. Each row also places the whole step under
the roof that applies (roofline.step_roof): its least memory traffic, the memory floor (that traffic at the L2 or
DRAM bandwidth measured in the same run) and the GEMM floor; the larger floor is the roof, pct_of_roof how close
the step comes to it. Timing starts after the JIT has compiled everything for that B (the first call, reported
apart as first_call_s) and a short warm-up; the number of timed steps adapts to the step time (at least
`min_repeats`, and at least `min_time` seconds), unless `repeats` fixes it.

The GEMM ceiling is the median GFLOP/s of n x n float32 matrix products (n = 2048) through the BLAS the model uses
(Numba lowers np.dot to scipy's OpenBLAS; numpy's own OpenBLAS is a second copy and may differ: both are listed in
env["blas"]), with the same thread count. Threads: BLAS threads are set with threadpoolctl (it reaches both OpenBLAS
copies), Numba threads with numba.set_num_threads; each row records the count, which is both.

Inputs are standard-normal float32 (or float64) rows and uniform random labels: step time does not depend on the
values, except through ReLU's sparsity, which standard-normal inputs keep realistic.
"""
import sys
import time

from minigrad.machine.checks import number
from minigrad.machine.environment import environment
from minigrad.machine.threads import available_cores, limit_threads, max_threads
from minigrad.machine.threads import thread_settings as threads_in_effect
from minigrad.machine.timing import BUSY_SPREAD, ROUNDS, median_iqr, round_sizes, settle, time_calls
from minigrad.profile.batches import make_batches
from minigrad.profile.limits import limits as machine_limits

BACKEND_NAMES = ("blas", "blas-unfused", "loops", "loops-parallel", "per-example")
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


def _threads(threads):
    top = max_threads()
    if threads is None:
        return [min(top, available_cores())]
    if isinstance(threads, int):
        threads = [threads]
    threads = [int(t) for t in threads]
    if not threads:
        raise ValueError("no thread count given")
    for t in threads:
        if not 1 <= t <= top:
            raise ValueError(f"threads must lie between 1 and {top} (NUMBA_NUM_THREADS), got {t}")
    return list(dict.fromkeys(threads))


MAX_REPEATS = 100_000  # timed steps per batch size that --repeats may ask for (at 1 ms a step: minutes)


def _validate(sizes, batch_sizes, dtypes, activation, optimizer, repeats):
    import numpy as np

    from minigrad.engine import kernels as K
    from minigrad.engine.optim import OPTIMIZERS

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
    if repeats is not None:  # bounded: a billion timed steps per batch size would run for hours
        number("repeats", repeats, 1, MAX_REPEATS, integer=True)
    return sizes, list(dict.fromkeys(batch_sizes)), list(dict.fromkeys(checked))



def gemm_ceiling(n=2048, repeats=5, dtype="float32"):
    """Median GFLOP/s of n x n x n GEMMs (2 n^3 flops each) through the BLAS the model's large-batch step uses
    (kernels_large.gemm: scipy's OpenBLAS, as Numba's np.dot, or MKL with MINIGRAD_BLAS=mkl), at the current thread
    settings."""
    import numpy as np

    from minigrad.engine import kernels_large as KG

    r = np.random.default_rng(0)
    a, b = r.standard_normal((n, n)).astype(dtype), r.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    scratch = KG.gemm_scratch(c.dtype)
    for _ in range(2):  # compile (or load) and warm up
        KG.gemm(c, a, b, False, False, 1.0, 0.0, *scratch)
    median, _ = median_iqr(time_calls(lambda: KG.gemm(c, a, b, False, False, 1.0, 0.0, *scratch), repeats=repeats))
    return 2.0 * n**3 / median / 1e9


# ----------------------------------------------------------------------------------------------------- measure
def measure(sizes, batch_sizes, backends="blas", threads=None, dtypes="float32", activation="relu",
            optimizer="sgd", repeats=None, *, min_time=0.3, min_repeats=5, ceiling_n=2048, seed=0,
            breakdown=(), compare=(), compare_python=None, progress=None, echo=None, chunk=None,
            kept_limits=False, prune_threads=False, memory=True):
    """Time one training step of MLP(sizes) per (threads, dtype, backend, batch size); see the module docstring.

    backends: "blas", "blas-unfused", "loops", "loops-parallel", "per-example", "all" or a list; threads: None (all
    cores), an int or a list; dtypes: "float32", "float64" or a list. breakdown: batch sizes for which every op of the step is timed
    (minigrad.profile.breakdown) and its GEMMs placed on the roofline; compare: frameworks to time alongside ("torch",
    "jax"; minigrad.profile.frameworks, in subprocesses of compare_python), skipped with a message when missing.
    Returns a dict:
        rows              one flat dict per (backend, threads, dtype, batch size), with the step's peak memory,
                          measured and counted; the frameworks' rows after minigrad's
        ceilings          {threads: float32 GEMM GFLOP/s}; ceiling_gflops: that of the largest thread count
        dtype_ceilings    {threads: {dtype: GEMM GFLOP/s}}
        bandwidths        {threads: DRAM GB/s}; cache_bandwidths: {threads: L2 GB/s}
        limits            {threads: {"source": "measured" or "kept", "measured_at": ISO date}} of those figures
        pruned            {threads: [B not timed at that count]} (prune_threads)
        thread_settings   {threads: the Numba and per-library BLAS thread counts in effect}
        breakdowns        one dict per (threads, dtype, backend, breakdown B): ops, step times, roofline rows
        skipped           {framework: why}; compile_s: {"backend/threads/dtype": seconds}; config; env
    progress: True, False or None (a bar on stderr when it is a terminal). chunk: None (a step is one
    MLP.train_step_trusted call from Python), or a function (model, optimizer, X, y) -> (run, steps) whose run() takes
    `steps` steps (minigrad.training.train.step_chunk: the compiled training loop); the rows' `timed` says which.
    kept_limits: take the GEMM ceilings and bandwidths this machine measured before (profile/limits.py) instead of
    measuring them now. prune_threads: time each thread count after the first from the largest B down, and stop at
    the first B where it is not faster than the first count's row, until the step's path changes: more threads help
    more as B grows, so below that B they cannot win (the study's choice of thread count per B).
    memory: measure each row's peak memory (mem_* columns, from Python-call steps: with `chunk` they compile a
    second entry point, about 5 s on a fresh install, which the study, needing no memory figures, skips).
    Raises ValueError (one line) for bad input."""
    sizes, batch_sizes, dtypes = _validate(sizes, batch_sizes, dtypes, activation, optimizer, repeats)
    backends, thread_counts = _backends(backends), _threads(threads)
    breakdown = _breakdown_sizes(breakdown)
    repeats = None if repeats is None else int(repeats)
    if compare:
        from minigrad.profile import frameworks

        compare = frameworks.parse_compare(compare)

    import numba

    from minigrad.profile import roofline
    from minigrad.profile.breakdown import breakdown as time_ops
    from minigrad.engine import step_choice
    from minigrad.engine.model import MLP
    from minigrad.engine.optim import make_optimizer

    if progress is None:
        progress = sys.stderr.isatty()
    rows, ceilings, dtype_ceilings, bandwidths, cache_bandwidths, compile_s, breakdowns = [], {}, {}, {}, {}, {}, []
    thread_settings, limits_of, pruned, first_rows = {}, {}, {}, {}
    saved_threads = numba.get_num_threads()
    groups = len(dtypes) * len(backends)
    total = len(thread_counts) * (1 + groups * (len(batch_sizes) + len(breakdown)))
    with _progress(progress, "timing train steps", total) as advance:
        try:
            for T in thread_counts:
                with limit_threads(T):
                    numba.set_num_threads(T)
                    thread_settings[T] = threads_in_effect()
                    held = machine_limits(T, ["float32", *(d.name for d in dtypes)], ceiling_n, kept=kept_limits)
                    ceilings[T] = held["ceilings"]["float32"]
                    dtype_ceilings[T] = {d.name: held["ceilings"][d.name] for d in dtypes}
                    bandwidths[T], cache_bandwidths[T] = held["bandwidth"], held["cache_bandwidth"]
                    limits_of[T] = {"source": held["source"], "measured_at": held["measured_at"]}
                    settle()
                    advance()
                    for dtype in dtypes:
                        batches = make_batches(sizes, sorted(set(batch_sizes) | set(breakdown)), dtype, seed)
                        ceiling = dtype_ceilings[T][dtype.name]
                        for backend in backends:
                            model = MLP(sizes, activation=activation, dtype=dtype, backend=backend, seed=seed)
                            opt = make_optimizer(optimizer, LR)
                            first_total = 0.0
                            # this machine's fastest path per B, timed now (once; kept beside Numba's cache)
                            step_choice.ensure(model, batch_sizes, opt, T)
                            losing = None  # the path at which more threads stopped beating the first count
                            for B in _order(batch_sizes, prune_threads and T != thread_counts[0]):
                                if losing is not None and model.step_path(B, optimizer) == losing:
                                    pruned.setdefault(T, []).append(B)
                                    advance()
                                    continue
                                losing = None
                                row = _time_step(model, opt, *batches[B], repeats, min_time, min_repeats,
                                                 ceiling, model.flops_per_step(B), chunk)
                                first_total += max(row["first_call_s"] - row["step_time_s"], 0.0)
                                gflops = model.flops_per_step(B) / row["step_time_s"] / 1e9
                                row = dict(backend=backend, path=model.step_path(B, optimizer),
                                           path_chosen_by=step_choice.chosen_by(model, B, opt, T), threads=T,
                                           dtype=dtype.name, batch_size=B, **row,
                                           samples_per_s=B / row["step_time_s"], gflops=gflops,
                                           ceiling_gflops=ceiling, pct_of_ceiling=100.0 * gflops / ceiling,
                                           **roofline.step_roof(sizes, B, dtype.itemsize, model.flops_per_step(B),
                                                                row["step_time_s"], ceiling, bandwidths[T],
                                                                cache_bandwidths[T], T),
                                           **(_memory(sizes, activation, dtype, backend, optimizer, seed, *batches[B])
                                              if memory else {}))
                                rows.append(row)
                                advance()
                                base = first_rows.get((backend, dtype.name, B))
                                if T == thread_counts[0]:
                                    first_rows[(backend, dtype.name, B)] = row
                                elif prune_threads and base and row["step_time_s"] >= base["step_time_s"]:
                                    losing = row["path"]
                            compile_s[f"{backend}/{T}/{dtype.name}"] = first_total
                            for B in breakdown:
                                X, y = batches[B]
                                model.check_batch(X, y)
                                result = time_ops(model, opt, X, y)
                                breakdowns.append(_breakdown_entry(result, backend, T, dtype, B, ceiling,
                                                                   bandwidths[T]))
                                advance()
                            settle()
        finally:
            numba.set_num_threads(saved_threads)
    skipped = {}
    if compare:
        import numpy as np

        from minigrad.profile import frameworks

        framework_rows, skipped = frameworks.measure(
            compare, sizes, batch_sizes, thread_counts, [d.name for d in dtypes], activation=activation,
            optimizer=optimizer, lr=LR, seed=seed, repeats=repeats, min_time=min_time, min_repeats=min_repeats,
            python=compare_python, echo=echo)
        flops = MLP(sizes).flops_per_step
        for row in framework_rows:
            B, T = row["batch_size"], row["threads"]
            gflops = flops(B) / row["step_time_s"] / 1e9
            ceiling = dtype_ceilings[T][row["dtype"]]
            rows.append(dict(row, gflops=gflops, ceiling_gflops=ceiling, pct_of_ceiling=100.0 * gflops / ceiling,
                             **roofline.step_roof(sizes, B, np.dtype(row["dtype"]).itemsize, flops(B),
                                                  row["step_time_s"], ceiling, bandwidths[T], cache_bandwidths[T],
                                                  T)))
    return {"rows": rows, "ceiling_gflops": ceilings[max(ceilings)], "ceilings": ceilings, "bandwidths": bandwidths,
            "dtype_ceilings": dtype_ceilings, "cache_bandwidths": cache_bandwidths, "thread_settings": thread_settings,
            "breakdowns": breakdowns, "skipped": skipped, "compile_s": compile_s, "limits": limits_of,
            "pruned": {T: sorted(Bs) for T, Bs in pruned.items()},
            "config": dict(sizes=sizes, batch_sizes=batch_sizes, backends=backends, threads=thread_counts,
                           dtypes=[d.name for d in dtypes], activation=activation, optimizer=optimizer,
                           loss="cross_entropy", repeats=repeats, min_time=min_time, min_repeats=min_repeats,
                           ceiling_n=ceiling_n, lr=LR, seed=seed, breakdown=breakdown, compare=compare),
            "env": environment()}


def _order(batch_sizes, descending):
    return sorted(batch_sizes, reverse=True) if descending else batch_sizes


_rounds = round_sizes  # the split into rounds lives in machine/timing.py, shared with the frameworks' timing


def _time_step(model, opt, X, y, repeats, min_time, min_repeats, ceiling=None, flops=None, chunk=None):
    """Median step time and IQR over ROUNDS rounds of timed steps (calls of MLP.train_step_trusted, or chunks of steps:
    see measure). When the rounds disagree by more than BUSY_SPREAD, or the step would run faster than the GEMM
    ceiling allows, it is measured once more; if it stays so, the row is marked busy (1) with the reason, else
    busy = 0."""
    model.check_batch(X, y)  # once, as the training loop does
    t0 = time.perf_counter()
    if chunk is None:
        model.train_step_trusted(X, y, opt)  # compiles what this B needs
        step, per_call = (lambda: model.train_step_trusted(X, y, opt)), 1  # noqa: E731
    else:  # the loop alone: the Python-call step is another compiled entry point, which the loop never calls
        step, per_call = chunk(model, opt, X, y)  # compiles the loop (it takes its first steps)
    first = time.perf_counter() - t0
    time_calls(step, min_time=0.02, min_repeats=2)  # warm-up
    for attempt in range(2):
        rounds = [[t / per_call for t in time_calls(step, n, min_time / ROUNDS, max(2, min_repeats // ROUNDS))]
                  for n in _rounds(repeats)]
        medians = [median_iqr(r)[0] for r in rounds]
        samples = [t for r in rounds for t in r]
        median, iqr = median_iqr(samples)
        spread = max(medians) / min(medians) - 1.0
        reasons = []
        if spread > BUSY_SPREAD:
            reasons.append(f"rounds {spread:.0%} apart")
        if ceiling and flops and flops / median / 1e9 > ceiling:
            reasons.append(f"{100 * flops / median / 1e9 / ceiling:.0f}% of the GEMM ceiling")
        if not reasons:
            break
    return dict(step_time_s=median, iqr_s=iqr, repeats=len(samples) * per_call, first_call_s=first,
                timed="call" if chunk is None else f"loop ({per_call} steps a chunk)",
                rounds_s=" ".join(repr(m) for m in medians), round_spread=spread, remeasured=attempt,
                busy=int(bool(reasons)), busy_reason="; ".join(reasons))


def busy_note(rows):
    """One line saying the machine was busy, naming the batch sizes whose step times stayed unreliable; None if
    none."""
    busy = [r for r in rows if r.get("busy")]
    if not busy:
        return None
    sizes = ", ".join(str(r["batch_size"]) for r in busy)
    return (f"the machine was busy: step times at B = {sizes} stayed unreliable after a remeasurement "
            f"({busy[0]['busy_reason']}{', ...' if len(busy) > 1 else ''}); marked busy")


def _memory(sizes, activation, dtype, backend, optimizer, seed, X, y):
    """Peak bytes of training at this batch size: measured (tracemalloc: every NumPy and Numba allocation from a
    fresh model's construction through two train steps; the batch itself and the float64 draws of the
    initialisation excluded) and counted (MLP.memory_count, by part)."""
    import tracemalloc

    from minigrad.engine.model import MLP
    from minigrad.engine.optim import make_optimizer

    tracemalloc.start()
    try:
        model = MLP(sizes, activation=activation, dtype=dtype, backend=backend, seed=seed)
        tracemalloc.reset_peak()  # the initialisation's float64 temporaries are gone by now
        opt = make_optimizer(optimizer, LR)
        model.train_step_trusted(X, y, opt)
        model.train_step_trusted(X, y, opt)
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
    from minigrad.profile import roofline

    ops = [dict(name=op.name, kind=op.kind, shape=list(op.shape), repeat=op.repeat, flops=op.flops,
                bytes=op.bytes(dtype.itemsize), seconds=s) for op, s in zip(result["ops"], result["op_s"])]
    return dict(backend=backend, threads=T, dtype=dtype.name, batch_size=B, ops=ops,
                compiled_step_s=result["compiled_step_s"], python_call_s=result["python_call_s"],
                train_step_s=result["train_step_s"], fused=result["fused"],
                roofline=roofline.gemm_rows(result, dtype.itemsize, ceiling, bandwidth))


class _progress:
    """progress_bar from minigrad.machine.progress when wanted, else a no-op; yields advance()."""

    def __init__(self, wanted, description, total):
        self.wanted, self.description, self.total, self.cm = wanted, description, total, None

    def __enter__(self):
        if not self.wanted:
            return lambda *a, **k: None
        from minigrad.machine.progress import progress_bar

        self.cm = progress_bar(self.description, self.total)
        step = self.cm.__enter__()
        return lambda: step(advance=1)

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm is not None else False


