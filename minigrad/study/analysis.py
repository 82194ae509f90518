"""From a study file to the answer: per batch size the step time, tuned rate, steps and time to target with their
intervals and the fit's misfit; the fit and whether it describes the data; B_crit with its interval or "not
determined"; the tie set with win fractions and one pick with its reason and a recipe. Reads the HDF5 file alone;
the statistics are in minigrad.study.uncertainty, the words in minigrad.study.answer.

Model (McCandlish et al. 2018): S(B) = S_min + E_min / B, a straight line in 1/B, with B_crit = E_min / S_min.
Time to target T(B) = S(B) * t(B), with t(B) the median step time measured alone on this machine, in the compiled
training loop (the steps as the trials take them).
"""
import math
import shlex
from dataclasses import dataclass, field

import numpy as np

from minigrad.machine.settings import STATUSES
from minigrad.study import plan as S
from minigrad.study import uncertainty as U

TIME_GAP = 0.20  # a trial's compute time per step this far from t(B) is pointed out under the table


@dataclass
class Analysis:
    config: dict
    target: float
    target_reason: str
    rows: list              # one dict per batch size
    fit: dict               # S_min, E_min, max_ratio, ok, reason, B_crit, B_crit_lo, B_crit_hi, determined, note
    recommended: dict = None  # the pick's row
    recommendation: dict = field(default_factory=dict)  # batch_size, lr, tied, win_fraction, stable, reason, recipe
    equal: list = field(default_factory=list)
    heat: dict = field(default_factory=dict)
    reference_lr: float = None
    gns: dict = field(default_factory=dict)  # B_simple near the target (minigrad.instruments.noise.b_simple_near_target)
    adaptive: dict = field(default_factory=dict)  # trials, rounds, state
    busy: str = None        # one line when the step times came from a busy machine
    ladder: list = field(default_factory=list)  # the answer at easier error levels (minigrad.study.ladder)
    schedule: dict = field(default_factory=dict)  # the batch-size schedule and its verification (study.schedule)
    trial_cost: dict = field(default_factory=dict)  # the trials' compute at these step times (trial_cost)


def step_times(table):
    """{B: step time per measurement round} from a throughput table (rows or columns): the rounds' medians when
    recorded (rounds_s), else the one median."""
    out = {}
    for row in table_rows(table):
        rounds = row.get("rounds_s")
        if isinstance(rounds, bytes):
            rounds = rounds.decode()
        values = [float(x) for x in rounds.split()] if rounds else [float(row["step_time_s"])]
        out[int(row["batch_size"])] = np.array(values)
    return out


def trial_budget(study_file, B, lr):
    """The largest step budget the study's tuning trials at (B, lr) had (None when not stored): it sets where a run
    evaluates (training.train.eval_gap_floor), so a run given it reaches the target at its trial's step."""
    budgets = [int(r.attrs["budget_steps"]) for r in study_file.runs.values()
               if r.attrs.get("phase") in S.TUNED and int(r.attrs["batch_size"]) == B and float(r.attrs["lr"]) == lr
               and r.attrs.get("budget_steps") is not None]
    return max(budgets, default=None)


def trial_cost(study_file):
    """The study's trials and the step times of its table, for what they cost (answer.study_costs): {"steps": {B:
    steps run by every stored run at B, all phases}, "runs": {B: how many}, "t": {B: t(B), where the table has
    it}}."""
    t = {int(r["batch_size"]): float(r["step_time_s"]) for r in table_rows(study_file.throughput)}
    steps, runs = {}, {}
    for run in study_file.runs.values():
        if run.attrs.get("steps") is not None:
            B = int(run.attrs["batch_size"])
            steps[B] = steps.get(B, 0) + int(run.attrs["steps"])
            runs[B] = runs.get(B, 0) + 1
    return {"steps": steps, "runs": runs, "t": {B: t[B] for B in steps if B in t}}


def table_rows(table):
    if not table:
        return []
    if isinstance(table, dict):  # columns -> rows
        keys = list(table)
        return [dict(zip(keys, values)) for values in zip(*(table[k] for k in keys))]
    return list(table)


