"""Learning-rate step decay against growing the batch by the same factor (Smith et al. 2017)."""
import math

import numpy as np

from minigrad.experiments.common import finish, median, run_jobs, stem
from minigrad.training.trial import load_data


def run(config, out, writer, executor, echo):
    from minigrad import store

    f, milestones = config["factor"], config["milestones"]
    specs = []
    for seed in range(config["seeds"]):
        specs.append(dict(run_id=f"decay-s{seed}", tag="decay", batch_size=config["batch_size"], lr=config["lr"],
                          seed=seed, epochs=config["epochs"],
                          lr_schedule=dict(kind="step", milestones=milestones, gamma=1.0 / f)))
        specs.append(dict(run_id=f"grow-s{seed}", tag="grow", batch_size=config["batch_size"], lr=config["lr"],
                          seed=seed, epochs=config["epochs"], batch_schedule=dict(milestones=milestones, factor=f)))
        # negative control: neither decays nor grows; if it matched the decay as well as growing B does, the
        # comparison could not tell schedules apart
        specs.append(dict(run_id=f"constant-s{seed}", tag="constant", batch_size=config["batch_size"],
                          lr=config["lr"], seed=seed, epochs=config["epochs"]))
    run_jobs(config, specs, writer, executor, label=f"{len(specs)} runs")
    saved = store.open(out)
    n = len(load_data(config).y_train)
    grid = np.linspace(milestones[0], config["epochs"], 200) * n  # examples after the first milestone
    curves = {}
    for r in saved.runs.values():
        t = r.trace
        curves.setdefault(r.attrs["tag"], []).append(np.interp(grid, t["examples"], t["val_error"]))
    decay, grow, constant = (np.array(curves[k]) for k in ("decay", "grow", "constant"))
    diff = np.abs(decay - grow)  # same seed: same initialisation, same batches until the first milestone
    control = np.abs(decay - constant)
    between = [np.abs(decay[i] - decay[j]).mean() for i in range(len(decay)) for j in range(i + 1, len(decay))]
    runs = {tag: [r.attrs for r in saved.runs.values() if r.attrs["tag"] == tag]
            for tag in ("decay", "grow", "constant")}
    med = {tag: {k: median([a[k] for a in rs]) for k in ("test_error", "final_val_error", "steps", "train_error")}
           for tag, rs in runs.items()}
    summary = dict(decay=med["decay"], grow=med["grow"], constant=med["constant"], mean_abs_diff=float(diff.mean()),
                   max_abs_diff=float(diff.max()), control_diff=float(control.mean()),
                   seed_to_seed=float(np.mean(between)) if between else math.nan,
                   update_ratio=med["decay"]["steps"] / med["grow"]["steps"])
    same = summary["mean_abs_diff"] < 0.5 * summary["control_diff"] and (
        not between or summary["mean_abs_diff"] <= 2 * summary["seed_to_seed"] + 0.002)
    verdict = [
        f"lr / {f} at epochs {', '.join(f'{m:g}' for m in milestones)} (B={config['batch_size']}) against B x {f} "
        f"there (lr {config['lr']:g}): final test error {med['decay']['test_error']:.4f} vs "
        f"{med['grow']['test_error']:.4f}.",
        f"validation error against examples seen, after the first milestone: mean |difference| "
        f"{summary['mean_abs_diff']:.4f} (largest {summary['max_abs_diff']:.4f})"
        + (f"; between seeds of the same schedule {summary['seed_to_seed']:.4f}" if between else "")
        + f"; control without any schedule {summary['control_diff']:.4f} (final test error "
        f"{med['constant']['test_error']:.4f}).",
        f"parameter updates: {med['decay']['steps']:.0f} vs {med['grow']['steps']:.0f} "
        f"({summary['update_ratio']:.2f}x fewer when the batch grows).",
        f"Smith et al.'s equivalence (same curves, fewer updates): {'holds' if same else 'does NOT hold'} here.",
    ]
    from minigrad.experiments.figures import smith_figure

    figures = [smith_figure(saved, config, *stem(out))]
    return finish("smith", out, summary, verdict, figures, writer)
