"""The HDF5 trace store: every run of a study in one file that a kill at any moment cannot break.

Layout
------
/              attrs: schema="minigrad.study", schema_version, study_id, kind, config (JSON of the study
                      configuration), created, host, cpu, blas, threads, minigrad/numpy/numba/h5py/hdf5 versions,
                      and study results added with Store.set_attr
/runs/<id>/    attrs of the run (batch_size, lr, optimizer, seed, status, steps_to_target, ...) and one 1-D
               dataset per trace column (chunked, gzip, maxshape=(None,)); extra arrays under /runs/<id>/arrays/
/throughput/   one dataset per column, one row per measurement
/summary/      one dataset per column (run_id + the run attrs), one row per run, rebuilt whenever runs are merged

Attribute values that are dicts, lists or tuples are stored as JSON strings, and their names are listed in the
object's `json_keys` attribute, so they read back as Python values. None is stored as absence and reads back as None.

Crash safety
------------
HDF5 updates its metadata (B-trees, heaps, object headers) in place, in no set order, from a cache that h5py
flushes when it likes. A process killed while a file is open for writing can leave a file that does not open, and
with it every run it held. SWMR does not cure this: it allows appending to existing datasets but not creating a new
run's group, and a killed SWMR writer still leaves the file marked "open for write". So the study file is never
opened for writing. Instead:

1. write_run writes the run into a small file of its own, the journal entry <path>.pending/<run_id>.h5, under a
   temporary name; it closes it, fsyncs it and renames it into place. A rename is atomic, so an entry is either
   absent or complete; a kill mid-write leaves only a *.tmp file, which is ignored and removed later.
2. A commit (close, flush, write_throughput, set_attr, and the start of a resume) copies the study file to a
   temporary file beside it, merges the journal entries and the change into the copy, rebuilds /summary, fsyncs
   the copy and os.replace()s it over the study file. Only then are the merged entries deleted. A kill before the
   replace leaves the old file and the journal; a kill after it leaves the new file and entries it already holds,
   and merging them again is harmless (an entry replaces the run of the same id).
3. Readers (open) read the journal first, then the study file, so they see every finished run after a kill and
   while a writer commits (a commit deletes entries only after the file that holds them is in place). A writer that
   resumes merges the journal into the file.

So at every moment the study file is a complete file that h5py wrote and closed, and every run for which write_run
returned is in it or in the journal. Entries carry the study_id of their file: entries left by a study that was
later overwritten are never mixed into the new one. fsync makes the same hold after a power cut, not only a kill.

Cost: write_run writes only its own small file (about 10 ms with the fsyncs). A commit copies the whole study file
(tens of KB per run), so the writer commits on close and when asked, not per run. Only one process may write a
study: the writer holds an flock on <path>.pending/lock, which the kernel drops when the process dies.
"""
from __future__ import annotations

import builtins  # the module-level open() below shadows the builtin
import csv
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from minigrad.machine.environment import study_record
from minigrad.machine.text import json_default

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock
    fcntl = None

SCHEMA = "minigrad.study"
SCHEMA_VERSION = 1
STATUSES = ("COMPLETE", "INCOMPLETE", "DIVERGED")

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
    schema, version = f.attrs.get("schema"), f.attrs.get("schema_version")
    if schema != SCHEMA:
        f.close()
        raise StoreError(f"{path} is an HDF5 file of another kind (schema {schema!r}, not {SCHEMA!r}); "
                         f"choose another file")
    if version is None or int(version) > SCHEMA_VERSION:
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


# ------------------------------------------------------------------------------------------------------ writer

