"""Learning-rate step decay against growing the batch by the same factor (Smith et al. 2017)."""
import math

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, median, run_jobs, stem
from minigrad.training.trial import load_data
from minigrad.training.spec import TrialSpec


def run(config, out, writer, executor, echo):
    from minigrad import store

    f, milestones = config["factor"], config["milestones"]
    specs = []
    for seed in range(config["seeds"]):
        specs.append(TrialSpec(run_id=f"decay-s{seed}", tag="decay", batch_size=config["batch_size"], lr=config["lr"],
                          seed=seed, epochs=config["epochs"],
                          lr_schedule=dict(kind="step", milestones=milestones, gamma=1.0 / f)))
        specs.append(TrialSpec(run_id=f"grow-s{seed}", tag="grow", batch_size=config["batch_size"], lr=config["lr"],
                          seed=seed, epochs=config["epochs"], batch_schedule=dict(milestones=milestones, factor=f)))
        # negative control: neither decays nor grows; if it matched the decay as well as growing B does, the
        # comparison could not tell schedules apart
        specs.append(TrialSpec(run_id=f"constant-s{seed}", tag="constant", batch_size=config["batch_size"],
                          lr=config["lr"], seed=seed, epochs=config["epochs"]))
    run_jobs(config, specs, writer, executor, label=f"{len(specs)} runs")
    saved = store.open(out)
    n = len(load_data(config).y_train)
    grid = np.linspace(milestones[0], config["epochs"], 200) * n  # examples after the first milestone
    curves = {}
    for r in sorted(saved.runs.values(), key=lambda r: r.attrs["seed"]):
        t = r.trace
        curves.setdefault(r.attrs["tag"], []).append(np.interp(grid, t["examples"], t["val_error"]))
    decay, grow, constant = (np.array(curves[k]) for k in ("decay", "grow", "constant"))
    runs = {tag: [r.attrs for r in saved.runs.values() if r.attrs["tag"] == tag]
            for tag in ("decay", "grow", "constant")}
    med = {tag: {k: median([a[k] for a in rs]) for k in ("test_error", "final_val_error", "steps", "train_error")}
           for tag, rs in runs.items()}
    seeds = np.arange(len(decay))
    # every comparison is between different seeds, so that "same schedule, other seed" is the yardstick: with
    # equivalent schedules decay-vs-grow differs exactly as much as decay-vs-decay and grow-vs-grow (ratio 1)
    ratio, control = (lambda idx: _between(decay, grow, idx), lambda idx: _between(decay, constant, idx))
    n_seeds, margin = len(seeds), config["margin"]
    noise = "90% bootstrap over seeds"
    r_lo, r_hi = V.bootstrap([seeds], ratio, resamples=config["resamples"]) if n_seeds > 1 else (math.nan,) * 2
    c_lo, c_hi = V.bootstrap([seeds], control, resamples=config["resamples"]) if n_seeds > 1 else (math.nan,) * 2
    r, c = (ratio(seeds), control(seeds)) if n_seeds > 1 else (math.nan, math.nan)
    same = V.below("curves match: decay vs grow", "mean |val error difference| / within-schedule seed-to-seed", r,
                   r_lo, r_hi, margin, noise, n_seeds)
    power = V.above("power: the no-schedule control differs", "mean |decay - constant| / seed-to-seed", c, c_lo, c_hi,
                    margin, noise, n_seeds)
    # reproduced only if the test can tell schedules apart; a mismatch counts whatever the control shows
    outcome = same.outcome if same.outcome == V.NOT_REPRODUCED or power.outcome == V.REPRODUCED else V.INCONCLUSIVE
    summary = dict(decay=med["decay"], grow=med["grow"], constant=med["constant"],
                   seed_to_seed=_distance(decay, decay, seeds) if n_seeds > 1 else math.nan,
                   decay_vs_grow=_distance(decay, grow, seeds) if n_seeds > 1 else math.nan,
                   decay_vs_constant=_distance(decay, constant, seeds) if n_seeds > 1 else math.nan,
                   same_seed_decay_vs_grow=float(np.abs(decay - grow).mean()), ratio=r, ratio_lo=r_lo,
                   ratio_hi=r_hi, control=c, control_lo=c_lo, control_hi=c_hi,
                   update_ratio=med["decay"]["steps"] / med["grow"]["steps"], outcome=outcome,
                   tests=[same.as_dict(), power.as_dict()])
    verdict = [
        f"lr / {f} at epochs {', '.join(f'{m:g}' for m in milestones)} (B={config['batch_size']}) against B x {f} "
        f"there (lr {config['lr']:g}): final test error {med['decay']['test_error']:.4f} vs "
        f"{med['grow']['test_error']:.4f} (no schedule: {med['constant']['test_error']:.4f}).",
        f"validation error against examples seen, after the first milestone, mean |difference| between different "
        f"seeds: decay vs decay {summary['seed_to_seed']:.4f}, decay vs grow {summary['decay_vs_grow']:.4f}, "
        f"decay vs no schedule {summary['decay_vs_constant']:.4f} (same seed, decay vs grow: "
        f"{summary['same_seed_decay_vs_grow']:.4f}).",
        f"parameter updates: {med['decay']['steps']:.0f} vs {med['grow']['steps']:.0f} "
        f"({summary['update_ratio']:.2f}x fewer when the batch grows).",
        same.line(), power.line(),
        f"Smith et al.'s equivalence (same curves, fewer updates): {outcome}"
        + (" (the control is not resolved from seed-to-seed noise, so the test cannot tell schedules apart)"
           if power.outcome != V.REPRODUCED and outcome == V.INCONCLUSIVE else "") + ".",
    ]
    from minigrad.experiments.figures import smith_figure

    figures = [smith_figure(saved, config, *stem(out))]
    return finish("smith", out, summary, verdict, figures, writer)


def _distance(a, b, idx):
    """Mean over ordered pairs of resampled seeds (i, j) with different original seeds of mean_t |a_i(t) - b_j(t)|;
    NaN if no such pair (every resampled seed the same)."""
    pairs = [(i, j) for i in idx for j in idx if i != j]
    if not pairs:
        return math.nan
    return float(np.mean([np.abs(a[i] - b[j]).mean() for i, j in pairs]))


def _between(a, b, idx):
    """Between-schedule over within-schedule distance: D(a, b) / mean(D(a, a), D(b, b)), about 1 when the two
    schedules give curves that differ only as much as seeds do."""
    within = _distance(a, a, idx) + _distance(b, b, idx)
    # seeds whose curves coincide (small validation sets) leave no yardstick: undefined, which the bootstrap drops
    return 2 * _distance(a, b, idx) / within if within > 0 else math.nan
