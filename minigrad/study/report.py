"""From a study file to the answer: steps and time to target per batch size, the critical batch size, a
recommendation, the equal-budget comparison, and the figures. Everything here reads the HDF5 file alone.

Model (McCandlish et al. 2018): S(B) = S_min + E_min / B, a straight line in 1/B, with B_crit = E_min / S_min.
Time to target T(B) = S(B) * t(B), with t(B) the median step time measured alone on this machine.
"""
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from minigrad.study import plan as S

NEAR_TIE = 0.05  # batch sizes within 5% of the fastest time-to-target count as tied; fewer examples win
TIME_GAP = 0.20  # a trial's compute time per step this far from t(B) is pointed out under the table


@dataclass
class Analysis:
    config: dict
    target: float
    target_reason: str
    rows: list              # one dict per batch size
    fit: dict               # S_min, E_min, B_crit, B_crit_lo, B_crit_hi, max_ratio
    recommended: dict = None
    equal: list = field(default_factory=list)
    heat: dict = field(default_factory=dict)
    reference_lr: float = None
    gns: dict = field(default_factory=dict)  # B_simple near the target (minigrad.instruments.noise.b_simple_near_target)


def fit_steps(batch_sizes, steps):
    """Least squares of S = S_min + E_min / B in relative error (each point weighted by 1/S, so small and large
    counts matter alike). Returns (S_min, E_min) or None with fewer than two points."""
    B, s = np.asarray(batch_sizes, float), np.asarray(steps, float)
    ok = np.isfinite(s)
    if ok.sum() < 2:
        return None
    B, s = B[ok], s[ok]
    A = np.stack([np.ones_like(B), 1.0 / B], axis=1) / s[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(A, np.ones_like(s), rcond=None)
    return float(s_min), float(e_min)


def best_steps(cells, batch_sizes):
    """S(B) = min over learning rates of the median over seeds, and the rate that gives it: {B: (steps, lr)}."""
    out = {}
    for B in batch_sizes:
        lr, steps = S.best_of({lr: float(np.median(v)) for (b, lr), v in cells.items() if b == B})
        out[B] = (steps, lr)
    return out


def bootstrap_bcrit(cells, batch_sizes, reps=300, seed=0):
    """B_crit's spread: resample the seeds of every (B, lr) cell with replacement and refit."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        resampled = {key: list(rng.choice(v, size=len(v))) for key, v in cells.items()}
        best = best_steps(resampled, batch_sizes)
        fit = fit_steps(list(best), [best[B][0] for B in best])
        if fit and fit[0] > 0 and fit[1] > 0:
            values.append(fit[1] / fit[0])
    if len(values) < reps // 2:
        return math.nan, math.nan
    return float(np.percentile(values, 16)), float(np.percentile(values, 84))


def analyse(study_file):
    """Everything the table, the recommendation and the figures need, from a minigrad.store.StudyFile."""
    config = study_file.config
    results = [S.result_row(run_id, run.attrs, run.trace) for run_id, run in study_file.runs.items()]
    if not any(r["phase"] == "tune" for r in results):
        raise ValueError("the study holds no tuning trials yet: run `minigrad bench` on it to finish it")
    attrs = study_file.attrs
    target = attrs.get("target")
    reason = attrs.get("target_reason", "")
    if target is None:
        target, reason = S.choose_target(config, results)
    _, reference_lr = S.best_reference(results) if config["target"] is None or any(
        r["phase"] == "reference" for r in results) else (None, None)
    throughput = {int(r["batch_size"]): r for r in _rows(study_file.throughput)}
    batch_sizes = sorted({r["batch_size"] for r in results if r["phase"] == "tune"})
    cells = S.steps_per_cell(results)
    best = best_steps(cells, batch_sizes)

    rows = []
    for B in batch_sizes:
        steps, lr = best[B]
        tp = throughput.get(B, {})
        t = tp.get("step_time_s", math.nan)
        statuses = [r["status"] for r in results if r["phase"] == "tune" and r["batch_size"] == B and r["lr"] == lr]
        trials = [r for r in results if r["phase"] == "tune" and r["batch_size"] == B]
        trial_s, eval_s = trial_step_times(study_file, B)
        rows.append(dict(batch_size=B, step_time_s=t, threads=tp.get("threads"), trial_step_s=trial_s,
                         trial_eval_s=eval_s,
                         samples_per_s=tp.get("samples_per_s", math.nan),
                         gflops=tp.get("gflops", math.nan), best_lr=lr, steps=steps, examples=steps * B,
                         time_s=steps * t, status=_status_word(statuses),
                         n_trials=len(trials), n_diverged=sum(r["status"] == "DIVERGED" for r in trials)))

    fit = {}
    params = fit_steps(batch_sizes, [best[B][0] for B in batch_sizes])
    if params:
        s_min, e_min = params
        fit = dict(S_min=s_min, E_min=e_min, B_crit=e_min / s_min if s_min > 0 else math.inf)
        fit["B_crit_lo"], fit["B_crit_hi"] = bootstrap_bcrit(cells, batch_sizes)
        ratios = [max(r["steps"] / (s_min + e_min / r["batch_size"]), (s_min + e_min / r["batch_size"]) / r["steps"])
                  for r in rows if math.isfinite(r["steps"])]
        fit["max_ratio"] = max(ratios) if ratios else math.nan
        for r in rows:
            r["fit_steps"] = s_min + e_min / r["batch_size"]

    analysis = Analysis(config=config, target=target, target_reason=reason, rows=rows, fit=fit,
                        reference_lr=reference_lr)
    analysis.recommended = recommend(rows)
    analysis.equal = equal_budget(results, study_file)
    analysis.heat = {"cells": {k: float(np.median(v)) for k, v in cells.items()},
                     "diverged": {(r["batch_size"], r["lr"]) for r in results
                                  if r["phase"] == "tune" and r["status"] == "DIVERGED"}}
    from minigrad.instruments.noise import b_simple_near_target

    analysis.gns = b_simple_near_target([run.trace for run in study_file.runs.values()
                                         if run.attrs.get("phase") == "tune" and best.get(int(run.attrs["batch_size"]),
                                         (None, None))[1] == float(run.attrs["lr"])], target)
    return analysis


def trial_step_times(study_file, B):
    """(compute, evaluation) seconds per step that B's tuning trials really took: their summed times over their
    summed steps (evaluation includes locating the target; see minigrad.training.train)."""
    steps = compute = evaluation = 0.0
    for run in study_file.runs.values():
        a = run.attrs
        if a.get("phase") == "tune" and int(a["batch_size"]) == B and a.get("steps"):
            steps += a["steps"]
            compute += a.get("compute_s", math.nan)
            evaluation += a.get("eval_s", math.nan)
    return (compute / steps, evaluation / steps) if steps else (math.nan, math.nan)


def time_gaps(rows):
    """Batch sizes whose trials' compute time per step differs from t(B) by more than TIME_GAP, with the ratio."""
    return [(r["batch_size"], r["trial_step_s"] / r["step_time_s"]) for r in rows
            if math.isfinite(r["trial_step_s"]) and r["step_time_s"] > 0
            and abs(r["trial_step_s"] / r["step_time_s"] - 1) > TIME_GAP]


def _rows(table):
    if not table:
        return []
    if isinstance(table, dict):  # columns -> rows
        keys = list(table)
        return [dict(zip(keys, values)) for values in zip(*(table[k] for k in keys))]
    return list(table)


def _status_word(statuses):
    if not statuses:
        return "-"
    counts = {s: statuses.count(s) for s in ("COMPLETE", "INCOMPLETE", "DIVERGED") if statuses.count(s)}
    if len(counts) == 1:
        return next(iter(counts))
    return " ".join(f"{n} {s}" for s, n in counts.items())


def recommend(rows):
    """The batch size with the smallest time-to-target; within NEAR_TIE of it, the one needing fewest examples."""
    timed = [r for r in rows if math.isfinite(r["time_s"])]
    if not timed:
        return None
    fastest = min(r["time_s"] for r in timed)
    tied = [r for r in timed if r["time_s"] <= fastest * (1 + NEAR_TIE)]
    return min(tied, key=lambda r: (r["examples"], r["batch_size"]))


def equal_budget(results, study_file):
    """Per B: median final validation and test error after equal_epochs, at the tuned and at the fixed rate."""
    out = {}
    for run_id, run in study_file.runs.items():
        a = run.attrs
        if a.get("phase") != "equal":
            continue
        tag = "tuned" if run_id.endswith("-tuned") else "fixed"
        entry = out.setdefault(int(a["batch_size"]), {})
        entry.setdefault(tag, {"val": [], "test": [], "lr": float(a["lr"]), "diverged": 0})
        if a["status"] == "DIVERGED":
            entry[tag]["diverged"] += 1
        else:
            entry[tag]["val"].append(a["final_val_error"])
            entry[tag]["test"].append(a["test_error"])
    rows = []
    for B in sorted(out):
        row = {"batch_size": B}
        for tag in ("tuned", "fixed"):
            e = out[B].get(tag)
            if e:
                row[f"{tag}_lr"] = e["lr"]
                row[f"{tag}_val"] = float(np.median(e["val"])) if e["val"] else math.nan
                row[f"{tag}_test"] = float(np.median(e["test"])) if e["test"] else math.nan
                row[f"{tag}_diverged"] = e["diverged"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------ text
def fmt_time(seconds):
    if not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_count(x):
    return "-" if not math.isfinite(x) else f"{x:,.0f}"


def recommendation_sentence(a: Analysis):
    r, f = a.recommended, a.fit
    if r is None:
        return ("No batch size reached the target: raise the budget (budget_factor), widen the learning-rate grid "
                "or loosen the target.")
    crit = ""
    if f and math.isfinite(f.get("B_crit", math.nan)):
        crit = (f" The fitted critical batch size is B_crit = E_min/S_min = {f['E_min']:,.0f}/{f['S_min']:,.1f} "
                f"= {f['B_crit']:.0f} (16-84% bootstrap range {f['B_crit_lo']:.0f} to {f['B_crit_hi']:.0f}): below it "
                f"doubling B nearly halves the steps, above it extra examples buy few steps.")
    others = sorted((x for x in a.rows if math.isfinite(x["time_s"]) and x is not r), key=lambda x: x["time_s"])
    runner = (f" Next best: B = {others[0]['batch_size']} at {fmt_time(others[0]['time_s'])}." if others else "")
    return (f"Use batch size {r['batch_size']} with learning rate {r['best_lr']:g}: it reaches validation error "
            f"{a.target:g} in {fmt_count(r['steps'])} steps of {fmt_time(r['step_time_s'])} "
            f"({fmt_count(r['examples'])} examples), {fmt_time(r['time_s'])} of compute on this machine, the "
            f"shortest time-to-target measured.{runner}{crit}")


def print_report(a: Analysis, console=None):
    from rich.console import Console
    from rich.table import Table

    # a pipe or a log file gets the full-width table rather than rich's 80-column default
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    console.print(f"target: validation error <= {a.target:g} ({a.target_reason})")
    table = Table(title="batch size: compute speed x convergence speed")
    for name in ("B", "step time", "threads", "trial step", "+ eval", "samples/s", "best lr", "steps to target",
                 "examples to target", "time to target", "status"):
        table.add_column(name, justify="right")
    best = a.recommended["batch_size"] if a.recommended else None
    for r in a.rows:
        table.add_row(str(r["batch_size"]), fmt_time(r["step_time_s"]), _g(r["threads"]),
                      fmt_time(r.get("trial_step_s", math.nan)), fmt_time(r.get("trial_eval_s", math.nan)),
                      fmt_count(r["samples_per_s"]),
                      "-" if r["best_lr"] is None else f"{r['best_lr']:g}", fmt_count(r["steps"]),
                      fmt_count(r["examples"]), fmt_time(r["time_s"]), r["status"],
                      style="bold green" if r["batch_size"] == best else None)
    console.print(table)
    console.print("step time: t(B) measured alone (throughput phase); trial step: the compute time per step the "
                  "tuning trials took (one thread each, trials side by side), + eval: their evaluation time per step")
    gaps = time_gaps(a.rows)
    if gaps:
        console.print("trial steps differ from t(B) by more than 20% at " + ", ".join(
            f"B = {B} ({ratio:.2f}x)" for B, ratio in gaps) + ": time to target uses t(B); the trials ran with the "
            "cores shared and their own thread count")
    if a.fit:
        console.print(f"fit S(B) = S_min + E_min/B: S_min = {a.fit['S_min']:,.1f} steps, E_min = {a.fit['E_min']:,.0f} "
                      f"examples, largest misfit {a.fit['max_ratio']:.2f}x")
    if a.gns and a.fit:
        console.print(f"gradient noise scale near the target: B_simple = {a.gns['b_simple']:,.0f} (best-lr trials, "
                      f"{a.gns['trials']} of them) next to B_crit = {a.fit['B_crit']:,.0f}: B_simple / B_crit = "
                      f"{a.gns['b_simple'] / a.fit['B_crit']:.2f} (McCandlish et al.: about 1 to 10)")
    if a.equal:
        eq = Table(title=f"equal budget: {a.config['equal_epochs']:g} epochs at every B (median over seeds)")
        for name in ("B", "tuned lr", "val error", "test error", "fixed lr", "val error ", "test error "):
            eq.add_column(name, justify="right")
        for r in a.equal:
            eq.add_row(str(r["batch_size"]), _g(r.get("tuned_lr")), _e(r.get("tuned_val")), _e(r.get("tuned_test")),
                       _g(r.get("fixed_lr")), _e(r.get("fixed_val"), r.get("fixed_diverged")),
                       _e(r.get("fixed_test"), r.get("fixed_diverged")))
        console.print(eq)
    console.print(recommendation_sentence(a))


def _g(x):
    return "-" if x is None else f"{x:g}"


def _e(x, diverged=0):
    if x is None:
        return "-"
    return "diverged" if not math.isfinite(x) and diverged else ("-" if not math.isfinite(x) else f"{x:.4f}")
