"""The study driver: executors, faults (a worker or the driver killed mid-study), shards and merging.

Every study here is the same small one (a small teacher task, B in {4, 32}, 2 rates, 1 seed: 12 trials, about 10 s on
2 cores); its local-executor run is computed once and is the reference every other way of running it must match
trial for trial (training is deterministic for given seeds: one BLAS thread per worker).
"""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from minigrad import store
from minigrad.study import sweep
from minigrad.study import plan as S
from minigrad.study.config import make_config
from minigrad.cli import main as cli
from minigrad.study.merge import merge, run_difference

SETTINGS = {"data_options": {"n_train": 2000, "n_val": 500, "n_test": 500}, "hidden": [16], "batch_sizes": [4, 32],
            "reference_lrs": [0.1, 0.3], "seeds": 1, "lr_points": 2, "max_widen": 1, "reference_epochs": 3000.0,
            "equal_epochs": 5.0}
ROOT = Path(__file__).resolve().parents[1]


def small_config():
    return make_config(**copy.deepcopy(SETTINGS))


_BASELINE = {}


def baseline(tmp_path_factory):
    """The small study run once with the local executor (shared by this module and test_dask.py)."""
    if "path" not in _BASELINE:
        path = tmp_path_factory.mktemp("baseline") / "local.h5"
        sweep.run_study(small_config(), path, executor=sweep.LocalExecutor(2), measure_throughput=False,
                        echo=lambda *a: None)
        _BASELINE["path"] = path
    return _BASELINE["path"]


def planned_ids(config, path):
    """Every trial id the study plans given what the file holds (all phases, widening included)."""
    results, _ = sweep.stored_results(path)
    return {t.run_id for _, specs in sweep.plan(config, results) for t in specs}


def assert_same_study(path, reference):
    """The same trials, each once, with the same traces and results (timings and host aside)."""
    got, want = store.open(path), store.open(reference)
    assert sorted(got.runs) == sorted(want.runs)
    assert len(got.summary()) == len(got.runs)
    for run_id, run in want.runs.items():
        assert run_difference(got.runs[run_id], run) is None, run_id
    return got


def cpu_seconds(pid):
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU times from /proc")


@pytest.fixture
def executor():
    """Two worker processes started once for a test's several studies (the executor is re-entrant)."""
    with sweep.LocalExecutor(2) as executor:
        yield executor


# ------------------------------------------------------------------------------------------------------- shards
def test_parse_shard():
    assert sweep.parse_shard("2/5") == (2, 5)
    assert sweep.parse_shard((0, 3)) == (0, 3)
    assert sweep.parse_shard("0/1") is None and sweep.parse_shard(None) is None
    for bad in ("5/5", "-1/3", "1", "a/b", "1/2/3", "0/0"):
        with pytest.raises(ValueError, match="I/N"):
            sweep.parse_shard(bad)


@pytest.mark.slow
def test_shards_divide_the_initial_grid_evenly_and_all_run_the_reference(tmp_path_factory):
    config = small_config()
    results, _ = sweep.stored_results(baseline(tmp_path_factory))
    reference = [r for r in results if r["phase"] == "reference"]
    grid = sweep.initial_grid(config, results)
    # planned from the reference phase alone: the tuning results (a shard holds only its own) change nothing
    assert grid == sweep.initial_grid(config, reference) == sweep.plan(dict(config, censor="off"), reference)[1][1]
    # an unsharded study runs each B's centre rate first (censoring); a shard its slice of the whole grid, uncensored
    centre = sweep.plan(config, reference)[1][1]
    assert [t for t in grid if t in centre] == centre and len(centre) < len(grid)
    assert all(t.censor_steps is None for t in grid)
    assert [t.run_id for t in grid] == ["tune-B00004-lr0.008839-s0", "tune-B00004-lr0.01768-s0",
                                           "tune-B00032-lr0.07071-s0", "tune-B00032-lr0.1414-s0"]
    for n in (2, 3, 4, 5):
        slices = [sweep.shard_slice(grid, (i, n)) for i in range(n)]
        ids = [t.run_id for part in slices for t in part]
        assert sorted(ids) == sorted(t.run_id for t in grid)  # disjoint, and together the whole grid
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
        for i in range(n):  # before the reference phase is complete, every shard runs all of it
            name, specs, done = sweep.next_batch(config, reference[:1], (i, n))
            assert name == "reference" and len(specs) == len(reference) - 1 and not done
            name, specs, _ = sweep.next_batch(config, reference, (i, n))
            assert specs == slices[i]


