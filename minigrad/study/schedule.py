"""A batch-size schedule from the ladder's measured curves, and the trials that check it.

The choice. The ladder's levels L_1 > L_2 > ... > L_K (L_K the study's target) cut training into K rungs; a
schedule is a few stages, each at one batch size B and one rate over a run of neighbouring rungs, B rising from stage
to stage. Every tuning trial crossed the easier levels on its way, at steps c_1 < c_2 < ... (ladder.crossing_step,
interpolated between evaluations). A stage at B spanning the rungs from L_a to L_b (it begins when the error first
reaches L_(a-1), or at the start) takes B's best rate at its last level L_b (the ladder's S(B) there), and its steps
are read off the traces at that one (B, lr), seed by seed, as the difference of two crossings:

    steps(B; a..b) = median over seeds of (c_b - c_(a-1))      examples = B * steps

So a stage's steps and its examples come from one trajectory at one (B, lr): never a difference of two medians
taken at different rates, nor steps at one B set against steps at another. The assumption that lets stages add up
is the one behind every critical-batch-size measurement: how far training has got is told by the validation error,
so a run that reached L_(a-1) at a smaller B continues from there as a run at this B that reached it would. The
predicted time of a schedule is

    T = sum over stages of steps(B; a..b) * t(B)      (t: the step time measured alone, as T(B) = S(B) t(B))

minimised by dynamic programming over the rungs and rising B (the batch grows as the error falls; a schedule that
shrank B would be fitting noise). One stage over all rungs is the fixed B at its tuned rate; the yardstick is the
study's pick, predicted the same way (the median of c_K at its rate), so a schedule and a fixed B are compared
under one model, and a predicted saving below MIN_SAVING is reported as none.

The check (the verify phase, `verify_seeds` seeds each; 0 turns it off): the schedule trained with fresh seeds, next
to the pick at its tuned rate with the same fresh seeds (the tuning seeds chose the schedule; new seeds do not
flatter it). Each arm's time to target is its steps per stage priced at t(B); the ratio of the arms' median times
has a bootstrap interval over seeds (each arm resampled on its own) and a three-way verdict.
"""
import math
import zlib

import numpy as np

from minigrad.study import plan as S
from minigrad.study.ladder import crossing_step

MIN_SAVING = 0.05     # a predicted saving below 5% of the fixed B's time is no reason to schedule
EQUIVALENT = 1.05     # a measured ratio within [1/1.05, 1.05] is no effect worth having
VERIFY_BUDGET = 2.5   # a verify trial may take this many times its predicted steps
VERIFY_SEED = 1000    # the verify phase's seeds start here: none of them tuned anything
RESAMPLES = 2000
LEVEL = 0.90
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "NOT reproduced", "inconclusive"


def crossings(study_file, results, levels):
    """{(B, lr): array (seeds, K) of the steps at which each tuning trial first reached each level (inf: never)}."""
    cells = {}
    for r in sorted(results, key=lambda r: r["run_id"]):  # run-id order: the same medians every time
        if r["phase"] not in S.TUNED:
            continue
        t = study_file.runs[r["run_id"]].trace
        if len(t.get("step", ())):
            cells.setdefault((r["batch_size"], r["lr"]), []).append(
                [crossing_step(t["step"], t["val_error"], level) for level in levels])
    return {key: np.array(v, float) for key, v in cells.items()}


def _median(values):
    return float(np.median(values)) if len(values) else math.inf


def block_steps(c, a, b):
    """Median over seeds of the steps from level a - 1 to level b (0-based; a = 0: from the start) along the same
    traces c (seeds, K): the steps a stage spanning levels a..b spends at that (B, lr)."""
    before = c[:, a - 1] if a else np.zeros(len(c))
    spent = c[:, b] - before
    return _median(np.where(np.isfinite(c[:, b]), spent, math.inf))


