"""The critical batch size grows with the data, not with the model (Zhang et al. 2024, "How does critical batch size
scale in pre-training?"): at a fixed training set B_crit barely moves as the model widens; it grows with the
training set.

Variants, each a small batch-size study of its own: hidden = [w, w] for every width in `widths` on the whole
training split, and the first n x fraction training examples (data_fractions) at `width`. In each, a reference
(SGD at B_ref, as the momentum experiment) sets the variant's own target (its best validation error + margin) and
step budgets; plain SGD is tuned per B on a factor-`lr_step` grid with widening (grids.py), stopping at that
target. S(B) is the fewest median steps over the rates; B_crit = E_min / S_min from the fit S = S_min + E_min / B
(minigrad.study.uncertainty), with the study's bootstrap over the seeds of every cell (the best rate re-chosen per
resample). The verdicts compare B_crit at one target per sweep, the loosest of its variants' own (so only the width,
or only the data, differs; every variant's runs reach it); B_crit at each variant's own target is printed beside.

Verdicts (verdict.py), on ratios whose 90% intervals come from independent bootstraps of the two variants:
    width   B_crit(widest) / B_crit(narrowest): reproduced if the interval lies within [1/move_margin, move_margin]
            (moves less than 1.5x), not if it lies outside
    data    B_crit(most data) / B_crit(least data): reproduced if the interval lies above 1, not if below
"""
import math

import numpy as np

from minigrad.experiments import grids as G
from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, stem
from minigrad.experiments.momentum import centre_lr
from minigrad.study import uncertainty as U
from minigrad.training.trial import load_data


def variants(config, n_train):
    """{name: (width, training examples)}: the width sweep on the whole split, then the data sweep at `width`."""
    out = {f"w{w}-n{n_train}": (w, n_train) for w in config["widths"]}
    for f in config["data_fractions"]:
        n = max(1, int(round(f * n_train)))
        out[f"w{config['width']}-n{n}"] = (config["width"], n)
    return out


def critical(cell_map, resamples, seed):
    """(B_crit, its resampled draws, the fit's (S_min, E_min)) from {B: {lr: [steps]}}."""
    cells = {(B, lr): v for B, c in cell_map.items() for lr, v in c.items()}
    best = U.best_steps(cells)
    Bs = sorted(best)
    fit = U.fit_steps(Bs, [best[B][0] for B in Bs])
    value = fit[1] / fit[0] if fit and fit[0] > 0 and fit[1] > 0 else math.nan
    draws = U.resample(cells, {}, reps=resamples, seed=seed)
    s_min, e_min = U.fit_resamples(draws["batch_sizes"], draws["S"])
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where((s_min > 0) & (e_min > 0), e_min / s_min, np.nan)
    return value, b, fit


def ratio(a, b, draws_a, draws_b):
    """(a / b, lo, hi) with the 90% interval of the ratio of independent draws (NaN if a tenth are undefined)."""
    r = draws_a / draws_b
    ok = r[np.isfinite(r)]
    if len(ok) < 0.9 * len(r) or not (math.isfinite(a) and math.isfinite(b)):
        return a / b if b else math.nan, math.nan, math.nan
    lo, hi = np.percentile(ok, [5, 95])
    return a / b, float(lo), float(hi)


def judge(config, by_width, by_data, widths, sizes):
    """by_width, by_data: {name: (B_crit, draws)} at each sweep's target; widths and sizes: the variant names of
    each sweep, in increasing order."""
    noise, n, m = "90% bootstrap over seeds of both variants", config["seeds"], config["move_margin"]
    (wa, da), (wb, db) = by_width[widths[-1]], by_width[widths[0]]
    width = V.within(f"B_crit moves less than {m:g}x with width ({widths[0]} to {widths[-1]})",
                     "B_crit(widest) / B_crit(narrowest)", *ratio(wa, wb, da, db), 1 / m, m, noise, n)
    (na, ndraws), (nb, nbdraws) = by_data[sizes[-1]], by_data[sizes[0]]
    data = V.above(f"B_crit grows with the training set ({sizes[0]} to {sizes[-1]})",
                   "B_crit(most data) / B_crit(least data)", *ratio(na, nb, ndraws, nbdraws), 1.0, noise, n)
    return dict(width=width, data=data)


def check(config):
    """Every variant has three batch sizes that fit its training examples."""
    n_train = len(load_data(config).y_train)
    for name, (_, n) in variants(config, n_train).items():
        G.batch_sizes(config, n, 3, name)


