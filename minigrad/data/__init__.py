"""Datasets, splits and batch samplers (dataset.py, sources.py, idx.py, samplers.py; the names below are the API).

Every dataset comes back as a `Dataset`: train / validation / test arrays with X float32 (n, features),
C-contiguous and standardised with training statistics, and y int64 class labels.

    load("teacher")            synthetic, embedded, no download: the default
    load("mnist"), load("fashion-mnist")   IDX files fetched once with `minigrad data fetch NAME`
    load("digits")             scikit-learn's bundled 8x8 digits (pip install 'minigrad[digits]')
    load("path/to/file.npz")   user data: arrays X, y and optionally X_val, y_val, X_test, y_test (.npz or .h5)

Downloads land in `default_data_dir()`: $MINIGRAD_DATA when set, otherwise ./data relative to the current
directory (the repository's data/ folder when run from a checkout).

Samplers hand the training loop one batch of row indices per step: `make_sampler(kind, y, B, seed=, drop_last=)`,
then `sampler.next_batch(B)` (B may change between calls) and `sampler.epoch` for logging.

Every user mistake raises DataError (a ValueError) with one line naming the problem and what to do.
"""
from minigrad.data.dataset import DATASETS, SCALE_FLOOR, DataError, Dataset, split_indices  # noqa: F401
from minigrad.data.idx import REMOTE, default_data_dir, download, fetch, read_idx, write_idx  # noqa: F401
from minigrad.data.samplers import (SAMPLERS, ReplacementSampler, ShuffleSampler, StratifiedSampler,  # noqa: F401
                                    make_sampler)
from minigrad.data.sources import load, make_teacher  # noqa: F401

__all__ = ["DATASETS", "SAMPLERS", "DataError", "Dataset", "load", "fetch", "download", "default_data_dir",
           "make_teacher", "read_idx", "write_idx", "make_sampler", "ShuffleSampler", "ReplacementSampler",
           "StratifiedSampler"]
