"""The study file's format (attribute and array encoding, tables) and the crash-safe file operations the writer
and the reader share (atomic writes, fsync, the journal); the package docstring says how they fit."""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import h5py
import numpy as np

from minigrad.machine.checks import unreadable
from minigrad.machine.settings import STATUSES  # noqa: F401 - named once there
from minigrad.machine.text import json_default

SCHEMA = "minigrad.study"
SCHEMA_VERSION = 1

# v110 gives object headers and chunk indexes half the size of the 1.8 format (the study file is copied on every
# commit, so size is time); any HDF5 >= 1.10 reads it.
_LIBVER = ("v110", "latest")
_RESERVED = {"schema", "schema_version", "study_id", "kind", "config", "json_keys"}
# A run id becomes a file name and an HDF5 link name: keep it to characters that are safe in both.
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,199}")
_NAME = re.compile(r"[^/.][^/]*")


class StoreError(ValueError):
    """A study file cannot be used as asked; the message is one line naming the file and what to do."""


# Writers whose new study exists only as a header until its first commit, by resolved path: the study file of that
# path (absent, or the old study an --overwrite replaces) stays untouched until the new study holds something, and
# open() in the writing process sees the new study (see Store.create).
_STAGED: dict = {}


def _os_error(path, exc: OSError, doing: str) -> StoreError:
    """One line for an OS error on a study file, naming the file the user gave rather than an internal one."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"cannot {doing} {path}: {reason}; fix that or choose another --out")


# ---------------------------------------------------------------------------------------------------------- values

def _dumps(v) -> str:
    return json.dumps(v, default=json_default, sort_keys=True)


def _put_attrs(obj, values: dict) -> None:
    json_keys = set(json.loads(obj.attrs.get("json_keys", "[]")))
    for key, v in values.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise ValueError(f"bad attribute name {key!r}")
        if key in obj.attrs:
            del obj.attrs[key]
        json_keys.discard(key)
        if v is None:  # absence is None: no NaN that could also be a real value
            continue
        if isinstance(v, (dict, list, tuple)):
            obj.attrs[key] = _dumps(v)
            json_keys.add(key)
        elif isinstance(v, (str, bool, int, float, np.generic, np.ndarray)):
            obj.attrs[key] = v
        else:
            raise TypeError(f"attribute {key!r}: cannot store a {type(v).__name__}")
    if "json_keys" in obj.attrs:
        del obj.attrs["json_keys"]
    if json_keys:
        obj.attrs["json_keys"] = json.dumps(sorted(json_keys))


def _get_attrs(obj) -> dict:
    json_keys = set(json.loads(obj.attrs.get("json_keys", "[]")))
    out = {}
    for key, v in obj.attrs.items():
        if key == "json_keys":
            continue
        if key in json_keys:
            v = json.loads(v)
        elif isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[key] = v
    return out


def _check_array(owner: str, name: str, a) -> np.ndarray:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "arrays":
        raise ValueError(f"{owner}: bad array name {name!r}")
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: array {name!r} has dtype {a.dtype}; store numbers only")
    return a


def _put_array(group, name: str, a: np.ndarray) -> None:
    if a.ndim == 0:
        group.create_dataset(name, data=a)
        return
    # One chunk holds a typical trace whole; the first axis stays growable so a trace can be extended later.
    chunks = (max(1, min(a.shape[0], 16384)),) + a.shape[1:]
    group.create_dataset(name, data=a, chunks=chunks, maxshape=(None,) + a.shape[1:],
                         compression="gzip", compression_opts=4, shuffle=True)


def _column(values: list) -> np.ndarray:
    """A table column: ints or bools if all present, floats with NaN for None, else strings ("" for None)."""
    present = [v for v in values if v is not None]
    num = all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in present)
    if present and len(present) == len(values) and all(isinstance(v, (bool, np.bool_)) for v in present):
        return np.array(values, dtype=bool)
    if num and len(present) == len(values) and all(isinstance(v, (int, np.integer)) for v in present):
        return np.array(values, dtype=np.int64)
    if num:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    text = ["" if v is None else v if isinstance(v, str) else _dumps(v) for v in values]
    return np.array(text, dtype=h5py.string_dtype())


def _write_table(parent, name: str, rows: list[dict]) -> None:
    if name in parent:
        del parent[name]
    g = parent.create_group(name, track_order=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    g.attrs["columns"] = json.dumps(columns)
    g.attrs["rows"] = len(rows)
    for c in columns:
        if not _NAME.fullmatch(c):
            raise ValueError(f"bad column name {c!r}")
        g.create_dataset(c, data=_column([row.get(c) for row in rows]))


def _read_table(g) -> list[dict]:
    columns = json.loads(g.attrs["columns"])
    data = []
    for c in columns:
        d = g[c]
        data.append((d.asstr()[()] if h5py.check_string_dtype(d.dtype) else d[()]).tolist())
    return [dict(zip(columns, row)) for row in zip(*data)]


# ------------------------------------------------------------------------------------------------------ files

def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (after a power cut; a kill alone would not need it)."""
    if os.name == "posix":
        _fsync(path)


