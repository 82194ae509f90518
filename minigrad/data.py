"""Datasets, splits and batch samplers.

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
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import inspect
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "SAMPLERS", "DataError", "Dataset", "load", "fetch", "download", "default_data_dir",
           "make_teacher", "read_idx", "write_idx", "make_sampler", "ShuffleSampler", "ReplacementSampler",
           "StratifiedSampler"]

DATASETS = ("teacher", "mnist", "fashion-mnist", "digits")
SAMPLERS = ("shuffle", "replacement", "stratified")


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
    if not ok or value < lo or (hi is not None and value > hi):
        raise DataError(f"{what} must be an integer in {lo}..{'' if hi is None else hi}, got {value!r}")
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
    for i in range(0, len(X), _ROWS):
        out[i:i + _ROWS] = (X[i:i + _ROWS] - mean) / scale
    return out


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
# IDX files (MNIST family): magic 00 00 <dtype code> <ndim>, ndim big-endian uint32 sizes, then the data.

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file, gzipped (detected by the magic bytes 1f 8b) or not, into a native-endian array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{path}: truncated or corrupt gzip data ({e}); delete it and fetch again") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header); delete it and fetch again")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}; not an IDX file")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: truncated IDX header; delete it and fetch again")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - start != expected:
        what = "truncated" if len(raw) - start < expected else "too long"
        raise DataError(f"{path}: {what} IDX file: header {dims} needs {expected} data bytes, found "
                        f"{len(raw) - start}; delete it and fetch again")
    return np.frombuffer(raw, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array, *, compress=None):
    """Write `array` as an IDX file; gzipped when compress is True or, by default, when the name ends in .gz."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if (path.suffix == ".gz" if compress is None else compress) else data)


# ----------------------------------------------------------------------------------------------------------------
# Downloads. SHA-256 sums of the canonical files, the same in several independent public projects that pin them
# (MNIST's match the files LeCun published); a mirror that serves other bytes is rejected.

