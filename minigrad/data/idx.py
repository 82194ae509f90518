"""IDX files (MNIST's format): reading and writing them, fetching MNIST and Fashion-MNIST once, loading them."""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from minigrad.data.dataset import DataError, _finish, _int_in, split_indices


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