class Store:
    """The one writer of a study file. Make it with Store.create; use it as a context manager."""

    def __init__(self, path: Path, study_id: str, lock_fd, resumed: bool):
        self.path, self.study_id, self.resumed = path, study_id, resumed
        self._journal = _journal_dir(path)
        self._lock_fd = lock_fd
        self._done: set[str] = set()
        self._dirty = False  # journal entries not yet merged into the file
        self._closed = False
        self._header = None  # a new study's root attrs until its first commit writes the file (see create)

    @classmethod
    def create(cls, path, config: dict, *, kind: str = "study", overwrite: bool = False,
               resume: bool = True) -> "Store":
        """Start a study file, or resume the one at `path` if it holds the same configuration and kind.

        resume=False: an existing file is an error (a single `train` has nothing to resume).
        overwrite=True: start afresh. A new study is written at its first commit (a run, throughput or results), not
        here: until then an old file at `path` stays as it was, and a command that fails or is killed before it has
        anything to store leaves nothing that blocks its rerun. open() in this process sees the new study meanwhile.
        """
        path = Path(path)
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        config_json = _dumps(config)  # fails before anything is touched
        if not path.parent.is_dir():
            raise StoreError(f"the directory of {path} does not exist; create it first or choose another --out")
        if path.is_dir():
            raise StoreError(f"{path} is a directory; --out takes a file name")
        journal = _journal_dir(path)
        try:
            lock_fd = cls._lock(path, journal)
        except OSError as e:
            raise _os_error(path, e, "write") from None
        try:
            # a new study killed before its first commit left its header and finished runs in the journal
            header = None if path.exists() or overwrite or not resume else _read_header(journal)
            if header is not None and not any(_entry_study(e) == header["study_id"] for e in _journal_entries(journal)):
                header = None  # nothing finished: nothing to resume
            if (path.exists() or header is not None) and not overwrite:
                if not resume:
                    raise StoreError(f"{path} exists; pass --overwrite to replace it or choose another --out")
                if header is not None:
                    study_id, old_kind, old_config = header["study_id"], header["kind"], header["config"]
                else:
                    with _open_h5(path) as f:
                        study_id, old_kind = f.attrs["study_id"], f.attrs.get("kind")
                        old_config = json.loads(f.attrs["config"])
                new_config = json.loads(config_json)
                if old_kind != kind or old_config != new_config:
                    what = (f"kind {old_kind!r}, not {kind!r}" if old_kind != kind else "differs in " + ", ".join(
                        sorted(k for k in old_config.keys() | new_config if old_config.get(k) != new_config.get(k))))
                    raise StoreError(f"{path} holds a different configuration ({what}); "
                                     f"use another --out or pass --overwrite")
                store = cls(path, study_id, lock_fd, resumed=True)
                store._header = header
                store._clean()
                store._dirty = bool(_journal_entries(journal))
                store._commit()  # merge what a killed writer left in the journal
            else:
                store = cls(path, uuid.uuid4().hex, lock_fd, resumed=False)
                store._header = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "study_id": store.study_id,
                                 "kind": kind, **study_record(), "config": json.loads(config_json)}
                store._clean_tmp()
                _write_header(journal, store._header)
                _STAGED[path.resolve()] = store
        except OSError as e:
            cls._unlock(lock_fd, journal)
            raise _os_error(path, e, "write") from None
        except BaseException:
            cls._unlock(lock_fd, journal)
            raise
        return store

    @staticmethod
    def _lock(path: Path, journal: Path):
        journal.mkdir(exist_ok=True)
        if fcntl is None:
            return None
        fd = os.open(journal / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{path} is being written by another process; wait for it or choose another --out")
        return fd

    @staticmethod
    def _unlock(fd, journal: Path) -> None:
        if fd is not None:
            (journal / "lock").unlink(missing_ok=True)
            os.close(fd)
        try:
            journal.rmdir()  # only when empty: unmerged entries must stay
        except OSError:
            pass

    def _clean_tmp(self) -> None:
        """Remove the temporary files of killed writers: they are never part of a study."""
        for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        for tmp in self._journal.glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    def _clean(self) -> None:
        """Remove what killed writers left half-done, and journal entries of another study."""
        self._clean_tmp()
        for entry in _journal_entries(self._journal):
            if _entry_study(entry) != self.study_id:
                entry.unlink()
        header = _read_header(self._journal)
        if header is not None and header["study_id"] != self.study_id:
            (self._journal / _HEADER).unlink(missing_ok=True)

    def _commit(self, root_attrs: dict | None = None, throughput: list[dict] | None = None, *,
                write_empty: bool = False) -> None:
        """Write a new version of the study file holding the journal and the given changes; see module docstring."""
        header = self._header
        entries = [e for e in _journal_entries(self._journal) if header is None or _entry_study(e) == self.study_id]

        def fill(f):
            if header is not None:  # the new study's first version, written from nothing
                f.attrs["schema"], f.attrs["schema_version"] = SCHEMA, SCHEMA_VERSION
                f.attrs["study_id"], f.attrs["kind"] = header["study_id"], header["kind"]
                _put_attrs(f, {k: v for k, v in header.items() if k not in _RESERVED or k == "config"})
                f.create_group("runs")
                _write_table(f, "summary", [])
            runs = f["runs"]
            for entry in entries:
                with h5py.File(entry, "r") as src:
                    run_id = src.attrs["run_id"]
                    if run_id in runs:
                        del runs[run_id]
                    src.copy(src["run"], runs, name=run_id)
            if root_attrs:
                _put_attrs(f, root_attrs)
            if throughput is not None:
                _write_table(f, "throughput", throughput)
            if entries:
                _write_table(f, "summary", [{"run_id": k, **_get_attrs(g)} for k, g in runs.items()])
            self._done = set(runs)

        if entries or root_attrs or throughput is not None or (header is not None and write_empty):
            try:
                _atomic_write(self.path, fill, base=None if header is not None else self.path,
                              size=sum(e.stat().st_size for e in entries))
            except OSError as e:
                raise _os_error(self.path, e, "write") from None
            for entry in entries:
                entry.unlink()
            if header is not None:  # the new study is in place: the replaced study's unmerged entries go with it
                self._header = None
                _STAGED.pop(self.path.resolve(), None)
                (self._journal / _HEADER).unlink(missing_ok=True)
                self._clean()
        elif header is None:
            with _open_h5(self.path) as f:
                self._done = set(f["runs"])
        self._dirty = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the writer is closed; open it again with Store.create")

    def completed_run_ids(self) -> set[str]:
        """Ids of the runs stored so far (finished runs of earlier sessions included): a resume skips these."""
        return set(self._done)

    def write_run(self, run_id: str, attrs: dict, trace: dict, arrays: dict | None = None, *,
                  replace: bool = False) -> None:
        """Store one finished run whole. When this returns the run survives a kill of the process.

        trace: column name -> 1-D array, all of one length. arrays: extra named arrays (e.g. "params").
        An id already stored is an error unless replace=True.
        """
        self._check_open()
        if not isinstance(run_id, str) or not _ID.fullmatch(run_id):
            raise ValueError(f"bad run id {run_id!r}: use letters, digits and _ . = + - (not first: . = + -)")
        if run_id in self._done and not replace:
            raise StoreError(f"{self.path}: run {run_id!r} is already stored; pass replace=True to write it again")
        if attrs.get("status") is not None and attrs["status"] not in STATUSES:
            raise ValueError(f"run {run_id!r}: status must be one of {', '.join(STATUSES)}, not {attrs['status']!r}")
        trace = {k: _check_array(f"run {run_id!r}", k, v) for k, v in trace.items()}
        lengths = {k: v.shape for k, v in trace.items()}
        if any(len(s) != 1 for s in lengths.values()) or len(set(lengths.values())) > 1:
            raise ValueError(f"run {run_id!r}: trace columns must be 1-D and of one length, got {lengths}")
        arrays = {k: _check_array(f"run {run_id!r}", k, v) for k, v in (arrays or {}).items()}

        entry = self._journal / f"{run_id}.h5"
        tmp = entry.with_suffix(".tmp")
        try:
            _check_space(entry, sum(a.nbytes for a in (*trace.values(), *arrays.values())))
            with h5py.File(tmp, "w", libver=_LIBVER) as f:
                f.attrs["study_id"], f.attrs["run_id"] = self.study_id, run_id
                g = f.create_group("run", track_order=True)  # attrs and columns keep the caller's order
                _put_attrs(g, attrs)
                for name, a in trace.items():
                    _put_array(g, name, a)
                if arrays:
                    ag = g.create_group("arrays", track_order=True)
                    for name, a in arrays.items():
                        _put_array(ag, name, a)
            _fsync(tmp)
            os.replace(tmp, entry)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _os_error(self.path, e, "write a run of") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self._journal)
        self._done.add(run_id)
        self._dirty = True

    def write_throughput(self, rows: list[dict]) -> None:
        """Replace the /throughput table with these rows (dicts of strings and numbers)."""
        self._check_open()
        self._commit(throughput=[dict(r) for r in rows])

    def set_attrs(self, values: dict) -> None:
        """Add study-level results (chosen target, fitted values, ...) to the root attrs; None deletes one."""
        self._check_open()
        bad = _RESERVED.intersection(values)
        if bad:
            raise ValueError(f"{self.path}: {', '.join(sorted(bad))} cannot be changed")
        self._commit(root_attrs=dict(values))

    def set_attr(self, key: str, value) -> None:
        self.set_attrs({key: value})

    def flush(self) -> None:
        """Merge the journal into the study file now (close does it too)."""
        self._check_open()
        if self._dirty:
            self._commit()

    def close(self, *, failed: bool = False) -> None:
        """Merge the journal and release the file. A new study that stored nothing is written (empty) only when the
        work ended well (failed=False): a failed command leaves an old file, or no file, as it found it."""
        if self._closed:
            return
        try:
            if self._dirty or (self._header is not None and not failed):
                self._commit(write_empty=True)
        finally:
            self._closed = True
            if self._header is not None:  # a new study that never committed leaves no file and no header
                _STAGED.pop(self.path.resolve(), None)
                (self._journal / _HEADER).unlink(missing_ok=True)
            self._unlock(self._lock_fd, self._journal)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)  # runs written before an exception are finished runs: keep them