def run(config, out, writer, executor, echo):
    from minigrad import store

    n_train = len(load_data(config).y_train)
    named = variants(config, n_train)
    own, summary, verdict = {}, dict(variants={}, sweeps={}), []
    for name, (w, n) in named.items():  # each variant tuned at its own target (its best error + margin)
        job = dict(config, hidden=[w, w], train_subset=None if n == n_train else n)
        Bs = G.batch_sizes(config, n, 3, name)
        target, lr_ref, budget = G.reference_phase(config, writer, executor, out, job, tag=f"{name}-reference")
        arms = {"sgd": dict(optimizer="sgd", centre=lambda B, lr_ref=lr_ref: centre_lr(lr_ref, B,
                                                                                       config["reference_batch"]))}
        G.tune(config, arms, Bs, target, budget, writer, executor, out, job_config=job, prefix=f"{name}-")
        own[name] = (target, lr_ref, arms)
    saved = store.open(out)
    widths = [f"w{w}-n{n_train}" for w in sorted(config["widths"])]
    sizes = sorted({name for name, (w, n) in named.items() if w == config["width"]}, key=lambda k: named[k][1])
    crit = {}
    for sweep, names in (("width", widths), ("data", sizes)):
        # one target for the whole sweep, the loosest of its variants' own, so that only the width (or the data)
        # differs; every variant's trials ran to its own target, so they all reach it and are read off their traces
        common = max(own[k][0] for k in names)
        summary["sweeps"][sweep] = dict(target=common, variants=names)
        for i, name in enumerate(names):
            w, n = named[name]
            row = {}
            for which, target in (("own", own[name][0]), ("common", common)):
                cells = {B: c for (_, B), c in G.cells(saved, target, own[name][2], prefix=f"{name}-").items()}
                value, draws, fit = critical(cells, config["resamples"], seed=i)
                iv = U.interval(draws, value)
                row[which] = dict(target=target, B_crit=value, B_crit_lo=iv["lo"], B_crit_hi=iv["hi"],
                                  S_min=fit[0] if fit else None, E_min=fit[1] if fit else None,
                                  steps={str(B): G.best(c)[0] for B, c in cells.items()},
                                  edge=[B for B, c in cells.items() if G.on_edge(c)])
                if which == "common":
                    crit[sweep, name] = (value, draws)
            variant = summary["variants"].setdefault(name, dict(width=w, n_train=n, reference_lr=own[name][1]))
            variant[f"{sweep}_sweep"] = row
            c, o = row["common"], row["own"]
            verdict.append(f"{sweep} sweep, {name} (hidden [{w}, {w}], {n} training examples): at val error <= "
                           f"{common:g} B_crit = {c['B_crit']:.0f} [{c['B_crit_lo']:.0f}, {c['B_crit_hi']:.0f}], "
                           "S(B) " + ", ".join(f"{B}: {v:,.0f}" for B, v in c["steps"].items())
                           + f"; at its own target {o['target']:g}: B_crit = {o['B_crit']:.0f} "
                             f"[{o['B_crit_lo']:.0f}, {o['B_crit_hi']:.0f}].")
    tests = judge(config, {k[1]: v for k, v in crit.items() if k[0] == "width"},
                  {k[1]: v for k, v in crit.items() if k[0] == "data"}, widths, sizes)
    verdict += [v.line() for v in tests.values()]
    summary.update(tests=[v.as_dict() for v in tests.values()], outcome={k: v.outcome for k, v in tests.items()})
    verdict.append(f"B_crit moves less than {config['move_margin']:g}x with width: {tests['width'].outcome}; "
                   f"it grows with the data: {tests['data'].outcome}.")
    from minigrad.experiments.figures import panels_figure

    v = summary["variants"]

    def series(names, sweep, key):
        return [(f"B_crit at {'the sweep' if which == 'common' else 'each'}'s target (90% bootstrap)",
                 [v[k][key] for k in names], *([v[k][f"{sweep}_sweep"][which][f] for k in names]
                                               for f in ("B_crit", "B_crit_lo", "B_crit_hi")))
                for which in ("common", "own")]

    figures = [panels_figure([
        dict(title=f"B_crit against width ({n_train} examples)", xlabel="hidden width", ylabel="B_crit",
             series=series(widths, "width", "width")),
        dict(title=f"B_crit against training examples (width {config['width']})", xlabel="training examples",
             ylabel="B_crit", series=series(sizes, "data", "n_train"))], *stem(out), "data_vs_width")]
    return finish("data-vs-width", out, summary, verdict, figures, writer)
