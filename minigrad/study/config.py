"""The study's configuration: the defaults, --quick's lower resolution, the user's settings, and their checks."""
import copy

from minigrad.machine import settings

COMPLETE = settings.COMPLETE

# the study's settings, their defaults and --quick's lower resolution: minigrad.machine.settings, the one table
DEFAULT_CONFIG = settings.defaults("bench")
QUICK_OVERRIDES = settings.quick_overrides()


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
    settings.check_all(config, label=LABELS.get)


# names the messages have always used where they differ from the setting's
LABELS = {"batch_sizes": "batch sizes", "reference_lrs": "learning rates (--lrs)", "target": "target validation error",
          "budget_factor": "budget factor", "equal_epochs": "equal epochs"}
