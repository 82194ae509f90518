"""What every experiment shares: configurations, running its trials on a study executor, the outcome.

Every experiment is `minigrad.experiments.run(name, config, out)`: its configuration (DEFAULTS[name], QUICK[name] with
quick=True) goes to the file's root attrs, every training run to /runs/<id> with its trace (as `minigrad bench` stores
them), the measurements to further runs, and the verdict and summary numbers to the root attrs. A rerun with the same
configuration resumes: finished runs are read back, not run again. Everything after the runs (summary, verdict,
figures) is computed from the HDF5 file alone. Training runs go through the study's executors (a local pool with
retries, or Dask) and the one trial runner, minigrad.training.trial.
"""
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minigrad.machine import settings

EXPERIMENTS = ("noise", "keskar", "smith", "gns", "stratified", "momentum", "adam-batch", "lr-surge", "data-vs-width")

_BASE = {"data": "teacher", "data_options": {}, "hidden": [64, 64], "activation": "relu", "loss": "cross_entropy",
         "dtype": "float32", "optimizer": "sgd", "momentum": 0.9, "eval_growth": 1.04}

DEFAULTS = {
    "noise": dict(_BASE, batch_size=32, lr=0.1, at_epochs=[1.0, 10.0], seed=0,
                  batch_sizes=[2 ** k for k in range(13)], draws=32, min_examples=8192, threads=1),
    # Keskar et al. trained with Adam at its default rate; the large batch is 10% of the training split
    "keskar": dict(_BASE, hidden=[128, 128], optimizer="adam", lr=1e-3, epochs=10.0, small_batch=64,
                   large_fraction=0.1, between=[400], retune_factors=[4, 16, 32], seeds=3,
                   curvature_examples=2000, eps=[1e-3], sharpness_iters=10, power_tol=1e-3, power_iters=100,
                   hutchinson_samples=0, interpolation_points=25, sharper_factor=1.5, resamples=1000),
    "smith": dict(_BASE, batch_size=32, lr=0.2, epochs=30.0, milestones=[10.0, 20.0, 25.0], factor=5, seeds=5,
                  eval_growth=1.01, margin=1.5, resamples=1000),
    "gns": dict(study=None, data=None, gns_batch_size=512, gns_batches=4, smoothing=0.25, checkpoints=24, seed=0,
                study_quick=False, two_batch=[32, 1024], window=8, long_factor=4.0),
    # margin: a ratio within [1/margin, margin] is no effect worth having. The effect on the teacher task is within
    # about 10%: 48 seeds of 5 epochs (18 s on 2 idle cores, 80 s beside another job) bound it to about +-8%, 12 seeds
    # of 8 epochs (54 s) to +-15%; "no effect worth having" at margin 1.1 would take about 100 seeds
    "stratified": dict(_BASE, batch_sizes=[8, 64], lr_per_example=0.1 / 32, epochs=5.0, seeds=48,
                       target_margin=0.01, eval_growth=1.01, margin=1.1, resamples=2000),
    "momentum": dict(_BASE, batch_sizes=[8, 64, 512], momenta=[0.5, 0.9], lr_grid=[-1, 0, 1], seeds=3,
                     reference_batch=32, reference_lrs=[0.1, 0.3], reference_epochs=6.0, target_margin=0.02,
                     budget_factor=3.0, same_margin=1.25, resamples=1000, max_widen=2),
    # Adam's beta2 fixed or by its half-life, and plain SGD, tuned per B (adam_batch.py); adam_lr is the centre at
    # reference_batch, scaled by sqrt(B / reference_batch)
    "adam-batch": dict(_BASE, batch_sizes=[1, 16, 128, 1024], lr_grid=[-1, 0, 1], lr_step=2.0, seeds=3, adam_lr=2e-3,
                       beta2=0.999, halflife_batch=128, reference_batch=32, reference_lrs=[0.1, 0.3],
                       reference_epochs=6.0, target_margin=0.02, budget_factor=3.0, basin_tolerance=0.1,
                       same_margin=1.25, resamples=500, max_widen=1),
    # the tuned rate against B for SGD and Adam at two targets, next to B_simple (lr_surge.py)
    "lr-surge": dict(_BASE, batch_sizes=[4, 16, 64, 256, 1024, 4096], lr_grid=[-1, 0, 1], lr_step=2.0, seeds=3,
                     adam_lr=2e-3, reference_batch=32, reference_lrs=[0.1, 0.3], reference_epochs=6.0,
                     target_margin=0.02, loose_margin=0.06, budget_factor=3.0, fall_margin=1.25, peak_range=3.0,
                     saturated_slope=0.5,
                     resamples=300, max_widen=2),
    # B_crit across widths at the whole training split and across subsets of it at one width (data_vs_width.py)
    "data-vs-width": dict(_BASE, widths=[16, 64, 256], width=64, data_fractions=[0.125, 0.25, 0.5, 1.0],
                          batch_sizes=[4, 16, 64, 256, 1024], lr_grid=[-1, 0, 1], lr_step=2.0, seeds=2,
                          reference_batch=32, reference_lrs=[0.1, 0.3], reference_epochs=6.0, target_margin=0.02,
                          budget_factor=3.0, move_margin=1.5, resamples=400, max_widen=1),
}

