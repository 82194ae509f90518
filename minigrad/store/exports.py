"""Exports for the tools people already use: a study or run file's traces as TensorBoard event files (`minigrad
export FILE --tensorboard DIR`), and its tables as Parquet (`--parquet DIR`), for the tools people compare training curves in: TensorBoard itself, and what
imports its event files (Aim, SwanLab, tbparse into pandas).

Layout of DIR: one run directory per trial, `<phase>/B<B>_lr<lr>_seed<seed>[_<rest of the run id>]`, each with
scalars against the step: val/error, val/loss, train/loss, train/grad_norm, train/lr, train/batch_size,
examples_seen, time/compute_s, time/eval_s and, where measured, gns/* (the gradient noise scale), leaving out
points whose value is not finite (a diverged loss); its attributes as
text (`run/attributes`). The directory `study` holds the configuration as text (`study/config`). DIR is written
whole or not at all: into a temporary folder beside it, renamed at the end.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from minigrad.store import reader

# trace column -> scalar tag; every other 1-D trace column lands under "trace/<column>"
TAGS = {"val_error": "val/error", "val_loss": "val/loss", "train_loss": "train/loss", "grad_norm": "train/grad_norm",
        "lr": "train/lr", "batch_size": "train/batch_size", "examples": "examples_seen", "compute_s": "time/compute_s",
        "eval_s": "time/eval_s", "epoch": "train/epoch"}
SKIP = {"step"}


def tag(column):
    if column in TAGS:
        return TAGS[column]
    if column.startswith("gns_"):
        return "gns/" + column[4:]
    return "trace/" + column


def run_dir(run_id, attrs):
    """'tune/B64_lr0.2_seed1' (the run id's other parts, such as an adaptive round, appended)."""
    phase = str(attrs.get("phase") or "run")
    if attrs.get("batch_size") is None or attrs.get("lr") is None:
        return f"{phase}/{run_id}"
    name = f"B{int(attrs['batch_size'])}_lr{float(attrs['lr']):g}" + (
        f"_seed{int(attrs['seed'])}" if attrs.get("seed") is not None else "")
    rest = [p for p in run_id.split("-")[1:] if not p.startswith(("B", "lr", "s")) or p.startswith("seed")]
    return f"{phase}/{name}" + ("_" + "_".join(rest) if rest else "")


def _writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboardX package: pip install 'minigrad[tensorboard]'") from None
    return SummaryWriter


def _fresh_dir(out: Path, flag):
    """A temporary folder beside `out`, which must not exist yet (or be an empty folder)."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise ValueError(f"{flag}: {out} exists and is not an empty folder; name a new folder (nothing was written)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"{flag}: the folder {parent} does not exist; create it first")
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))


def _publish(tmp: Path, out: Path):
    if out.exists():
        out.rmdir()  # empty (checked): os.replace cannot replace a folder
    os.replace(tmp, out)


def export_tensorboard(path, out_dir) -> list[Path]:
    """Write every run's trace of `path` as event files under out_dir; returns the run directories written."""
    SummaryWriter = _writer_class()
    study = reader.open(path)
    out = Path(out_dir)
    tmp = _fresh_dir(out, "--tensorboard")
    written = []
    try:
        names = set()
        for run_id, run in study.runs.items():
            name = run_dir(run_id, run.attrs)
            if name in names:  # two runs that differ only in what the name leaves out
                name = f"{run.attrs.get('phase') or 'run'}/{run_id}"
            names.add(name)
            steps = run.trace.get("step")
            with SummaryWriter(logdir=str(tmp / name), flush_secs=3600) as w:
                w.add_text("run/attributes", "    " + json.dumps(run.attrs, default=str, indent=1)
                           .replace("\n", "\n    "), 0)  # indented: TensorBoard shows it as code, not markdown
                if steps is None:
                    continue
                for column, values in run.trace.items():
                    if column in SKIP or getattr(values, "ndim", 0) != 1 or len(values) != len(steps):
                        continue
                    for s, v in zip(steps.tolist(), values.tolist()):
                        if math.isfinite(v):  # a diverged loss or an unmeasured noise scale: no point
                            w.add_scalar(tag(column), float(v), int(s))
            written.append(out / name)
        with SummaryWriter(logdir=str(tmp / "study"), flush_secs=3600) as w:
            config = study.attrs.get("config", {})
            w.add_text("study/config", "    " + json.dumps(config, default=str, indent=1).replace("\n", "\n    "), 0)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def export_parquet(path, out_dir) -> list[Path]:
    """summary.parquet, throughput.parquet (if measured) and traces.parquet (long format, one row per evaluation
    point): the columnar twins of export_csv's files."""
    try:
        import pandas
        import pyarrow  # noqa: F401 - pandas writes Parquet through it
    except ImportError:
        raise ValueError("--parquet needs pandas and pyarrow: pip install 'minigrad[parquet]'") from None
    study = reader.open(path)
    out = Path(out_dir)
    tmp = _fresh_dir(out, "--parquet")
    try:
        def plain(v):
            return json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else v

        tables = {"summary": [{k: plain(v) for k, v in row.items()} for row in study.summary()]}
        if study.throughput:
            tables["throughput"] = [{k: plain(v) for k, v in row.items()} for row in study.throughput]
        frames = []
        for run_id, run in study.runs.items():
            columns = {k: v for k, v in run.trace.items() if getattr(v, "ndim", 0) == 1}
            n = len(columns.get("step", next(iter(columns.values()), [])))
            frame = pandas.DataFrame({k: v for k, v in columns.items() if len(v) == n})
            frame.insert(0, "run_id", run_id)
            frames.append(frame)
        for name, rows in tables.items():
            pandas.DataFrame(rows).to_parquet(tmp / f"{name}.parquet", index=False)
        traces = pandas.concat(frames, ignore_index=True) if frames else pandas.DataFrame({"run_id": []})
        traces.to_parquet(tmp / "traces.parquet", index=False)
        names = sorted(p.name for p in tmp.iterdir())
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in names]
