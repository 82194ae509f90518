"""Tests for minigrad.data: datasets, IDX files, downloads, user files, splits and samplers."""
import gzip
import hashlib
import os
import struct
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from minigrad import data
from minigrad.data import DataError, load
from tests.reference_samplers import make_sampler

SMALL = dict(n_train=2000, n_val=500, n_test=500)


# ----------------------------------------------------------------------------------------------------------------
# teacher


@pytest.fixture(scope="module")
def teacher():
    return load("teacher")


def test_teacher_default_shapes_types_and_balance(teacher):
    assert (teacher.X_train.shape, teacher.X_val.shape, teacher.X_test.shape) == ((20000, 32), (5000, 32), (5000, 32))
    assert teacher.n_features == 32 and teacher.n_classes == 10
    for X, y in ((teacher.X_train, teacher.y_train), (teacher.X_val, teacher.y_val), (teacher.X_test, teacher.y_test)):
        assert X.dtype == np.float32 and X.flags.c_contiguous and y.dtype == np.int64
        assert np.isfinite(X).all()
    freq = np.bincount(teacher.y_train, minlength=10) / teacher.n_train
    assert freq.min() > 0.08 and freq.max() < 0.12, freq
    assert teacher.info["bayes_error"] == 0.05 and teacher.info["floor_val"] == 0.05


def test_teacher_same_seed_same_data_other_seed_other_data():
    a, b = load("teacher", seed=3, **SMALL), load("teacher", seed=3, **SMALL)
    for k in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    c = load("teacher", seed=4, **SMALL)
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(a.y_val, c.y_val)


def test_teacher_seed_changes_the_labelling_function():
    # Same examples (same seed), another teacher network: the clean labels must disagree on most inputs.
    X0, y0 = data.make_teacher(3000, teacher_seed=0, seed=0)
    X1, y1 = data.make_teacher(3000, teacher_seed=1, seed=0)
    assert not np.array_equal(X0, X1)
    assert np.mean(y0 != y1) > 0.5


def test_teacher_noise_is_exact_and_always_moves_to_another_class():
    ds = load("teacher", seed=2, label_noise=0.1, **SMALL)
    _, y_clean = data.make_teacher(3000, seed=2)
    n_train, n_val = SMALL["n_train"], SMALL["n_val"]
    flipped_val = np.mean(ds.y_val != y_clean[n_train:n_train + n_val])
    flipped_train = np.mean(ds.y_train != y_clean[:n_train])
    # Exactly round(0.1 * n) per split, and a flip never lands on the clean label (else fewer would differ).
    assert flipped_val == 0.1 == ds.info["floor_val"]
    assert flipped_train == 0.1 == ds.info["floor_train"]


