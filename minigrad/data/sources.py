"""The datasets by name: the embedded teacher task, scikit-learn's digits, user files; and load(), which picks one."""
from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import numpy as np

from minigrad.data.dataset import DATASETS, DataError, Dataset, _check_X, _check_y, _finish, _int_in, split_indices
from minigrad.data.idx import REMOTE, _load_idx_family
from minigrad.machine.checks import unreadable


# ----------------------------------------------------------------------------------------------------------------
# "teacher": the embedded default. Labels come from a fixed random tanh network, so the best reachable error is
# known exactly: the clean label is a function of x, and a fraction eta of labels is moved uniformly to another
# class, so the Bayes classifier is the teacher itself (for eta < 1 - 1/K) and its expected error is eta.
#
# Choices, from trial runs (20000 training examples, an MLP 128-128 trained with Adam):
# - The teacher reads 8 latent Gaussian factors that are mixed linearly into the 32 visible features. A teacher
#   reading 32 independent dimensions needs far more than 20000 examples: the MLP overfit and did no better
#   than a linear model.
# - Width 8 and weight gain 2: tanh units leave their linear range, so class boundaries curve and a linear
#   softmax stays far above the floor.
# - Inputs whose top-two teacher logits lie close are rejected (40% of them): points on a boundary carry no
#   learnable signal, and without this margin an MLP stalls far from the floor.
_TEACHER_WIDTH = 8
_TEACHER_GAIN = 2.0
_TEACHER_KEEP = 0.6


def _margin(logits):
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@functools.lru_cache(maxsize=8)
def _teacher_network(teacher_seed, n_features, latent_dim, n_classes):
    """The teacher's weights, output biases and margin threshold (cached: calibration is the slow part)."""
    K, L, H = n_classes, latent_dim, _TEACHER_WIDTH
    rng = np.random.default_rng([teacher_seed, 0x7EAC])
    W1 = rng.standard_normal((H, L)) * _TEACHER_GAIN / np.sqrt(L)
    b1 = rng.standard_normal(H) * 0.5
    W2 = rng.standard_normal((H, H)) * _TEACHER_GAIN / np.sqrt(H)
    b2 = rng.standard_normal(H) * 0.5
    W3 = rng.standard_normal((K, H)) / np.sqrt(H)
    mix = rng.standard_normal((n_features, L)) / np.sqrt(L)  # latent factors -> visible features, full column rank

    def hidden(Z):
        return np.tanh(np.tanh(Z @ W1.T + b1) @ W2.T + b2)

    # Output biases that make the classes about equally frequent among the kept inputs, found on a calibration
    # sample; the margin threshold is fixed with them, so the examples drawn later are i.i.d. given the teacher.
    Hc = hidden(rng.standard_normal((10000, L)))
    b3 = np.zeros(K)
    for _ in range(100):
        logits = Hc @ W3.T + b3
        m = _margin(logits)
        threshold = np.quantile(m, 1 - _TEACHER_KEEP)
        freq = np.bincount(logits[m >= threshold].argmax(1), minlength=K) / np.count_nonzero(m >= threshold)
        b3 -= 0.1 * np.log(np.maximum(freq, 1e-3) * K)  # larger steps oscillate
    return hidden, W3, b3, mix, threshold


def make_teacher(n: int, *, n_features=32, latent_dim=8, n_classes=10, teacher_seed=0, seed=0):
    """n inputs X (n, n_features) and their clean teacher labels y (n,).

    teacher_seed fixes the network (the task); seed draws the examples, so seeds give fresh samples of one task."""
    hidden, W3, b3, mix, threshold = _teacher_network(teacher_seed, n_features, latent_dim, n_classes)
    rng = np.random.default_rng([seed, teacher_seed, 0xDA7A])
    Zs, have = [], 0
    while have < n:  # rejection sampling: keep inputs at least `threshold` from a class boundary
        Z = rng.standard_normal((int(1.2 * (n - have) / _TEACHER_KEEP) + 64, latent_dim))
        Z = Z[_margin(hidden(Z) @ W3.T + b3) >= threshold]
        Zs.append(Z)
        have += len(Z)
    Z = np.concatenate(Zs)[:n]
    return Z @ mix.T, (hidden(Z) @ W3.T + b3).argmax(1)