# ------------------------------------------------------------------------------------------------------ reader

@dataclass
class Run:
    run_id: str
    attrs: dict
    trace: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class StudyFile:
    """A study read whole into memory: the file is closed again when open() returns."""
    path: Path
    attrs: dict  # root metadata, config included
    runs: dict[str, Run]
    throughput: list[dict]
    unmerged: set[str] = field(default_factory=set)  # runs found only in the journal of a killed writer

    @property
    def config(self) -> dict:
        return self.attrs["config"]

    @property
    def kind(self) -> str:
        return self.attrs["kind"]

    def summary(self) -> list[dict]:
        """One row per run: run_id and the run's attrs (what /summary holds, with None for missing values)."""
        keys = list(dict.fromkeys(k for run in self.runs.values() for k in run.attrs))
        return [{"run_id": rid, **{k: run.attrs.get(k) for k in keys}} for rid, run in self.runs.items()]


def _read_run(run_id: str, g) -> Run:
    trace = {k: d[()] for k, d in g.items() if isinstance(d, h5py.Dataset)}
    arrays = {k: d[()] for k, d in g["arrays"].items()} if "arrays" in g else {}
    return Run(run_id, _get_attrs(g), trace, arrays)


def open(path) -> StudyFile:  # noqa: A001 - minigrad.store.open(path) reads like the builtin it mirrors
    """Read a study file, with any runs that a killed writer left in its journal."""
    path = Path(path)
    staged = _STAGED.get(path.resolve())
    # The journal first: a commit deletes entries only after the file holding them is in place (module docstring).
    journal = []
    for entry in _journal_entries(_journal_dir(path)):
        try:
            with h5py.File(entry, "r") as src:
                journal.append((src.attrs["study_id"], _read_run(src.attrs["run_id"], src["run"])))
        except OSError:
            if entry.exists():
                raise StoreError(f"journal entry {entry} cannot be read; delete it (its run is then rerun)") from None
    header = staged._header if staged is not None else None if path.exists() else _read_header(_journal_dir(path))
    if header is not None:  # a new study whose file is not written yet: its runs are in the journal
        attrs, runs, throughput = dict(header), {}, []
    else:
        with _open_h5(path) as f:
            try:
                attrs = _get_attrs(f)
                runs = {rid: _read_run(rid, g) for rid, g in f["runs"].items()}
                throughput = _read_table(f["throughput"]) if "throughput" in f else []
            except (OSError, KeyError) as e:
                raise StoreError(f"{path} is damaged ({e}); restore it or start again with --overwrite") from None
    unmerged = set()
    for study_id, run in journal:
        if study_id == attrs["study_id"]:
            if run.run_id not in runs:
                unmerged.add(run.run_id)
            runs[run.run_id] = run  # an entry is never older than the file's copy of its run
    return StudyFile(path, attrs, dict(sorted(runs.items())), throughput, unmerged)


def export_csv(path, out_dir) -> list[Path]:
    """Write summary.csv, throughput.csv (if measured) and traces.csv (run_id + trace columns) into out_dir."""
    study = open(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def cell(v):
        return _dumps(v) if isinstance(v, (dict, list, tuple)) else v

    def write(name, header, rows):
        with builtins.open(out / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return out / name

    summary = study.summary()
    header = list(summary[0]) if summary else ["run_id"]
    paths = [write("summary.csv", header, ([cell(r[k]) for k in header] for r in summary))]
    if study.throughput:
        header = list(dict.fromkeys(k for r in study.throughput for k in r))
        paths.append(write("throughput.csv", header, ([cell(r.get(k)) for k in header] for r in study.throughput)))
    columns = list(dict.fromkeys(k for run in study.runs.values() for k in run.trace))

    def trace_rows():
        for rid, run in study.runs.items():
            n = len(next(iter(run.trace.values()))) if run.trace else 0
            cols = [run.trace[c].tolist() if c in run.trace else [""] * n for c in columns]
            for values in zip(*cols):
                yield (rid, *values)

    paths.append(write("traces.csv", ["run_id", *columns], trace_rows()))
    return paths