_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
REMOTE = {
    "mnist": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "sha256": dict(zip(_IDX_FILES, (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"))),
    },
    "fashion-mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://fashion-mnist.s3.eu-central-1.amazonaws.com/"),
        "sha256": dict(zip(_IDX_FILES, (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"))),
    },
}


def default_data_dir() -> Path:
    """$MINIGRAD_DATA when set, otherwise ./data under the current directory."""
    return Path(os.environ.get("MINIGRAD_DATA") or "data").resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest, sha256: str, *, timeout: float = 30.0) -> Path:
    """Download url to dest if its SHA-256 matches; a failure leaves neither dest nor a partial file behind.

    The bytes go to a temporary file in dest's folder and are moved into place with os.replace, which is atomic,
    so an interrupted download never looks like a complete file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                digest.update(chunk)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != sha256:
            raise DataError(f"checksum mismatch for {url}: got sha256 {digest.hexdigest()[:16]}..., expected "
                            f"{sha256[:16]}...; the mirror served other bytes")
        os.replace(tmp, dest)
        return dest
    except DataError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", None) or e  # URLError wraps the socket error in .reason
        reason = " ".join(str(reason).split()) or type(e).__name__
        raise DataError(f"cannot download {url}: {reason}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(name: str, data_dir=None, *, mirrors=None, timeout: float = 30.0, log=None) -> list[Path]:
    """Download the four IDX files of `name` into data_dir/name/, skipping files already present and valid.

    Returns the four paths; `log`, if given, gets one line per file. Offline, it raises one DataError line naming
    the file, the reason and the way out."""
    if name not in REMOTE:
        raise DataError(f"nothing to fetch for {name!r}; downloadable datasets: {', '.join(REMOTE)}")
    folder = Path(data_dir or default_data_dir()) / name
    mirrors = tuple(mirrors or REMOTE[name]["mirrors"])
    paths = []
    for filename, sha in REMOTE[name]["sha256"].items():
        dest = folder / filename
        paths.append(dest)
        if dest.exists() and _sha256(dest) == sha:
            if log:
                log(f"{name}/{filename}: present, checksum ok")
            continue
        errors = []
        for base in mirrors:
            try:
                download(base.rstrip("/") + "/" + filename, dest, sha, timeout=timeout)
                if log:
                    log(f"{name}/{filename}: downloaded from {base}")
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(f"{errors[-1]} (tried {len(mirrors)} mirror{'s' * (len(mirrors) > 1)}); check the "
                            f"network, or copy {filename} into {folder} by hand")
    return paths


def _idx_folder(name, data_dir) -> Path:
    """Where the IDX files of `name` are: data_dir/name (where fetch puts them) or data_dir itself (files placed by
    hand); the first that holds the training images."""
    base = Path(data_dir or default_data_dir())
    for folder in (base / name, base):
        if any((folder / f).is_file() for f in (_IDX_FILES[0], _IDX_FILES[0][:-3])):
            return folder
    return base / name


def _load_idx_family(name, data_dir, seed, standardize, n_val=10000):
    folder = _idx_folder(name, data_dir)
    arrays = []
    for filename in _IDX_FILES:
        # Accept the files as downloaded or gunzipped by hand; read_idx tells them apart by content.
        path = next((p for p in (folder / filename, folder / filename[:-3]) if p.is_file()), None)
        if path is None:
            base = Path(data_dir or default_data_dir())
            raise DataError(f"{name}: {filename} (or {filename[:-3]}) not found in {base / name} nor {base}; run "
                            f"`minigrad data fetch {name}`, or pass --data-dir (or set MINIGRAD_DATA to) the folder "
                            f"that holds the four IDX files")
        arrays.append(read_idx(path))
    X, y, X_test, y_test = arrays
    for images, labels, split in ((X, y, "train"), (X_test, y_test, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{name} {split}: expected images (n, rows, cols) and n labels, got {images.shape} "
                            f"and {labels.shape}; delete {folder} and fetch again")
    train, val, _ = split_indices(len(y), _int_in(n_val, 1, len(y) - 1, f"{name}: n_val (--n-val)"), 0, seed)
    X = X.reshape(len(X), -1).astype(np.float32)
    X /= 255  # in place: pixels in [0, 1], for runs with standardize=False
    X_test = X_test.reshape(len(X_test), -1).astype(np.float32)
    X_test /= 255
    info = {"source": f"{name} IDX files in {folder}", "seed": seed, "n_val": n_val}
    return _finish(name, {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": (X_test, y_test)},
                   info, standardize=standardize, n_classes=10)


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


# ----------------------------------------------------------------------------------------------------------------
# Samplers. Each returns a view into an index buffer it owns, so a step allocates no index array.


class _Sampler:
    def __init__(self, y, batch_size, *, seed, drop_last):
        self.n = len(y)
        if self.n == 0:
            raise DataError("cannot sample from an empty training split")
        self.batch_size = self._check(batch_size)
        self.drop_last = bool(drop_last)
        self.examples_seen = 0  # indices handed out so far
        self.steps = 0
        self._rng = np.random.default_rng(seed)

    def _check(self, batch_size) -> int:
        return _int_in(batch_size, 1, self.n, "batch size (at most the training split)")

    @property
    def epoch(self) -> float:
        """Training progress in epochs: examples seen / training-set size."""
        return self.examples_seen / self.n

    def next_batch(self, batch_size=None) -> np.ndarray:
        """Row indices (int64) of the next batch; batch_size overrides the current one from now on.

        The array is a view into the sampler's own buffer, valid until the next call: copy it to keep it."""
        if batch_size is not None:
            self.batch_size = self._check(batch_size)
        batch = self._next(self.batch_size)
        self.examples_seen += len(batch)
        self.steps += 1
        return batch

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, batch_size={self.batch_size}, epoch={self.epoch:.3f})"


class ShuffleSampler(_Sampler):
    """Epochs without replacement: every example once per epoch, in a new random order each epoch.

    When fewer than B examples are left in an epoch, drop_last=True skips them and starts the next epoch (they
    are seen in later epochs, in other positions); drop_last=False returns them as one smaller batch."""

    def __init__(self, y, batch_size, *, seed, drop_last):
        super().__init__(y, batch_size, seed=seed, drop_last=drop_last)
        self._perm = np.arange(self.n, dtype=np.int64)
        self._rng.shuffle(self._perm)
        self._pos = 0
        self._epochs_done = 0

    @property
    def epoch(self) -> float:
        """Completed epochs plus the fraction of the current one (a dropped remainder ends its epoch)."""
        return self._epochs_done + self._pos / self.n

    def _next(self, B):
        left = self.n - self._pos
        if left == 0 or (left < B and self.drop_last):
            self._rng.shuffle(self._perm)  # in place: the previous batch view changes, as documented
            self._pos, self._epochs_done = 0, self._epochs_done + 1
        start = self._pos
        self._pos = min(self.n, start + B)
        return self._perm[start:self._pos]


class ReplacementSampler(_Sampler):
    """I.i.d. draws with replacement: every batch is full, so drop_last has no effect."""

    def __init__(self, y, batch_size, *, seed, drop_last):
        super().__init__(y, batch_size, seed=seed, drop_last=drop_last)
        self._u = np.empty(self.n)
        self._buf = np.empty(self.n, dtype=np.int64)

    def _next(self, B):
        u, idx = self._u[:B], self._buf[:B]
        self._rng.random(out=u)  # floor(u * n) fills the preallocated buffer; rng.integers would allocate
        u *= self.n
        np.copyto(idx, u, casting="unsafe")
        np.minimum(idx, self.n - 1, out=idx)  # u * n can round up to n
        return idx


class StratifiedSampler(_Sampler):
    """Batches whose class mix matches the training set's: class c gets floor(B p_c) or that plus one.

    Largest-remainder rounding gives the spare slots to the classes furthest behind their share of all examples
    drawn so far, so no class drifts ahead over many batches. Each class is a shuffled queue that reshuffles
    when it runs out; batches are always full, so drop_last has no effect, and epoch = examples seen / n."""

    def __init__(self, y, batch_size, *, seed, drop_last):
        super().__init__(y, batch_size, seed=seed, drop_last=drop_last)
        y = np.asarray(y)
        classes = np.unique(y)
        self._queues = [np.flatnonzero(y == c).astype(np.int64) for c in classes]
        for q in self._queues:
            self._rng.shuffle(q)
        self._pos = np.zeros(len(classes), dtype=np.int64)
        self._p = np.array([len(q) for q in self._queues]) / self.n
        self._taken = np.zeros(len(classes))
        self._buf = np.empty(self.n, dtype=np.int64)

    def class_counts(self, B: int) -> np.ndarray:
        """How many examples of each class the next batch of size B takes."""
        counts = np.floor(self._p * B)
        owed = self._p * (self.examples_seen + B) - self._taken - counts
        counts[np.argsort(-owed, kind="stable")[:B - int(counts.sum())]] += 1
        return counts.astype(np.int64)

    def _next(self, B):
        counts = self.class_counts(B)
        self._taken += counts
        out = 0
        for c, k in enumerate(counts):
            q = self._queues[c]
            while k:
                if self._pos[c] == len(q):
                    self._rng.shuffle(q)
                    self._pos[c] = 0
                m = min(k, len(q) - self._pos[c])
                self._buf[out:out + m] = q[self._pos[c]:self._pos[c] + m]
                self._pos[c] += m
                out, k = out + m, k - m
        batch = self._buf[:B]
        self._rng.shuffle(batch)  # so that any prefix of a batch is a random sample too
        return batch


_SAMPLER_CLASSES = {"shuffle": ShuffleSampler, "replacement": ReplacementSampler, "stratified": StratifiedSampler}


def make_sampler(kind: str, y, batch_size: int, *, seed: int, drop_last: bool):
    """A batch sampler over the rows of a training split with labels y; kind is one of SAMPLERS."""
    if kind not in _SAMPLER_CLASSES:
        raise DataError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
    return _SAMPLER_CLASSES[kind](y, batch_size, seed=seed, drop_last=drop_last)
