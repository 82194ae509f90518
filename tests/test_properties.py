"""Property-based tests (Hypothesis) of what users hand minigrad: data files of any shape, dtype and content, cut
short at any byte, and study configurations with any values and types. Whatever comes in, the answer is a valid
Dataset / configuration or a one-line ValueError (DataError): never another exception, never a silently bad result.
"""
import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigrad import data
from minigrad.study import config as study

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from(["int8", "uint8", "int32", "int64", "float16", "float32", "float64", "bool", "complex64",
                          "U3"])


@st.composite
def user_arrays(draw):
    """X of random shape and dtype (NaN/Inf possible), y of random length, dtype and labels (negative, huge, non-whole
    possible), and sometimes a validation split whose labels may not occur in training."""
    n = draw(st.integers(0, 40))
    shape = draw(st.sampled_from([(n,), (n, draw(st.integers(0, 5))), (n, 2, 3)]))
    X = draw(hnp.arrays(draw(DTYPES), shape, elements=None))
    y_dtype = draw(st.sampled_from(["int64", "int8", "float64", "float32", "U2", "bool"]))
    y_len = draw(st.sampled_from([n, max(n - 1, 0), n + 1]))
    y = draw(hnp.arrays(y_dtype, (y_len,), elements=None))
    arrays = {"X": X, "y": y}
    if draw(st.booleans()):
        k = draw(st.integers(0, 6))
        arrays["X_val"] = draw(hnp.arrays("float64", (k,) + shape[1:], elements=st.floats(allow_nan=True)))
        if draw(st.booleans()):
            arrays["y_val"] = draw(hnp.arrays("int64", (k,), elements=st.integers(-2, 12)))
    return arrays


def check_dataset(ds):
    """What a Dataset promises every consumer (the kernels trust it)."""
    assert ds.n_classes >= 2
    for split in ("train", "val", "test"):
        X, y = getattr(ds, "X_" + split), getattr(ds, "y_" + split)
        assert X.dtype == np.float32 and X.flags.c_contiguous and X.ndim == 2 and X.shape[1] == ds.n_features
        assert np.all(np.isfinite(X))
        assert y.dtype == np.int64 and y.shape == (len(X),)
        assert y.size == 0 or (y.min() >= 0 and y.max() < ds.n_classes)
    assert len(ds.y_train) >= 1 and len(np.unique(ds.y_train)) >= 2
    # every validation label occurs in training (a classifier can learn it)
    assert set(np.unique(ds.y_val)) <= set(np.unique(ds.y_train))


def load_or_data_error(path, **options):
    try:
        ds = data.load(path, **options)
    except data.DataError as e:
        assert "\n" not in str(e) and str(e)
        return None
    check_dataset(ds)
    return ds


@SETTINGS
@given(arrays=user_arrays(), as_h5=st.booleans())
def test_any_user_file_loads_as_a_valid_dataset_or_one_data_error(arrays, as_h5):
    with tempfile.TemporaryDirectory() as tmp:
        if as_h5:
            path = Path(tmp) / "user.h5"
            with h5py.File(path, "w") as f:
                for k, v in arrays.items():
                    if v.dtype.kind == "U":
                        f.create_dataset(k, data=np.char.encode(v, "utf-8"))  # HDF5 strings are bytes
                    else:
                        f.create_dataset(k, data=v)
        else:
            path = Path(tmp) / "user.npz"
            np.savez(path, **arrays)
        load_or_data_error(path)


def test_a_value_beyond_float32_once_scaled_is_a_data_error(tmp_path):
    # found by the property above: 3.40282357e+38 (float64, just past float32's largest value) in a split whose
    # training feature is constant (scale 1) became inf in the float32 data set
    path = tmp_path / "user.npz"
    np.savez(path, X=np.array([[0.0], [0.0], [3.40282357e38], [0.0], [0.0]]), y=np.array([0, 1, 1, 1, 1]))
    with pytest.raises(data.DataError, match="beyond float32"):
        data.load(path)
    np.savez(path, X=np.array([[0.0], [0.0], [3.0e38], [0.0], [0.0]]), y=np.array([0, 1, 1, 1, 1]))  # fits
    assert np.isfinite(load_or_data_error(path).X_val).all()  # negative control: the same file, a value that fits


