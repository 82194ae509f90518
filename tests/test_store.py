"""The HDF5 trace store: round trip, errors, resume, and survival of SIGKILL at any moment."""
import csv
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from minigrad import store
from minigrad.store import Store, StoreError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _store_kill_writer import make_run, run_id  # noqa: E402

CONFIG = {"dataset": "digits", "batch_sizes": [16, 64], "lrs": [0.1, 0.03], "seeds": [0, 1], "target": None}
COLUMNS = ["step", "examples", "epoch", "train_loss", "val_loss", "val_error", "lr", "batch_size", "compute_s",
           "eval_s", "grad_norm"]


def trace(n=100, seed=0):
    rng = np.random.default_rng(seed)
    t = {c: rng.random(n) for c in COLUMNS}
    t["step"] = np.arange(n, dtype=np.int64) * 10
    t["batch_size"] = np.full(n, 64, dtype=np.int32)
    return t


ATTRS = {"batch_size": 64, "lr": 0.1, "optimizer": "sgd", "seed": 0, "status": "COMPLETE", "steps_to_target": 420,
         "examples_to_target": 26880, "target": 0.05, "schedule": {"kind": "cosine", "warmup": 10},
         "hidden": [128, 64], "diverged": False, "final_lr": np.float32(0.25), "note": None}


def test_round_trip(tmp_path):
    path = tmp_path / "study.h5"
    tr = trace()
    params = np.random.default_rng(1).standard_normal(5000)
    rows = [{"backend": "blas", "threads": 1, "dtype": "float32", "batch_size": 64, "step_time_s": 1e-3,
             "iqr_s": 1e-5, "samples_per_s": 64e3, "gflops": 12.5, "ceiling_gflops": None},
            {"backend": "loops", "threads": 2, "dtype": "float64", "batch_size": 16, "step_time_s": 2e-3,
             "iqr_s": 3e-5, "samples_per_s": 8e3, "gflops": 1.5, "ceiling_gflops": 40.0}]
    with Store.create(path, CONFIG) as w:
        assert not w.resumed and w.completed_run_ids() == set()
        w.write_run("b64-lr0.1-s0", ATTRS, tr, {"params": params})
        w.write_run("b16-lr0.1-s0", {**ATTRS, "batch_size": 16, "status": "DIVERGED", "steps_to_target": None},
                    {"step": np.arange(0), "train_loss": np.zeros(0)})
        w.write_throughput(rows)
        w.set_attr("chosen_target", 0.05)
        w.set_attrs({"fit": {"b_crit": 96.5, "s_min": 310.0}, "curve": np.arange(3.0)})
    assert sorted(os.listdir(tmp_path)) == ["study.h5"]  # a clean close leaves one file, no journal

    s = store.open(path)
    assert s.config == CONFIG and s.kind == "study" and s.unmerged == set()
    for key in ("schema", "schema_version", "minigrad_version", "numpy_version", "numba_version", "h5py_version",
                "created", "host", "cpu", "blas", "threads"):
        assert key in s.attrs, key
    assert s.attrs["schema"] == "minigrad.study" and s.attrs["schema_version"] == 1
    assert "OMP_NUM_THREADS" in s.attrs["threads"] and isinstance(s.attrs["blas"], list)
    assert s.attrs["chosen_target"] == 0.05 and s.attrs["fit"] == {"b_crit": 96.5, "s_min": 310.0}
    np.testing.assert_array_equal(s.attrs["curve"], np.arange(3.0))

    run = s.runs["b64-lr0.1-s0"]
    expected = {k: v for k, v in ATTRS.items() if v is not None}
    expected["schedule"], expected["final_lr"] = {"kind": "cosine", "warmup": 10}, 0.25
    assert run.attrs == expected and run.attrs.get("note") is None
    assert list(run.attrs) == list(expected)  # the caller's order survives
    assert list(run.trace) == COLUMNS
    for c in COLUMNS:
        np.testing.assert_array_equal(run.trace[c], tr[c])
        assert run.trace[c].dtype == tr[c].dtype
    np.testing.assert_array_equal(run.arrays["params"], params)
    empty = s.runs["b16-lr0.1-s0"]
    assert "steps_to_target" not in empty.attrs and len(empty.trace["step"]) == 0 and empty.arrays == {}

    assert s.throughput[0] == {**rows[0], "ceiling_gflops": s.throughput[0]["ceiling_gflops"]}
    assert np.isnan(s.throughput[0]["ceiling_gflops"])  # None in a number column reads back as NaN
    assert s.throughput[1] == rows[1]

    with h5py.File(path, "r") as f:  # the layout that other tools see
        d = f["runs/b64-lr0.1-s0/train_loss"]
        assert d.chunks and d.compression == "gzip" and d.maxshape == (None,)
        assert json.loads(f.attrs["config"]) == CONFIG


