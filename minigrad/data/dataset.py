"""Datasets as arrays: the Dataset record, the checks every source goes through, splits and standardisation."""
from __future__ import annotations

import dataclasses

import numpy as np

from minigrad.machine.checks import LARGEST_INT, shown

DATASETS = ("teacher", "mnist", "fashion-mnist", "digits")


class DataError(ValueError):
    """A dataset could not be found, read or trusted; the message says what to do."""


# ----------------------------------------------------------------------------------------------------------------
# The result type


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # Kernels trust their inputs, so the invariants are checked once here rather than in every step.
        n_features = self.X_train.shape[1] if self.X_train.ndim == 2 else None
        for split in ("train", "val", "test"):
            X, y = getattr(self, "X_" + split), getattr(self, "y_" + split)
            if X.ndim != 2 or X.shape[1] != n_features or X.dtype not in (np.float32, np.float64):
                raise DataError(f"{self.name}: X_{split} must be float32/float64 (n, {n_features}), "
                                f"got {X.dtype} {X.shape}")
            if not X.flags.c_contiguous:
                raise DataError(f"{self.name}: X_{split} must be C-contiguous; use np.ascontiguousarray")
            if y.dtype != np.int64 or y.shape != (X.shape[0],):
                raise DataError(f"{self.name}: y_{split} must be int64 ({X.shape[0]},), got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise DataError(f"{self.name}: y_{split} holds labels outside 0..{self.n_classes - 1}")

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    def astype(self, dtype) -> "Dataset":
        """A copy with every X cast to `dtype` (float64 for gradient checks); labels are shared."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise DataError(f"Dataset.astype takes float32 or float64, got {dtype}")
        return dataclasses.replace(self, **{k: np.ascontiguousarray(getattr(self, k), dtype=dtype)
                                            for k in ("X_train", "X_val", "X_test")})

    def subset(self, n_train: int) -> "Dataset":
        """The first n_train training examples (the split is already random); validation and test unchanged.

        The standardisation stays the one fitted on the full training split."""
        n = _int_in(n_train, 1, self.n_train, "subset: n_train")
        return dataclasses.replace(self, X_train=self.X_train[:n], y_train=self.y_train[:n],
                                   info={**self.info, "n_train_full": self.n_train})

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)}, "
                f"features={self.n_features}, classes={self.n_classes}, dtype={self.X_train.dtype})")


# ----------------------------------------------------------------------------------------------------------------
# Checks, splits and standardisation shared by every source


def _int_in(value, lo: int, hi, what: str) -> int:
    """value as an int in lo..hi (hi None: no upper bound), or a DataError naming `what`."""
    try:
        ok = not isinstance(value, bool) and value == int(value)
    except (TypeError, ValueError, OverflowError):  # "3", None, NaN, inf
        ok = False
    top = LARGEST_INT if hi is None else hi  # an int64 at most: larger ones overflow later, inside NumPy
    if not ok or value < lo or value > top:
        raise DataError(f"{what} must be an integer in {lo}..{'' if hi is None else hi}, got {shown(value)}")
    return int(value)


def _check_X(X, where: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{where}: X must be numeric, got dtype {X.dtype}")
    if X.ndim < 2 or X.shape[0] == 0:
        raise DataError(f"{where}: X must have shape (n, features) with n >= 1, got {X.shape}")
    X = X.reshape(X.shape[0], -1)  # images (n, h, w) become rows of pixels
    bad = np.count_nonzero(~np.isfinite(X)) if X.dtype.kind == "f" else 0
    if bad:
        raise DataError(f"{where}: X holds {bad} NaN/Inf values; clean or impute them first")
    return X


MAX_LABEL = 2**31 - 1  # a class count past this could not be allocated as an output layer anyway


def _check_y(y, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        hint = " (one-hot? use y.argmax(1))" if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1 else ""
        raise DataError(f"{where}: y must have shape ({n},) to match X, got {y.shape}{hint}")
    if y.dtype.kind == "f":
        # Labels saved as floats (MATLAB, pandas) are fine when they are whole numbers.
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{where}: y must hold integer class labels, found non-integer values")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{where}: y must hold integer class labels, got dtype {y.dtype}")
    if y.size and y.max() > MAX_LABEL:  # before the cast, which would wrap it round (a float past 2^63: to negative)
        raise DataError(f"{where}: y holds the label {y.max():.0f}; classes must be numbered 0..K-1 "
                        f"(at most {MAX_LABEL})")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"{where}: y holds negative labels (min {y.min()}); classes must be 0..K-1")
    return y


def split_indices(n: int, n_val: int, n_test: int, seed: int):
    """Random disjoint (train, val, test) index arrays, the same for the same seed."""
    if n_val < 0 or n_test < 0 or n - n_val - n_test < 1:
        raise DataError(f"cannot split {n} examples into val={n_val}, test={n_test} and a non-empty train")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]


def _finish(name, splits, info, *, standardize=True, n_classes=None) -> Dataset:
    """Check raw (X, y) splits, standardise with training statistics, and build the Dataset."""
    Xs, ys = {}, {}
    for split, (X, y) in splits.items():
        Xs[split] = _check_X(X, f"{name} {split}")
        ys[split] = _check_y(y, Xs[split].shape[0], f"{name} {split}")
    widths = {X.shape[1] for X in Xs.values()}
    if len(widths) != 1:
        raise DataError(f"{name}: train/val/test have different feature counts {sorted(widths)}")
    present = np.unique(ys["train"])
    if present.size < 2:
        raise DataError(f"{name}: the training split holds {present.size} class; a classifier needs at least 2")
    top = max(int(y.max()) for y in ys.values()) + 1
    n_classes = top if n_classes is None else n_classes
    if top > n_classes:
        raise DataError(f"{name}: labels go up to {top - 1} but the dataset has {n_classes} classes")
    unseen = sorted(set(np.unique(np.concatenate([ys["val"], ys.get("test", ys["val"])]))) - set(present.tolist()))
    if unseen:
        raise DataError(f"{name}: validation/test labels {unseen[:5]} never occur in the training split; a "
                        f"classifier cannot learn them: check the labels")
    if standardize:
        # A feature constant on the training split (MNIST's border pixels) keeps scale 1 and becomes exactly 0,
        # rather than blowing up as x/0; min == max tells constant features apart exactly.
        # A near-constant one (a pixel inked in 3 of 50000 images) would get a tiny scale, and a validation image
        # that inks it would sit hundreds of standard deviations out: each scale is floored at SCALE_FLOOR times
        # the root-mean-square scale of all features, which leaves features of similar spread (teacher) unchanged.
        Xtr = Xs["train"]
        constant = Xtr.min(axis=0) == Xtr.max(axis=0)
        mean, std = _column_stats(Xtr)
        mean = np.where(constant, Xtr[0], mean)
        floor = SCALE_FLOOR * float(np.sqrt(np.mean(std ** 2)))
        scale = np.where(constant, 1.0, np.maximum(std, floor))
        info = {**info, "standardized": True, "constant_features": int(constant.sum()),
                "floored_features": int(np.count_nonzero(~constant & (std < floor)))}
    else:
        mean, scale = 0.0, 1.0
        info = {**info, "standardized": False}
    arrays = {}
    for split in ("train", "val", "test"):
        arrays["X_" + split] = _scaled(Xs[split], mean, scale)
        if not np.all(np.isfinite(arrays["X_" + split])):
            raise DataError(f"{name} {split}: X holds values beyond float32's range (about 3.4e38) once scaled; "
                            "rescale those features")
        arrays["y_" + split] = ys[split]
    return Dataset(name=name, n_classes=int(n_classes), info=info, **arrays)


SCALE_FLOOR = 0.1  # a feature's scale is at least this times the root-mean-square scale of all features (_finish)
_ROWS = 4096  # row block: statistics in float64 without a float64 copy of the whole set (300 MB for MNIST)


def _column_stats(X):
    """Per-feature mean and standard deviation in float64 (two passes, so no cancellation)."""
    mean = X.mean(axis=0, dtype=np.float64)
    sq = np.zeros_like(mean)
    for i in range(0, len(X), _ROWS):
        sq += ((X[i:i + _ROWS] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(sq / len(X))


def _scaled(X, mean, scale):
    """(X - mean) / scale as a new C-contiguous float32 array, computed in float64 one block at a time."""
    out = np.empty(X.shape, dtype=np.float32)
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, which the caller reports
        for i in range(0, len(X), _ROWS):
            out[i:i + _ROWS] = (X[i:i + _ROWS] - mean) / scale
    return out