@SETTINGS
@given(n=st.integers(30, 80), features=st.integers(1, 6), classes=st.integers(2, 4), seed=st.integers(0, 2**16),
       cut=st.floats(0, 0.999), kind=st.sampled_from(["npz", "h5", "idx"]))
def test_a_file_cut_short_anywhere_is_a_data_error(n, features, classes, seed, cut, kind):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, features)), rng.integers(0, classes, n)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "idx":
            path = Path(tmp) / "images.idx"
            data.write_idx(path, (X * 10).astype(np.int32), compress=bool(seed % 2))
            raw = path.read_bytes()
            path.write_bytes(raw[: int(cut * len(raw))])
            with pytest.raises(data.DataError):
                data.read_idx(path)
            return
        path = Path(tmp) / f"user.{kind}"
        if kind == "npz":
            np.savez(path, X=X, y=y)
        else:
            with h5py.File(path, "w") as f:
                f["X"], f["y"] = X, y
        raw = path.read_bytes()
        path.write_bytes(raw[: int(cut * len(raw))])
        with pytest.raises(data.DataError):
            data.load(path)


@SETTINGS
@given(arr=hnp.arrays(st.sampled_from(["uint8", "int8", "int16", "int32", "float32", "float64"]),
                      hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)), compress=st.booleans())
def test_idx_round_trip(arr, compress):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.idx"
        data.write_idx(path, arr, compress=compress)
        back = data.read_idx(path)
    assert back.dtype == arr.dtype.newbyteorder("=") and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@SETTINGS
@given(n=st.integers(40, 120), features=st.integers(2, 8), rare=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_near_constant_features_stay_within_the_scale_floor(n, features, rare, seed):
    """A feature that is almost always 0 (a border pixel) must not put a validation example hundreds of standard
    deviations out: the scale floor bounds |x| by range / (SCALE_FLOOR * rms scale)."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, features))
    X[:, 0] = 0.0
    X[rng.choice(n, rare, replace=False), 0] = 1.0  # inked in `rare` images only
    y = np.arange(n) % 3
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "px.npz", X=X, y=y)
        ds = load_or_data_error(Path(tmp) / "px.npz")
    assume(ds is not None)
    rms = math.sqrt(np.mean(X.std(axis=0) ** 2))
    bound = 1.0 / (data.SCALE_FLOOR * rms) + 1e-3
    for split in (ds.X_train, ds.X_val, ds.X_test):
        assert np.abs(split[:, 0]).max() <= bound


# ---------------------------------------------------------------------------------------------- configuration
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                      st.text(max_size=4), st.lists(st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True),
                                                              st.text(max_size=2)), max_size=4),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@SETTINGS
@given(overrides=st.dictionaries(st.sampled_from(sorted(study.DEFAULT_CONFIG)), ANY_VALUE, max_size=4),
       quick=st.booleans())
def test_any_study_configuration_is_valid_or_one_value_error(overrides, quick):
    try:
        config = study.make_config(quick=quick, **overrides)
    except ValueError as e:
        assert "\n" not in str(e) and str(e)
        return
    # what make_config lets through, every phase can use: counts are ints, rates and budgets finite and positive
    for key in ("seeds", "lr_points", "max_widen", "reference_batch_size"):
        assert isinstance(config[key], int) and not isinstance(config[key], bool)
    assert all(isinstance(b, int) and b >= 1 for b in config["batch_sizes"])
    assert all(isinstance(h, int) and h >= 1 for h in config["hidden"])
    for key in ("budget_factor", "equal_epochs", "reference_epochs", "lr_factor", "eval_growth"):
        assert math.isfinite(config[key]) and config[key] > 0
    assert all(math.isfinite(lr) and lr > 0 for lr in config["reference_lrs"])
    assert 0 <= config["momentum"] < 1
    assert config["target"] is None or 0 < config["target"] < 1


def test_negative_control_the_dataset_check_catches_a_bad_dataset():
    ds = data.load("digits")
    check_dataset(ds)
    bad = np.array(ds.X_val)
    bad[0, 0] = np.nan
    import dataclasses

    with pytest.raises(AssertionError):
        check_dataset(dataclasses.replace(ds, X_val=bad))
