"""The study's configuration: the defaults, --quick's lower resolution, the user's settings, and their checks."""
import copy

COMPLETE = "COMPLETE"  # minigrad.training.train.COMPLETE, without importing the engine

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
