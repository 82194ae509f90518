"""The batch-size study behind `minigrad bench`: the configuration, the grid of trials, and its phases.

Phases, each a set of independent trials whose ids are fixed by the configuration and the results before it, so a
rerun on the same file recomputes the same ids and runs only the missing ones:

  reference  a few learning rates at the reference batch size with a long budget and no target: its best validation
             error sets the target (unless --target is given), its best learning rate centres the grids, and the
             steps S_ref and examples E_ref it took to first reach the target size the tuning budgets;
  tune       for each batch size B, learning rates log-spaced around the reference rate scaled by B/B_ref below B_ref and
             sqrt(B/B_ref) above,
             several seeds each, stopping at the target, with a budget of budget_factor * max(S_ref, E_ref/B) steps
             (S(B) can be no larger than S_ref above B_ref, nor E(B) much larger than E_ref below it); a grid whose
             best rate lies on its edge is widened on that side (up to `max_widen` times);
  equal      the equal-budget question: every B trained for the same number of examples, at its tuned rate and at
             the reference rate held fixed, final validation and test error recorded.

Compute speed is measured first, alone on the machine (workers start after it), by minigrad.throughput.
"""
import copy
import math
import os

import numpy as np

COMPLETE = "COMPLETE"  # minigrad.train.COMPLETE, without importing the engine

DEFAULT_CONFIG = {
    "data": "teacher",
    "data_options": {},
    "hidden": [64, 64],
    "activation": "relu",
    "loss": "cross_entropy",
    "dtype": "float32",
    "optimizer": "sgd",
    "momentum": 0.9,
    "sampler": "shuffle",
    "batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    "seeds": 3,
    "reference_batch_size": 32,
    "reference_lrs": [0.01, 0.03, 0.1, 0.3, 1.0],
    "reference_epochs": 30.0,
    "target": None,           # validation error; None: from the reference run
    "target_margin": 0.02,    # target = best reference validation error + this
    "lr_points": 5,           # learning rates per batch size
    "lr_factor": 2.0,         # ratio between neighbouring rates
    "max_widen": 3,
    "budget_factor": 3.0,     # a tuning trial may take this many times max(S_ref, E_ref/B) steps
    "equal_epochs": 5.0,      # the equal-budget comparison's number of epochs
    "eval_growth": 1.04,
}

QUICK_OVERRIDES = {
    "batch_sizes": [1, 4, 16, 64, 256, 1024],
    "seeds": 2,
    "reference_lrs": [0.03, 0.1, 0.3],
    "reference_epochs": 10.0,
    "lr_points": 3,
    "max_widen": 2,
    "budget_factor": 2.5,
    "equal_epochs": 3.0,
}


def make_config(quick=False, **overrides):
    """The default study, with --quick's lower resolution and the user's settings on top (None = keep default)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if quick:
        config.update(copy.deepcopy(QUICK_OVERRIDES))
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown study setting(s): {', '.join(sorted(unknown))}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    validate(config)
    return config


def validate(config):
    bs = config["batch_sizes"]
    if not bs or min(bs) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {bs}")
    if len(set(bs)) != len(bs):
        raise ValueError(f"batch sizes must not repeat, got {bs}")
    if config["seeds"] < 1:
        raise ValueError(f"seeds must be >= 1, got {config['seeds']}")
    if not config["reference_lrs"] or min(config["reference_lrs"]) <= 0:
        raise ValueError(f"learning rates must be > 0, got {config['reference_lrs']}")
    if config["target"] is not None and not 0 < config["target"] < 1:
        raise ValueError(f"target validation error must lie in (0, 1), got {config['target']}")
    for key in ("budget_factor", "reference_epochs", "equal_epochs"):
        if not config[key] > 0:
            raise ValueError(f"{key.replace('_', ' ')} must be > 0, got {config[key]}")
    if config["lr_points"] < 2 or config["lr_factor"] <= 1:
        raise ValueError("the learning-rate grid needs at least 2 points and a factor > 1")
    if config["optimizer"] not in ("sgd", "momentum", "nesterov", "adam"):
        raise ValueError(f"unknown optimizer {config['optimizer']!r}")


def fit_batch_sizes(config, n_train):
    """Drop batch sizes larger than the training split, with the reason, so the study can still run."""
    kept = [B for B in config["batch_sizes"] if B <= n_train]
    if not kept:
        raise ValueError(f"every batch size exceeds the {n_train} training examples")
    return kept


# -------------------------------------------------------------------------------------------------- trial ids
def lr_key(lr):
    return f"{lr:.4g}"


def trial(phase, batch_size, lr, seed, target, *, epochs=None, steps=None, stop_at_target=True, tag=""):
    """One trial's settings; its budget is `epochs` or `steps`."""
    run_id = f"{phase}-B{batch_size:05d}-lr{lr_key(lr)}-s{seed}{tag}"
    return dict(run_id=run_id, phase=phase, batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                epochs=None if epochs is None else float(epochs), steps=None if steps is None else int(steps),
                target=target, stop_at_target=stop_at_target)