def choose(study_file, results, times, ladder, pick):
    """The schedule with the smallest predicted time to the target, and the pick's prediction beside it.
    times: {B: t(B)}; ladder: minigrad.study.ladder.along_training's levels (each with its best rate per B); pick:
    (B, lr) of the study's answer. {} when there is nothing to choose from (one level, no step times, no pick)."""
    levels = [r["level"] for r in ladder]
    if len(levels) < 2 or not times or pick is None or pick[0] not in times:
        return {}
    cells = crossings(study_file, results, levels)
    # the rate of a stage at B that ends at level b: B's best rate at that level (the ladder's S(B) there)
    rates = [{row["batch_size"]: row["lr"] for row in r["rows"] if row["lr"] is not None} for r in ladder]
    Bs = sorted(B for B in times if any(B in rk for rk in rates))
    K = len(levels)

    def cost(B, a, b):  # (predicted time, steps, rate) of one stage at B over levels a..b
        lr = rates[b].get(B)
        if lr is None or (B, lr) not in cells:
            return math.inf, math.inf, None
        steps = block_steps(cells[(B, lr)], a, b)
        return steps * float(times[B]), steps, lr

    plan = _cheapest_rising(Bs, K, cost)
    if plan is None:
        return {}
    stages = []
    for B, a, b in plan:
        time, steps, lr = cost(B, a, b)
        stages.append(dict(batch_size=B, lr=lr, from_level=levels[a - 1] if a else None, to_level=levels[b],
                           steps=steps, examples=steps * B, step_time_s=float(times[B]), time_s=time))
    B0, lr0 = pick
    fixed_steps = _median(cells[(B0, lr0)][:, -1]) if (B0, lr0) in cells else math.inf
    fixed = dict(batch_size=B0, lr=lr0, steps=fixed_steps, examples=fixed_steps * B0,
                 time_s=fixed_steps * float(times[B0]))
    total = sum(s["time_s"] for s in stages)
    ratio = total / fixed["time_s"] if 0 < fixed["time_s"] < math.inf else math.nan
    return dict(levels=levels, stages=stages, steps=sum(s["steps"] for s in stages),
                examples=sum(s["examples"] for s in stages), time_s=total, fixed=fixed, predicted_ratio=ratio,
                saves=bool(len(stages) > 1 and math.isfinite(ratio) and ratio < 1 - MIN_SAVING),
                text=stages_text(stages))


def _cheapest_rising(Bs, K, cost):
    """[(B, first level, last level), ...] covering levels 0..K-1 with rising B, of the least summed cost(B, a, b)[0]
    (dynamic programming over (last level, B of the last stage)); None if no plan reaches the target."""
    best = {}  # (b, B) -> (time, previous key, a)
    for b in range(K):
        for B in Bs:
            for a in range(b + 1):
                here = cost(B, a, b)[0]
                if not math.isfinite(here):
                    continue
                if a == 0:
                    candidates = [(here, None)]
                else:
                    candidates = [(best[(a - 1, B1)][0] + here, (a - 1, B1)) for B1 in Bs
                                  if B1 < B and (a - 1, B1) in best]
                for total, previous in candidates:
                    if total < best.get((b, B), (math.inf,))[0]:
                        best[(b, B)] = (total, previous, a)
    ends = [(v[0], B) for (b, B), v in best.items() if b == K - 1]
    if not ends:
        return None
    key, plan = (K - 1, min(ends)[1]), []
    while key is not None:
        total, previous, a = best[key]
        plan.append((key[1], a, key[0]))
        key = previous
    return plan[::-1]


def stages_text(stages):
    """The stages as `minigrad train --batch-stages` takes them (minigrad.training.schedules.parse_stages)."""
    return ",".join(f"{s['batch_size']}:{s['lr']:g}" + (f"@err={s['from_level']:g}" if s["from_level"] is not None
                                                         else "") for s in stages)


# ------------------------------------------------------------------------------------------------ verification
def verify_trials(config, schedule, reference, target):
    """The verify phase's trials: the schedule and the pick, `verify_seeds` fresh seeds each, a step budget of
    VERIFY_BUDGET times the prediction (at least the tuning budget for the pick). [] when off or nothing saves."""
    n = config.get("verify_seeds", 0)
    if not n or not schedule or not schedule.get("saves"):
        return []
    fixed, first = schedule["fixed"], schedule["stages"][0]
    fixed_budget = max(S.tune_budget(config, reference, fixed["batch_size"]),
                       int(math.ceil(VERIFY_BUDGET * fixed["steps"])))
    sched_budget = int(math.ceil(VERIFY_BUDGET * schedule["steps"]))
    out = []
    for seed in range(VERIFY_SEED, VERIFY_SEED + n):
        out.append(S.trial("verify", fixed["batch_size"], fixed["lr"], seed, target, steps=fixed_budget,
                           tag="-fixed"))
        spec = S.trial("verify", first["batch_size"], first["lr"], seed, target, steps=sched_budget,
                       tag=schedule_tag(schedule["text"]))
        out.append(spec.replace(batch_schedule=dict(stages=schedule["text"])))
    return out


def schedule_tag(text):
    """The end of a verify run id of the schedule `text`: another schedule (a study re-analysed by newer code) gets
    other ids, so a resume never takes one schedule's runs for another's."""
    return f"-schedule-{zlib.crc32(text.encode()):08x}"


