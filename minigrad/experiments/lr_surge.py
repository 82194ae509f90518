"""The tuned learning rate against B for SGD and Adam at two targets (Li et al. 2024, "Surge phenomenon": Adam's best
rate rises, then falls past a peak near the gradient noise scale, and the peak moves to larger B later in training;
SGD's rises and then saturates).

Both arms (plain SGD, centred linearly below B_ref and by the square root above; Adam with the config's beta2,
centred by the square-root rule) are tuned per B on a factor-`lr_step` grid with widening (grids.py), stopping at the
strict target (the SGD reference's best validation error + target_margin); the loose target (+ loose_margin) is read
off the same traces. The tuned rate at each B and target is the study's interpolated rate (a parabola in log lr
through the best grid rate and its neighbours, minigrad.study.uncertainty.interpolated_lr). The peak of lr*(B) is the
vertex of a parabola in (log B, log lr*) through the largest lr* and its neighbours (the edge B when the largest lies
on an edge). B_simple is measured on the same trials (the GNS columns of the best-rate trials, pooled where they
first reached the strict target). Intervals: 90% bootstrap over the seeds of every cell (B_simple: over trials).

Verdicts (verdict.py):
    sgd rises       lr*_sgd(B_mid) / lr*_sgd(B_min) above 1; does not fall: lr*_sgd(B_max) / max_B lr*_sgd above
                    1/fall_margin; saturates: the exponent d log lr* / d log B from B_mid to B_max below
                    saturated_slope (0.5: slower than the square root). Rises then saturates if all three are
                    reproduced, not if any is not.
    adam falls      lr*_adam(B_max) / max_B lr*_adam below 1/fall_margin (strict target)
    peak ~ B_simple B_peak(adam, strict) / B_simple within [1/peak_range, peak_range]; inconclusive when the peak
                    lies on the largest B (no fall seen: where the peak lies is not resolved)
A test whose tuned rates include one still on the edge of its grid after widening is inconclusive (no interval):
the rate is then a bound, not a measurement.
    stricter right  B_peak(adam, strict) / B_peak(adam, loose) above 1
"""
import math

import numpy as np

from minigrad.experiments import grids as G
from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, stem
from minigrad.experiments.momentum import centre_lr
from minigrad.study.uncertainty import interpolated_lr
from minigrad.training.trial import load_data

ARMS = ("sgd", "adam")
GNS = dict(batch_size=256, batches=2)  # as the study's tuning trials record it


def arms(config, lr_ref):
    B_ref = config["reference_batch"]
    return {"sgd": dict(optimizer="sgd", centre=lambda B: centre_lr(lr_ref, B, B_ref), spec=lambda B: dict(gns=GNS)),
            "adam": dict(optimizer="adam", centre=lambda B: config["adam_lr"] * math.sqrt(B / B_ref),
                         spec=lambda B: dict(gns=GNS))}


def tuned(cell):
    return interpolated_lr({(0, lr): v for lr, v in cell.items()}, 0) or math.nan


def peak(Bs, lrs):
    """(B at the vertex of the parabola in (log B, log lr) through the largest rate and its neighbours, on_edge)."""
    lrs = np.asarray(lrs, float)
    if not np.isfinite(lrs).all():
        return math.nan, False
    i = int(np.argmax(lrs))
    if i in (0, len(Bs) - 1):
        return float(Bs[i]), True
    x, y = np.log(np.asarray(Bs[i - 1:i + 2], float)), np.log(lrs[i - 1:i + 2])
    a, b, _ = np.polyfit(x, y, 2)
    return (float(np.exp(np.clip(-b / (2 * a), x[0], x[2]))) if a < 0 else float(Bs[i])), False