def reference_trials(config):
    B = config["reference_batch_size"]
    return [trial("reference", B, lr, seed, None, epochs=config["reference_epochs"], stop_at_target=False)
            for lr in config["reference_lrs"] for seed in range(min(config["seeds"], 2))]


def best_reference(results):
    """(best validation error, learning rate that reached it, averaged over the reference seeds)."""
    by_lr = {}
    for r in results:
        if r["phase"] == "reference" and r["status"] != "DIVERGED":
            by_lr.setdefault(r["lr"], []).append(r["best_val_error"])
    if not by_lr:
        raise ValueError("every reference run diverged: lower the reference learning rates (--lrs)")
    lr, errors = min(by_lr.items(), key=lambda item: (np.mean(item[1]), item[0]))
    return float(np.mean(errors)), lr


def choose_target(config, results):
    if config["target"] is not None:
        return config["target"], "given with --target"
    best, lr = best_reference(results)
    target = round(best + config["target_margin"], 4)
    return target, (f"best reference validation error {best:.4f} (B={config['reference_batch_size']}, "
                    f"lr={lr:g}) + margin {config['target_margin']:g}")


def reference_cost(config, results, target):
    """(S_ref, E_ref): median over seeds of the steps and examples the best reference rate took to first reach the
    target, read off its trace."""
    _, lr = best_reference(results)
    hits = []
    for r in results:
        if r["phase"] == "reference" and r["lr"] == lr:
            curve = r["curve"]
            reached = np.flatnonzero(curve["val_error"] <= target)
            if len(reached):
                hits.append((curve["step"][reached[0]], curve["examples"][reached[0]]))
    if len(hits) * 2 <= sum(1 for r in results if r["phase"] == "reference" and r["lr"] == lr):
        raise ValueError(f"the reference run (B={config['reference_batch_size']}, lr={lr:g}) did not reach validation "
                         f"error {target:g} in {config['reference_epochs']:g} epochs: loosen --target or raise "
                         "reference_epochs")
    steps, examples = np.median(np.array(hits, float), axis=0)
    return float(steps), float(examples)


def tune_budget(config, reference, batch_size):
    """Steps a tuning trial at batch size B may take: budget_factor * max(S_ref, E_ref / B)."""
    s_ref, e_ref = reference
    return int(math.ceil(config["budget_factor"] * max(s_ref, e_ref / batch_size)))


def centre_lr(config, reference_lr, batch_size):
    """Where a batch size's grid is centred: the reference rate scaled linearly below B_ref (Goyal et al.; the
    optimal rate grows about in proportion to B at small B) and by sqrt(B/B_ref) above it (Hoffer et al.; it
    saturates at large B). The grid is wide and is widened where needed, so the rule is only a starting guess."""
    ratio = batch_size / config["reference_batch_size"]
    return reference_lr * (ratio if ratio < 1 else math.sqrt(ratio))


def grid_for(config, reference_lr, batch_size):
    centre, f, n = centre_lr(config, reference_lr, batch_size), config["lr_factor"], config["lr_points"]
    return [float(f"{centre * f ** (k - (n - 1) / 2):.4g}") for k in range(n)]


def steps_by_lr(results, batch_size, phase="tune"):
    """{lr: median over seeds of steps-to-target} for one batch size; a seed that missed the target counts as
    infinitely many steps, so an lr whose median missed is infinite."""
    per_lr = {}
    for r in results:
        if r["phase"] == phase and r["batch_size"] == batch_size:
            steps = r["steps_to_target"] if r["status"] == COMPLETE and r["steps_to_target"] is not None else math.inf
            per_lr.setdefault(r["lr"], []).append(steps)
    return {lr: float(np.median(v)) for lr, v in sorted(per_lr.items())}


def best_lr(results, batch_size):
    medians = steps_by_lr(results, batch_size)
    finite = {lr: s for lr, s in medians.items() if math.isfinite(s)}
    if not finite:
        return None, math.inf
    lr = min(finite, key=lambda k: (finite[k], k))
    return lr, finite[lr]


