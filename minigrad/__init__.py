"""minigrad: batch size against iterations, measured with a hand-written Numba MLP.

The API (see minigrad.api and the README): make_config, run_study, open_study, Study; the engine's MLP and
optimizers. Importing the package compiles nothing and does not import numba: the public names below are loaded on
first use, so `minigrad --help` stays fast.
"""
from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "make_config": "minigrad.api",
    "run_study": "minigrad.api",
    "open_study": "minigrad.api",
    "Study": "minigrad.api",
    "MLP": "minigrad.engine.model",
    "SGD": "minigrad.engine.optim",
    "Momentum": "minigrad.engine.optim",
    "Nesterov": "minigrad.engine.optim",
    "Adam": "minigrad.engine.optim",
    "make_optimizer": "minigrad.engine.optim",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")


def __dir__():
    return __all__