def _logistic_regression_error(X, y, Xv, yv, K, epochs=6, B=256, lr=0.02):
    """Linear softmax classifier trained with minibatch Adam: (train error, validation error)."""
    rng = np.random.default_rng(0)
    X, Xv = X.astype(np.float64), Xv.astype(np.float64)
    W, b = np.zeros((X.shape[1], K)), np.zeros(K)
    state = [np.zeros_like(W), np.zeros_like(W), np.zeros(K), np.zeros(K)]
    t = 0
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(y)), len(y) // B):
            Z = X[idx] @ W + b
            P = np.exp(Z - Z.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            P[np.arange(len(idx)), y[idx]] -= 1
            P /= len(idx)
            t += 1
            for p, g, m, v in ((W, X[idx].T @ P, state[0], state[1]), (b, P.sum(0), state[2], state[3])):
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return np.mean((X @ W + b).argmax(1) != y), np.mean((Xv @ W + b).argmax(1) != yv)


def _knn_error(X, y, Xv, yv, K, k=15):
    sq = (X.astype(np.float64) ** 2).sum(1)
    pred = []
    for i in range(0, len(Xv), 500):
        d2 = sq[None, :] - 2 * Xv[i:i + 500].astype(np.float64) @ X.T.astype(np.float64)
        nn = np.argpartition(d2, k, axis=1)[:, :k]
        votes = np.zeros((len(nn), K))
        np.add.at(votes, (np.arange(len(nn))[:, None], y[nn]), 1)
        pred.append(votes.argmax(1))
    return np.mean(np.concatenate(pred) != yv)


def test_teacher_is_a_nonlinear_problem(teacher):
    floor = teacher.info["floor_val"]
    train_err, val_err = _logistic_regression_error(teacher.X_train, teacher.y_train, teacher.X_val,
                                                    teacher.y_val, 10)
    # The linear model fits its training set no better than validation: it is underfitting, not overfitting,
    # so its error is a property of the function class (seen: ~0.34 against the floor 0.05).
    assert val_err > floor + 0.2, (val_err, floor)
    assert train_err > floor + 0.2
    # A nonlinear method with no training at all (15 nearest neighbours) does much better (seen: ~0.22), so the
    # labels are learnable beyond linear. An MLP 128-128 reaches ~0.09 with Adam in 30 epochs.
    knn_err = _knn_error(teacher.X_train, teacher.y_train, teacher.X_val[:2000], teacher.y_val[:2000], 10)
    assert knn_err < val_err - 0.08, (knn_err, val_err)


@pytest.mark.parametrize("options, message", [
    (dict(label_noise=0.95), "label_noise"),
    (dict(latent_dim=40), "latent_dim"),
    (dict(n_classes=1), "n_classes"),
    (dict(n_train=0), "n_train"),
    (dict(n_val=2.5), "n_val"),
    (dict(colour="red"), "unknown option"),
])
def test_teacher_bad_options(options, message):
    with pytest.raises(DataError, match=message):
        load("teacher", **options)


def test_bad_seed():
    for seed in (-1, 1.5, "0"):
        with pytest.raises(DataError, match="seed"):
            load("teacher", seed=seed, **SMALL)


def test_importing_the_module_needs_numpy_only():
    import subprocess
    code = "import sys, minigrad.data; print(sorted(m for m in ('numba', 'h5py', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="teacher, mnist, fashion-mnist, digits"):
        load("cifar")


# ----------------------------------------------------------------------------------------------------------------
# splits and standardisation


def test_split_indices_disjoint_complete_and_seeded():
    tr, va, te = data.split_indices(100, 20, 10, seed=5)
    assert (len(tr), len(va), len(te)) == (70, 20, 10)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(100))
    tr2, va2, _ = data.split_indices(100, 20, 10, seed=5)
    np.testing.assert_array_equal(va, va2)
    _, va3, _ = data.split_indices(100, 20, 10, seed=6)
    assert not np.array_equal(np.sort(va), np.sort(va3))
    with pytest.raises(DataError):
        data.split_indices(10, 5, 5, seed=0)


def test_standardisation_uses_training_statistics_only(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (400, 3))
    X[:, 2] = 7.0  # constant on the training split
    X_val = rng.normal(10.0, 2.0, (100, 3))  # shifted: its own statistics would give mean 0
    X_val[:, 2] = 9.0
    y, y_val = rng.integers(0, 3, 400), rng.integers(0, 3, 100)
    path = tmp_path / "user.npz"
    np.savez(path, X=X, y=y, X_val=X_val, y_val=y_val, X_test=X_val, y_test=y_val)
    ds = load(path)
    np.testing.assert_allclose(ds.X_train[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train[:, :2].std(0), 1, atol=1e-5)
    expected = (X_val[:, :2] - X[:, :2].mean(0)) / X[:, :2].std(0)
    np.testing.assert_allclose(ds.X_val[:, :2], expected, rtol=1e-5, atol=1e-5)
    assert ds.X_val[:, :2].mean() > 2  # not re-centred on its own mean
    # The constant feature keeps scale 1: train becomes exactly 0, validation keeps its offset 9 - 7.
    assert np.all(ds.X_train[:, 2] == 0) and np.allclose(ds.X_val[:, 2], 2.0)
    assert ds.info["constant_features"] == 1
    raw = load(path, standardize=False)
    np.testing.assert_allclose(raw.X_val, X_val.astype(np.float32))


# ----------------------------------------------------------------------------------------------------------------
# IDX


def _idx_bytes(code, dims, payload):
    """An IDX file written by hand, independent of data.write_idx."""
    return bytes([0, 0, code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + payload


def test_read_idx_hand_written_file(tmp_path):
    (tmp_path / "a").write_bytes(_idx_bytes(0x08, (2, 3), bytes(range(6))))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), np.arange(6, dtype=np.uint8).reshape(2, 3))
    (tmp_path / "b.gz").write_bytes(gzip.compress(_idx_bytes(0x0C, (2,), struct.pack(">ii", -5, 70000))))
    out = data.read_idx(tmp_path / "b.gz")
    assert out.dtype == np.int32 and out.tolist() == [-5, 70000]


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                                   np.array([-1, 2, 300], dtype=np.int16),
                                   np.linspace(-1, 1, 6).reshape(3, 2)])