# ------------------------------------------------------------------------------------------------- local runs
@pytest.mark.slow
def test_local_study_stores_every_planned_trial_once(tmp_path_factory):
    path = baseline(tmp_path_factory)
    s = store.open(path)
    assert set(s.runs) == planned_ids(small_config(), path)
    assert len(s.runs) == 12 and s.unmerged == set()
    assert {r.attrs["phase"] for r in s.runs.values()} == {"reference", "tune", "equal"}
    tuned = {(int(r.attrs["batch_size"]), r.attrs["lr"]) for r in s.runs.values() if r.attrs["phase"] == "tune"}
    initial = {(t.batch_size, t.lr) for t in sweep.initial_grid(small_config(), list(sweep.stored_results(path)[0]))}
    assert tuned - initial  # a widened grid, so widening is exercised
    assert not (path.parent / (path.name + ".pending")).exists()
    assert sweep.study_complete(small_config(), path)


def test_a_trial_that_keeps_failing_is_reported_after_its_retries(tmp_path):
    config = small_config()
    bad = S.trial("tune", 5000, 0.1, 0, 0.5, steps=10)  # B larger than the training split: train() raises
    with sweep.LocalExecutor(1, retries=1) as executor, pytest.raises(sweep.TrialError) as info:
        list(executor.run(config, [bad]))
    assert info.value.failures[0][0] == bad.run_id and "batch size 5000" in str(info.value)


def warm_up(executor, n):
    """Run n tiny trials (the study's data, 1 epoch) so the workers have imported and loaded everything a trial
    needs: a trial of the study then starts training at once, and CPU time measures how far into it a worker is."""
    config = small_config()
    config["reference_epochs"] = 1.0
    spec = S.reference_trials(config)[0]
    return list(executor.run(config, [spec.replace(run_id=f"warm{j}") for j in range(n)]))