def _load_teacher(seed, standardize, n_train=20000, n_val=5000, n_test=5000, n_features=32, latent_dim=8,
                  n_classes=10, label_noise=0.05, teacher_seed=0):
    n_train, n_val, n_test = (_int_in(v, 1, None, f"teacher: {k}") for k, v in
                              (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)))
    n_features = _int_in(n_features, 1, None, "teacher: n_features")
    latent_dim = _int_in(latent_dim, 1, None, "teacher: latent_dim")
    n_classes = _int_in(n_classes, 2, None, "teacher: n_classes")
    teacher_seed = _int_in(teacher_seed, 0, None, "teacher: teacher_seed")
    if latent_dim > n_features:
        raise DataError(f"teacher: latent_dim ({latent_dim}) must not exceed n_features ({n_features})")
    if not 0 <= label_noise < 1 - 1 / n_classes:
        raise DataError(f"teacher: label_noise must lie in [0, {1 - 1 / n_classes:.3g}) so that the teacher stays "
                        f"the best classifier, got {label_noise}")
    n = n_train + n_val + n_test
    X, y_clean = make_teacher(n, n_features=n_features, latent_dim=latent_dim, n_classes=n_classes,
                              teacher_seed=teacher_seed, seed=seed)
    # The examples are i.i.d., so consecutive blocks are random splits. Exactly round(eta * n) labels per split
    # are flipped, so the teacher's error on each split (the reachable floor there) is known exactly.
    rng = np.random.default_rng([seed, teacher_seed, 0x0015E])
    splits, info = {}, {}
    for split, lo, hi in (("train", 0, n_train), ("val", n_train, n_train + n_val), ("test", n_train + n_val, n)):
        y = y_clean[lo:hi].copy()
        flip = rng.choice(hi - lo, size=round(label_noise * (hi - lo)), replace=False)
        y[flip] = (y[flip] + rng.integers(1, n_classes, size=flip.size)) % n_classes
        splits[split] = (X[lo:hi], y)
        info[f"floor_{split}"] = flip.size / (hi - lo)
    info = {"source": "synthetic tanh teacher network (embedded)", "seed": seed, "teacher_seed": teacher_seed,
            "label_noise": label_noise, "bayes_error": label_noise, **info, "latent_dim": latent_dim,
            "teacher_width": _TEACHER_WIDTH, "teacher_gain": _TEACHER_GAIN, "margin_keep": _TEACHER_KEEP}
    return _finish("teacher", splits, info, standardize=standardize, n_classes=n_classes)


# ----------------------------------------------------------------------------------------------------------------
# scikit-learn's digits and user files


