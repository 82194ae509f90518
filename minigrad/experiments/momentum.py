"""Heavy-ball momentum against plain SGD: steps-to-target per batch size, each with its learning rate (and momentum,
from a small grid) tuned per B; docs/science.md's expectation 8 says about the same steps at small B, fewer at large B
(Shallue et al. 2018; Zhang et al. 2019).

Phases: a reference (SGD at B_ref, a few learning rates, no target) sets the target (its best validation error plus a
margin), the centre of the grids and the step budget; then for each B, SGD and momentum m from the grid, learning
rates on a factor-2 grid around the reference rate scaled by B/B_ref below B_ref and sqrt(B/B_ref) above (for
momentum the effective rate lr/(1-m) sits on that grid), several seeds each, stopping at the target.
S(B) for an optimizer is the smallest median-over-seeds steps-to-target over its grid; the ratio S_mom/S_sgd has a
bootstrap interval over seeds (the grid's best point re-chosen in every resample, so the interval includes the
noise of the tuning).
"""
import math

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, run_jobs, stem
from minigrad.experiments.stratified import steps_to
from minigrad.training.trial import load_data
from minigrad.training.spec import TrialSpec


def reference_specs(config, tag="reference"):
    return [TrialSpec(run_id=f"{tag}-lr{lr:g}-s{seed}", tag=tag, batch_size=config["reference_batch"],
                 lr=lr, seed=seed, epochs=config["reference_epochs"], stop_at_target=False, momentum=0.0)
            for lr in config["reference_lrs"] for seed in range(2)]


def reference(config, saved, tag="reference"):
    """(target, reference lr, S_ref, E_ref) from the reference runs: the lr with the lowest mean best validation
    error; target = that + margin; S_ref, E_ref = median steps and examples its runs took to first reach it."""
    by_lr = {}
    for r in saved.runs.values():
        if r.attrs.get("tag") == tag and r.attrs["status"] != "DIVERGED":
            by_lr.setdefault(r.attrs["lr"], []).append(r)
    if not by_lr:
        raise ValueError("every reference run diverged: lower the reference learning rates")
    lr, runs = min(by_lr.items(), key=lambda item: np.mean([r.attrs["best_val_error"] for r in item[1]]))
    target = round(float(np.mean([r.attrs["best_val_error"] for r in runs])) + config["target_margin"], 4)
    S = [steps_to(r.trace, target) for r in runs]
    S_ref = float(np.median(S)) if all(math.isfinite(s) for s in S) else float(max(r.attrs["steps"] for r in runs))
    return target, lr, S_ref, S_ref * config["reference_batch"]


def centre_lr(lr_ref, B, B_ref):
    """The reference rate scaled linearly below B_ref, by the square root above (the study's rule)."""
    return lr_ref * (B / B_ref if B <= B_ref else math.sqrt(B / B_ref))


def tuning_spec(config, B, m, k, seed, target, lr_ref, S_ref, E_ref):
    """One tuning trial: batch size B, momentum m (0 = plain SGD), effective rate 2^k x the centre."""
    effective = centre_lr(lr_ref, B, config["reference_batch"]) * 2.0 ** k
    steps = int(math.ceil(config["budget_factor"] * max(S_ref, E_ref / B)))
    return TrialSpec(run_id=f"tune-B{B:05d}-m{m:g}-k{k:+d}-s{seed}", tag="sgd" if m == 0 else "momentum", batch_size=B,
                lr=effective * (1 - m), momentum=float(m), lr_factor=2.0 ** k, seed=seed, steps=steps,
                target=target, stop_at_target=True, optimizer="sgd" if m == 0 else "momentum")


def tuning_specs(config, saved, target, lr_ref, S_ref, E_ref):
    """The grid's trials, and one more rate beyond the edge for every (B, m) whose best rate lies on an edge of the
    grid run so far (at most `max_widen` rounds, so a rerun on the same file asks for the same trials)."""
    grid = {(B, m): set(config["lr_grid"]) for B in config["batch_sizes"] for m in [0.0, *config["momenta"]]}
    if saved is not None:
        for r in saved.runs.values():
            a = r.attrs
            if a.get("tag") in ("sgd", "momentum") and (a["batch_size"], a["momentum"]) in grid:
                grid[a["batch_size"], a["momentum"]].add(int(round(math.log2(a["lr_factor"]))))
        for (B, m), ks in grid.items():
            medians = {k: np.median([steps_to(r.trace, target) if r.attrs["status"] != "DIVERGED" else math.inf
                                     for r in saved.runs.values() if r.attrs.get("tag") in ("sgd", "momentum")
                                     and r.attrs["batch_size"] == B and r.attrs["momentum"] == m
                                     and round(math.log2(r.attrs["lr_factor"])) == k]) for k in ks}
            medians = {k: v for k, v in medians.items() if not np.isnan(v)}
            if not medians or len(ks) - len(config["lr_grid"]) >= config["max_widen"]:
                continue
            best = min(medians, key=lambda k: (medians[k], k))
            if best == max(ks):
                ks.add(best + 1)
            elif best == min(ks):
                ks.add(best - 1)
    return [tuning_spec(config, B, m, k, seed, target, lr_ref, S_ref, E_ref)
            for (B, m), ks in grid.items() for k in sorted(ks) for seed in range(config["seeds"])]


def tuned_steps(cells):
    """Smallest median-over-seeds steps over a grid; cells: list of arrays of steps (one per seed, inf = missed)."""
    best = min(float(np.median(c)) for c in cells)
    return best if math.isfinite(best) else math.nan