def test_summary_table(tmp_path):
    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        for i in range(3):
            w.write_run(f"r{i}", {"batch_size": 2 ** i, "lr": 0.1, "status": "COMPLETE",
                                  "steps_to_target": None if i == 1 else 10 * i}, trace(10, i))
    rows = store.open(path).summary()
    assert rows == [{"run_id": f"r{i}", "batch_size": 2 ** i, "lr": 0.1, "status": "COMPLETE",
                     "steps_to_target": None if i == 1 else 10 * i} for i in range(3)]
    with h5py.File(path, "r") as f:  # the stored /summary: parallel columns, NaN where a value is missing
        g = f["summary"]
        assert json.loads(g.attrs["columns"]) == list(rows[0])
        assert g["run_id"].asstr()[()].tolist() == ["r0", "r1", "r2"]
        assert g["batch_size"][()].tolist() == [1, 2, 4]
        np.testing.assert_array_equal(g["steps_to_target"][()], [0.0, np.nan, 20.0])


def test_export_csv(tmp_path):
    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        w.write_run("a", {"batch_size": 8, "status": "COMPLETE", "hidden": [4, 2]},
                    {"step": [0, 1], "loss": [1.0, 0.5]})
        w.write_run("b", {"batch_size": 16, "status": "INCOMPLETE"}, {"step": [0, 1, 2], "loss": [0.1, 0.2, 1 / 3]})
        w.write_throughput([{"backend": "blas", "threads": 1, "gflops": 3.5}])
    paths = store.export_csv(path, tmp_path / "csv")
    assert [p.name for p in paths] == ["summary.csv", "throughput.csv", "traces.csv"]
    read = {p.name: list(csv.DictReader(p.open())) for p in paths}
    assert read["summary.csv"] == [{"run_id": "a", "batch_size": "8", "status": "COMPLETE", "hidden": "[4, 2]"},
                                   {"run_id": "b", "batch_size": "16", "status": "INCOMPLETE", "hidden": ""}]
    assert read["throughput.csv"] == [{"backend": "blas", "threads": "1", "gflops": "3.5"}]
    assert [(r["run_id"], int(r["step"]), float(r["loss"])) for r in read["traces.csv"]] == [
        ("a", 0, 1.0), ("a", 1, 0.5), ("b", 0, 0.1), ("b", 1, 0.2), ("b", 2, 1 / 3)]  # floats exact


