"""minigrad: batch size against iterations, measured with a hand-written Numba MLP.

Importing the package compiles nothing and does not import numba: the public names below are
loaded on first use, so `minigrad --help` stays fast.
"""
from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "MLP": "minigrad.model",
    "SGD": "minigrad.optim",
    "Momentum": "minigrad.optim",
    "Nesterov": "minigrad.optim",
    "Adam": "minigrad.optim",
    "make_optimizer": "minigrad.optim",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")
