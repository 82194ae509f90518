"""Adam from small to large batches with beta2 fixed against beta2 by its half-life in samples, and plain SGD
(Marek et al. 2025, "Small Batch Size Training for Language Models"; the square-root rule of Malladi et al. 2022).

Arms, each with its learning rate tuned per B on a factor-`lr_step` grid (grids.py), stopping at a target:

    adam-fixed     beta2 = `beta2` at every B
    adam-halflife  beta2(B) = 0.5^(B / t_half), t_half the half-life `beta2` has at `halflife_batch` (0.999 at 128:
                   about 88,700 samples); the grid centred by the square-root rule, adam_lr x sqrt(B / B_ref)
    sgd            no momentum, centred linearly below B_ref and by the square root above (the study's rule)

A reference phase (SGD at B_ref, as the momentum experiment) sets the target (its best validation error plus a
margin) and the step budgets. Statistics, with 90% intervals from a bootstrap over the seeds of every cell (the best
rate re-chosen in each resample): S(B) and E(B) = B S(B) per arm; the divergence count per arm and B; the basin
width, the ratio of the largest to the smallest rate whose steps are within `basin_tolerance` (10%) of the best,
read off a parabola in log lr through the best grid rate and its neighbours (NaN where the neighbours missed).

Verdicts (verdict.py), at the smallest B against the others:

    stable      the halflife rule's diverged fraction at the smallest B over every rate of its grid (the fixed
                arm's is printed beside it): reproduced if the Clopper-Pearson 90% interval lies below 1/3, not if
                above (so 0 of at least 8 trials is needed to reproduce it)
    efficient   E_halflife(B_min) / the fewest examples at any larger B: reproduced if the interval lies below
                `same_margin` (at least as sample-efficient, up to the margin), not if above
    basin       basin width at B_min / at B_max (halflife rule): reproduced if above 1, not if below
    gap         (S_sgd / S_halflife at B_min) / (the same at B_max): reproduced if below 1, not if above

efficient and gap are inconclusive (no interval) when a best rate they rest on still lies on its grid's edge after
widening (its S(B) is a bound); the basin is undefined there.
"""
import math

import numpy as np

from minigrad.experiments import grids as G
from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, stem
from minigrad.experiments.momentum import centre_lr
from minigrad.training.schedules import beta2_halflife, scaled_beta2
from minigrad.training.trial import load_data

ARMS = ("adam-fixed", "adam-halflife", "sgd")


def arms(config, lr_ref):
    B_ref, t_half = config["reference_batch"], beta2_halflife(config["beta2"], config["halflife_batch"])

    def adam(rule):
        return dict(optimizer="adam", centre=lambda B: config["adam_lr"] * math.sqrt(B / B_ref),
                    spec=lambda B: dict(beta2=scaled_beta2(config["beta2"], B, rule, t_half), beta2_rule=rule))

    return {"adam-fixed": adam("fixed"), "adam-halflife": adam("halflife"),
            "sgd": dict(optimizer="sgd", centre=lambda B: centre_lr(lr_ref, B, B_ref), spec=lambda B: {})}


def basin(cell, tolerance):
    """Ratio of the largest to the smallest rate within `tolerance` of the best steps, from the parabola in
    (log lr, log steps) through the best grid rate and its neighbours; NaN at an edge, next to a missed rate, or
    where the points do not curve upwards."""
    rates = sorted(cell)
    medians = [float(np.median(cell[lr])) for lr in rates]
    i = min(range(len(rates)), key=lambda k: (medians[k], rates[k]))
    if i in (0, len(rates) - 1) or not all(math.isfinite(medians[k]) for k in (i - 1, i, i + 1)):
        return math.nan
    a, _, _ = np.polyfit(np.log([rates[k] for k in (i - 1, i, i + 1)]),
                         np.log([medians[k] for k in (i - 1, i, i + 1)]), 2)
    return math.exp(2 * math.sqrt(math.log(1 + tolerance) / a)) if a > 0 else math.nan


def steps(cell):
    return G.best(cell)[0]


def judge(config, cells, diverged, Bs):
    """The four verdicts from the tuning cells {(arm, B): {lr: [steps]}} and diverged {(arm, B): {lr: [bool]}}."""
    from scipy.stats import beta

    small, large, hl, n_seeds = Bs[0], Bs[-1], "adam-halflife", config["seeds"]
    noise = "90% bootstrap over seeds, the best rate re-chosen per resample"
    flags = [d for v in diverged[hl, small].values() for d in v]
    k, n = sum(flags), len(flags)
    lo = float(beta.ppf(0.05, k, n - k + 1)) if k else 0.0
    hi = float(beta.ppf(0.95, k + 1, n - k)) if k < n else 1.0
    stable = V.below(f"half-life rule: stable at B={small}", "diverged fraction over the grid of rates",
                     k / n if n else math.nan, lo, hi, 1 / 3, "90% Clopper-Pearson over trials", n_seeds)

    def efficiency(c_small, *c_larger, Bl=Bs[1:]):
        return steps(c_small) * small / min(steps(c) * B for c, B in zip(c_larger, Bl))

    e, edge = G.tuned_bootstrap(efficiency, [cells[hl, small]] + [cells[hl, B] for B in Bs[1:]],
                                config["resamples"], seed=1)
    efficient = V.below(f"half-life rule: at least as sample-efficient at B={small}", "examples to target at "
                        f"B={small} / the fewest at a larger B" + edge, *e, config["same_margin"], noise, n_seeds)
    tol = config["basin_tolerance"]
    w = G.bootstrap(lambda a, b: basin(a, tol) / basin(b, tol), [cells[hl, small], cells[hl, large]],
                    config["resamples"], seed=2)
    wider = V.above(f"half-life rule: the basin is wider at B={small} than at B={large}",
                    f"basin width (rates within {tol:.0%} of the best steps) at B={small} / at B={large}", *w, 1.0,
                    noise, n_seeds)
    g, edge = G.tuned_bootstrap(lambda s1, a1, s2, a2: (steps(s1) / steps(a1)) / (steps(s2) / steps(a2)),
                                [cells["sgd", small], cells[hl, small], cells["sgd", large], cells[hl, large]],
                                config["resamples"], seed=3)
    gap = V.below(f"the SGD-Adam gap shrinks as B falls (B={large} to {small})",
                  f"(S_sgd / S_adam-halflife at B={small}) / (at B={large})" + edge, *g, 1.0, noise, n_seeds)
    return dict(stable=stable, efficient=efficient, basin=wider, gap=gap)


