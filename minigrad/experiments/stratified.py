"""Shuffled against class-stratified batches: steps-to-target and its spread over seeds.

The claim (why people stratify): batches that hold the classes in their proportions have a lower gradient variance,
so they reach a target in fewer steps, or with less seed-to-seed spread, mainly at small B. Per batch size, at a
target every run reaches (the worst run's best validation error plus `target_margin`), two statistics, each with a
bootstrap interval over seeds (each sampler's seeds resampled on their own):

    steps   median steps-to-target, stratified / shuffled
    spread  std/mean of steps-to-target over seeds, stratified / shuffled

Each is reproduced if its interval lies below 1; NOT reproduced if it lies above 1, or entirely within
[1/margin, margin] (no effect worth having); inconclusive otherwise. The k = 2 x (batch sizes) intervals are
simultaneous: each at level 1 - 0.10/k (Bonferroni), so all cover together with 90% probability. The claim is
reproduced if any statistic is, NOT reproduced if every one is not.
"""
import math

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, run_jobs, stem
from minigrad.training.spec import TrialSpec

STATISTICS = {  # name -> (what it is, the function of one sampler's steps-to-target over seeds)
    "steps": ("median steps-to-target, stratified / shuffled", np.median),
    "spread": ("std/mean of steps-to-target, stratified / shuffled", lambda s: np.std(s, ddof=1) / np.mean(s)),
}


def steps_to(trace, target):
    hit = np.flatnonzero(np.asarray(trace["val_error"]) <= target)
    return float(trace["step"][hit[0]]) if len(hit) else math.inf


def ratio(shuffled, stratified, of):
    """of(stratified) / of(shuffled): NaN where it is undefined (0/0, a resample of one seed repeated)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(of(stratified)) / np.float64(of(shuffled)))


def judge(B, shuffled, stratified, config, k, seed=0):
    """The two verdicts at one batch size from its steps-to-target per seed (arrays), k intervals in all."""
    level = V.simultaneous_level(k)
    noise = f"{100 * level:.4g}% bootstrap over seeds: simultaneous 90% over {k} intervals (Bonferroni)"
    margin = config["margin"]
    tests = {}
    for i, (name, (what, of)) in enumerate(STATISTICS.items()):
        lo, hi = V.bootstrap([shuffled, stratified], lambda a, b, of=of: ratio(a, b, of),
                             resamples=config["resamples"], level=level, seed=seed * len(STATISTICS) + i)
        claim = f"stratified batches: {'fewer steps' if name == 'steps' else 'less spread'} to the target (B={B})"
        tests[name] = V.below(claim, what, ratio(shuffled, stratified, of), lo, hi, 1.0, noise,
                              min(len(shuffled), len(stratified)), equivalent=(1 / margin, margin))
    return tests


def run(config, out, writer, executor, echo):
    from minigrad import store

    specs = []
    for B in config["batch_sizes"]:
        for sampler in ("shuffle", "stratified"):
            for seed in range(config["seeds"]):
                specs.append(TrialSpec(run_id=f"{sampler}-B{B:05d}-s{seed}", tag=sampler, sampler=sampler, batch_size=B,
                                  lr=config["lr_per_example"] * B, seed=seed, epochs=config["epochs"]))
    run_jobs(config, specs, writer, executor, label=f"{len(specs)} runs")
    saved = store.open(out)
    k = len(STATISTICS) * len(config["batch_sizes"])
    summary, verdict, tests = {"batch_sizes": {}, "intervals": k, "level": V.simultaneous_level(k)}, [], []
    for i, B in enumerate(config["batch_sizes"]):
        runs = {tag: [r for r in saved.runs.values() if r.attrs["batch_size"] == B and r.attrs["sampler"] == tag]
                for tag in ("shuffle", "stratified")}
        # a target every run reaches: the worst run's best validation error, plus a margin
        target = round(max(r.attrs["best_val_error"] for rs in runs.values() for r in rs) + config["target_margin"], 4)
        a, b = (np.array([steps_to(r.trace, target) for r in sorted(runs[tag], key=lambda r: r.attrs["seed"])])
                for tag in ("shuffle", "stratified"))
        judged = judge(B, a, b, config, k, seed=i)
        tests += judged.values()
        summary["batch_sizes"][str(B)] = dict(
            target=target, shuffle=a.tolist(), stratified=b.tolist(),
            median_shuffle=float(np.median(a)), median_stratified=float(np.median(b)),
            cv_shuffle=float(a.std(ddof=1) / a.mean()) if len(a) > 1 else math.nan,
            cv_stratified=float(b.std(ddof=1) / b.mean()) if len(b) > 1 else math.nan,
            **{f"{name}_{key}": getattr(v, attr) for name, v in judged.items()
               for key, attr in (("ratio", "value"), ("lo", "lo"), ("hi", "hi"), ("outcome", "outcome"))})
        s = summary["batch_sizes"][str(B)]
        verdict.append(f"B={B}, val error <= {target:g} (every run reaches it): steps median {s['median_shuffle']:.0f} "
                       f"shuffled vs {s['median_stratified']:.0f} stratified; std/mean over {len(a)} seeds "
                       f"{s['cv_shuffle']:.3f} vs {s['cv_stratified']:.3f}.")
        verdict += [v.line() for v in judged.values()]
    summary["tests"] = [v.as_dict() for v in tests]
    summary["outcome"] = V.any_of(tests)
    verdict.append(f"class-stratified batches reach the target in fewer steps or with less spread: "
                   f"{summary['outcome']} (reproduced if any of the {k} simultaneous intervals lies below 1, "
                   f"not if every one lies above 1 or within [{1 / config['margin']:.3g}, {config['margin']:g}]).")
    from minigrad.experiments.figures import stratified_figure

    figures = [stratified_figure(summary, config, *stem(out))]
    return finish("stratified", out, summary, verdict, figures, writer)