def analyse(study_file):
    """Everything the table, the recommendation and the figures need, from a minigrad.store.StudyFile."""
    config = study_file.config
    results = [S.result_row(run_id, run.attrs, run.trace) for run_id, run in study_file.runs.items()]
    if not any(r["phase"] == "tune" for r in results):
        raise ValueError("the study holds no tuning trials yet: run `minigrad bench` on it to finish it")
    attrs = study_file.attrs
    target, reason = attrs.get("target"), attrs.get("target_reason", "")
    if target is None:
        target, reason = S.choose_target(config, results)
    _, reference_lr = S.best_reference(results) if config["target"] is None or any(
        r["phase"] == "reference" for r in results) else (None, None)
    throughput = {int(r["batch_size"]): r for r in table_rows(study_file.throughput)}
    times = step_times(study_file.throughput)
    tuned = [r for r in results if r["phase"] in S.TUNED]
    cells = S.steps_per_cell(results, S.TUNED)
    best = U.best_steps(cells)
    batch_sizes = sorted(best)
    draws = U.resample(cells, times)
    have_times = bool(times) and all(B in times for B in batch_sizes)

    rows = []
    for j, B in enumerate(batch_sizes):
        steps, lr = best[B]
        tp = throughput.get(B, {})
        t = float(tp.get("step_time_s", math.nan))
        trials = [r for r in tuned if r["batch_size"] == B]
        trial_s, eval_s = trial_step_times(study_file, B)
        s_int = U.interval(draws["S"][:, j], steps)
        t_int = U.interval(draws["T"][:, j], steps * t)
        rows.append(dict(
            batch_size=B, step_time_s=t, step_time_iqr_s=float(tp.get("iqr_s", math.nan)), threads=tp.get("threads"),
            busy=int(tp.get("busy", 0) or 0), trial_step_s=trial_s, trial_eval_s=eval_s, samples_per_s=float(tp.get("samples_per_s", math.nan)),
            gflops=float(tp.get("gflops", math.nan)), best_lr=lr, lr_interpolated=U.interpolated_lr(cells, B),
            steps=steps, steps_lo=s_int["lo"], steps_hi=s_int["hi"], steps_note=s_int["note"],
            examples=steps * B, time_s=steps * t, time_lo=t_int["lo"], time_hi=t_int["hi"], time_note=t_int["note"],
            seeds=len(cells.get((B, lr), ())), seed_steps=_finite_range(cells.get((B, lr), ())),
            status=_status_word([r["status"] for r in trials if r["lr"] == lr]),
            counts={s: sum(r["status"] == s for r in trials) for s in STATUSES},
            n_trials=len(trials), n_diverged=sum(r["status"] == "DIVERGED" for r in trials),
            budget_steps=trial_budget(study_file, B, lr)))

    fit = U.fit_with_check(rows, draws)
    analysis = Analysis(config=config, target=target, target_reason=reason, rows=rows, fit=fit,
                        reference_lr=reference_lr)
    shared, point, own = U.toward_fit(draws, cells)
    for r in rows:
        r["own_weight"] = own[r["batch_size"]]
    analysis.recommendation, analysis.recommended = recommend(rows, shared["T"] if have_times else shared["S"], point,
                                                              cells, times if have_times else {}, config, target)
    analysis.equal = equal_budget(study_file)
    analysis.trial_cost = trial_cost(study_file)
    analysis.heat = {"cells": {k: float(np.median(v)) for k, v in cells.items()},
                     "diverged": {(r["batch_size"], r["lr"]) for r in tuned if r["status"] == "DIVERGED"},
                     "censored": {(r["batch_size"], r["lr"]) for r in tuned if r["status"] == "CENSORED"}}
    adapt = [r for r in results if r["phase"] == "adapt"]
    analysis.adaptive = dict(trials=len(adapt), rounds=max((r["round"] for r in adapt), default=0),
                             state=attrs.get("adaptive_state", ""))
    from minigrad.profile.throughput import busy_note

    analysis.busy = busy_note(list(throughput.values()))
    from minigrad.instruments.noise import b_simple_near_target

    analysis.gns = b_simple_near_target([run.trace for run in study_file.runs.values()
                                         if run.attrs.get("phase") == "tune" and best.get(int(run.attrs["batch_size"]),
                                         (None, None))[1] == float(run.attrs["lr"])], target)
    from minigrad.study.ladder import along_training

    analysis.ladder = along_training(study_file, results, times if have_times else {}, target, best)
    analysis.schedule = batch_schedule(study_file, results, analysis, config)
    return analysis