def run(config, out, writer, executor, echo):
    from minigrad import store

    n_train = len(load_data(config).y_train)
    bad = [B for B in config["batch_sizes"] if not 1 <= B <= n_train]
    if bad:
        raise ValueError(f"batch sizes {bad} must lie between 1 and the training split's {n_train} examples")
    run_jobs(config, reference_specs(config), writer, executor, label="reference runs")
    saved = store.open(out)
    target, lr_ref, S_ref, E_ref = reference(config, saved)
    saved = None
    for round_ in range(config["max_widen"] + 1):
        specs = tuning_specs(config, saved, target, lr_ref, S_ref, E_ref)
        run_jobs(config, specs, writer, executor, label=f"{len(specs)} tuning runs" if round_ == 0 else
                 "widening the grid at its edges")
        saved = store.open(out)

    summary = dict(target=target, reference_lr=lr_ref, S_ref=S_ref, per_batch={})
    verdict = [f"target: validation error <= {target:g} (best reference error at B={config['reference_batch']}, "
               f"lr={lr_ref:g}, + {config['target_margin']:g}); lr grid: 2^{config['lr_grid']} x the reference "
               f"rate scaled by B/{config['reference_batch']} below, sqrt above (effective rate lr/(1-m)); "
               f"momentum from {config['momenta']}; {config['seeds']} seeds per point."]
    for i, B in enumerate(config["batch_sizes"]):
        cells = {}
        for r in saved.runs.values():
            a = r.attrs
            if a.get("tag") in ("sgd", "momentum") and a["batch_size"] == B:
                key = (a["tag"], a["momentum"], a["lr"])
                cells.setdefault(key, []).append(steps_to(r.trace, target) if a["status"] != "DIVERGED" else math.inf)
        sgd = [np.array(v) for k, v in sorted(cells.items()) if k[0] == "sgd"]
        mom = [np.array(v) for k, v in sorted(cells.items()) if k[0] == "momentum"]
        S_sgd, S_mom = tuned_steps(sgd), tuned_steps(mom)
        ratio = S_mom / S_sgd

        def stat(*groups, n=len(sgd)):
            return tuned_steps(groups[n:]) / tuned_steps(groups[:n])

        lo, hi = V.bootstrap(sgd + mom, stat, resamples=config["resamples"], seed=i)
        s_lo, s_hi = V.bootstrap(sgd, lambda *g: tuned_steps(g), resamples=config["resamples"], seed=i)
        m_lo, m_hi = V.bootstrap(mom, lambda *g: tuned_steps(g), resamples=config["resamples"], seed=i)
        best_sgd = min((k for k in cells if k[0] == "sgd"), key=lambda k: np.median(cells[k]))
        best_mom = min((k for k in cells if k[0] == "momentum"), key=lambda k: np.median(cells[k]))
        edge = _on_edge(cells, best_sgd) or _on_edge(cells, best_mom)
        summary["per_batch"][str(B)] = dict(S_sgd=S_sgd, S_sgd_lo=s_lo, S_sgd_hi=s_hi, S_mom=S_mom, S_mom_lo=m_lo,
                                            S_mom_hi=m_hi, ratio=ratio, ratio_lo=lo, ratio_hi=hi,
                                            lr_sgd=best_sgd[2], lr_mom=best_mom[2], momentum=best_mom[1],
                                            best_on_grid_edge=edge)
        verdict.append(f"B={B}: S_sgd {S_sgd:.0f} [{s_lo:.0f}, {s_hi:.0f}] (lr {best_sgd[2]:.3g}), S_mom {S_mom:.0f} "
                       f"[{m_lo:.0f}, {m_hi:.0f}] (lr {best_mom[2]:.3g}, m {best_mom[1]:g}): S_mom/S_sgd = "
                       f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]" + (" (a best rate still lies on the grid's edge "
                                                               "after widening)" if edge else "") + ".")
    small, large = (summary["per_batch"][str(B)] for B in (config["batch_sizes"][0], config["batch_sizes"][-1]))
    noise = "90% bootstrap over seeds, tuning re-done per resample"
    tests = [
        V.within(f"item 8, small B: about the same steps (B={config['batch_sizes'][0]})", "S_mom/S_sgd",
                 small["ratio"], small["ratio_lo"], small["ratio_hi"], 1 / config["same_margin"],
                 config["same_margin"], noise, config["seeds"]),
        V.below(f"item 8, large B: fewer steps with momentum (B={config['batch_sizes'][-1]})", "S_mom/S_sgd",
                large["ratio"], large["ratio_lo"], large["ratio_hi"], 1.0, noise, config["seeds"]),
    ]
    verdict += [v.line() for v in tests]
    summary["tests"] = [v.as_dict() for v in tests]
    summary["outcome"] = V.combine("item 8", tests)
    verdict.append(f"expectation 8 of docs/science.md (momentum: about the same steps at small B, fewer at large B): "
                   f"{summary['outcome']}.")
    from minigrad.experiments.figures import momentum_figure

    figures = [momentum_figure(summary, config, *stem(out))]
    return finish("momentum", out, summary, verdict, figures, writer)


def _on_edge(cells, key):
    """Whether the best learning rate of its optimizer and momentum is the grid's smallest or largest."""
    lrs = sorted(k[2] for k in cells if k[:2] == key[:2])
    return key[2] in (lrs[0], lrs[-1]) and len(lrs) > 1