def arm_costs(run, times):
    """(steps to target, time to target priced at t(B) per stage) of one verify run; inf when it missed."""
    a = run.attrs
    reached = a.get("steps_to_target")
    if a.get("status") != "COMPLETE" or reached is None:
        return math.inf, math.inf
    reached = float(reached)
    if not a.get("batch_stages"):
        return reached, reached * float(times[int(a["batch_size"])])
    from minigrad.training.schedules import parse_stages

    stages = parse_stages(a["batch_stages"])
    starts = [s if s is not None else math.inf for s in a["stage_starts"]] + [math.inf]
    time = 0.0
    for k, stage in enumerate(stages):
        begin, end = min(starts[k], reached), min(starts[k + 1], reached)
        if end > begin:
            if stage.batch_size not in times:
                return reached, math.nan
            time += (end - begin) * float(times[stage.batch_size])
    return reached, time


def verification(study_file, times, schedule):
    """The verify phase's result from the file: per arm the seeds' steps and times, medians and intervals, the
    ratio schedule / fixed of the median times (and of steps) with bootstrap intervals, the verdict, and which to
    use. {} when the file holds no verify runs."""
    runs = {rid: r for rid, r in sorted(study_file.runs.items()) if r.attrs.get("phase") == "verify"}
    trained = {r.attrs.get("batch_stages") for rid, r in runs.items() if "-schedule" in rid}
    # the schedule the file verified: today's choice if it holds runs of it, else the one it holds (older code)
    text = schedule["text"] if schedule["text"] in trained else min(trained, default="")
    arms = {"schedule": [arm_costs(r, times) for rid, r in runs.items() if "-schedule" in rid
                         and r.attrs.get("batch_stages") == text],
            "fixed": [arm_costs(r, times) for rid, r in runs.items() if rid.endswith("-fixed")]}
    if not (arms["schedule"] and arms["fixed"]):
        return {}
    sched, fixed = (np.array(arms[k], float).reshape(-1, 2) for k in ("schedule", "fixed"))
    out = dict(seeds=min(len(sched), len(fixed)), text=text, same=text == schedule["text"])
    for j, what in enumerate(("steps", "time")):
        for name, arm in (("schedule", sched), ("fixed", fixed)):
            out[f"{name}_{what}"] = _median(arm[:, j])
            out[f"{name}_{what}_lo"], out[f"{name}_{what}_hi"] = _bootstrap([arm[:, j]], _medians)
            out[f"{name}_{what}_seeds"] = [float(x) for x in arm[:, j]]
        out[f"{what}_ratio"] = _ratio(sched[:, j], fixed[:, j])
        out[f"{what}_ratio_lo"], out[f"{what}_ratio_hi"] = _bootstrap([sched[:, j], fixed[:, j]], _ratios)
    out["outcome"] = three_way(out["time_ratio_lo"], out["time_ratio_hi"])
    out["use"] = "schedule" if out["outcome"] == REPRODUCED else "fixed"
    return out


def _ratio(a, b):
    return _median(a) / _median(b) if math.isfinite(_median(b)) and _median(b) > 0 else math.nan


def _medians(rows):
    return np.median(rows, axis=1)


def _ratios(a, b):
    """_ratio of each row of a and b (resamples, seeds)."""
    top, bottom = _medians(a), _medians(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(bottom) & (bottom > 0), top / bottom, math.nan)


def _bootstrap(groups, statistic, seed=0):
    """Percentile interval of statistic(*groups), each group resampled over its seeds on its own (statistic takes
    one (resamples, seeds) array per group and gives one value per resample); (nan, nan) when
    the statistic is not finite in more than a tenth of the resamples (a seed that missed the target) or a group
    has one seed (nothing to resample)."""
    if any(len(g) < 2 for g in groups):
        return math.nan, math.nan
    rng = np.random.default_rng([seed, 0x5C4ED])
    draws = [[g[rng.integers(0, len(g), len(g))] for g in groups] for _ in range(RESAMPLES)]
    values = statistic(*[np.array([d[k] for d in draws]) for k in range(len(groups))])
    ok = values[np.isfinite(values)]
    if len(ok) < 0.9 * RESAMPLES:
        return math.nan, math.nan
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return float(lo), float(hi)


def three_way(lo, hi, margin=EQUIVALENT):
    """"The schedule saves time" from the interval of time ratio schedule / fixed (the rule of the experiments'
    verdicts, minigrad.experiments.verdict.below with an equivalence margin): reproduced when the interval lies
    below 1, not reproduced when it lies above 1 or within [1/margin, margin], inconclusive otherwise."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if 1 / margin <= lo and hi <= margin:
        return NOT_REPRODUCED
    return REPRODUCED if hi < 1 else NOT_REPRODUCED if lo > 1 else INCONCLUSIVE