def test_idx_round_trip(tmp_path, name, array):
    data.write_idx(tmp_path / name, array)
    assert ((tmp_path / name).read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = data.read_idx(tmp_path / name)
    assert out.dtype == array.dtype.newbyteorder("=") and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("content, message", [
    (_idx_bytes(0x08, (2, 3), bytes(5)), "truncated IDX file"),
    (_idx_bytes(0x08, (2, 3), bytes(7)), "too long"),
    (_idx_bytes(0x08, (2, 3), b"")[:9], "truncated IDX header"),
    (b"\x00\x00", "truncated"),
    (b"\x01\x00\x08\x01" + bytes(8), "bad IDX magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + bytes(1), "bad IDX magic"),
    (b"PK\x03\x04 not an idx file", "bad IDX magic"),
    (gzip.compress(_idx_bytes(0x08, (100,), bytes(100)))[:-12], "gzip"),
])
def test_bad_idx_files_raise(tmp_path, content, message):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.read_idx(tmp_path / "bad")


def test_missing_idx_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path / "absent-idx1-ubyte")


# ----------------------------------------------------------------------------------------------------------------
# downloads


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="checksum mismatch"):
        data.download(src.as_uri(), out / "file.gz", "0" * 64)
    assert list(out.iterdir()) == []  # neither the file nor a temporary part
    path = data.download(src.as_uri(), out / "file.gz", _sha(b"payload" * 1000))
    assert path.read_bytes() == b"payload" * 1000 and list(out.iterdir()) == [path]


@pytest.fixture
def fake_remote(tmp_path, monkeypatch):
    """A local mirror of four small 'mnist' IDX files, with the checksum table pointed at them."""
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": np.arange(60, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": np.arange(20, dtype=np.uint8) % 10}
    for name, array in arrays.items():
        array = array.copy()
        if array.ndim == 3:
            array[:, 0, :] = 0  # a constant border row, as in MNIST
        data.write_idx(mirror / name, array)
    sums = {name: _sha((mirror / name).read_bytes()) for name in arrays}
    monkeypatch.setitem(data.REMOTE, "mnist", {"mirrors": (mirror.as_uri() + "/",), "sha256": sums})
    return mirror


def test_fetch_then_load_mnist(tmp_path, fake_remote, monkeypatch):
    lines = []
    paths = data.fetch("mnist", tmp_path / "data", log=lines.append)
    assert [p.name for p in paths] == list(data.REMOTE["mnist"]["sha256"])
    assert sorted(os.listdir(tmp_path / "data" / "mnist")) == sorted(p.name for p in paths)  # and nothing else
    assert all("downloaded" in line for line in lines)

    # A second fetch must not touch the network: every file is present and valid.
    def no_network(*args, **kwargs):
        raise AssertionError("fetch downloaded a file that was already valid")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    lines.clear()
    data.fetch("mnist", tmp_path / "data", log=lines.append)
    assert len(lines) == 4 and all("present" in line for line in lines)

    ds = load("mnist", data_dir=tmp_path / "data", n_val=10, seed=1)
    assert (ds.X_train.shape, ds.X_val.shape, ds.X_test.shape) == ((50, 784), (10, 784), (20, 784))
    assert ds.n_classes == 10 and ds.X_train.dtype == np.float32 and np.isfinite(ds.X_train).all()
    assert np.all(ds.X_train[:, :28] == 0)  # the constant border stays 0 instead of 0/0
    raw = load("mnist", data_dir=tmp_path / "data", n_val=10, seed=1, standardize=False)
    assert 0 <= raw.X_train.min() and raw.X_train.max() <= 1 and raw.X_train.max() > 0.9  # pixels / 255
    with pytest.raises(DataError, match="n_val"):
        load("mnist", data_dir=tmp_path / "data", n_val=60)


def test_fetch_replaces_a_corrupt_file(tmp_path, fake_remote):
    target = tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a file")
    data.fetch("mnist", tmp_path / "data")
    assert target.read_bytes() == (fake_remote / target.name).read_bytes()


