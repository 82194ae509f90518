"""The machine's limits a step is held to, per thread count: the GEMM ceiling per dtype, the DRAM and the L2 bandwidth.

`bench throughput` measures them anew each time (about 2 s per thread count: it is the profiling tool). A study
needs them only to say how close each step comes to them, not for its answer, so it takes them from a JSON file
kept beside Numba's cache (and where none is kept yet, measures the GEMM ceiling alone: the bandwidths, which only
the roofline columns use, stay unknown until `bench throughput` measures them) (machine/numba_cache.py) when this machine has measured them before, keyed like the
step choices (engine/step_choice.machine_key: the CPU, the BLAS libraries, the versions of minigrad, NumPy, Numba
and llvmlite). Every fresh measurement merges into the file keeping the larger figure: a limit is a maximum, and
another program on the cores only ever lowers a measurement. A missing, corrupt or foreign file means "measure";
failing to write it costs the next run a measurement, never this one. MINIGRAD_MACHINE_LIMITS=off: always measure.
"""
import datetime
import hashlib
import json
import os

FORMAT = 1


def _folder():
    from minigrad.machine import numba_cache

    return next((p for p in numba_cache.candidates() if numba_cache.writable(p)), None)


def cache_file():
    """The limits file for this machine, or None when keeping is off or no folder is writable."""
    if os.environ.get("MINIGRAD_MACHINE_LIMITS", "on") == "off":
        return None
    from minigrad.engine.step_choice import machine_key

    folder = _folder()
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"minigrad-machine-limits-{digest}.json")


def _read(path):
    """{entry: limits} from the file; {} when it is missing, corrupt, or of another key or format."""
    from minigrad.engine.step_choice import machine_key

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != FORMAT or data.get("key") != machine_key() or not isinstance(data["limits"], dict):
            return {}
        return {k: v for k, v in data["limits"].items() if _valid(v)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _valid(limits):
    try:
        ceilings = list(limits["ceilings"].values())
        bandwidths = [x for x in (limits["bandwidth"], limits["cache_bandwidth"]) if x is not None]
        return bool(ceilings) and all(float(x) > 0 for x in ceilings + bandwidths) and \
            isinstance(limits["measured_at"], str)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def entry(threads, ceiling_n):
    return f"threads={threads}|n={ceiling_n}"


def measure(threads, dtypes, ceiling_n, bandwidths=True):
    """The limits at the current thread settings (the caller has set `threads` for BLAS and Numba), now; without
    `bandwidths` the GEMM ceilings alone (the bandwidths None)."""
    from minigrad.profile import roofline
    from minigrad.profile.throughput import gemm_ceiling

    return {"ceilings": {d: gemm_ceiling(ceiling_n, dtype=d) for d in dtypes},
            "bandwidth": roofline.memory_bandwidth() if bandwidths else None,
            "cache_bandwidth": roofline.cache_bandwidth(threads) if bandwidths else None,
            "measured_at": datetime.datetime.now().isoformat(timespec="seconds")}


def limits(threads, dtypes, ceiling_n=2048, kept=False):
    """{"ceilings": {dtype: GFLOP/s}, "bandwidth": DRAM GB/s, "cache_bandwidth": L2 GB/s, "measured_at": ISO date,
    "source": "measured" or "kept"} at the current thread settings. kept=True takes them from the file when it holds
    a ceiling for every dtype asked for, else measures the ceilings alone (the bandwidths are then the kept ones,
    or None); kept=False measures everything. Either way a measurement is merged into the file."""
    dtypes = list(dict.fromkeys(dtypes))
    path = cache_file()
    name = entry(threads, ceiling_n)
    stored = _read(path).get(name) if path else None
    if kept and stored and all(d in stored["ceilings"] for d in dtypes):
        return dict(stored, ceilings={d: stored["ceilings"][d] for d in dtypes}, source="kept")
    fresh = measure(threads, dtypes, ceiling_n, bandwidths=not kept)
    if path:
        fresh = _keep(path, name, fresh) | {"ceilings": fresh["ceilings"]}
    return dict(fresh, source="measured")


def _keep(path, name, fresh):
    from minigrad.engine.step_choice import machine_key
    from minigrad.machine.outputs import output_file

    """Merge `fresh` into the file's entry `name` and return the merged entry."""
    everything = _read(path)
    old = everything.get(name)
    if old:  # the larger of each figure (a limit), dated by the newest measurement
        fresh = {"ceilings": {d: max(v, old["ceilings"].get(d, 0.0)) for d, v in
                              (old["ceilings"] | fresh["ceilings"]).items()},
                 "bandwidth": _larger(fresh["bandwidth"], old["bandwidth"]),
                 "cache_bandwidth": _larger(fresh["cache_bandwidth"], old["cache_bandwidth"]),
                 "measured_at": fresh["measured_at"]}
    everything[name] = fresh
    try:
        with output_file(path) as f:
            json.dump({"format": FORMAT, "key": machine_key(), "limits": everything}, f, indent=0, sort_keys=True)
    except OSError:  # a cache: failing to keep it costs the next run a measurement
        pass
    return fresh


def _larger(a, b):
    """The larger of two figures, either of which may be unknown (None)."""
    known = [x for x in (a, b) if x is not None]
    return max(known) if known else None