def _split_fractions(X, y, seed, val_fraction, test_fraction, carve=("val", "test")):
    """Random train/val/test splits of (X, y); only the splits named in `carve` are cut out of it."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction and test_fraction must lie in (0, 1) and sum below 1, "
                        f"got {val_fraction} and {test_fraction}")
    n_val = max(1, round(val_fraction * len(X))) if "val" in carve else 0
    n_test = max(1, round(test_fraction * len(X))) if "test" in carve else 0
    train, val, test = split_indices(len(X), n_val, n_test, seed)
    splits = {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": (X[test], y[test])}
    return {k: v for k, v in splits.items() if k == "train" or k in carve}


def _load_digits(seed, standardize, val_fraction=0.2, test_fraction=0.2):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        if e.name and e.name.split(".")[0] == "sklearn":  # not installed, rather than installed but broken
            raise DataError("the digits dataset needs scikit-learn: pip install 'minigrad[digits]'") from None
        raise DataError(f"scikit-learn does not import ({e}); reinstall it: pip install 'minigrad[digits]'") from None
    X, y = load_digits(return_X_y=True)
    info = {"source": "scikit-learn load_digits (8x8 handwritten digits)", "seed": seed}
    return _finish("digits", _split_fractions(X, y, seed, val_fraction, test_fraction), info,
                   standardize=standardize, n_classes=10)


def _read_arrays(path: Path) -> dict:
    reason = unreadable(path)
    if reason is not None:
        raise DataError(f"cannot read {path}: {reason}; check its permissions (or copy it where you can read it)")
    try:
        if path.suffix == ".npz":
            import zipfile

            if not zipfile.is_zipfile(path):  # else numpy reads it as a pickle and talks about allow_pickle
                raise DataError(f"{path} is not a complete .npz archive (a .npz is a zip file: truncated, or not "
                                f"written by numpy.savez)")
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        import h5py  # a core dependency, imported here so that importing minigrad.data needs numpy only
        with h5py.File(path, "r") as f:
            return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except DataError:
        raise
    except Exception as e:  # zip, gzip, HDF5 and pickle-refusal errors all mean: unreadable
        raise DataError(f"cannot read {path}: {' '.join(str(e).split()) or type(e).__name__}; "
                        f"is it a complete {path.suffix} file?") from None


def _load_file(path, seed, standardize, val_fraction=0.1, test_fraction=0.1):
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; --data takes a .npz or .h5 file with arrays X and y, or a dataset name "
                        f"({', '.join(DATASETS)})")
    if path.suffix not in (".npz", ".h5", ".hdf5"):
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .npz or .h5 with arrays X and y")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    arrays = _read_arrays(path)
    if "X" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: needs arrays 'X' (n, features) and 'y' (n,); found {sorted(arrays) or 'none'}")
    for split in ("val", "test"):
        if ("X_" + split in arrays) != ("y_" + split in arrays):
            raise DataError(f"{path}: X_{split} and y_{split} must come together")
    X = _check_X(arrays["X"], f"{path.name} X")
    y = _check_y(arrays["y"], len(X), f"{path.name} y")
    given = [s for s in ("val", "test") if "X_" + s in arrays]
    missing = [s for s in ("val", "test") if s not in given]
    # Whatever the file lacks is carved out of X, y; a split the file holds is used as it is.
    splits = {"train": (X, y)}
    if missing:
        splits = _split_fractions(X, y, seed, val_fraction, test_fraction, carve=missing)
    splits.update({s: (arrays["X_" + s], arrays["y_" + s]) for s in given})
    info = {"source": str(path), "seed": seed, "given_splits": given}
    return _finish(path.stem, splits, info, standardize=standardize)


# ----------------------------------------------------------------------------------------------------------------
# The entry point


def load(name_or_path, *, seed: int = 0, data_dir=None, standardize: bool = True, **options) -> Dataset:
    """Load a named dataset (see DATASETS) or a user .npz/.h5 file, split by `seed`, standardised on train.

    options by dataset (defaults):
      teacher        n_train=20000, n_val=5000, n_test=5000, n_features=32, latent_dim=8, n_classes=10,
                     label_noise=0.05, teacher_seed=0 (seed draws the examples, teacher_seed the network)
      mnist, fashion-mnist   n_val=10000 (carved from the 60000 training images; test is the official 10000)
      digits         val_fraction=0.2, test_fraction=0.2
      user file      val_fraction=0.1, test_fraction=0.1 (used only for splits the file does not hold)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    name = str(name_or_path)
    if name == "teacher":
        loader, args = _load_teacher, ()
    elif name in REMOTE:
        loader, args = _load_idx_family, (name, data_dir)
    elif name == "digits":
        loader, args = _load_digits, ()
    elif Path(name).suffix in (".npz", ".h5", ".hdf5") or os.sep in name or Path(name).exists():
        loader, args = _load_file, (name_or_path,)
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or give a .npz/.h5 path")
    # A loader's options are its parameters with defaults; anything else is a typo worth reporting.
    known = [p.name for p in inspect.signature(loader).parameters.values() if p.default is not p.empty]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"{name}: unknown option {', '.join(unknown)}; it takes {', '.join(known)}")
    return loader(*args, seed, standardize, **options)