def test_errors_name_the_file_and_what_to_do(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["schema"] = "someone.else"
    newer = tmp_path / "newer.h5"
    Store.create(newer, CONFIG).close()
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = 99
    cases = [(text, "not an HDF5 file"), (other, "another kind"), (newer, "newer than"),
             (tmp_path / "missing.h5", "no such study file")]
    for path, words in cases:
        with pytest.raises(StoreError, match=words) as e:
            store.open(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    for path, words in cases[:3]:  # a writer refuses the same files
        with pytest.raises(StoreError, match=words):
            Store.create(path, CONFIG)

    path = tmp_path / "study.h5"
    Store.create(path, CONFIG).close()
    with pytest.raises(StoreError, match=r"exists; pass --overwrite"):
        Store.create(path, CONFIG, kind="train", resume=False)
    with pytest.raises(StoreError, match=r"different configuration \(differs in lrs, seeds\).*--out.*--overwrite"):
        Store.create(path, {**CONFIG, "lrs": [1.0], "seeds": [7]})
    with pytest.raises(StoreError, match="kind 'study', not 'experiment/keskar'"):
        Store.create(path, CONFIG, kind="experiment/keskar")
    assert sorted(os.listdir(tmp_path)) == ["newer.h5", "notes.h5", "other.h5", "study.h5"]  # nothing left behind


def test_resume_lists_completed_runs_and_rejects_duplicates(tmp_path):
    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        w.write_run("r0", ATTRS, trace(seed=0))
        w.write_run("r1", ATTRS, trace(seed=1))
        with pytest.raises(StoreError, match="'r1' is already stored"):
            w.write_run("r1", ATTRS, trace(seed=1))
    with Store.create(path, {**CONFIG}) as w:
        assert w.resumed and w.completed_run_ids() == {"r0", "r1"}
        with pytest.raises(StoreError, match="already stored; pass replace=True"):
            w.write_run("r0", ATTRS, trace())
        w.write_run("r0", {**ATTRS, "seed": 5}, trace(seed=5), replace=True)
        w.write_run("r2", ATTRS, trace(seed=2))
    s = store.open(path)
    assert sorted(s.runs) == ["r0", "r1", "r2"] and s.runs["r0"].attrs["seed"] == 5
    np.testing.assert_array_equal(s.runs["r0"].trace["val_loss"], trace(seed=5)["val_loss"])
    with h5py.File(path, "r") as f:
        assert f["summary/run_id"].asstr()[()].tolist() == ["r0", "r1", "r2"]


def test_bad_input_is_rejected_before_writing(tmp_path):
    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        with pytest.raises(ValueError, match="bad run id"):
            w.write_run("../x", ATTRS, trace())
        with pytest.raises(ValueError, match="one length"):
            w.write_run("r", ATTRS, {"step": [1, 2], "loss": [1.0]})
        with pytest.raises(ValueError, match="status must be one of"):
            w.write_run("r", {"status": "DONE"}, trace())
        with pytest.raises(TypeError, match="dtype"):
            w.write_run("r", ATTRS, {"name": np.array(["a", "b"])})
        with pytest.raises(TypeError, match="cannot store a set"):
            w.write_run("r", {"tags": {1, 2}}, trace())
        with pytest.raises(ValueError, match="cannot be changed"):
            w.set_attr("config", {})
        assert w.completed_run_ids() == set()
    assert store.open(path).runs == {}
    with pytest.raises(TypeError, match="JSON"):
        Store.create(tmp_path / "bad.h5", {"f": object()})


def test_one_writer_at_a_time_and_readers_see_the_journal(tmp_path):
    path = tmp_path / "study.h5"
    w = Store.create(path, CONFIG)
    w.write_run("r0", ATTRS, trace())
    with pytest.raises(StoreError, match="being written by another process"):
        Store.create(path, CONFIG)
    s = store.open(path)  # while the writer is open, the run is only in the journal
    assert list(s.runs) == ["r0"] and s.unmerged == {"r0"}
    w.close()
    assert store.open(path).unmerged == set()


def test_overwrite_keeps_the_old_file_until_the_new_one_is_complete(tmp_path, monkeypatch):
    path = tmp_path / "study.h5"
    old = Store.create(path, CONFIG)
    old.write_run("old-first", ATTRS, trace())
    old.flush()  # the old study's file exists
    old.write_run("old-run", ATTRS, trace())
    old._closed = True  # abandon the writer as a kill would: its run stays in the journal
    Store._unlock(old._lock_fd, old._journal)
    assert "old-run" in store.open(path).runs

    seen = []
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == path:  # the moment the new study file takes the old one's place
            with h5py.File(path, "r") as f:  # what other processes read (the writer's own open() sees the new one)
                seen.append(json.loads(f.attrs["config"]))
            seen.append((tmp_path / "study.h5.pending" / "old-run.h5").exists())
            assert store.open(src).config == {"new": True}
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with Store.create(path, {"new": True}, overwrite=True) as w:
        assert not w.resumed and w.completed_run_ids() == set()
    assert seen == [CONFIG, True]
    s = store.open(path)
    assert s.config == {"new": True} and s.runs == {}  # the old study's journal entry is not mixed in
    assert sorted(os.listdir(tmp_path)) == ["study.h5"]

    def fail(src, dst):
        if Path(dst) == path:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StoreError, match="No space left"):
        with Store.create(path, {"newer": True}, overwrite=True) as w:
            w.write_run("new-run", ATTRS, trace())
    assert store.open(path).config == {"new": True}  # a failed overwrite leaves the old file as it was
    assert sorted(os.listdir(tmp_path)) == ["study.h5", "study.h5.pending"]  # with the finished run, for a rerun


def test_overwrite_that_stores_nothing_leaves_the_old_file_byte_identical(tmp_path):
    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        w.write_run("r0", ATTRS, trace())
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with Store.create(path, {"new": True}, overwrite=True) as w:
            assert store.open(path).config == {"new": True} and store.open(path).runs == {}  # the writer's view
            raise RuntimeError("bad data found after the writer was opened")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["study.h5"]
    # a new study that fails before storing anything leaves no file to block its rerun
    with pytest.raises(RuntimeError):
        with Store.create(tmp_path / "new.h5", CONFIG, resume=False):
            raise RuntimeError("failed")
    assert sorted(os.listdir(tmp_path)) == ["study.h5"]
    # negative control: the same overwrite without the failure does replace the file
    with Store.create(path, {"new": True}, overwrite=True):
        pass
    assert path.read_bytes() != before and store.open(path).config == {"new": True}


def test_remembering_runs_reads_each_run_once_and_only_inside_the_block(tmp_path, monkeypatch):
    from minigrad.store import reader

    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        w.write_run("r0", ATTRS, trace())
        w.write_run("r1", ATTRS, trace(seed=1))
    reads = []
    real = reader._read_run
    monkeypatch.setattr(reader, "_read_run", lambda rid, g: reads.append(rid) or real(rid, g))
    with store.remembering_runs():
        first = store.open(path)
        with Store.create(path, CONFIG) as w:  # the study goes on: one more run
            w.write_run("r2", ATTRS, trace(seed=2))
        second = store.open(path)
    assert reads == ["r0", "r1", "r2"]  # the second open read only the new run
    assert second.runs["r0"] is first.runs["r0"] and sorted(second.runs) == ["r0", "r1", "r2"]
    np.testing.assert_array_equal(second.runs["r2"].trace["val_loss"], trace(seed=2)["val_loss"])
    # the control: outside the block every open reads every run
    store.open(path)
    assert reads[3:] == ["r0", "r1", "r2"]
    # another study in the same file (overwrite: a new study id) is read anew
    with store.remembering_runs():
        store.open(path)
        with Store.create(path, CONFIG, overwrite=True) as w:
            w.write_run("r0", {**ATTRS, "seed": 7}, trace(seed=3))
        assert store.open(path).runs["r0"].attrs["seed"] == 7


def test_truncated_file_is_reported(tmp_path):
    """Negative control: a damaged file is caught, so the kill tests below would notice one."""
    path = tmp_path / "study.h5"
    with Store.create(path, CONFIG) as w:
        w.write_run("r0", ATTRS, trace(5000))
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreError, match="truncated or damaged"):
        store.open(path)
    with pytest.raises(StoreError, match="truncated or damaged"):
        Store.create(path, CONFIG)