def check(config):
    return G.batch_sizes(config, len(load_data(config).y_train), 2, "adam-batch")


def run(config, out, writer, executor, echo):
    Bs = check(config)
    target, lr_ref, budget = G.reference_phase(config, writer, executor, out)
    the_arms = arms(config, lr_ref)
    saved = G.tune(config, the_arms, Bs, target, budget, writer, executor, out)
    cells = G.cells(saved, target, the_arms)
    diverged = {}
    for r in sorted(saved.runs.values(), key=lambda r: r.run_id):
        if r.attrs.get("tag") in the_arms:
            diverged.setdefault((r.attrs["tag"], r.attrs["batch_size"]), {}).setdefault(r.attrs["lr"], []).append(
                r.attrs["status"] == "DIVERGED")
    summary = dict(target=target, reference_lr=lr_ref,
                   t_half=beta2_halflife(config["beta2"], config["halflife_batch"]), per_batch={})
    verdict = [f"target: validation error <= {target:g} (best SGD reference error at B={config['reference_batch']}, "
               f"lr={lr_ref:g}, + {config['target_margin']:g}); rates on a factor-{config['lr_step']:g} grid, "
               f"{config['seeds']} seeds per point; half-life rule: t_half = {summary['t_half']:,.0f} samples "
               f"(beta2 {config['beta2']:g} at B={config['halflife_batch']})."]
    for i, B in enumerate(Bs):
        row = {}
        for arm in ARMS:
            c = cells[arm, B]
            S, lo, hi = G.bootstrap(steps, [c], config["resamples"], seed=10 * i + ARMS.index(arm))
            W = G.bootstrap(lambda x: basin(x, config["basin_tolerance"]), [c], config["resamples"], seed=7 + i)
            row[arm] = dict(S=S, S_lo=lo, S_hi=hi, E=S * B, E_lo=lo * B, E_hi=hi * B, lr=G.best(c)[1],
                            on_edge=G.on_edge(c), basin=W[0], basin_lo=W[1], basin_hi=W[2],
                            diverged=sum(sum(v) for v in diverged[arm, B].values()),
                            trials=sum(len(v) for v in diverged[arm, B].values()),
                            beta2=the_arms[arm]["spec"](B).get("beta2"))
        summary["per_batch"][str(B)] = row
        verdict.append(f"B={B}: " + "; ".join(
            f"{arm} S {r['S']:,.0f} [{r['S_lo']:,.0f}, {r['S_hi']:,.0f}] (E {r['E']:,.0f}), lr {r['lr']:.3g}"
            + (f", beta2 {r['beta2']:.6g}" if r["beta2"] is not None else "")
            + f", basin {_x(r['basin'])} [{_x(r['basin_lo'])}, {_x(r['basin_hi'])}], "
              f"{r['diverged']}/{r['trials']} diverged" + (" (best rate on the grid's edge)" if r["on_edge"] else "")
            for arm, r in row.items()) + ".")
    tests = judge(config, cells, diverged, Bs)
    verdict += [v.line() for v in tests.values()]
    summary["tests"] = [v.as_dict() for v in tests.values()]
    summary["outcome"] = {name: v.outcome for name, v in tests.items()}
    claim = V.combine("small B", [tests["stable"], tests["efficient"]])
    verdict.append(f"with the half-life rule small B is stable and at least as sample-efficient: {claim}; "
                   f"the basin is wider at small B: {tests['basin'].outcome}; the SGD-Adam gap shrinks as B falls: "
                   f"{tests['gap'].outcome}.")
    summary["outcome"]["small_b"] = claim
    from minigrad.experiments.figures import panels_figure

    rows = summary["per_batch"]

    def series(key):
        return [(arm, Bs, *([rows[str(B)][arm][key + s] for B in Bs] for s in ("", "_lo", "_hi"))) for arm in ARMS]

    figures = [panels_figure([
        dict(title=f"Examples to val error <= {target:g}", xlabel="batch size B",
             ylabel="examples to target (tuned lr, median over seeds)", series=series("E")),
        dict(title=f"Learning-rate basin (within {config['basin_tolerance']:.0%} of the best steps)",
             xlabel="batch size B", ylabel="largest / smallest rate in the basin", series=series("basin"))],
        *stem(out), "adam_batch")]
    return finish("adam-batch", out, summary, verdict, figures, writer)


def _x(ratio):
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "n/a"
