"""The critical batch size measured directly by branching (Merrill et al. 2025): from checkpoints of one run at batch
size B, continue with k B (k = 1, 2, 4, 8) for the same number of examples and see which still make the same
progress.

A branch is a run with a staged batch schedule keyed on steps (`B:lr@0, kB:lr_k@step=n_c`): training is
deterministic, so every branch of a seed is the base run bit for bit up to the checkpoint's step n_c, and from there
it trains on k B. Each branch then sees `branch_epochs` of examples. Progress is the fall of the validation loss over
the branch, L(n_c) - L(end), with L(n_c) read off the 1x branch (linear between its evaluations) and L(end) the
mean of the branch's last three evaluations. A k B branch takes
the better of two rates, lr sqrt(k) and lr k, chosen by its mean progress over seeds (one rate per checkpoint and k,
not per seed).

CBS(t) is the largest k B whose mean progress is at least (1 - tolerance) times the 1x branch's, together with every
smaller k: a larger batch that costs no more examples per unit of progress. Its 90% interval comes from a
bootstrap over seeds (all branches of a seed resampled together, since they share its prefix). Beside it, B_simple
measured by the 1x branches (gradient noise hook) where they first reached the checkpoint's validation error, and,
given a `minigrad bench` study of the same data (`study`), its ladder's B_crit and CBS-20% at the level nearest the
checkpoint's validation error.

The verdict on "CBS rises during training, then flattens" combines two tests over the checkpoints, all of which
must hold: rises, CBS(middle) / CBS(first) has its interval above 1; flattens, CBS(last) / CBS(middle) has its
interval within [1/margin, margin]. Reproduced if both hold, NOT reproduced if either fails outright, inconclusive
otherwise.
"""
import math

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, run_jobs
from minigrad.training.spec import TrialSpec
from minigrad.training.trial import load_data

END_EVALUATIONS = 3


def branch_specs(config, n_train):
    """Every branch: per seed, checkpoint and k, the 1x base at its rate, the larger batches at each grid rate."""
    B, lr = config["batch_size"], config["lr"]
    specs = []
    for seed in range(config["seeds"]):
        for c, epochs in enumerate(config["at_epochs"]):
            n_c = max(1, int(round(epochs * n_train / B)))
            for k in config["multipliers"]:
                for lr_k in ([lr] if k == 1 else sorted({lr * math.sqrt(k), lr * k})):
                    steps = n_c + int(math.ceil(config["branch_epochs"] * n_train / (k * B)))
                    stages = None if k == 1 else dict(stages=f"{B}:{lr:g},{k * B}:{lr_k:g}@step={n_c}")
                    # role: the branch's own rate (its lr attribute is the base run's, its first stage's)
                    specs.append(TrialSpec(run_id=f"c{c}-k{k}-lr{lr_k:.4g}-s{seed}", tag=f"c{c}-k{k}", role=f"{lr_k:.6g}",
                                           batch_size=B, lr=lr, seed=seed, steps=steps, lr_factor=k,
                                           batch_schedule=stages,
                                           gns=dict(batch_size=256, batches=2) if k == 1 else None))  # B_simple
    return specs


def progress_table(saved, config, n_train):
    """(progress[seed, checkpoint, k] at each k's chosen rate, the chosen rates, the 1x traces per checkpoint, the
    checkpoints' validation errors)."""
    B, seeds, ks = config["batch_size"], config["seeds"], config["multipliers"]
    n_ckpt = len(config["at_epochs"])
    runs = {rid: r for rid, r in saved.runs.items()}
    start_loss = np.full((seeds, n_ckpt), np.nan)
    start_error = np.full((seeds, n_ckpt), np.nan)
    base = [[] for _ in range(n_ckpt)]
    for rid, r in runs.items():
        c, k = (int(x[1:]) for x in r.attrs["tag"].split("-"))
        if k == 1:
            n_c = max(1, int(round(config["at_epochs"][c] * n_train / B)))
            t = r.trace
            start_loss[r.attrs["seed"], c] = np.interp(n_c, t["step"], t["val_loss"])
            start_error[r.attrs["seed"], c] = np.interp(n_c, t["step"], t["val_error"])
            base[c].append(t)
    by_rate = {}
    for rid, r in runs.items():
        c, k = (int(x[1:]) for x in r.attrs["tag"].split("-"))
        # the branch's end: the mean of its last END_EVALUATIONS evaluations (the last few percent of its examples),
        # so that one noisy evaluation does not decide
        end = float(np.mean(r.trace["val_loss"][-END_EVALUATIONS:])) if r.attrs["status"] != "DIVERGED" else math.inf
        by_rate.setdefault((c, k, float(r.attrs["role"])), np.full(seeds, np.nan))[r.attrs["seed"]] = \
            start_loss[r.attrs["seed"], c] - end
    progress = np.full((seeds, n_ckpt, len(ks)), np.nan)
    rates = {}
    for c in range(n_ckpt):
        for j, k in enumerate(ks):
            options = {lr: p for (cc, kk, lr), p in by_rate.items() if cc == c and kk == k}
            lr = max(options, key=lambda x: (np.nanmean(options[x]), -x))  # the better rate by mean progress
            progress[:, c, j], rates[(c, k)] = options[lr], lr
    return progress, rates, base, np.nanmedian(start_error, axis=0)


