"""Store: the one writer of a study file (journal entries per run, atomic commits, an flock)."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import h5py

from minigrad.machine.environment import study_record
from minigrad.store.reader import open as read_study
from minigrad.store.files import (
    SCHEMA, SCHEMA_VERSION, STATUSES, _LIBVER, _RESERVED, _ID, StoreError, _STAGED, _os_error, _dumps, _put_attrs,
    _get_attrs, _check_array, _put_array, _write_table, _fsync, _fsync_dir, _check_space, _atomic_write, _open_h5,
    _journal_dir, _journal_entries, _HEADER, _THROUGHPUT, _write_header, _read_header, _entry_study, _entry_real,
    _study_path)

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock
    fcntl = None


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
               resume: bool = True, defaults: dict = None) -> "Store":
        """Start a study file, or resume the one at `path` if it holds the same configuration and kind.

        defaults: {setting: default value}; a setting the file's configuration lacks counts as that default (a
        file written before the setting existed resumes as long as the new configuration keeps its default).

        resume=False: an existing file is an error (a single `train` has nothing to resume).
        overwrite=True: start afresh. A new study is written at its first commit (a run, throughput or results), not
        here: until then an old file at `path` stays as it was, and a command that fails or is killed before it has
        anything to store leaves nothing that blocks its rerun. In place of an old file, the first commit that holds
        a real result (a run that did not diverge; or a successful close) is the one that writes it. open() in this
        process sees the new study meanwhile. A `path` that is a symbolic link names the study it points to.
        """
        path = _study_path(path)
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
                    saved = read_study(path)  # any damage: one line naming the file
                    study_id, old_kind, old_config = saved.attrs["study_id"], saved.kind, saved.config
                new_config = json.loads(config_json)
                if defaults:  # settings added since the file was written, at their defaults, change nothing
                    known = json.loads(_dumps(defaults))
                    old_config = {**{k: v for k, v in known.items() if k in new_config and k not in old_config},
                                  **old_config}
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
                if store._header is not None:  # still nothing real to put in place of an old file
                    _STAGED[path.resolve()] = store
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
                step_times: tuple | None = None, write_empty: bool = False) -> None:
        """Write a new version of the study file holding the journal and the given changes; see module docstring."""
        header = self._header
        entries = [e for e in _journal_entries(self._journal) if header is None or _entry_study(e) == self.study_id]
        replaces = header is not None and not write_empty and self.path.exists()
        if replaces and not any(_entry_real(e) for e in entries):
            # A new study with no real result yet (no run, or only diverged runs) does not take the place of the old
            # file (--overwrite): its attrs and throughput wait in the journal's header until it has one.
            if root_attrs or throughput is not None:
                header.update(root_attrs or {})
                for key in [k for k, v in header.items() if v is None]:
                    del header[key]  # None deletes, as in the file
                if throughput is not None:
                    header[_THROUGHPUT] = throughput
                try:
                    _write_header(self._journal, header)
                except OSError as e:
                    raise _os_error(self.path, e, "write") from None
            self._dirty = bool(entries)
            return

        def fill(f):
            if header is not None:  # the new study's first version, written from nothing
                f.attrs["schema"], f.attrs["schema_version"] = SCHEMA, SCHEMA_VERSION
                f.attrs["study_id"], f.attrs["kind"] = header["study_id"], header["kind"]
                _put_attrs(f, {k: v for k, v in header.items()
                               if (k not in _RESERVED or k == "config") and k != _THROUGHPUT})
                f.create_group("runs")
                _write_table(f, "summary", [])
                if header.get(_THROUGHPUT) is not None and throughput is None:
                    _write_table(f, "throughput", header[_THROUGHPUT])
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
            if step_times is not None:  # (name, rows, attrs): one more machine's or library's step times
                name, rows, attrs = step_times
                group = f.require_group("step_times")
                _write_table(group, name, rows)
                _put_attrs(group[name], attrs)
            if entries:
                _write_table(f, "summary", [{"run_id": k, **_get_attrs(g)} for k, g in runs.items()])
            self._done = set(runs)

        if (entries or root_attrs or throughput is not None or step_times is not None
                or (header is not None and write_empty)):
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

    def write_step_times(self, name: str, rows: list[dict], attrs: dict) -> None:
        """Add (or replace) the named step-time table /step_times/<name> (rows as /throughput's; attrs: where
        the times come from). /throughput and the runs stay as they are."""
        self._check_open()
        if not isinstance(name, str) or not _ID.fullmatch(name):
            raise ValueError(f"bad step-time table name {name!r}: use letters, digits and _ . = + -")
        self._commit(step_times=(name, [dict(r) for r in rows], dict(attrs)))

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
                self._commit(write_empty=not failed)
        finally:
            self._closed = True
            if self._header is not None:  # a new study that never committed leaves no file, no header, and none
                _STAGED.pop(self.path.resolve(), None)  # of the diverged runs that could not replace the old file
                (self._journal / _HEADER).unlink(missing_ok=True)
                for entry in _journal_entries(self._journal):
                    if _entry_study(entry) == self.study_id and not _entry_real(entry):
                        entry.unlink()
            self._unlock(self._lock_fd, self._journal)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)  # runs written before an exception are finished runs: keep them
