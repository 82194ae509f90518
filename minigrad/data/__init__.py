"""Datasets and splits (dataset.py, sources.py, idx.py; the names below are the API).

Every dataset comes back as a `Dataset`: train / validation / test arrays with X float32 (n, features),
C-contiguous and standardised with training statistics, and y int64 class labels.

    load("teacher")            synthetic, embedded, no download: the default
    load("mnist"), load("fashion-mnist")   IDX files fetched once with `minigrad data fetch NAME`
    load("digits")             scikit-learn's bundled 8x8 digits (pip install 'minigrad[digits]')
    load("path/to/file.npz")   user data: arrays X, y and optionally X_val, y_val, X_test, y_test (.npz or .h5)

Downloads land in `default_data_dir()`: $MINIGRAD_DATA when set, otherwise ./data relative to the current
directory (the repository's data/ folder when run from a checkout).

The training loop draws its batches itself, compiled (minigrad.engine.loop); tests/reference_samplers.py holds the
same samplers in plain Python, the specification the loop is tested against.

Every user mistake raises DataError (a ValueError) with one line naming the problem and what to do.
"""
from minigrad.data.dataset import DATASETS, SCALE_FLOOR, DataError, Dataset, split_indices  # noqa: F401
from minigrad.data.idx import REMOTE, default_data_dir, download, fetch, read_idx, write_idx  # noqa: F401
from minigrad.data.sources import load, make_teacher  # noqa: F401

__all__ = ["DATASETS", "DataError", "Dataset", "load", "fetch", "download", "default_data_dir",
           "make_teacher", "read_idx", "write_idx"]