def test_fetch_checksum_mismatch_raises_and_leaves_no_file(tmp_path, fake_remote, monkeypatch):
    sums = dict(data.REMOTE["mnist"]["sha256"], **{"train-labels-idx1-ubyte.gz": "f" * 64})
    monkeypatch.setitem(data.REMOTE, "mnist", {"mirrors": data.REMOTE["mnist"]["mirrors"], "sha256": sums})
    with pytest.raises(DataError, match="checksum mismatch.*train-labels"):
        data.fetch("mnist", tmp_path / "data")
    names = sorted(os.listdir(tmp_path / "data" / "mnist"))
    assert names == ["train-images-idx3-ubyte.gz"]  # the one before it; no partial file of the bad one


def test_fetch_offline_is_one_clear_line(tmp_path):
    # Port 9 (discard) on localhost refuses the connection at once: the same path as a machine with no network.
    with pytest.raises(DataError) as err:
        data.fetch("mnist", tmp_path, mirrors=["http://127.0.0.1:9/"], timeout=5)
    message = str(err.value)
    assert "\n" not in message and "train-images-idx3-ubyte.gz" in message and "network" in message
    assert not any((tmp_path / "mnist").iterdir())


def test_fetch_dns_failure_is_one_clear_line(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"cannot download .*name resolution.*\(tried 2 mirrors\)") as err:
        data.fetch("fashion-mnist", tmp_path)
    assert "\n" not in str(err.value)