def judge(config, Bs, stats, b_simple):
    """The verdicts from stats[(arm, target name)] = dict(rise, fall, peak: each (value, lo, hi)),
    stats["adam", "peak_ratio"] (value, lo, hi) and b_simple (value, lo, hi)."""
    noise, n, m = "90% bootstrap over seeds, rates re-tuned per resample", config["seeds"], config["fall_margin"]
    sgd, adam, loose = stats["sgd", "strict"], stats["adam", "strict"], stats["adam", "loose"]
    mid = Bs[len(Bs) // 2]

    def resolved(stat, *arms):
        """The interval, or none where a tuned rate of the arms still lies on its grid's edge (unresolved)."""
        if any(any(a.get("grid_edge", ())) for a in arms):
            return stat[0], math.nan, math.nan
        return stat

    edge = " (no interval: a tuned rate lies on its grid's edge)"

    def note(*arms):
        return edge if any(any(a.get("grid_edge", ())) for a in arms) else ""

    rises = V.above("SGD's tuned rate rises with B", f"lr*(B={mid}) / lr*(B={Bs[0]})" + note(sgd),
                    *resolved(sgd["rise"], sgd), 1.0, noise, n)
    holds = V.above("SGD's tuned rate does not fall", f"lr*(B={Bs[-1]}) / the largest lr*" + note(sgd),
                    *resolved(sgd["fall"], sgd), 1 / m, noise, n)
    saturates = V.below("SGD's tuned rate saturates", f"d log lr* / d log B from B={mid} to {Bs[-1]}" + note(sgd),
                        *resolved(sgd["upper_slope"], sgd), config["saturated_slope"], noise, n)
    falls = V.below("Adam's tuned rate falls past a peak", f"lr*(B={Bs[-1]}) / the largest lr*" + note(adam),
                    *resolved(adam["fall"], adam), 1 / m, noise, n)
    pv, plo, phi = resolved(adam["peak"], adam)
    bv, blo, bhi = b_simple
    # a peak on the largest B is no peak: where it lies is not resolved
    ok = bv > 0 and blo > 0 and not adam["on_edge"] and math.isfinite(plo)
    ratio = (pv / bv, plo / bhi, phi / blo) if ok else (pv / bv if bv > 0 else math.nan, math.nan, math.nan)
    r = config["peak_range"]
    near = V.within(f"Adam's peak lies within {r:g}x of B_simple", "B_peak / B_simple (interval from both "
                    "intervals" + ("" if ok else "; no interval: the peak lies on the largest B, or a tuned rate on "
                                   "its grid's edge") + ")", *ratio, 1 / r, r, noise, n)
    moves = V.above("a stricter target moves Adam's peak right", f"B_peak(strict) / B_peak(loose) (loose: "
                    f"{loose['peak'][0]:.0f})" + note(adam, loose), *resolved(stats["adam", "peak_ratio"], adam, loose),
                    1.0, noise, n)
    return dict(sgd_rises=rises, sgd_holds=holds, sgd_saturates=saturates, adam_falls=falls, peak_near_b_simple=near,
                stricter_moves_right=moves)


def check(config):
    return G.batch_sizes(config, len(load_data(config).y_train), 3, "lr-surge")


def run(config, out, writer, executor, echo):
    from minigrad.instruments.noise import b_simple_near_target

    Bs = check(config)
    strict, lr_ref, budget = G.reference_phase(config, writer, executor, out)
    loose = round(strict - config["target_margin"] + config["loose_margin"], 4)
    the_arms = arms(config, lr_ref)
    saved = G.tune(config, the_arms, Bs, strict, budget, writer, executor, out)
    targets = {"strict": strict, "loose": loose}
    cells = {name: G.cells(saved, t, the_arms) for name, t in targets.items()}
    stats, summary = {}, dict(targets=targets, reference_lr=lr_ref, batch_sizes=Bs, per_arm={})
    for a, arm in enumerate(ARMS):
        for t, name in enumerate(targets):
            groups = [cells[name][arm, B] for B in Bs]
            seed = 10 * a + t
            lrs = [G.bootstrap(tuned, [g], config["resamples"], seed=seed + 100 * j) for j, g in enumerate(groups)]
            mid = len(Bs) // 2
            stats[arm, name] = dict(
                lr=lrs,
                rise=G.bootstrap(lambda lo, hi: tuned(hi) / tuned(lo), [groups[0], groups[mid]],
                                 config["resamples"], seed=seed + 1),
                upper_slope=G.bootstrap(lambda m, hi: math.log(tuned(hi) / tuned(m)) / math.log(Bs[-1] / Bs[mid]),
                                        [groups[mid], groups[-1]], config["resamples"], seed=seed + 4),
                fall=G.bootstrap(lambda *g: tuned(g[-1]) / max(tuned(c) for c in g), groups, config["resamples"],
                                 seed=seed + 2),
                peak=G.bootstrap(lambda *g: peak(Bs, [tuned(c) for c in g])[0], groups, config["resamples"],
                                 seed=seed + 3),
                on_edge=peak(Bs, [v for v, _, _ in lrs])[1],
                grid_edge=[G.on_edge(g) for g in groups])
    groups = {name: [cells[name]["adam", B] for B in Bs] for name in targets}
    n = len(Bs)
    stats["adam", "peak_ratio"] = G.bootstrap(
        lambda *g: peak(Bs, [tuned(c) for c in g[:n]])[0] / peak(Bs, [tuned(c) for c in g[n:]])[0],
        groups["strict"] + groups["loose"], config["resamples"], seed=50)
    best = [r.trace for r in saved.runs.values() if r.attrs.get("tag") == "adam"
            and G.best(cells["strict"]["adam", r.attrs["batch_size"]])[1] == r.attrs["lr"]]
    b_simple = _b_simple(best, strict, config["resamples"], b_simple_near_target)
    tests = judge(config, Bs, stats, b_simple)
    summary.update(b_simple=b_simple, tests=[v.as_dict() for v in tests.values()],
                   outcome={k: v.outcome for k, v in tests.items()})
    verdict = [f"targets: validation error <= {strict:g} (strict: best SGD reference error at B="
               f"{config['reference_batch']}, lr={lr_ref:g}, + {config['target_margin']:g}) and <= {loose:g} "
               f"(loose); rates on a factor-{config['lr_step']:g} grid, {config['seeds']} seeds per point."]
    for arm in ARMS:
        for name in targets:
            s = stats[arm, name]
            summary["per_arm"][f"{arm}-{name}"] = dict(lr=s["lr"], peak=s["peak"], rise=s["rise"], fall=s["fall"],
                                                       peak_on_edge=s["on_edge"], grid_edge=s["grid_edge"])
            verdict.append(f"{arm}, {name} target: tuned lr " + ", ".join(
                f"B={B}: {v:.3g} [{lo:.3g}, {hi:.3g}]" + ("*" if e else "")
                for B, (v, lo, hi), e in zip(Bs, s["lr"], s["grid_edge"]))
                + f"; peak at B = {s['peak'][0]:.0f} [{s['peak'][1]:.0f}, {s['peak'][2]:.0f}]"
                + (" (an edge of the batch sizes)" if s["on_edge"] else "")
                + (" (* the best rate on its grid's edge)" if any(s["grid_edge"]) else "") + ".")
    verdict.append(f"B_simple at the strict target (Adam's best-rate trials, pooled): {b_simple[0]:.0f} "
                   f"[{b_simple[1]:.0f}, {b_simple[2]:.0f}].")
    verdict += [v.line() for v in tests.values()]
    sgd_claim = V.combine("sgd", [tests["sgd_rises"], tests["sgd_holds"], tests["sgd_saturates"]])
    verdict.append(f"SGD's rate rises then saturates: {sgd_claim}; Adam's falls past a peak: "
                   f"{tests['adam_falls'].outcome}; the peak lies within {config['peak_range']:g}x of B_simple: "
                   f"{tests['peak_near_b_simple'].outcome}; a stricter target moves it right: "
                   f"{tests['stricter_moves_right'].outcome}.")
    from minigrad.experiments.figures import panels_figure

    series = [(f"{arm}, {name} target", Bs, *zip(*stats[arm, name]["lr"])) for arm in ARMS for name in targets]
    figures = [panels_figure([dict(title="Tuned learning rate against B", xlabel="batch size B",
                                   ylabel="tuned lr (interpolated; 90% bootstrap)", series=series,
                                   vlines=[(b_simple[0], "B_simple at the strict target")])],
                             *stem(out), "lr_surge")]
    return finish("lr-surge", out, summary, verdict, figures, writer)


def _b_simple(traces, target, resamples, near_target):
    """(B_simple, lo, hi): pooled where the traces first reached `target`, with a bootstrap over the traces."""
    value = near_target(traces, target).get("b_simple", math.nan)
    rng = np.random.default_rng(0xB5)
    draws = [near_target([traces[i] for i in rng.integers(0, len(traces), len(traces))], target).get("b_simple",
                                                                                                   math.nan)
             for _ in range(resamples)] if traces else []
    draws = np.array([d for d in draws if math.isfinite(d)])
    if len(draws) < 0.9 * max(1, resamples) or not traces:
        return value, math.nan, math.nan
    lo, hi = np.percentile(draws, [5, 95])
    return value, float(lo), float(hi)