def cbs_of(progress, ks, batch_size, tolerance):
    """CBS per checkpoint from progress[seed, checkpoint, k]: the largest k B whose mean progress is at least
    (1 - tolerance) times the 1x branch's, every smaller k too."""
    mean = np.nanmean(progress, axis=0)
    out = []
    for c in range(mean.shape[0]):
        largest = ks[0]
        for j, k in enumerate(ks):
            if not mean[c, j] >= (1 - tolerance) * mean[c, 0]:
                break
            largest = k
        out.append(largest * batch_size)
    return np.array(out, float)


def check(config):
    """A study given for its ladder must be of the same data and model: refused before any file is made."""
    if config.get("study"):
        from minigrad import store

        study = store.open(config["study"])
        if study.kind != "study":
            raise ValueError(f"--study {config['study']} holds a {study.kind!r} file; give one written by "
                             "`minigrad bench`")
        for key in ("data", "hidden"):
            if study.config.get(key) != config[key]:
                raise ValueError(f"--study {config['study']} has {key} {study.config.get(key)!r}, this experiment "
                                 f"{config[key]!r}: give a study of the same data and model")


def ladder_beside(config, errors):
    """Per checkpoint, the study's ladder rung nearest its validation error: (level, B_crit, lo, hi, CBS-20%)."""
    if not config.get("study"):
        return [None] * len(errors)
    from minigrad import store
    from minigrad.study.analysis import analyse

    ladder = [r for r in analyse(store.open(config["study"])).ladder if r["determined"]]
    if not ladder:
        return [None] * len(errors)
    return [(lambda r: dict(level=r["level"], b_crit=r["B_crit"], b_crit_lo=r["B_crit_lo"], b_crit_hi=r["B_crit_hi"],
                            cbs_20=r["cbs"]))(min(ladder, key=lambda r: abs(math.log(r["level"] / e))))
            for e in errors]


def run(config, out, writer, executor, echo):
    from minigrad import store
    from minigrad.instruments.noise import b_simple_near_target

    n_train = len(load_data(config).y_train)
    specs = branch_specs(config, n_train)
    run_jobs(config, specs, writer, executor, label=f"{len(specs)} branches")
    saved = store.open(out)
    ks, B, tol = config["multipliers"], config["batch_size"], config["tolerance"]
    progress, rates, base, errors = progress_table(saved, config, n_train)
    cbs = cbs_of(progress, ks, B, tol)
    seeds = np.arange(config["seeds"])
    intervals = [V.bootstrap([seeds], lambda idx, c=c: cbs_of(progress[idx], ks, B, tol)[c],
                             resamples=config["resamples"], seed=c) for c in range(len(cbs))]
    b_simple = [b_simple_near_target(base[c], float(errors[c])).get("b_simple", math.nan) for c in range(len(cbs))]
    noise, n = "90% bootstrap over seeds", config["seeds"]
    margin = config["margin"]
    first, mid, last = 0, len(cbs) // 2, len(cbs) - 1

    def ratio(i, j):
        return lambda idx: (lambda v: v[i] / v[j])(cbs_of(progress[idx], ks, B, tol))

    tests = []
    lo, hi = V.bootstrap([seeds], ratio(mid, first), resamples=config["resamples"], seed=11)
    tests.append(V.above("CBS rises during training", f"CBS at epoch {config['at_epochs'][mid]:g} / at epoch "
                         f"{config['at_epochs'][first]:g}", cbs[mid] / cbs[first], lo, hi, 1.0, noise, n))
    lo, hi = V.bootstrap([seeds], ratio(last, mid), resamples=config["resamples"], seed=12)
    tests.append(V.within("CBS then flattens", f"CBS at epoch {config['at_epochs'][last]:g} / at epoch "
                          f"{config['at_epochs'][mid]:g}", cbs[last] / cbs[mid], lo, hi, 1 / margin, margin, noise, n))
    outcome = V.combine("CBS rises during training, then flattens", tests)
    points = [dict(epoch=config["at_epochs"][c], val_error=float(errors[c]), cbs=float(cbs[c]),
                   cbs_lo=intervals[c][0], cbs_hi=intervals[c][1], b_simple=float(b_simple[c]),
                   progress={str(k * B): float(np.nanmean(progress[:, c, j])) for j, k in enumerate(ks)},
                   rates={str(k * B): rates[(c, k)] for k in ks}) for c in range(len(cbs))]
    for p, rung in zip(points, ladder_beside(config, errors)):
        p["ladder"] = rung
    summary = dict(points=points, tests=[t.as_dict() for t in tests], outcome=outcome)
    largest = max(ks) * B  # a CBS there is only a lower bound: no larger branch was tried
    for p in points:
        p["at_largest"] = p["cbs"] >= largest
    verdict = [f"epoch {p['epoch']:g} (val error {p['val_error']:.4f}): CBS = {'>= ' * p['at_largest']}{p['cbs']:.0f} "
               f"[{p['cbs_lo']:.0f}, {p['cbs_hi']:.0f}], B_simple = {p['b_simple']:.0f}; mean validation-loss fall "
               "over the branch per B: " + ", ".join(f"{b}: {v:.4f}" for b, v in p["progress"].items())
               + ("" if not p["ladder"] else f"; the study's B_crit at error {p['ladder']['level']:g}: "
                  f"{p['ladder']['b_crit']:.0f} [{p['ladder']['b_crit_lo']:.0f}, {p['ladder']['b_crit_hi']:.0f}], "
                  f"CBS-20% {p['ladder']['cbs_20']:.0f}") for p in points]
    verdict += [t.line() for t in tests]
    verdict.append(f"CBS rises during training, then flattens: {outcome} (both tests must hold; CBS = the largest "
                   f"k B within {tol:.0%} of the 1x branch's progress for the same examples).")
    return finish("cbs", out, summary, verdict, [], writer)