def test_load_mnist_before_fetch_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="run `minigrad data fetch fashion-mnist`"):
        load("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match="nothing to fetch"):
        data.fetch("teacher", tmp_path)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_DATA", str(tmp_path / "elsewhere"))
    assert data.default_data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("MINIGRAD_DATA")
    monkeypatch.chdir(tmp_path)
    assert data.default_data_dir() == tmp_path / "data"


def test_real_checksums_are_well_formed():
    for spec in data.REMOTE.values():
        assert len(spec["sha256"]) == 4
        assert all(len(s) == 64 and int(s, 16) >= 0 for s in spec["sha256"].values())
    assert data.REMOTE["mnist"]["sha256"]["train-images-idx3-ubyte.gz"].startswith("440fcabf")


# ----------------------------------------------------------------------------------------------------------------
# digits


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` fail
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'minigrad\[digits\]'"):
        load("digits")


def test_digits_with_scikit_learn():
    pytest.importorskip("sklearn")
    ds = load("digits", seed=0)
    assert ds.n_features == 64 and ds.n_classes == 10
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797


# ----------------------------------------------------------------------------------------------------------------
# user files


def _xy(n=200, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, k, n)


def test_npz_with_only_X_y_is_split_deterministically(tmp_path):
    X, y = _xy()
    np.savez(tmp_path / "mine.npz", X=X, y=y)
    ds = load(tmp_path / "mine.npz", seed=1)
    assert ds.name == "mine" and ds.n_classes == 3
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (160, 20, 20)
    # Every example lands in exactly one split (rows are distinct, so compare them as tuples of the raw values).
    raw = load(tmp_path / "mine.npz", seed=1, standardize=False)
    rows = np.concatenate([raw.X_train, raw.X_val, raw.X_test])
    assert len({r.tobytes() for r in rows}) == 200
    again = load(tmp_path / "mine.npz", seed=1)
    np.testing.assert_array_equal(ds.X_val, again.X_val)
    other = load(tmp_path / "mine.npz", seed=2)
    assert not np.array_equal(ds.y_val, other.y_val) or not np.array_equal(ds.X_val, other.X_val)


def test_h5_with_given_splits(tmp_path):
    h5py = pytest.importorskip("h5py")
    X, y = _xy(100)
    Xv, yv = _xy(30, seed=1)
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["X"], f["y"], f["X_val"], f["y_val"] = X, y.astype(np.float64), Xv, yv  # whole-number float labels are fine
    ds = load(str(tmp_path / "mine.h5"), val_fraction=0.1, test_fraction=0.2)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (80, 30, 20)  # test carved from X; val as given
    assert ds.y_train.dtype == np.int64


def _save(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda X, y: dict(X=np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y=y), "NaN/Inf"),
    (lambda X, y: dict(X=np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X), y=y), "NaN/Inf"),
    (lambda X, y: dict(X=X, y=y + 0.5), "integer class labels"),
    (lambda X, y: dict(X=X, y=y.astype(str)), "integer class labels"),
    (lambda X, y: dict(X=X, y=y - 1), "negative labels"),
    (lambda X, y: dict(X=X, y=np.where(np.arange(y.size) == 3, 1e19, y)), "the label 10000000000000000000"),
    (lambda X, y: dict(X=X, y=np.where(np.arange(y.size) == 3, 2**63 + 5, y).astype(np.uint64)), "the label 92233"),
    (lambda X, y: dict(X=X, y=np.where(np.arange(y.size) == 3, 2**31, y)), "at most 2147483647"),
    (lambda X, y: dict(X=X, y=y[:-1]), r"shape \(200,\)"),
    (lambda X, y: dict(X=X, y=np.eye(3)[y]), "one-hot"),
    (lambda X, y: dict(X=X[:, 0], y=y), r"shape \(n, features\)"),
    (lambda X, y: dict(X=X, y=np.zeros_like(y)), "at least 2"),
    (lambda X, y: dict(X=X, labels=y), "needs arrays 'X'"),
    (lambda X, y: dict(X=X, y=y, X_val=X), "must come together"),
    (lambda X, y: dict(X=X, y=y, X_val=X[:, :2], y_val=y, X_test=X, y_test=y), "different feature counts"),
])
def test_bad_user_files(tmp_path, make, message):
    path = _save(tmp_path, **make(*_xy()))
    with pytest.raises(DataError, match=message) as err:
        load(path)
    assert "\n" not in str(err.value)


def test_unreadable_or_missing_user_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="not a complete .npz archive"):
        load(tmp_path / "junk.npz")
    (tmp_path / "junk.h5").write_bytes(b"nor is this HDF5")
    with pytest.raises(DataError, match="cannot read"):
        load(tmp_path / "junk.h5")
    with pytest.raises(DataError, match="not found"):
        load(tmp_path / "absent.npz")
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load(tmp_path / "table.csv")


# ----------------------------------------------------------------------------------------------------------------
# the Dataset type


def test_astype_and_subset():
    ds = load("teacher", **SMALL)
    d64 = ds.astype(np.float64)
    assert d64.X_train.dtype == np.float64 and d64.X_val.flags.c_contiguous
    assert ds.X_train.dtype == np.float32  # the original is untouched
    np.testing.assert_array_equal(d64.X_test, ds.X_test.astype(np.float64))
    with pytest.raises(DataError):
        ds.astype(np.int32)
    small = ds.subset(100)
    assert small.n_train == 100 and len(small.y_val) == 500
    np.testing.assert_array_equal(small.y_train, ds.y_train[:100])
    with pytest.raises(DataError):
        ds.subset(0)
    assert "train=2000" in repr(ds)


def test_dataset_rejects_broken_arrays():
    ds = load("teacher", **SMALL)
    import dataclasses
    with pytest.raises(DataError, match="C-contiguous"):
        dataclasses.replace(ds, X_train=np.asfortranarray(ds.X_train))
    with pytest.raises(DataError, match="int64"):
        dataclasses.replace(ds, y_train=ds.y_train.astype(np.int32))
    with pytest.raises(DataError, match="outside"):
        dataclasses.replace(ds, n_classes=3)


# ----------------------------------------------------------------------------------------------------------------
# samplers


def test_shuffle_covers_every_example_once_per_epoch():
    y = np.zeros(60, dtype=np.int64)
    s = make_sampler("shuffle", y, 12, seed=0, drop_last=True)
    epochs = []
    for _ in range(2):
        batches = [s.next_batch().copy() for _ in range(5)]
        assert all(b.dtype == np.int64 and len(b) == 12 for b in batches)
        epochs.append(np.concatenate(batches))
        np.testing.assert_array_equal(np.sort(epochs[-1]), np.arange(60))
        assert s.epoch == len(epochs)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled
    t = make_sampler("shuffle", y, 12, seed=0, drop_last=True)
    np.testing.assert_array_equal(t.next_batch(), epochs[0][:12])  # seeded


def test_shuffle_drop_last_true_skips_the_remainder():
    s = make_sampler("shuffle", np.zeros(10), 4, seed=1, drop_last=True)
    sizes, epochs, seen = [], [], []
    for _ in range(6):
        b = s.next_batch()
        sizes.append(len(b))
        epochs.append(s.epoch)
        seen.append(b.copy())
    assert sizes == [4] * 6
    assert epochs == pytest.approx([0.4, 0.8, 1.4, 1.8, 2.4, 2.8])
    for e in range(3):  # within an epoch no index repeats
        assert len(np.unique(np.concatenate(seen[2 * e:2 * e + 2]))) == 8
    assert s.examples_seen == 24


def test_shuffle_drop_last_false_keeps_a_partial_batch():
    s = make_sampler("shuffle", np.zeros(10), 4, seed=1, drop_last=False)
    batches = [s.next_batch().copy() for _ in range(4)]
    assert [len(b) for b in batches] == [4, 4, 2, 4]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches[:3])), np.arange(10))
    assert s.epoch == pytest.approx(1.4) and s.examples_seen == 14


def test_shuffle_batch_size_can_change_mid_epoch():
    s = make_sampler("shuffle", np.zeros(20), 3, seed=2, drop_last=False)
    got = [s.next_batch().copy(), s.next_batch(5).copy(), s.next_batch().copy(), s.next_batch(8).copy()]
    assert [len(b) for b in got] == [3, 5, 5, 7]  # 20 = 3 + 5 + 5 + 7: the last one is the partial batch
    np.testing.assert_array_equal(np.sort(np.concatenate(got)), np.arange(20))
    assert s.epoch == 1.0 and s.batch_size == 8
    assert len(s.next_batch()) == 8 and s.epoch == pytest.approx(1.4)


def test_replacement_sampler():
    n = 50
    s = make_sampler("replacement", np.zeros(n), 10, seed=3, drop_last=False)
    first = s.next_batch()
    second = s.next_batch()
    assert np.shares_memory(first, second)  # one buffer, refilled: no allocation per step
    draws = np.concatenate([s.next_batch(25).copy() for _ in range(2000)])
    assert draws.min() == 0 and draws.max() == n - 1 and len(draws) == 50000
    counts = np.bincount(draws, minlength=n)
    assert np.abs(counts - 1000).max() < 150  # ~4.7 standard deviations of a binomial(50000, 1/50)
    assert len(np.unique(draws[:25])) < 25 or len(np.unique(draws[25:50])) < 25  # repeats happen
    assert s.epoch == pytest.approx((20 + 50000) / n)
    t = make_sampler("replacement", np.zeros(n), 10, seed=3, drop_last=True)
    np.testing.assert_array_equal(t.next_batch(), make_sampler("replacement", np.zeros(n), 10, seed=3,
                                                               drop_last=True).next_batch())


def test_stratified_batches_match_class_proportions():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])  # p = 0.5, 0.3, 0.15, 0.05
    p = np.bincount(y) / len(y)
    s = make_sampler("stratified", y, 7, seed=4, drop_last=False)
    total = np.zeros(4)
    for step in range(300):
        B = 7 if step < 150 else 13  # a batch-size schedule
        batch = s.next_batch(B)
        counts = np.bincount(y[batch], minlength=4)
        assert len(batch) == B
        assert np.all(np.abs(counts - B * p) < 1), (counts, B * p)
        total += counts
        # No class drifts ahead of its share over many batches.
        assert np.all(np.abs(total - p * s.examples_seen) < 2)
    assert s.epoch == pytest.approx((150 * 7 + 150 * 13) / 100)


def test_stratified_cycles_through_every_example():
    y = np.repeat(np.arange(3), [40, 40, 20])
    s = make_sampler("stratified", y, 10, seed=5, drop_last=True)
    seen = np.concatenate([s.next_batch().copy() for _ in range(10)])  # one epoch's worth
    assert len(np.unique(seen)) == 100  # each class queue is used up exactly once


@pytest.mark.parametrize("kind", ["shuffle", "replacement", "stratified"])
@pytest.mark.parametrize("bad", [0, -1, 11, 2.5, "4"])
def test_bad_batch_sizes(kind, bad):
    y = np.arange(10) % 2
    with pytest.raises(DataError, match="batch size"):
        make_sampler(kind, y, bad, seed=0, drop_last=False)
    s = make_sampler(kind, y, 2, seed=0, drop_last=False)
    with pytest.raises(DataError, match="batch size"):
        s.next_batch(bad)
    assert len(s.next_batch(10)) == 10  # the whole training split is allowed
    assert len(s.next_batch(None)) == 10  # None keeps the current batch size
    with pytest.raises(DataError, match="batch size"):
        make_sampler(kind, y, None, seed=0, drop_last=False)


def test_unknown_sampler():
    with pytest.raises(DataError, match="shuffle, replacement, stratified"):
        make_sampler("bucketed", np.zeros(10), 2, seed=0, drop_last=False)
