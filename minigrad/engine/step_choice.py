"""The step path measured fastest on this machine, for each (model, batch size, optimizer, threads).

steps.choose's thresholds were measured on other machines, so where the small-batch kernels hand over to BLAS the
per-example cost can rise with B on this one. `measure` times every path that could run the step (a fraction of a
second per batch size, the candidates interleaved so that a load change hits them all) and keeps the fastest in a
JSON file beside Numba's cache (machine/numba_cache.py), one file per machine key: the CPU, the BLAS libraries and
the versions of minigrad, NumPy, Numba and llvmlite. `lookup` (asked by MLP.step_for) returns the kept choice or
None; a file that is corrupt, of another key or another format is ignored and remeasured, never an error.
Two processes may write at once: each write is whole (machine/outputs.py) and merges the file as it is then.

MINIGRAD_STEP_CHOICES: "on" to measure and keep the file beside Numba's cache, or a folder to keep it in; unset or
"off" (the default, and the test suite): the thresholds only. Off by default because on a busy machine the short
measurement can pick a slower path, and a first run compiles every candidate path (up to about 80 s).
"""
import contextlib
import hashlib
import json
import os
import time

import numpy as np

FORMAT = 1
MARGIN = 0.10  # a measured path replaces the rule's only when faster by more than this (noise would flip it)
_state = {"enabled": True}
_memo = {}  # file path -> its choices, read once per process (store updates it)


def forget():
    """Drop what this process has read of the file (it is read again at the next lookup)."""
    for path in [k for k in _memo if k != "key"]:
        del _memo[path]


def machine_key():
    """What a choice depends on besides the model: CPU, BLAS libraries and versions (a dict of strings)."""
    if "key" not in _memo:
        import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's OpenBLAS, so every process lists the same BLAS)

        from minigrad.engine import kernels_large  # noqa: F401  (binds the large step's BLAS: machine/blas.py)
        from minigrad.machine.environment import environment

        env = environment()
        blas = sorted(f"{b['vendor']} {b['version']} {b['architecture']}" for b in env["blas"])
        _memo["key"] = {k: str(env[k]) for k in ("cpu", "numba_cpu", "cores", "minigrad", "numpy", "numba",
                                                 "llvmlite", "step_blas")} | {"blas": "; ".join(blas)}
    return _memo["key"]


def cache_file():
    """The choices file for this machine key, or None when choices are off or no folder is writable."""
    folder = os.environ.get("MINIGRAD_STEP_CHOICES", "off")
    if folder in ("", "off") or not _state["enabled"]:
        return None
    if folder == "on":
        from minigrad.machine import numba_cache

        folder = next((p for p in numba_cache.candidates() if numba_cache.writable(p)), None)
        if folder is None:
            return None
    digest = hashlib.sha256(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"minigrad-step-choices-{digest}.json")


@contextlib.contextmanager
def disabled():
    """Within the block MLP.step_for uses the thresholds only (the benchmarks' 'before')."""
    saved, _state["enabled"] = _state["enabled"], False
    try:
        yield
    finally:
        _state["enabled"] = saved


def _read(path):
    """The file's choices {entry: {"path", "seconds"}}; {} if it is missing, corrupt, or of another key/format."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != FORMAT or data.get("key") != machine_key() or not isinstance(data["choices"], dict):
            return {}
        return {k: v for k, v in data["choices"].items()
                if isinstance(v, dict) and isinstance(v.get("path"), str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def entry(model, B, kind, T):
    """The name of a choice in the file: backend, sizes, activation, dtype, optimizer kind, B, workers."""
    sizes = "-".join(str(n) for n in model.sizes)
    return f"{model.backend}|{sizes}|{model.activation}|{model.dtype.name}|{kind}|{B}|{T}"


def _choices():
    path = cache_file()
    if path is None:
        return None, {}
    if path not in _memo:
        _memo[path] = _read(path)
    return path, _memo[path]


def lookup(model, B, kind, T, allowed):
    """The measured path for this step if one is kept and is among `allowed`, else None."""
    name = _choices()[1].get(entry(model, B, kind, T), {}).get("path")
    return name if name in allowed else None


def chosen_by(model, B, optimizer, threads=None):
    """"measured" if MLP.step_for takes this step's path from the kept timings, else "thresholds" (recorded in
    every throughput row)."""
    from minigrad.engine import steps as S

    T = S.fused_workers(threads)
    allowed = S.candidates(model.backend, model.n_params, B, optimizer.kind, T)
    return "measured" if lookup(model, B, optimizer.kind, T, allowed) else "thresholds"


def store(found):
    """Merge {entry: choice} into the file (re-read just before the whole-file write)."""
    path, _ = _choices()
    if path is None or not found:
        return
    from minigrad.machine.outputs import output_file

    merged = _read(path) | found
    try:
        with output_file(path) as f:
            json.dump({"format": FORMAT, "key": machine_key(), "choices": merged}, f, indent=0, sort_keys=True)
    except OSError:  # a cache: failing to keep it costs a remeasurement, never the run
        pass
    _memo[path] = merged


def _per_step(step, X, y, optimizer, n):
    started = time.perf_counter()
    for _ in range(n):
        step(X, y, optimizer)
    return (time.perf_counter() - started) / n


def measure(model, B, optimizer, T, candidates, rule, rounds=7, round_s=0.01):
    """Time each candidate path on a copy of `model` (its parameters untouched) -> {"path", "seconds"}: each
    path's fastest round, as other processes on the cores only ever slow a round down."""
    from minigrad.engine import steps as S

    r = np.random.default_rng(0)
    X = r.standard_normal((B, model.sizes[0])).astype(model.dtype)
    y = r.integers(0, model.sizes[-1], B).astype(np.int64)
    runs = {}
    for name in candidates:
        copy = type(model)(list(model.sizes), activation=model.activation, dtype=model.dtype, backend=model.backend,
                          seed=model.seed)
        opt = type(optimizer)(1e-6)
        opt.bind(copy)
        step = S.make(copy, name, B, T)
        once = _per_step(step, X, y, opt, 3)  # compiles (or loads) and warms up
        runs[name] = (step, opt, max(1, int(round_s / max(once, 1e-7))), [])
    for _ in range(rounds):
        for step, opt, n, times in runs.values():
            times.append(_per_step(step, X, y, opt, n))
    seconds = {name: min(times) for name, (_, _, _, times) in runs.items()}
    best = min(seconds, key=seconds.get)
    if rule in seconds and seconds[best] > seconds[rule] * (1 - MARGIN):
        best = rule
    return {"path": best, "seconds": seconds}


def ensure(model, batch_sizes, optimizer, threads=None):
    """Measure and keep the choice for each batch size that has none yet -> {B: path}. Run it while nothing else
    shares the cores (bench throughput does, before it times the steps)."""
    import numba

    from minigrad.engine import steps as S
    from minigrad.machine.threads import limit_threads

    T = S.fused_workers(threads)
    path, kept = _choices()
    found = {}
    with limit_threads(threads or numba.get_num_threads()):  # BLAS on the threads the step will have
        for B in batch_sizes:
            name = entry(model, B, optimizer.kind, T)
            candidates = S.candidates(model.backend, model.n_params, B, optimizer.kind, T)
            known = set(kept.get(name, {}).get("seconds", ()))  # measured among the same candidates: kept
            if path is None or known == set(candidates) or len(candidates) < 2:
                continue
            rule = S.choose(model.backend, model.n_params, B, optimizer.kind, T)
            found[name] = measure(model, B, optimizer, T, candidates, rule)
    store(found)
    return {B: model.step_for(B, optimizer, threads).name for B in batch_sizes}
