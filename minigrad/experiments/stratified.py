"""Shuffled against class-stratified batches: steps-to-target and its spread over seeds."""
import math

import numpy as np

from minigrad.experiments.common import finish, run_jobs, stem


def steps_to(trace, target):
    hit = np.flatnonzero(np.asarray(trace["val_error"]) <= target)
    return float(trace["step"][hit[0]]) if len(hit) else math.inf


def run(config, out, writer, executor, echo):
    from scipy import stats

    from minigrad import store

    specs = []
    for B in config["batch_sizes"]:
        for sampler in ("shuffle", "stratified"):
            for seed in range(config["seeds"]):
                specs.append(dict(run_id=f"{sampler}-B{B:05d}-s{seed}", tag=sampler, sampler=sampler, batch_size=B,
                                  lr=config["lr_per_example"] * B, seed=seed, epochs=config["epochs"]))
    run_jobs(config, specs, writer, executor, label=f"{len(specs)} runs")
    saved = store.open(out)
    rng = np.random.default_rng(0)
    summary, verdict = {"batch_sizes": {}}, []
    for B in config["batch_sizes"]:
        runs = {tag: [r for r in saved.runs.values() if r.attrs["batch_size"] == B and r.attrs["sampler"] == tag]
                for tag in ("shuffle", "stratified")}
        # a target every run reaches: the worst run's best validation error, plus a margin; and a looser one
        strict = round(max(r.attrs["best_val_error"] for rs in runs.values() for r in rs) + config["target_margin"], 4)
        per_b = {}
        for name, target in (("strict", strict), ("loose", round(strict + config["loose_margin"], 4))):
            steps = {tag: np.array([steps_to(r.trace, target) for r in rs]) for tag, rs in runs.items()}
            a, b = steps["shuffle"], steps["stratified"]
            p_median = float(stats.mannwhitneyu(a, b).pvalue) if len(a) > 1 else math.nan
            p_spread = float(stats.levene(a, b, center="median").pvalue) if len(a) > 2 else math.nan
            boot = [np.median(rng.choice(b, len(b))) / np.median(rng.choice(a, len(a))) for _ in range(2000)]
            lo, hi = np.percentile(boot, [5, 95])
            per_b[name] = dict(target=target, shuffle=a.tolist(), stratified=b.tolist(),
                               median_shuffle=float(np.median(a)), median_stratified=float(np.median(b)),
                               cv_shuffle=float(a.std(ddof=1) / a.mean()) if len(a) > 1 else math.nan,
                               cv_stratified=float(b.std(ddof=1) / b.mean()) if len(b) > 1 else math.nan,
                               ratio=float(np.median(b) / np.median(a)), ratio_lo=float(lo), ratio_hi=float(hi),
                               p_median=p_median, p_spread=p_spread)
            s = per_b[name]
            verdict.append(
                f"B={B}, val error <= {target:g}: steps median {s['median_shuffle']:.0f} shuffled vs "
                f"{s['median_stratified']:.0f} stratified (ratio {s['ratio']:.2f}, 90% CI {lo:.2f}-{hi:.2f}, "
                f"Mann-Whitney p={p_median:.2f}); spread over {len(a)} seeds (std/mean) {s['cv_shuffle']:.3f} vs "
                f"{s['cv_stratified']:.3f} (Levene p={p_spread:.2f}).")
        summary["batch_sizes"][str(B)] = per_b
    # Bonferroni over every test made (median and spread, each batch size and target)
    tests = [(B, c, kind, c[f"p_{kind}"]) for B, per_b in summary["batch_sizes"].items() for c in per_b.values()
             for kind in ("median", "spread") if math.isfinite(c[f"p_{kind}"])]
    alpha = 0.05 / max(1, len(tests))
    differs = [f"the {kind} at B={B}, target {c['target']:g} (p={p:.3f})" for B, c, kind, p in tests if p < alpha]
    nominal = [f"B={B} target {c['target']:g} {kind} p={p:.2f}" for B, c, kind, p in tests if alpha <= p < 0.05]
    summary["alpha"], summary["tests"] = alpha, len(tests)
    verdict.append(
        (f"equal class composition changes {', '.join(differs)}" if differs else
         "equal class composition changes neither steps-to-target nor its spread detectably") +
        f" (Bonferroni: p < {alpha:.3g} over {len(tests)} tests" +
        (f"; nominally p < 0.05 but not after correction: {', '.join(nominal)})." if nominal else ")."))
    from minigrad.experiments.figures import stratified_figure

    figures = [stratified_figure(summary, *stem(out))]
    return finish("stratified", out, summary, verdict, figures, writer)
