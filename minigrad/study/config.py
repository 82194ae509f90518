"""The study's configuration: the defaults, --quick's lower resolution, the user's settings, and their checks."""
import copy

from minigrad.machine import checks as C

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
    "beta2": 0.999,           # Adam's, at the reference batch size under the halflife rule
    "beta2_rule": "fixed",    # Adam's beta2 per B: fixed, or halflife (the same half-life in samples at every B)
    "beta2_halflife": None,   # samples; None: the half-life beta2 has at reference_batch_size
    "sampler": "shuffle",
    "batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    "seeds": 5,               # per (B, lr) cell: the compiled loop made trials 2.5x cheaper; the time went to seeds
    "reference_batch_size": 32,
    "reference_lrs": [0.01, 0.03, 0.1, 0.3, 1.0],
    "reference_epochs": 30.0,
    "target": None,           # validation error; None: from the reference run
    "target_margin": 0.02,    # target = best reference validation error + this
    "lr_points": 5,           # learning rates per batch size
    "lr_factor": 2.0,         # ratio between neighbouring rates
    "max_widen": 3,
    "budget_factor": 3.0,     # a tuning trial may take this many times max(S_ref, E_ref/B) steps
    "adaptive_budget": 48,    # extra trials the adaptive phase may spend where they change the answer
    "adaptive_seeds": 2,      # seeds it adds per round at a batch size's best rate
    "stable_fraction": 0.8,   # it stops once the tie set is the same in this fraction of resamples
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
    "adaptive_budget": 16,
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
    """Every setting once, where the configuration is built: types (TOML too), finite values, ranges."""
    if not isinstance(config["data"], str):
        raise ValueError(f"data must be a dataset name or a file path, got {config['data']!r}")
    if not isinstance(config["data_options"], dict):
        raise ValueError(f"data_options must be a table of dataset options, got {config['data_options']!r}")
    C.numbers("hidden", config["hidden"], 1, 1_000_000, integer=True)
    C.choice("activation", config["activation"], ("relu", "tanh", "gelu"))
    C.choice("loss", config["loss"], ("cross_entropy", "mse"))
    C.choice("dtype", config["dtype"], ("float32", "float64"))
    C.choice("optimizer", config["optimizer"], ("sgd", "momentum", "nesterov", "adam"))
    C.choice("sampler", config["sampler"], ("shuffle", "replacement", "stratified"))
    C.number("momentum", config["momentum"], 0, 1, hi_open=True)
    C.number("beta2", config["beta2"], 0, 1, lo_open=True, hi_open=True)
    C.choice("beta2_rule", config["beta2_rule"], ("fixed", "halflife"))
    if config["beta2_halflife"] is not None:
        C.number("beta2_halflife (samples)", config["beta2_halflife"], 0, 1e15, lo_open=True)
    C.numbers("batch sizes", config["batch_sizes"], 1, None, integer=True, unique=True)
    C.number("seeds", config["seeds"], 1, 1000, integer=True)
    C.number("reference_batch_size", config["reference_batch_size"], 1, None, integer=True)
    C.numbers("learning rates (--lrs)", config["reference_lrs"], 0, 1e6, lo_open=True)
    C.number("reference_epochs", config["reference_epochs"], 0, 1e5, lo_open=True)
    if config["target"] is not None:
        C.number("target validation error", config["target"], 0, 1, lo_open=True, hi_open=True)
    C.number("target_margin", config["target_margin"], 0, 1, hi_open=True)
    C.number("lr_points", config["lr_points"], 2, 100, integer=True)
    C.number("lr_factor", config["lr_factor"], 1, 1e3, lo_open=True)
    C.number("max_widen", config["max_widen"], 0, 100, integer=True)
    C.number("budget factor", config["budget_factor"], 0, 1e4, lo_open=True)
    C.number("equal epochs", config["equal_epochs"], 0, 1e5, lo_open=True)
    C.number("eval_growth", config["eval_growth"], 1, 10, lo_open=True)
    C.number("adaptive_budget", config["adaptive_budget"], 0, 100_000, integer=True)
    C.number("adaptive_seeds", config["adaptive_seeds"], 1, 1000, integer=True)
    C.number("stable_fraction", config["stable_fraction"], 0, 1, lo_open=True)


def fit_batch_sizes(config, n_train):
    """Drop batch sizes larger than the training split, with the reason, so the study can still run."""
    kept = [B for B in config["batch_sizes"] if B <= n_train]
    if not kept:
        raise ValueError(f"every batch size exceeds the {n_train} training examples")
    return kept