_SLACK = 256 * 1024  # bytes of HDF5 metadata a write may add to its data


def _check_space(path: Path, need: int) -> None:
    """Refuse a write that cannot fit on the disk before HDF5 starts it: HDF5 fails a full disk late and hard (a
    failed flush in a destructor), sometimes by crashing the process, so the check comes first."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if need + _SLACK > free:
        raise OSError(28, f"No space left on device (a write of about {(need + _SLACK) / 2**20:.1f} MiB, "
                          f"{free / 2**20:.1f} MiB free)")


def _atomic_write(path: Path, fill, *, base: Path | None = None, size: int = 0) -> None:
    """Build the new version of `path` beside it (a copy of `base`, or empty, plus about `size` bytes of new data),
    then rename it over `path`."""
    _check_space(path, size + (base.stat().st_size if base is not None else 0))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if base is not None:
            shutil.copyfile(base, tmp)
            f = h5py.File(tmp, "a", libver=_LIBVER)
        else:
            f = h5py.File(tmp, "w", libver=_LIBVER, track_order=True)
        with f:
            fill(f)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _open_h5(path: Path) -> h5py.File:
    """Open a study file for reading, or raise a StoreError that says what is wrong with it."""
    if not path.is_file():
        raise StoreError(f"{path}: no such study file; check the path (a study writes it with --out)")
    reason = unreadable(path)
    if reason is not None:
        raise StoreError(f"cannot read {path}: {reason}; check its permissions")
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path} is not an HDF5 file; pass the .h5 file that minigrad wrote")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        if "unable to lock file" in str(e):
            raise StoreError(f"{path} is open for writing in another program (HDF5 file lock); close it there and "
                             f"rerun") from None
        raise StoreError(f"{path} cannot be read as HDF5 ({str(e).splitlines()[0]}); it is truncated or damaged, "
                         f"restore it or start again with --overwrite") from None
    try:
        schema, version = f.attrs.get("schema"), f.attrs.get("schema_version")
        version = None if version is None else int(version)
    except Exception as e:  # noqa: BLE001 - damaged attributes: any of OSError, KeyError, TypeError, ...
        f.close()
        raise StoreError(f"{path} is damaged ({' '.join(str(e).split())[:200]}); restore it or start again with "
                         "--overwrite") from None
    if schema != SCHEMA:
        f.close()
        raise StoreError(f"{path} is an HDF5 file of another kind (schema {schema!r}, not {SCHEMA!r}); "
                         f"choose another file")
    if version is None or version > SCHEMA_VERSION:
        f.close()
        raise StoreError(f"{path} has schema_version {version}, newer than the {SCHEMA_VERSION} this minigrad "
                         f"reads; upgrade minigrad")
    return f


def _journal_dir(path: Path) -> Path:
    return path.with_name(path.name + ".pending")


def _journal_entries(journal: Path) -> list[Path]:
    if not journal.is_dir():
        return []
    return sorted(journal.glob("*.h5"))


_THROUGHPUT = "_throughput"  # in a header: the throughput table of a new study not yet written
_HEADER = "new-study.header"  # in the journal: the root attrs of a new study whose file is not written yet


def _write_header(journal: Path, header: dict) -> None:
    path = journal / _HEADER
    _check_space(path, 0)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w", libver=_LIBVER) as f:
            f.attrs["header"] = _dumps(header)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(journal)


def _entry_real(entry: Path) -> bool:
    """Whether a journal entry holds a real result: a run that did not diverge (what may replace an old study)."""
    try:
        with h5py.File(entry, "r") as f:
            status = f["run"].attrs.get("status")
    except (OSError, KeyError):
        return False
    return (status.decode() if isinstance(status, bytes) else status) != "DIVERGED"


def _study_path(path) -> Path:
    """The study file a path names: a symbolic link is followed, so a study reached through a link keeps being
    updated in place (a rename over the link itself would leave the real study behind)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _read_header(journal: Path) -> dict | None:
    """The header a new study left in its journal, when its writer was killed before the first commit."""
    try:
        with h5py.File(journal / _HEADER, "r") as f:
            return json.loads(f.attrs["header"])
    except (OSError, KeyError, ValueError):
        return None


def _entry_study(entry: Path) -> str:
    try:
        with h5py.File(entry, "r") as f:
            return f.attrs.get("study_id")
    except OSError:
        raise StoreError(f"journal entry {entry} cannot be read; delete it (its run is then rerun)") from None
