"""`minigrad merge OUT.h5 shard*.h5`: combine the files of a study's shards (or of any runs of one study) into one.

The files must hold the same study: the same kind and the same configuration (the shard a file was run as is not
part of its configuration). Each run is kept once: a run found in several files (every shard runs the reference
phase) must be the same run in each, apart from timings and the host it ran on, and is then kept once; copies that
differ are an error, and nothing is written. The output is written through minigrad.store, so `minigrad bench` with
the same settings resumes it and runs what the study still needs. An existing OUT of the same study gains the runs
it lacks.
"""
import math
from pathlib import Path

import numpy as np

# What may differ between two copies of one run: the machine, and wall-clock timings, which the project names
# <what>_s (compute_s, eval_s, gns_s, ...).
VOLATILE_ATTRS = {"host"}


CARRIED_ATTRS = ("target", "target_reason", "ceiling_gflops", "throughput_host")


def _volatile(name, fixed=()):
    return name.endswith("_s") or name in fixed


def _same_value(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f")
    return a == b


def run_difference(a, b):
    """None if runs a and b are the same run (timings and host aside), else a few words on where they differ."""
    attrs = {k for k in a.attrs.keys() | b.attrs.keys() if not _volatile(k, VOLATILE_ATTRS)}
    for key in sorted(attrs):
        if not _same_value(a.attrs.get(key), b.attrs.get(key)):
            return f"attr {key}: {a.attrs.get(key)!r} != {b.attrs.get(key)!r}"
    for what, x, y in (("column", a.trace, b.trace), ("array", a.arrays, b.arrays)):
        names = x.keys() | y.keys()
        if what == "column":
            names = {name for name in names if not _volatile(name)}
        for name in sorted(names):
            if name not in x or name not in y:
                return f"{what} {name} missing in one"
            if x[name].shape != y[name].shape or not np.array_equal(x[name], y[name],
                                                                    equal_nan=x[name].dtype.kind == "f"):
                return f"{what} {name} differs"
    return None


def _same_table(a, b):
    """Whether two step-time tables ({"attrs", "rows"}) hold the same measurements."""
    rows_a, rows_b = a["rows"], b["rows"]
    return (len(rows_a) == len(rows_b) and all(r.keys() == q.keys() and all(_same_value(r[k], q[k]) for k in r)
                                               for r, q in zip(rows_a, rows_b))
            and a["attrs"].keys() == b["attrs"].keys() and all(_same_value(a["attrs"][k], b["attrs"][k])
                                                                for k in a["attrs"]))


def _config_difference(a, b):
    return ", ".join(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def _comparable(config):
    return {k: v for k, v in config.items() if k != "shard"}


def merge(out, inputs, *, overwrite=False, echo=print):
    """Merge the study files `inputs` into `out`; returns {"runs", "added", "duplicates", "complete"}."""
    from minigrad import store
    from minigrad.study import plan as S
    from minigrad.study.analysis import step_times
    from minigrad.study.sweep import next_batch

    out = Path(out)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("merge: give at least one study file to merge")
    if any(p.resolve() == out.resolve() for p in inputs):
        raise ValueError(f"merge: {out} is also an input; write the merged study to a new file")
    studies = [store.open(p) for p in inputs]
    first = studies[0]
    for s in studies:
        if s.kind != "study":
            raise ValueError(f"merge: {s.path} holds a {s.kind!r} file, not a study")
        if _comparable(s.config) != _comparable(first.config):
            raise ValueError(f"merge: {s.path} holds a different configuration from {first.path} (differs in "
                             f"{_config_difference(s.config, first.config)}); only shards of one study merge")
    targets = {s.attrs["target"]: s.path for s in studies if s.attrs.get("target") is not None}
    if len(targets) > 1:
        raise ValueError("merge: the files chose different targets ("
                         + ", ".join(f"{p}: {t}" for t, p in targets.items()) + "); their reference runs differ")

    # every run once; conflicting copies stop the merge before anything is written
    runs, origin, duplicates = {}, {}, 0
    for s in studies:
        for run_id, run in s.runs.items():
            if run_id in runs:
                why = run_difference(runs[run_id], run)
                if why is not None:
                    raise ValueError(f"merge: run {run_id} differs between {origin[run_id]} and {s.path} ({why}); "
                                     "shards must compute the same reference runs (same software and hardware)")
                duplicates += 1
                continue
            runs[run_id], origin[run_id] = run, s.path
    trial_targets = {r.attrs.get("target") for r in runs.values() if r.attrs.get("phase") != "reference"}
    if len(trial_targets) > 1:
        raise ValueError(f"merge: the runs were planned for different targets {sorted(trial_targets)}")

    # every machine's and library's step-time table once (`report --retime`, `--step-times`): one name holding
    # other times in two files is refused, before anything is written
    tables, table_origin = {}, {}
    for s in studies:
        for name, table in s.step_times.items():
            if name in tables and not _same_table(tables[name], table):
                raise ValueError(f"merge: step-time table {name!r} differs between {table_origin[name]} and "
                                 f"{s.path}; rename one (a table's name says where it was measured)")
            tables.setdefault(name, table)
            table_origin.setdefault(name, s.path)

    shards = sorted({s.attrs["shard"] for s in studies if s.attrs.get("shard")})
    if shards:
        counts = {int(t.split("/")[1]) for t in shards}
        if len(counts) == 1:
            n = counts.pop()
            missing = sorted(set(range(n)) - {int(t.split("/")[0]) for t in shards})
            if missing:
                echo(f"merge: no file of shard(s) {', '.join(f'{i}/{n}' for i in missing)}: their trials run when "
                     "the merged study resumes")

    with store.Store.create(out, first.config, kind="study", overwrite=overwrite) as writer:
        present = store.open(out)
        if present.attrs.get("shard"):
            raise ValueError(f"merge: {out} holds shard {present.attrs['shard']}; merge into a new file")
        for run_id in runs.keys() & present.runs.keys():  # checked before anything is written
            why = run_difference(present.runs[run_id], runs[run_id])
            if why is not None:
                raise ValueError(f"merge: run {run_id} differs between {out} and {origin[run_id]} ({why})")
        for name in tables.keys() & present.step_times.keys():
            if not _same_table(present.step_times[name], tables[name]):
                raise ValueError(f"merge: step-time table {name!r} differs between {out} and {table_origin[name]}")
        duplicates += len(runs.keys() & present.runs.keys())
        added = 0
        for run_id, run in runs.items():
            if run_id not in present.runs:
                writer.write_run(run_id, run.attrs, run.trace, run.arrays or None)
                added += 1
        if not present.throughput:
            measured = next((s for s in studies if s.throughput), None)
            if measured is not None:
                writer.write_throughput(measured.throughput)
                echo(f"merge: compute speed from {measured.path}"
                     + (f" (measured on {measured.attrs['throughput_host']})"
                        if measured.attrs.get("throughput_host") else ""))
        for name, table in tables.items():
            if name not in present.step_times:
                writer.write_step_times(name, table["rows"], table["attrs"])
        carried = {k: next((s.attrs[k] for s in studies if s.attrs.get(k) is not None), None) for k in CARRIED_ATTRS}
        writer.set_attrs({k: v for k, v in carried.items() if v is not None and present.attrs.get(k) is None})

    merged = store.open(out)
    results = [S.result_row(rid, r.attrs, r.trace) for rid, r in merged.runs.items()]
    try:
        phase, todo, _ = next_batch(merged.config, results, times=step_times(merged.throughput))
    except ValueError:  # the reference phase alone cannot set a target: bench says why
        phase, todo = "reference", [None]
    echo(f"merged {len(inputs)} file(s) into {out}: {len(merged.runs)} runs ({added} added, {duplicates} duplicate "
         f"copies kept once)" + (f", {len(merged.step_times)} step-time table(s)" if merged.step_times else ""))
    if phase is None:
        echo("the study is complete: `minigrad report` shows it")
    else:
        echo(f"the study is not complete ({len(todo)} {phase} trial(s) to run next): run `minigrad bench --out "
             f"{out}` with the same settings to finish it")
    return {"runs": len(merged.runs), "added": added, "duplicates": duplicates, "complete": phase is None,
            "step_times": sorted(merged.step_times)}
