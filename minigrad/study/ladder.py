"""The answer along the whole training: S(B), the fit and the critical batch size at a ladder of validation-error
levels, from the trials the study already ran. Every tuning trace crosses every level easier than the target on its
way there, so steps-to-level comes free: the step where the trace first reaches the level, interpolated linearly
between the evaluation before and the one that reached it.

The levels run from the hardest error that nearly every best-rate trial still had to cross after its first
evaluation (an earlier crossing is not resolved: the trace does not say when it happened) down to the study's
target, evenly spaced in log excess error over the best error any trial reached. At each level the statistics are
the study's own (minigrad.study.uncertainty, fit_with_check): best rate per B, S(B) with bootstrap
intervals, the fit and its self-check, and both definitions of the critical batch size:

  B_crit = E_min / S_min   McCandlish et al. 2018: twice the fewest steps and twice the fewest examples
  CBS-20% = 0.2 B_crit     Zhang et al. 2024: examples 20% above the fewest (E = 1.2 E_min), under the fit

next to the gradient noise scale B_simple measured at the same level by the same trials (their noise hook draws
its batches independently, with replacement, whatever sampler trains them).
"""
import math

import numpy as np

from minigrad.study import plan as S
from minigrad.study import uncertainty as U

LEVELS = 6          # rungs of the ladder, the target included
RESOLVED = 0.9      # the easiest rung: still above the first evaluation of this fraction of best-rate trials
CBS_OVERHEAD = 0.2  # Zhang et al.'s critical batch size: E = (1 + 0.2) E_min, which is 0.2 B_crit under the fit


def crossing_step(steps, errors, level):
    """Steps to reach validation error `level` along one trace: linear between the evaluations around the first
    crossing; inf if never reached; the first evaluation's step if that one is already at or below (an upper bound:
    the crossing happened before anything was measured)."""
    errors = np.asarray(errors, float)
    hit = np.flatnonzero(errors <= level)
    if not len(hit):
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    s0, s1, e0, e1 = float(steps[i - 1]), float(steps[i]), errors[i - 1], errors[i]
    return s1 if e0 == e1 else s0 + (s1 - s0) * (e0 - level) / (e0 - e1)


def choose_levels(traces_at_best, target, best_error, n=LEVELS):
    """n error levels from the easiest one the best-rate traces resolve down to `target` (easiest first), evenly
    spaced in log(level - floor), floor just under the best error any trial reached."""
    firsts = [float(t["val_error"][0]) for t in traces_at_best if len(t.get("val_error", ()))]
    if not firsts:
        return [target]
    top = float(np.quantile(firsts, 1 - RESOLVED))
    floor = min(best_error, target) - 1e-3 * max(target, 1e-6)
    if not top > target:
        return [target]
    excess = np.geomspace(top - floor, target - floor, n)
    return [float(f"{floor + x:.4g}") for x in excess[:-1]] + [float(target)]


def along_training(study_file, results, times, target, best):
    """The ladder: one dict per level (easiest first). best: {B: (S(B), lr)} at the target, whose rates pick the
    traces that set the levels and measure B_simple."""
    from minigrad.instruments.noise import b_simple_near_target

    tuned = {r["run_id"]: r for r in results if r["phase"] in S.TUNED}
    if not tuned or target is None:
        return []
    traces = {rid: study_file.runs[rid].trace for rid in tuned}
    at_best = [traces[rid] for rid, r in tuned.items() if best.get(r["batch_size"], (None, None))[1] == r["lr"]]
    best_error = min(r["best_val_error"] for r in tuned.values())
    ladder = []
    for level in choose_levels(at_best, target, best_error):
        cells, unresolved = {}, 0
        for rid, r in sorted(tuned.items()):  # run-id order: the same resamples every time
            t = traces[rid]
            steps = crossing_step(t["step"], t["val_error"], level) if len(t.get("step", ())) else math.inf
            unresolved += len(t.get("step", ())) > 0 and float(t["val_error"][0]) <= level
            cells.setdefault((r["batch_size"], r["lr"]), []).append(steps)
        if level == target:  # the rung of the answer itself: the trials' exact steps (located by their replay)
            cells, unresolved = S.steps_per_cell(results, S.TUNED), 0
        best_here = U.best_steps(cells)
        draws = U.resample(cells, times)
        rows = [dict(batch_size=B, steps=s) for B, (s, _) in sorted(best_here.items())]
        fit = U.fit_with_check(rows, draws)
        j = {B: k for k, B in enumerate(draws["batch_sizes"])}
        per_B = [dict(batch_size=row["batch_size"], steps=row["steps"], lr=best_here[row["batch_size"]][1],
                      misfit=row["misfit"], **{k: v for k, v in zip(("steps_lo", "steps_hi"), _interval(
                          draws["S"][:, j[row["batch_size"]]], row["steps"]))}) for row in rows]
        at_level = [traces[rid] for rid, r in tuned.items() if best_here.get(r["batch_size"], (None, None))[1] == r["lr"]]
        gns = b_simple_near_target(at_level, level)
        k = CBS_OVERHEAD
        ladder.append(dict(
            level=level, is_target=level == target, S_min=fit.get("S_min", math.nan), E_min=fit.get("E_min", math.nan),
            ok=fit["ok"], reason=fit["reason"], determined=fit["determined"], note=fit["B_crit_note"],
            B_crit=fit["B_crit"], B_crit_lo=fit["B_crit_lo"], B_crit_hi=fit["B_crit_hi"],
            cbs=k * fit["B_crit"], cbs_lo=k * fit["B_crit_lo"], cbs_hi=k * fit["B_crit_hi"],
            b_simple=gns.get("b_simple", math.nan), gns_trials=gns.get("trials", 0),
            unresolved=unresolved / max(len(tuned), 1), rows=per_B))
    return ladder


def _interval(draws, point):
    i = U.interval(draws, point)
    return i["lo"], i["hi"]


def trend_sentence(ladder):
    """How B_crit moves from the easiest determined level to the target, in words ('' with fewer than two)."""
    known = [r for r in ladder if r["determined"]]
    if len(known) < 2:
        return ("B_crit is determined at fewer than two error levels: the ladder cannot say how it moves."
                if ladder else "")
    a, b = known[0], known[-1]
    overlap = a["B_crit_hi"] >= b["B_crit_lo"] and b["B_crit_hi"] >= a["B_crit_lo"]
    way = "rises" if b["B_crit"] > a["B_crit"] else "falls"
    return (f"Along training B_crit {way} from {a['B_crit']:,.0f} ({a['B_crit_lo']:,.0f} to {a['B_crit_hi']:,.0f}) at "
            f"validation error {a['level']:g} to {b['B_crit']:,.0f} ({b['B_crit_lo']:,.0f} to {b['B_crit_hi']:,.0f})"
            f" at {b['level']:g}" + (": the intervals overlap, so the move is within noise." if overlap else
                                     f": {b['B_crit'] / a['B_crit']:.1f}x, beyond the intervals' overlap."))