def tune_trials(config, reference_lr, target, batch_sizes, results, reference=None):
    """The tuning trials needed now: the initial grid for every B, then one more rate beyond each edge where the
    best rate sits on it (or where no rate reached the target: towards larger rates first, then smaller)."""
    wanted = []
    for B in batch_sizes:
        grid = grid_for(config, reference_lr, B)
        tried = sorted({r["lr"] for r in results if r["phase"] == "tune" and r["batch_size"] == B})
        lrs = sorted(set(grid) | set(tried))
        if set(grid) <= set(tried):
            lr, _ = best_lr(results, B)
            widened = len(lrs) - len(grid)
            if widened < config["max_widen"]:
                f = config["lr_factor"]
                medians = steps_by_lr(results, B)
                diverged_top = all(r["status"] == "DIVERGED" for r in results if r["phase"] == "tune"
                                   and r["batch_size"] == B and r["lr"] == lrs[-1])
                if lr is None:
                    # nothing reached the target: try larger rates unless the largest diverged, then smaller
                    extra = lrs[0] / f if diverged_top else lrs[-1] * f
                    lrs.append(float(f"{extra:.4g}"))
                elif lr == lrs[-1] and not diverged_top:
                    lrs.append(float(f"{lr * f:.4g}"))
                elif lr == lrs[0] and len(medians) > 1:
                    lrs.append(float(f"{lr / f:.4g}"))
        for lr in lrs:
            for seed in range(config["seeds"]):
                wanted.append(trial("tune", B, lr, seed, target, steps=tune_budget(config, reference, B)))
    return wanted


def equal_budget_trials(config, reference_lr, target, batch_sizes, results):
    """Every B for the same number of examples (equal_epochs), at its tuned rate and at the reference rate."""
    wanted = []
    for B in batch_sizes:
        tuned, _ = best_lr(results, B)
        for tag, lr in (("tuned", tuned), ("fixed", reference_lr)):
            if lr is None:
                continue
            for seed in range(config["seeds"]):
                wanted.append(trial("equal", B, lr, seed, target, epochs=config["equal_epochs"], stop_at_target=False,
                                    tag=f"-{tag}"))
    return wanted


# --------------------------------------------------------------------------------------- running one trial
_CACHE = {}


def worker_setup(threads=1):
    """One BLAS thread and one Numba thread per worker process: the workers together fill the cores."""
    import numba

    from minigrad.throughput import limit_threads

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _CACHE["limits"] = limit_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def load_data(config):
    """The study's dataset, loaded once per process."""
    from minigrad import data

    key = (config["data"], repr(sorted(config["data_options"].items())))
    if _CACHE.get("data_key") != key:
        _CACHE["data"], _CACHE["data_key"] = data.load(config["data"], **config["data_options"]), key
    return _CACHE["data"]


def run_trial(config, spec):
    """Train one trial; returns a plain dict (run_id, phase, attrs, columns) that pickles cheaply."""
    from minigrad.train import Budget, build_model, optimizer_options, train

    dataset = load_data(config)
    model = build_model(dataset, config["hidden"], activation=config["activation"], loss=config["loss"],
                        dtype=config["dtype"], seed=spec["seed"])
    hooks = ()
    if spec["phase"] == "tune":
        # gradient noise scale at each evaluation (gns_* columns): 2 x 256 examples, about 4% of a trial's time,
        # its own random stream, so the trajectory is the one without it (minigrad.noise)
        from minigrad.noise import GNSHook

        hooks = (GNSHook(batch_size=256, batches=2, seed=spec["seed"]),)
    trace = train(model, dataset, spec["batch_size"], spec["lr"], config["optimizer"],
                  budget=Budget(epochs=spec["epochs"], steps=spec["steps"]), target=spec["target"],
                  stop_at_target=spec["stop_at_target"],
                  sampler=config["sampler"], seed=spec["seed"], eval_growth=config["eval_growth"],
                  optimizer_options=optimizer_options(config["optimizer"], config["momentum"]), eval_hooks=hooks)
    attrs = dict(trace.attrs, phase=spec["phase"], lr=spec["lr"], budget_epochs=spec["epochs"],
                 budget_steps=spec["steps"])
    return dict(run_id=spec["run_id"], attrs=attrs, columns=trace.columns)


def result_row(run_id, attrs, columns):
    """The fields the phases decide on, from a run's stored attrs (and, for reference runs, its curve)."""
    row = dict(run_id=run_id, phase=attrs["phase"], batch_size=int(attrs["batch_size"]), lr=float(attrs["lr"]),
               seed=int(attrs["seed"]), status=attrs["status"], steps_to_target=attrs.get("steps_to_target"),
               best_val_error=float(attrs["best_val_error"]))
    if row["phase"] == "reference":
        row["curve"] = {k: np.asarray(columns[k]) for k in ("step", "examples", "val_error")}
    return row