def batch_schedule(study_file, results, a: Analysis, config):
    """The schedule the ladder's curves recommend (minigrad.study.schedule), its recipe, and the verify phase's
    result when the file holds one; {} without a ladder, step times or a pick."""
    from minigrad.study import schedule as SCH

    t = {r["batch_size"]: r["step_time_s"] for r in a.rows if math.isfinite(r["step_time_s"])}
    rec = a.recommendation
    out = SCH.choose(study_file, results, t, a.ladder, (rec["batch_size"], rec["lr"]) if rec else None)
    if not out:
        return {}
    last = next(r for r in a.rows if r["batch_size"] == out["stages"][-1]["batch_size"])
    out["recipe"] = recipe(config, last, a.target, stages=out) if out["saves"] else ""
    out["verification"] = SCH.verification(study_file, t, out)
    out["verify_seeds"] = config.get("verify_seeds")  # None: a study made before the phase existed
    return out



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

def recommend(rows, T, point, cells, times, config, target):
    """(recommendation dict, the pick's row). T: the resamples the choice is made on, each S(B) drawn toward the
    fit (uncertainty.toward_fit), and point: their point S per B. The tie set: the range of neighbouring batch sizes
    around the fastest by `point` that are within uncertainty.NEAR_TIE of the fastest in at least
    uncertainty.TIE_FRACTION of resamples (uncertainty.tie_range); the pick: the member that wins the most
    resamples (fewer steps on an equal count)."""
    timed = [r for r in rows if math.isfinite(r["time_s"] if times else r["steps"])]
    if not timed:
        return {}, None
    Bs = [r["batch_size"] for r in rows]
    by_B = {r["batch_size"]: r for r in rows}
    fastest = min(timed, key=lambda r: ((r["time_s"] if times else r["steps"]), r["batch_size"]))
    wins, near, tied = U.choice(T, Bs)
    tied = U.tie_range(tied, Bs, U.fastest_of(point, times, "T" if times else "S"))
    pick = by_B[U.pick_of(tied, wins, point)]
    stable = U.stability(cells, times, tied)
    for r in rows:
        r["win_fraction"], r["tied"] = wins[r["batch_size"]], r["batch_size"] in tied
    measure = "time-to-target" if times else "steps-to-target (no step times)"
    value = (lambda r: r["time_s"]) if times else (lambda r: r["steps"])
    if len(tied) == 1:
        lead = (f"B = {pick['batch_size']} has the shortest {measure} and wins" if pick is fastest else
                f"B = {pick['batch_size']} wins")
        reason = (f"{lead} {wins[pick['batch_size']]:.0%} of resamples; no other batch size comes within "
                  f"{U.NEAR_TIE:.0%} of the fastest in {U.TIE_FRACTION:.0%} of resamples")
        if pick is not fastest:
            reason += (f" (B = {fastest['batch_size']} has the shortest measured {measure}, by "
                       f"{value(pick) / value(fastest) - 1:.0%}, within noise)")
    else:
        shares = ", ".join(f"{B} wins {wins[B]:.0%}" for B in sorted(tied, key=lambda B: -wins[B]))
        reason = f"B = {_span(tied, Bs)} are tied within noise ({shares} of resamples); pick {pick['batch_size']}, "
        reason += ("which wins most often" if pick is fastest else
                   f"which wins most often, though B = {fastest['batch_size']} has the shortest measured {measure} "
                   f"(by {value(pick) / value(fastest) - 1:.0%}, within noise)")
    reason += shared_reading(rows)
    out = dict(batch_size=pick["batch_size"], lr=pick["best_lr"], lr_interpolated=pick["lr_interpolated"],
               steps=pick["steps"], tied=tied, win_fraction=wins, near_fraction=near, stable_fraction=stable,
               stable=stable >= config.get("stable_fraction", 0.8), reason=reason,
               regret=U.stated_regret(T, Bs, pick["batch_size"], cells, times),
               regret_bootstrap=U.regret(T, Bs, pick["batch_size"]), flat=U.flat_range(T, Bs, pick["batch_size"]),
               measure=measure, recipe=recipe(config, pick, target))
    return out, pick


def shared_reading(rows):
    """The sentence saying how much of each S(B) the choice took from the fit (uncertainty.toward_fit); empty when
    every batch size kept its own value."""
    own = [r["own_weight"] for r in rows if math.isfinite(r["steps"]) and "own_weight" in r]
    if not own or min(own) > 0.95:
        return ""
    lo, hi = 1 - max(own), 1 - min(own)
    if lo > 0.995:
        return ("; the choice reads each S(B) from the fit S = S_min + E_min/B, since the points lie on that curve "
                "within the seeds' noise (the table shows each batch size's own)")
    share = f"{hi:.0%}" if hi - lo < 0.005 else f"{lo:.0%}-{hi:.0%}"
    return (f"; the choice reads each S(B) with its neighbours: {share} of it from the fit S = S_min + E_min/B, the "
            "rest its own, as the points lie off that curve by more than the seeds' noise alone")


