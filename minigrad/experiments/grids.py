"""Learning rates tuned per batch size for several arms (an optimizer and its settings), as the newer experiments
share it: a factor-`lr_step` grid of offsets `lr_grid` around each arm's centre rate at each B, several seeds, trials
stopped at a target, and up to `max_widen` rounds that add one rate beyond an edge where the best rate sits on it
(planned from the stored runs, so a rerun on the same file asks for the same trials).

    arms     {name: dict(optimizer=..., centre=callable(B) -> lr, spec=callable(B) -> extra spec keys)}
    cells    {(arm, B): {lr: [steps-to-target per seed, inf = missed or diverged]}}
"""
import math
import statistics

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import run_jobs
from minigrad.experiments.stratified import steps_to
from minigrad.training.spec import TrialSpec


def batch_sizes(config, n_train, least, name):
    """The configured batch sizes that fit the training split, at least `least` of them."""
    Bs = sorted(B for B in config["batch_sizes"] if B <= n_train)
    if len(Bs) < least:
        raise ValueError(f"{name} needs {least} batch sizes up to its {n_train} training examples; lower the batch "
                         "sizes")
    return Bs


def reference_phase(config, writer, executor, out, job_config=None, tag="reference"):
    """(target, reference lr, budget(B) in steps) from SGD at the reference batch size, as the momentum experiment
    sets them: the target is its best validation error + target_margin, a trial's budget budget_factor x the steps
    (or examples / B) the reference took to reach it."""
    from minigrad import store
    from minigrad.experiments.momentum import reference, reference_specs

    run_jobs(job_config or config, reference_specs(config, tag), writer, executor,
             label=f"{tag.replace('-', ' ')} runs")
    target, lr_ref, S_ref, E_ref = reference(config, store.open(out), tag)
    return target, lr_ref, lambda B: math.ceil(config["budget_factor"] * max(S_ref, E_ref / B))


def run_id(arm, B, k, seed, prefix=""):
    return f"{prefix}{arm}-B{B:05d}-k{k:+d}-s{seed}"


def spec(config, arm, settings, B, k, seed, target, steps, prefix=""):
    lr = settings["centre"](B) * config["lr_step"] ** k
    return TrialSpec(run_id=run_id(arm, B, k, seed, prefix), tag=arm, batch_size=B, lr=float(f"{lr:.6g}"),
                lr_factor=config["lr_step"] ** k, seed=seed, steps=int(steps), target=target, stop_at_target=True,
                optimizer=settings["optimizer"], **settings.get("spec", lambda B: {})(B))


def plan(config, arms, batch_sizes, saved, target, budget, prefix=""):
    """Every trial of the grids given the runs stored so far (saved: a StudyFile or None); budget(B) -> steps."""
    offsets = {(arm, B): set(config["lr_grid"]) for arm in arms for B in batch_sizes}
    if saved is not None:
        for (arm, B), ks in offsets.items():
            medians = {}
            for r in saved.runs.values():
                a = r.attrs
                if a.get("tag") == arm and a["batch_size"] == B and r.run_id.startswith(prefix + arm + "-"):
                    k = int(round(math.log(a["lr_factor"]) / math.log(config["lr_step"])))
                    ks.add(k)
                    medians.setdefault(k, []).append(reached(r, target))
            if len(ks) - len(config["lr_grid"]) >= config["max_widen"] or not medians:
                continue
            medians = {k: float(np.median(v)) for k, v in medians.items()}
            best = min(medians, key=lambda k: (medians[k], k))
            diverged_top = all(r.attrs["status"] == "DIVERGED" for r in saved.runs.values()
                               if r.attrs.get("tag") == arm and r.attrs["batch_size"] == B
                               and r.run_id.startswith(f"{prefix}{arm}-B{B:05d}-k{max(ks):+d}-"))
            if not math.isfinite(medians[best]):  # nothing reached: larger rates unless the largest diverged
                ks.add(min(ks) - 1 if diverged_top else max(ks) + 1)
            elif best == max(ks) and not diverged_top:
                ks.add(best + 1)
            elif best == min(ks):
                ks.add(best - 1)
    return [spec(config, arm, arms[arm], B, k, seed, target, budget(B), prefix)
            for (arm, B), ks in offsets.items() for k in sorted(ks) for seed in range(config["seeds"])]


def tune(config, arms, batch_sizes, target, budget, writer, executor, out, job_config=None, prefix=""):
    """Run the grids with their widening rounds; returns the stored file."""
    from minigrad import store

    saved = None
    for round_ in range(config["max_widen"] + 1):
        specs = plan(config, arms, batch_sizes, saved, target, budget, prefix)
        where = f"{prefix.rstrip('-')}: " if prefix else ""
        run_jobs(job_config or config, specs, writer, executor,
                 label=f"{where}{len(specs)} tuning runs" if round_ == 0 else f"{where}widening the grids")
        saved = store.open(out)
    return saved


def reached(run, target):
    return math.inf if run.attrs["status"] == "DIVERGED" else steps_to(run.trace, target)


def cells(saved, target, arms, prefix=""):
    """{(arm, B): {lr: [steps to `target` per seed]}} of the arms' tuning runs (read from the traces, so a looser
    target than the one the runs stopped at is read off the same runs)."""
    out = {}
    for r in sorted(saved.runs.values(), key=lambda r: r.run_id):
        a = r.attrs
        if a.get("tag") in arms and r.run_id.startswith(prefix):
            out.setdefault((a["tag"], a["batch_size"]), {}).setdefault(a["lr"], []).append(reached(r, target))
    return out


def best(cell):
    """(fewest median steps over the rates, its rate); (inf, None) if every rate missed."""
    medians = {lr: float(statistics.median(v)) for lr, v in cell.items()}  # np.median: 10x slower on a few seeds
    lr = min(medians, key=lambda k: (medians[k], k))
    return (medians[lr], lr) if math.isfinite(medians[lr]) else (math.inf, None)


def on_edge(cell):
    _, lr = best(cell)
    return lr is not None and len(cell) > 1 and lr in (min(cell), max(cell))


EDGE = " (no interval: a best rate lies on its grid's edge)"


def tuned_bootstrap(statistic, groups, resamples, seed=0):
    """bootstrap() of a statistic of tuned cells, with no interval (NaN) if a cell's best rate still lies on its
    grid's edge after widening: its S(B) is then a bound, not a measurement. Also returns EDGE or ""."""
    value, lo, hi = bootstrap(statistic, groups, resamples, seed=seed)
    if any(on_edge(g) for g in groups):
        return (value, math.nan, math.nan), EDGE
    return (value, lo, hi), ""


def resampled(cell, rng):
    """The cell with every rate's seeds resampled with replacement."""
    return {lr: [v[i] for i in rng.integers(0, len(v), len(v))] for lr, v in cell.items()}


def bootstrap(statistic, groups, resamples, level=V.LEVEL, seed=0):
    """(value, lo, hi) of statistic(*groups) (each a cell), its percentile interval over resamples of the seeds of
    every cell; NaN when the statistic is not finite in more than a tenth of them."""
    rng = np.random.default_rng([seed, 0x6A1D])
    value = statistic(*groups)
    draws = np.array([statistic(*[resampled(g, rng) for g in groups]) for _ in range(resamples)], float)
    ok = draws[np.isfinite(draws)]
    if len(ok) < 0.9 * resamples:
        return value, math.nan, math.nan
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return value, float(lo), float(hi)