QUICK = {
    "noise": dict(at_epochs=[2.0], draws=8, min_examples=2048),
    "keskar": dict(epochs=4.0, between=[], retune_factors=[4, 16], seeds=3, curvature_examples=2000,
                   eps=[1e-3], power_tol=1e-2, power_iters=30, interpolation_points=13),
    "smith": dict(epochs=6.0, milestones=[2.0, 4.0, 5.0], seeds=4),
    "gns": dict(gns_batches=2, checkpoints=8, study_quick=True),
    "stratified": dict(epochs=3.0, seeds=16, batch_sizes=[8]),
    "momentum": dict(batch_sizes=[8, 512], momenta=[0.9], seeds=2, reference_epochs=3.0, resamples=500),
    # Adam's step at B <= 4 costs ~150 us here (SGD's fused one ~12 us): B = 1 alone would take the minute
    "adam-batch": dict(batch_sizes=[4, 64, 1024], seeds=2, reference_epochs=3.0, resamples=300),
    "lr-surge": dict(batch_sizes=[8, 64, 512, 2048], seeds=2, reference_epochs=3.0, max_widen=1, resamples=200),
    "data-vs-width": dict(widths=[16, 256], data_fractions=[0.25, 1.0], batch_sizes=[4, 32, 256, 1024],
                          reference_epochs=3.0, resamples=200),
}

# The small study the gns experiment runs when it is given none: `minigrad bench --quick` (default), or smaller
# still for --quick, so that the whole experiment stays under a minute.
MINI_STUDY = {"batch_sizes": [4, 16, 64, 256, 1024], "seeds": 1, "reference_lrs": [0.1, 0.3],
              "reference_epochs": 8.0, "lr_points": 3, "max_widen": 1, "budget_factor": 2.0, "equal_epochs": 0.25}


def make_config(name, quick=False, **overrides):
    """The experiment's configuration: defaults, --quick's on top, then `overrides` (None = keep)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    config = copy.deepcopy(DEFAULTS[name])
    if quick:
        config.update(copy.deepcopy(QUICK[name]))
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown {name} setting(s): {', '.join(sorted(unknown))}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    config["experiment"], config["quick"] = name, bool(quick)
    for key, value in config.items():  # every number once, here: finite and in range (minigrad.machine.settings)
        if key in CHECKED:
            setting, label = settings.SETTINGS[key], key.replace("_", " ")
            if setting.kind in ("ints", "floats") or not isinstance(value, (list, tuple)):
                setting.check(value, label)
            else:  # a list of values of a one-value setting (at_epochs = [1, 10])
                for v in value:
                    setting.check(v, label)
    return config


# the experiments' settings that are checked (their ranges are the settings table's)
CHECKED = ("at_epochs", "batch_sizes", "draws", "epochs", "lr", "seeds", "factor", "checkpoints", "hidden",
           "momentum", "momenta", "margin", "resamples", "beta2", "adam_lr", "lr_step", "basin_tolerance",
           "same_margin", "max_widen", "target_margin", "loose_margin", "fall_margin", "peak_range", "widths", "width",
           "data_fractions", "move_margin")


@dataclass
class Outcome:
    """What an experiment leaves: the file, the verdict lines, the numbers behind them, the figures."""

    name: str
    path: Path
    verdict: list
    summary: dict
    figures: list = field(default_factory=list)


def run_jobs(config, specs, writer, executor, label="runs"):
    """Run the specs not yet stored in `writer`'s file on `executor` (minigrad.study.executors: retries, Dask),
    storing each as it finishes. Every run also records its training-set error (evaluate_train)."""
    from minigrad.machine.progress import progress_bar

    todo = [s.replace(evaluate_train=True) for s in specs if s.run_id not in writer.completed_run_ids()]
    if not todo:
        return
    with executor, progress_bar(f"{config['experiment']}: {label}", total=len(todo)) as advance:
        for result in executor.run(config, todo):
            writer.write_run(result["run_id"], result["attrs"], result["columns"], result["arrays"])
            advance(advance=1)
    writer.flush()


def median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def runs(study_file, **match):
    return [r for r in study_file.runs.values() if all(r.attrs.get(k) == v for k, v in match.items())]


def finish(name, out, summary, verdict, figures, writer):
    writer.set_attrs({"summary": summary, "verdict": verdict})
    return Outcome(name, Path(out), verdict, summary, figures)


def stem(out):
    return Path(out).parent, Path(out).stem