def recipe(config, row, target, stages=None):
    """The `minigrad train` line that trains the pick to the target: its measured rate, the step budget its trials
    had (training stops at the target; the budget sets where a run evaluates, so with it seed 0 reaches the target at
    the step its trial did; without it, 1.5x the most steps any seed or resample needed), and the thread count its
    step time t(B) was measured with, when known. stages: a schedule of minigrad.study.schedule instead (its
    --batch-stages, a budget of 1.5x its predicted steps; row: its last stage's)."""
    if stages:
        budget = int(math.ceil(1.5 * stages["steps"]))
        size = ["--batch-stages", stages["text"]]
    else:
        steps_hi = max(x for x in (row["steps"], row["steps_hi"], row["seed_steps"][1]) if math.isfinite(x))
        budget = row.get("budget_steps") or int(math.ceil(1.5 * steps_hi))
        size = ["--batch-size", str(row["batch_size"]), "--lr", f"{row['best_lr']:g}"]
    args = ["minigrad", "train", "--data", str(config["data"]), "--hidden", ",".join(map(str, config["hidden"])),
            "--activation", config["activation"], "--loss", config["loss"], "--optimizer", config["optimizer"]]
    if config["optimizer"] != "sgd":
        args += ["--momentum", f"{config['momentum']:g}"]
    if config["optimizer"] == "adam":  # the beta2 this batch size trained with, as a fixed value
        from minigrad.training.schedules import scaled_beta2

        beta2 = scaled_beta2(config.get("beta2", 0.999), row["batch_size"], config.get("beta2_rule", "fixed"),
                             config.get("beta2_halflife"), config["reference_batch_size"])
        args += ["--beta2", f"{beta2:.12g}"]
    args += ["--sampler", config["sampler"], "--dtype", config["dtype"], *size,
             "--steps", str(budget), "--target", f"{target:g}"]
    if timed_threads(row):  # the thread count t(B) was timed with: the recipe runs at the time the answer promises
        args += ["--threads", str(timed_threads(row))]
    if config.get("data_seed"):
        args += ["--data-seed", str(config["data_seed"])]
    from minigrad.machine.settings import table_item

    options = dict(config.get("data_options") or {})
    if options.get("data_dir") is not None:
        args += ["--data-dir", str(options.pop("data_dir"))]
    if type(options.get("n_val")) is int:  # --n-val takes an integer; 300.0 goes as --data-options n_val=300.0
        args += ["--n-val", str(options.pop("n_val"))]
    written = {k: table_item(k, v) for k, v in options.items()}  # every other one as --data-options KEY=VALUE,...
    if any(written.values()):
        args += ["--data-options", ",".join(item for item in written.values() if item)]
    line = shlex.join(args)
    left = {k: options[k] for k, item in written.items() if item is None}
    if left:  # a value the command line cannot write back exactly (a comma in a text): say so, never drop it
        line += ("  # the study used data options " + ", ".join(f"{k} = {v!r}" for k, v in left.items())
                 + ", which this line cannot write")
    return line


def timed_threads(row):
    """The thread count behind a row's step time, or None when the table does not say (a file without it)."""
    t = row.get("threads")
    try:
        return int(t) if t is not None and math.isfinite(float(t)) and float(t) >= 1 else None
    except (TypeError, ValueError):
        return None


def _finite_range(values):
    """(fewest, most) steps of single seeds that reached the target; (nan, nan) if none did."""
    finite = [v for v in values if math.isfinite(v)]
    return (min(finite), max(finite)) if finite else (math.nan, math.nan)


def _span(tied, Bs):
    """'64-128' when the tie set is a run of neighbouring batch sizes, else '8, 64, 128'."""
    idx = [Bs.index(B) for B in tied]
    if len(tied) > 1 and idx == list(range(idx[0], idx[0] + len(idx))):
        return f"{tied[0]}-{tied[-1]}"
    return ", ".join(map(str, tied))


def _status_word(statuses):
    if not statuses:
        return "-"
    counts = {s: statuses.count(s) for s in STATUSES if statuses.count(s)}
    if len(counts) == 1:
        return next(iter(counts))
    return " ".join(f"{n} {s}" for s, n in counts.items())


def equal_budget(study_file):
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
