"""The convergence half of a study as a small JSON file (`minigrad export STUDY --convergence FILE.json`), to combine
with step times from any tool; `minigrad report FILE.json --step-times times.csv` reads it back and answers.

The file (format "minigrad.convergence", version 1):

    config, target, target_reason      the study's settings and the validation error every batch size must reach
    convergence                        per tuned (batch_size, lr): phase, the seeds' steps_to_target (null where a
                                       seed missed the target) and status, and the median
    fit                                S_min, E_min, largest misfit, whether it describes the data, B_crit and its
                                       interval (as the study's own answer gives them)
    step_times                         the study's own step-time table (batch_size, step_time_s, rounds_s, threads)
                                       and where it was measured (machine)
    step_time_tables                   every further table of the study file's /step_times (re-timed elsewhere, or
                                       given), by its stored name: {name: {"attrs": where its times come from
                                       (source, host, cpu, blas, threads, measured, as stored), "rows": [...]}};
                                       absent from files written before it existed, which read as having none
    runs                               every run's few numbers the answer needs (phase, batch_size, lr, seed, status,
                                       steps_to_target, best/final validation and test error; the reference runs'
                                       validation curves), so that `report` answers from the file alone

Read back, it is a study without traces: the answer, the table and the other step-time tables are the study's; the
figures and the gradient noise scale, which need the traces, are not.
"""
import json
import math
from pathlib import Path

import numpy as np

from minigrad.study.analysis import analyse, table_rows
from minigrad.study.answer import _plain

FORMAT, VERSION = "minigrad.convergence", 1
RUN_KEYS = ("phase", "batch_size", "lr", "seed", "status", "steps_to_target", "best_val_error", "final_val_error",
            "test_error", "steps", "budget_steps")
CURVE = ("step", "examples", "val_error")
MACHINE = ("host", "cpu", "step_blas", "throughput_host", "created", "minigrad_version")
TIME_KEYS = ("batch_size", "step_time_s", "iqr_s", "rounds_s", "threads", "busy", "busy_reason", "host")


def export(study_file, out):
    """Write the convergence file of a study (a minigrad.store.StudyFile) to `out` (through a temporary name, so a
    failure leaves no half file); returns the path."""
    a = analyse(study_file)
    cells = {}
    for run_id, run in sorted(study_file.runs.items()):
        r = run.attrs
        if r.get("phase") in ("tune", "adapt"):
            cell = cells.setdefault((int(r["batch_size"]), float(r["lr"])), {"steps": [], "status": [], "seeds": []})
            cell["steps"].append(r.get("steps_to_target") if r.get("status") == "COMPLETE" else None)
            cell["status"].append(r.get("status"))
            cell["seeds"].append(int(r["seed"]))
    convergence = [dict(batch_size=B, lr=lr, seeds=c["seeds"], steps_to_target=c["steps"], status=c["status"],
                        median_steps=float(np.median([math.inf if s is None else s for s in c["steps"]])))
                   for (B, lr), c in sorted(cells.items())]
    runs = []
    for run_id, run in sorted(study_file.runs.items()):
        entry = {"run_id": run_id, **{k: run.attrs.get(k) for k in RUN_KEYS if run.attrs.get(k) is not None}}
        if run.attrs.get("phase") == "reference":
            entry["curve"] = {k: np.asarray(run.trace[k]).tolist() for k in CURVE}
        runs.append(entry)
    f = a.fit
    doc = dict(format=FORMAT, version=VERSION, config=study_file.config, target=a.target,
               target_reason=a.target_reason, adaptive_state=study_file.attrs.get("adaptive_state"),
               convergence=convergence,
               fit=dict(S_min=f.get("S_min"), E_min=f.get("E_min"), max_misfit=f.get("max_ratio"), ok=f.get("ok"),
                        reason=f.get("reason"), B_crit=f.get("B_crit"), B_crit_interval=[f.get("B_crit_lo"),
                        f.get("B_crit_hi")], B_crit_determined=f.get("determined")),
               step_times=dict(machine={k: study_file.attrs.get(k) for k in MACHINE if study_file.attrs.get(k)},
                               rows=[{k: r.get(k) for k in TIME_KEYS if r.get(k) is not None}
                                     for r in table_rows(study_file.throughput)]),
               step_time_tables={name: dict(attrs=dict(t["attrs"]),
                                            rows=[{k: v for k, v in r.items() if v is not None}
                                                  for r in table_rows(t["rows"])])
                                 for name, t in study_file.step_times.items()},
               runs=runs)
    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(f"--convergence: the directory of {out} does not exist; create it first")
    from minigrad.machine.outputs import write_text

    # whole or not at all, never through a link or over the study (the one place outputs are made)
    write_text(out, json.dumps(_plain(doc), indent=1) + "\n", protect=[study_file.path])
    return out


def read(path):
    """A convergence file as a minigrad.store.StudyFile without traces; ValueError (one line) for a bad file."""
    from minigrad.store import Run, StudyFile

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; write one with `minigrad export STUDY --convergence FILE.json`") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable JSON file ({exc}); pass a file of `minigrad export STUDY "
                         "--convergence`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a convergence file (no \"format\": \"{FORMAT}\"); write one with `minigrad "
                         "export STUDY --convergence FILE.json`")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise ValueError(f"{path} has version {doc.get('version')!r}, newer than the {VERSION} this minigrad reads; "
                         "upgrade minigrad")
    try:
        runs = {}
        for entry in doc["runs"]:
            attrs = {k: entry[k] for k in RUN_KEYS if k in entry}
            if attrs.get("best_val_error") is None:
                attrs["best_val_error"] = math.nan
            trace = {k: np.asarray(v) for k, v in entry.get("curve", {}).items()}
            runs[entry["run_id"]] = Run(entry["run_id"], attrs, trace)
        machine = doc["step_times"].get("machine", {})
        attrs = dict(machine, kind="study", config=doc["config"], target=doc["target"],
                     target_reason=doc.get("target_reason", ""), adaptive_state=doc.get("adaptive_state"),
                     study_id=f"convergence:{path.name}")
        throughput = [dict(r) for r in doc["step_times"]["rows"]]
        tables = doc.get("step_time_tables") or {}
        step_times = {str(name): {"attrs": dict(t["attrs"]), "rows": [dict(r) for r in t["rows"]]}
                      for name, t in tables.items()}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: a convergence file lacks {exc} or holds it in another shape; write it again with "
                         "`minigrad export STUDY --convergence FILE.json`") from None
    return StudyFile(path, attrs, runs, throughput, step_times=step_times)

