"""The HDF5 trace store: every run of a study in one file that a kill at any moment cannot break.

Layout
------
/              attrs: schema="minigrad.study", schema_version, study_id, kind, config (JSON of the study
                      configuration), created, host, cpu, blas, threads, minigrad/numpy/numba/h5py/hdf5 versions,
                      and study results added with Store.set_attr
/runs/<id>/    attrs of the run (batch_size, lr, optimizer, seed, status, steps_to_target, ...) and one 1-D
               dataset per trace column (chunked, gzip, maxshape=(None,)); extra arrays under /runs/<id>/arrays/
/throughput/   one dataset per column, one row per measurement
/step_times/<name>/  further step-time tables (`report --retime`, `--step-times`), as /throughput, with attrs saying
               where they were measured (source, host, cpu, blas, threads, measured); /throughput stays the study's own
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

Modules: files.py (the encoding of attributes, arrays and tables; atomic writes, fsync, the journal), writer.py
(Store), reader.py (open, export_csv).
"""
from minigrad.store.files import _LIBVER, _STAGED, SCHEMA, SCHEMA_VERSION, STATUSES, StoreError
from minigrad.store.reader import Run, StudyFile, export_csv, open, remembering_runs  # noqa: A004
from minigrad.store.writer import Store

__all__ = ["SCHEMA", "SCHEMA_VERSION", "STATUSES", "Run", "Store", "StoreError", "StudyFile", "export_csv", "open",
           "remembering_runs",
           "_LIBVER", "_STAGED"]
