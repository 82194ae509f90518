"""Reading a study file whole (journal first, then the file), and CSV export."""
from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from minigrad.machine.outputs import check_target, output_file
from minigrad.store.files import (
    STATUSES, StoreError, _STAGED, _THROUGHPUT, _dumps, _get_attrs, _read_table, _open_h5, _journal_dir,
    _journal_entries, _read_header, _study_path)


_TABLE_ATTRS = ("columns", "rows")  # what _write_table keeps on a table's group, not the caller's attrs


@dataclass
class Run:
    run_id: str
    attrs: dict
    trace: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class StudyFile:
    """A study read whole into memory: the file is closed again when open() returns."""
    path: Path
    attrs: dict  # root metadata, config included
    runs: dict[str, Run]
    throughput: list[dict]
    unmerged: set[str] = field(default_factory=set)  # runs found only in the journal of a killed writer
    # further step-time tables (re-timed on other machines, or given): {name: {"attrs": {...}, "rows": [...]}}
    step_times: dict[str, dict] = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return self.attrs["config"]

    @property
    def kind(self) -> str:
        return self.attrs["kind"]

    def summary(self) -> list[dict]:
        """One row per run: run_id and the run's attrs (what /summary holds, with None for missing values)."""
        keys = list(dict.fromkeys(k for run in self.runs.values() for k in run.attrs))
        return [{"run_id": rid, **{k: run.attrs.get(k) for k in keys}} for rid, run in self.runs.items()]


def damaged(path, error) -> StoreError:
    """The one message for a study file whose contents cannot be read as a study (a flipped bit, a missing part)."""
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    return StoreError(f"{path} is damaged ({reason}); restore it or start again with --overwrite")


def check_schema(path, attrs: dict, runs: dict) -> None:
    """Refuse a file whose root attributes, or whose runs' statuses, are not what the writer writes."""
    if not isinstance(attrs.get("config"), dict):
        raise damaged(path, f"the config attribute is {type(attrs.get('config')).__name__}, not a table of settings")
    if not isinstance(attrs.get("study_id"), str) or not isinstance(attrs.get("kind"), str):
        raise damaged(path, "study_id or kind is missing")
    for run_id, run in runs.items():
        if run.attrs.get("status") is not None and run.attrs["status"] not in STATUSES:
            raise damaged(path, f"run {run_id} has status {run.attrs['status']!r}")


_REMEMBERED = []  # while remembering_runs() is active: {(file path, study id, run id): Run}


@contextlib.contextmanager
def remembering_runs():
    """Within the block, open() reads each run of a study once and hands back the same Run when the file is read
    again: a run id's contents never change once written, and a study read at several points of its run
    (`minigrad bench` reads it to choose the verify phase and again for the report) then reads only its new runs.
    Outside the block every open() reads the whole file, so damage done to a run later is always seen."""
    _REMEMBERED.append({})
    try:
        yield
    finally:
        _REMEMBERED.pop()


def _runs(path, study_id, group) -> dict:
    memo = _REMEMBERED[-1] if _REMEMBERED else None
    if memo is None:
        return {rid: _read_run(rid, g) for rid, g in group.items()}
    runs = {}
    for rid in group:
        key = (str(path.resolve()), study_id, rid)
        if key not in memo:
            memo[key] = _read_run(rid, group[rid])
        runs[rid] = memo[key]
    return runs


def _read_run(run_id: str, g) -> Run:
    trace = {k: d[()] for k, d in g.items() if isinstance(d, h5py.Dataset)}
    arrays = {k: d[()] for k, d in g["arrays"].items()} if "arrays" in g else {}
    return Run(run_id, _get_attrs(g), trace, arrays)


def open(path) -> StudyFile:  # noqa: A001 - minigrad.store.open(path) reads like the builtin it mirrors
    """Read a study file, with any runs that a killed writer left in its journal."""
    path = _study_path(path)
    staged = _STAGED.get(path.resolve())
    # The journal first: a commit deletes entries only after the file holding them is in place (module docstring).
    journal = []
    for entry in _journal_entries(_journal_dir(path)):
        try:
            with h5py.File(entry, "r") as src:
                journal.append((src.attrs["study_id"], _read_run(src.attrs["run_id"], src["run"])))
        except Exception:  # noqa: BLE001 - h5py reports damage as any of OSError, KeyError, RuntimeError, ...
            if entry.exists():
                raise StoreError(f"journal entry {entry} cannot be read; delete it (its run is then rerun)") from None
    header = staged._header if staged is not None else None if path.exists() else _read_header(_journal_dir(path))
    if header is not None:  # a new study whose file is not written yet: its runs are in the journal
        attrs, runs, step_times = dict(header), {}, {}
        throughput = attrs.pop(_THROUGHPUT, None) or []
    else:
        with _open_h5(path) as f:
            try:
                attrs = _get_attrs(f)
                if not isinstance(f.get("runs"), h5py.Group):
                    raise damaged(path, "/runs is not a group of runs")
                runs = _runs(path, attrs.get("study_id"), f["runs"])
                throughput = _read_table(f["throughput"]) if "throughput" in f else []
                step_times = {name: {"attrs": {k: v for k, v in _get_attrs(g).items() if k not in _TABLE_ATTRS},
                                     "rows": _read_table(g)} for name, g in f.get("step_times", {}).items()}
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - a flipped bit surfaces as OSError, KeyError, RuntimeError, ...
                raise damaged(path, e) from None
        check_schema(path, attrs, runs)
    unmerged = set()
    for study_id, run in journal:
        if study_id == attrs["study_id"]:
            if run.run_id not in runs:
                unmerged.add(run.run_id)
            runs[run.run_id] = run  # an entry is never older than the file's copy of its run
    return StudyFile(path, attrs, dict(sorted(runs.items())), throughput, unmerged, step_times)


def export_csv(path, out_dir) -> list[Path]:
    """Write summary.csv, throughput.csv (if measured) and traces.csv (run_id + trace columns) into out_dir."""
    study = open(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def cell(v):
        return _dumps(v) if isinstance(v, (dict, list, tuple)) else v

    def write(name, header, rows):  # whole or not at all, never through a link or over the study (machine/outputs.py)
        with output_file(out / name, "w", protect=[path], newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return out / name

    for name in ("summary.csv", "throughput.csv", "traces.csv"):
        check_target(out / name, protect=[path])  # all refused before any is written
    summary = study.summary()
    header = list(summary[0]) if summary else ["run_id"]
    paths = [write("summary.csv", header, ([cell(r[k]) for k in header] for r in summary))]
    if study.throughput:
        header = list(dict.fromkeys(k for r in study.throughput for k in r))
        paths.append(write("throughput.csv", header, ([cell(r.get(k)) for k in header] for r in study.throughput)))
    columns = list(dict.fromkeys(k for run in study.runs.values() for k in run.trace))

    def trace_rows():
        for rid, run in study.runs.items():
            n = len(next(iter(run.trace.values()))) if run.trace else 0
            cols = [run.trace[c].tolist() if c in run.trace else [""] * n for c in columns]
            for values in zip(*cols):
                yield (rid, *values)

    paths.append(write("traces.csv", ["run_id", *columns], trace_rows()))
    return paths