# ------------------------------------------------------------------------------------------ kills (subprocesses)

POINTS = 50_000  # big runs: a write_run takes ~30 ms, so random kills often land inside one
WRITER = [sys.executable, str(HERE / "_store_kill_writer.py")]


def check_study(path, reported, points=POINTS):
    """Open the file as a user would; every reported run must be there with its exact data."""
    s = store.open(path)
    ids = sorted(s.runs)
    assert ids == [run_id(i) for i in range(len(ids))]  # one writer writes in order: no holes
    assert set(reported) <= set(ids), sorted(set(reported) - set(ids))
    for rid in reported:
        attrs, tr, arrays = make_run(int(rid[1:]), points)
        run = s.runs[rid]
        assert run.attrs == {k: v for k, v in attrs.items() if v is not None}
        for c in tr:
            np.testing.assert_array_equal(run.trace[c], tr[c])
        np.testing.assert_array_equal(run.arrays["params"], arrays["params"])
    return s


def kill_after(args, delay):
    """Start a writer, SIGKILL it `delay` s after it is ready; return the run ids it reported finished."""
    proc = subprocess.Popen(WRITER + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err  # killed, not crashed (a failed resume would crash)
    return out.split()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_finished_run(tmp_path):
    rng = random.Random(20240611)
    paths = [tmp_path / f"study{j}.h5" for j in range(3)]  # three files keep each small, commits fast
    kills = verified = in_write = in_commit = 0
    for k in range(24):
        path = paths[k % 3]
        reported = kill_after([str(path), str(POINTS), "3", "1000000"], rng.uniform(0.0, 0.45))
        kills += 1
        in_write += bool(glob.glob(f"{path}.pending/*.tmp"))  # killed inside write_run
        in_commit += bool(glob.glob(f"{tmp_path}/.{path.name}.*.tmp"))  # killed inside a commit
        if not path.exists() and not (tmp_path / f"{path.name}.pending" / "new-study.header").exists():
            assert reported == []  # killed before the study was first created: nothing was reported
            continue
        check_study(path, reported)
        verified += len(reported)
    total = 0
    for path in paths:  # a writer resumes each file and finishes it cleanly: everything merged, no journal
        before = len(store.open(path).runs)
        total += before + 2
        proc = subprocess.run(WRITER + [str(path), str(POINTS), "3", str(before + 2)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        s = check_study(path, [run_id(i) for i in range(before + 2)])
        journal = Path(f"{path}.pending")
        assert s.unmerged == set() and not journal.exists(), sorted(p.name for p in journal.iterdir())
    print(f"\n{kills} kills, {verified} reported runs verified after their kill, {total} runs in the final files, "
          f"{in_write} kills inside write_run, {in_commit} inside a commit")
    assert verified > 20 and in_write >= 1  # the kills did hit the dangerous window


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_around_the_commit_rename(tmp_path, when):
    """Kill exactly before / after the commit renames the new study file into place."""
    path = tmp_path / "study.h5"
    n = 1000
    with Store.create(path, {"test": "kill", "points": n}) as w:
        for i in range(2):
            w.write_run(run_id(i), *make_run(i, n))
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(HERE)!r})
from _store_kill_writer import make_run, run_id
from minigrad import store
real = os.replace
def replace(src, dst):
    if os.fspath(dst) == {str(path)!r}:
        {"real(src, dst)" if when == "after" else "pass"}
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace  # the store calls os.replace through the os module
w = store.Store.create({str(path)!r}, {{"test": "kill", "points": {n}}})
for i in range(2, 5):
    w.write_run(run_id(i), *make_run(i, {n}))
w.close()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in Path(f"{path}.pending").glob("*.h5"))
    assert left == ["r00002.h5", "r00003.h5", "r00004.h5"]  # entries are deleted only after the rename
    assert bool(glob.glob(f"{tmp_path}/.study.h5.*.tmp")) == (when == "before")
    s = check_study(path, [run_id(i) for i in range(5)], n)
    assert s.unmerged == ({"r00002", "r00003", "r00004"} if when == "before" else set())
    with Store.create(path, {"test": "kill", "points": n}) as w:  # resume merges and cleans up
        assert w.completed_run_ids() == {run_id(i) for i in range(5)}
    assert sorted(os.listdir(tmp_path)) == ["study.h5"]
    check_study(path, [run_id(i) for i in range(5)], n)


@pytest.mark.slow
def test_naive_in_place_writer_is_caught(tmp_path):
    """Negative control: the same kill, on a writer that appends to the study file in place, breaks the file."""
    rng = random.Random(3)
    broken = 0
    for k in range(4):
        path = tmp_path / f"naive{k}.h5"
        Store.create(path, {"test": "kill", "points": POINTS}).close()
        reported = kill_after([str(path), str(POINTS), "naive"], rng.uniform(0.1, 0.4))
        try:
            check_study(path, reported)
        except (StoreError, AssertionError) as e:
            broken += 1
            print(f"\nnaive writer, kill {k}: {str(e).splitlines()[0][:150]}")
    assert broken >= 1  # observed: every kill leaves the file "already open for write", i.e. unopenable