def kill_mid_trial(pid, cpu_before, still_running, out, into=0.3, timeout=120):
    """SIGKILL `pid` once it has used `into` seconds of CPU since `cpu_before` while `still_running()` holds and no
    trial of `out` is stored yet; returns the trials stored at the kill (0) and the CPU seconds into the trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = cpu_seconds(pid) - cpu_before
        if used >= into and still_running():
            stored = len(store.open(out).runs) if out.exists() else 0
            os.kill(pid, signal.SIGKILL)
            return stored, used
        time.sleep(0.02)
    pytest.fail("no trial started")


def in_thread(func):
    errors = []

    def run():
        try:
            func()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@needs_proc
@pytest.mark.slow
def test_local_worker_killed_mid_trial_reruns_it(tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)
    out = tmp_path / "killed.h5"
    with sweep.LocalExecutor(2) as executor:
        warm_up(executor, 2)
        pids = executor.pids()
        victim = max(pids, key=cpu_seconds)  # a warmed worker
        before = cpu_seconds(victim)
        thread, errors = in_thread(lambda: sweep.run_study(small_config(), out, executor=executor,
                                                           measure_throughput=False, echo=lambda *a: None))
        try:
            # each worker takes one of the two reference trials (about 1 s of CPU each): 0.3 s into it, kill one
            stored, into = kill_mid_trial(victim, before, lambda: True, out)
        finally:
            thread.join(300)
    assert not errors, errors
    print(f"killed worker {victim} {into:.2f} s of CPU into its trial; pool restarted {executor.restarts} time(s)")
    assert stored == 0 and into >= 0.3  # the kill came mid-trial: no trial had finished
    assert executor.restarts == 1
    workers = {run_id: executor.workers_of[run_id] for run_id in store.open(out).runs}
    assert victim not in {w["pid"] for w in workers.values()}  # its trial was rerun by a new worker
    assert all(set(w["blas_threads"]) == {1} and w["numba_threads"] == 1 for w in workers.values())
    assert_same_study(out, reference)


DRIVER = r"""
import sys
from minigrad.study import plan as S
from minigrad.study import sweep
from tests.test_sweep import small_config
executor = sweep.DaskExecutor(workers=2) if sys.argv[2] == "dask" else sweep.LocalExecutor(2)
sweep.run_study(small_config(), sys.argv[1], executor=executor, measure_throughput=False)
"""


def descendants(pid):
    """Ids of the processes under `pid` (Linux /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_driver_then_resume(out, executor, min_stored=3):
    """Run the small study in a child process, SIGKILL it once `min_stored` trials are stored, rerun the same
    command. Returns (trials stored at the kill, the rerun's output)."""
    command = [sys.executable, "-c", DRIVER, str(out), executor]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        stored = 0
        while stored < min_stored and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if out.exists():
                try:
                    stored = len(store.open(out).runs)
                except (OSError, store.StoreError):
                    stored = 0
        assert child.poll() is None, "the study ended before it was killed"
        workers = descendants(child.pid)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert workers  # the driver's worker processes exit with it, not finishing trials for nobody
    deadline = time.monotonic() + 20
    while (alive := [p for p in workers if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "worker processes outlived the killed driver"
    at_kill = len(store.open(out).runs)
    print(f"killed the {executor} driver with {at_kill} of 12 trials stored; {len(workers)} processes under it exited")
    assert min_stored <= at_kill < 12
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return at_kill, rerun.stdout + rerun.stderr


@needs_proc
@pytest.mark.slow
def test_each_phase_that_ran_says_its_wall_time(tmp_path_factory, tmp_path):
    path = baseline(tmp_path_factory)
    walls = json.loads(store.open(path).attrs["phase_wall_s"])
    assert list(walls) == ["reference", "tune", "equal"]  # in the order they ran; the widening rounds are "tune"
    assert all(seconds > 0 for seconds in walls.values())
    # control: a rerun of the finished study runs no phase, so it times none and keeps the file's record
    again = tmp_path / "again.h5"
    shutil.copy(path, again)
    lines = []
    sweep.run_study(small_config(), again, executor=sweep.LocalExecutor(1), measure_throughput=False,
                    echo=lines.append)
    assert not any(line.startswith("wall time by phase") for line in lines), lines
    assert json.loads(store.open(again).attrs["phase_wall_s"]) == walls


def test_phase_walls_add_up_rounds_and_say_them_in_order():
    walls = sweep.PhaseWalls()
    for name in ("tune", "adapt", "adapt"):
        with walls.timing(name):
            time.sleep(0.01)
    assert list(walls.seconds) == ["tune", "adapt"] and walls.seconds["adapt"] >= 0.02
    assert walls.sentence().startswith("wall time by phase: tune 0.0 s, adapt 0.0 s (total 0.0 s)")


def test_killed_driver_leaves_a_file_that_resumes(tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)
    out = tmp_path / "driver.h5"
    at_kill, log = kill_driver_then_resume(out, "local")
    assert f"resuming {out}: {at_kill} trials already stored" in log
    assert_same_study(out, reference)  # every trial once: the store refuses a second copy of an id


# ------------------------------------------------------------------------------------------------ shards, merge
@pytest.mark.slow
def test_shards_merge_into_the_same_study(tmp_path_factory, tmp_path, executor):
    reference = baseline(tmp_path_factory)
    config = small_config()
    logs = {}
    for i in range(2):
        logs[i] = []
        sweep.run_study(config, tmp_path / f"shard{i}.h5", executor=executor, shard=f"{i}/2",
                        measure_throughput=False, echo=logs[i].append)
    shards = [store.open(tmp_path / f"shard{i}.h5") for i in range(2)]
    want = store.open(reference)
    reference_ids = {k for k, r in want.runs.items() if r.attrs["phase"] == "reference"}
    grid = [t.run_id for t in sweep.initial_grid(config, sweep.stored_results(reference)[0])]
    for i, s in enumerate(shards):
        assert s.attrs["shard"] == f"{i}/2" and s.config == config
        assert set(s.runs) == reference_ids | set(grid[i::2])  # the reference phase and every 2nd grid trial
        assert any(f"shard {i}/2: done" in line for line in logs[i])

    with pytest.raises(ValueError, match="holds shard 0/2"):  # a shard file resumes only as that shard
        sweep.run_study(config, tmp_path / "shard0.h5", measure_throughput=False)
    with pytest.raises(ValueError, match="not 1/2"):
        sweep.run_study(config, tmp_path / "shard0.h5", shard="1/2", measure_throughput=False)
    with pytest.raises(ValueError, match="not a shard"):
        sweep.run_study(config, reference, shard="1/2", measure_throughput=False)

    out = tmp_path / "merged.h5"
    lines = []
    summary = merge(out, [tmp_path / "shard0.h5", tmp_path / "shard1.h5"], echo=lines.append)
    n = len(reference_ids) + len(grid)
    assert summary == {"runs": n, "added": n, "duplicates": len(reference_ids), "complete": False, "step_times": []}
    assert "shard" not in store.open(out).attrs and store.open(out).attrs["target"] == want.attrs["target"]
    log = []
    sweep.run_study(config, out, executor=executor, measure_throughput=False, echo=log.append)
    assert f"resuming {out}: {summary['runs']} trials already stored" in log
    assert_same_study(out, reference)


def split_baseline(reference, tmp_path, parts):
    """Write the baseline's runs into study files of the same configuration: parts is a list of run-id sets."""
    src = store.open(reference)
    paths = []
    for j, ids in enumerate(parts):
        path = tmp_path / f"part{j}.h5"
        with store.Store.create(path, src.config) as w:
            for run_id in sorted(ids):
                run = src.runs[run_id]
                w.write_run(run_id, run.attrs, run.trace)
        paths.append(path)
    return src, paths


@pytest.mark.slow
def test_merge_keeps_each_run_once_and_refuses_conflicts(tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)
    ids = sorted(store.open(reference).runs)
    src, (a, b) = split_baseline(reference, tmp_path, [set(ids[:8]), set(ids[4:])])
    out = tmp_path / "out.h5"
    summary = merge(out, [a, b], echo=lambda *x: None)
    assert summary["runs"] == 12 and summary["duplicates"] == 4 and summary["complete"]
    assert_same_study(out, reference)
    # merging again into the same file adds nothing and writes nothing twice
    assert merge(out, [a, b], echo=lambda *x: None)["added"] == 0
    assert_same_study(out, reference)

    # a copy that differs only in timing and host is the same run
    run = src.runs[ids[0]]
    with store.Store.create(tmp_path / "retimed.h5", src.config) as w:
        w.write_run(ids[0], dict(run.attrs, compute_s=99.0, host="elsewhere"), dict(run.trace, compute_s=run.trace[
            "compute_s"] + 1))
    assert merge(tmp_path / "ok.h5", [a, tmp_path / "retimed.h5"], echo=lambda *x: None)["duplicates"] == 1

    # a copy whose results differ is an error, and nothing is written
    trace = dict(run.trace, val_error=run.trace["val_error"] + 1e-9)
    with store.Store.create(tmp_path / "conflict.h5", src.config) as w:
        w.write_run(ids[0], run.attrs, trace)
    with pytest.raises(ValueError, match=f"run {ids[0]} differs.*val_error"):
        merge(tmp_path / "bad.h5", [a, tmp_path / "conflict.h5"], echo=lambda *x: None)
    assert not (tmp_path / "bad.h5").exists()
    with pytest.raises(ValueError, match=f"run {ids[0]} differs between {out}"):  # nor into an existing study
        merge(out, [tmp_path / "conflict.h5"], echo=lambda *x: None)
    assert_same_study(out, reference)

    # files of another configuration are refused, naming the setting
    other = dict(src.config, seeds=2)
    with store.Store.create(tmp_path / "other.h5", other) as w:
        w.write_run(ids[0], run.attrs, run.trace)
    with pytest.raises(ValueError, match="different configuration.*differs in seeds"):
        merge(tmp_path / "bad.h5", [a, tmp_path / "other.h5"], echo=lambda *x: None)
    with pytest.raises(ValueError, match="also an input"):
        merge(a, [a, b], echo=lambda *x: None)
    assert not (tmp_path / "bad.h5").exists()


# ------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args, message", [
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers"),
    (["--shard", "2/2"], "I/N"),
    (["--worker-threads", "0"], "--worker-threads"),
])
def test_bench_refuses_bad_executor_options(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--out", str(tmp_path / "x.h5"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x.h5").exists()


def test_bench_dry_run_names_the_shard(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--quick", "--dry-run", "--shard", "1/4"])
    assert result.exit_code == 0, result.output
    assert "shard 1/4" in result.output


@pytest.mark.slow
def test_merge_command(tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)
    ids = sorted(store.open(reference).runs)
    _, (a, b) = split_baseline(reference, tmp_path, [set(ids[:6]), set(ids[6:])])
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "m.h5"), str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "12 runs" in result.output and "complete" in result.output
    assert_same_study(tmp_path / "m.h5", reference)
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "m.h5"), str(a), str(tmp_path / "missing.h5")])
    assert result.exit_code == 2


def test_equal_budget_runs_evaluate_sparsely_and_end_where_dense_ones_do():
    """The equal-budget table reads each run's last evaluation: fewer evaluations leave it unchanged."""
    import dataclasses

    from minigrad.training.trial import run_trial

    config = make_config(quick=True)
    results = [S.result_row(f"tune-B00064-lr0.2-s{s}", {"phase": "tune", "batch_size": 64, "lr": 0.2, "seed": s,
                                                        "status": "COMPLETE", "steps_to_target": 100,
                                                        "best_val_error": 0.1}, {}) for s in range(config["seeds"])]
    specs = S.equal_budget_trials(config, 0.1, 0.2, [64], results)
    assert specs and all(t.eval_growth == S.EQUAL_EVAL_GROWTH for t in specs)
    sparse = run_trial(config, specs[0])
    dense = run_trial(config, dataclasses.replace(specs[0], eval_growth=None))  # the control: the study's spacing
    assert len(sparse["columns"]["step"]) < len(dense["columns"]["step"]) / 2
    for key in ("status", "final_val_error", "test_error", "steps"):
        assert sparse["attrs"][key] == dense["attrs"][key], key
