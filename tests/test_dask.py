"""The dask executor on a real LocalCluster on loopback: a worker killed mid-trial, a killed driver, threads per
worker, and the same results as the local executor for the same seeds. Skipped without dask.distributed
(pip install 'minigrad[dask]')."""
import os
import socket
import time

import pytest

distributed = pytest.importorskip("distributed")

from minigrad import store
from minigrad.study import sweep
from minigrad.study import plan as S
from minigrad.cli import main as cli
from minigrad.study.executors import thread_settings, trial_task
from tests.test_sweep import (assert_same_study, baseline, cpu_seconds, in_thread, kill_driver_then_resume,
                              kill_mid_trial, needs_proc, small_config)


@pytest.fixture(scope="module")
def cluster(request):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0")
    request.addfinalizer(cluster.close)
    return cluster


@pytest.fixture(scope="module")
def client(cluster, request):
    client = distributed.Client(cluster, set_as_default=False)
    request.addfinalizer(client.close)
    client.wait_for_workers(2)
    return client


def warm_up(client):
    """A tiny trial on each worker: the study's trials then start training at once (imports, kernels, data)."""
    config = small_config()
    config["reference_epochs"] = 1.0
    spec = S.reference_trials(config)[0]
    futures = [client.submit(trial_task, config, spec.replace(run_id=f"warm-{i}"), pure=False, workers=[address],
                             allow_other_workers=False) for i, address in enumerate(client.scheduler_info()["workers"])]
    return [f.result() for f in futures]


def executing(client, address):
    """Keys of the tasks the worker at `address` is executing now."""
    return client.run(lambda dask_worker: sorted(str(ts.key) for ts in dask_worker.state.executing),
                      workers=[address])[address]


@needs_proc
@pytest.mark.slow
def test_worker_killed_mid_trial_the_study_completes_once_and_matches_local(client, tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)  # the same study on the local executor
    warm_up(client)
    pids = client.run(os.getpid)
    victim_address = min(pids)
    victim = pids[victim_address]
    out = tmp_path / "dask.h5"
    executor = sweep.DaskExecutor(client.scheduler.address)
    thread, errors = in_thread(lambda: sweep.run_study(small_config(), out, executor=executor,
                                                       measure_throughput=False, echo=lambda *a: None))
    try:
        deadline = time.monotonic() + 120
        while not (keys := executing(client, victim_address)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert keys and keys[0].startswith("reference-"), keys
        # a reference trial is a few tenths of a second of CPU with the compiled loop: kill the worker 0.05 s of CPU
        # into it, while it still runs it
        stored, into = kill_mid_trial(victim, cpu_seconds(victim), lambda: bool(executing(client, victim_address)),
                                      out, into=0.05)
    finally:
        thread.join(300)
    assert not errors, errors
    assert stored == 0 and into >= 0.05
    killed_trial = keys[0].rsplit("-", 1)[0]  # the key is <run id>-<token>
    print(f"killed worker {victim} {into:.2f} s of CPU into {killed_trial}; {len(executor.workers_of)} trials")

    s = assert_same_study(out, reference)  # every trial exactly once, traces identical to the local executor's
    assert set(s.runs) == set(store.open(reference).runs) and len(s.runs) == 12
    workers = {run_id: executor.workers_of[run_id] for run_id in s.runs}
    assert killed_trial in s.runs and workers[killed_trial]["pid"] != victim  # rerun on another worker
    assert all(set(w["blas_threads"]) == {1} and w["numba_threads"] == 1 for w in workers.values())
    assert {r.attrs["host"] for r in s.runs.values()} == {socket.gethostname()}
    client.wait_for_workers(2)  # the nanny restarted the killed worker
    assert victim not in client.run(os.getpid).values()


def test_compute_speed_is_measured_on_a_worker_machine_free_of_the_worker_limits(client):
    import numba

    with sweep.DaskExecutor(client) as executor:
        assert any("2 worker(s) on 1 host(s)" in line for line in executor.notes())
        host, pid = executor.call_alone(os.getpid)
        assert host == socket.gethostname() and pid != os.getpid() and pid not in client.run(os.getpid).values()
        # a fresh process on the worker's machine: every core, not the one BLAS thread a worker's trials get
        host, (blas, numba_threads) = executor.call_alone(thread_settings)
        assert numba_threads == numba.config.NUMBA_NUM_THREADS
        assert blas and min(blas) == min(os.cpu_count(), min(blas)) and (os.cpu_count() == 1 or min(blas) > 1)


def test_a_local_cluster_measures_compute_speed_in_the_driver():
    with sweep.DaskExecutor(workers=1) as executor:  # a LocalCluster: this machine
        assert "LocalCluster" in executor.name
        assert executor.call_alone(os.getpid) == (socket.gethostname(), os.getpid())
    assert executor.cluster is None  # shut down on exit


def test_a_failing_trial_is_retried_then_reported(client):
    bad = S.trial("tune", 5000, 0.1, 0, 0.5, steps=10)  # B larger than the training split: train() raises
    with sweep.DaskExecutor(client, retries=1) as executor, pytest.raises(sweep.TrialError) as info:
        list(executor.run(small_config(), [bad]))
    assert info.value.failures[0][0] == bad.run_id and "batch size 5000" in str(info.value)


def test_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(ValueError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"), \
            sweep.DaskExecutor("tcp://127.0.0.1:9", timeout=1):
        pass


def test_bench_passes_executor_options_to_the_study(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("minigrad.api.run_study", lambda config, out, **kw: calls.append((config, out, kw)))
    monkeypatch.setattr("minigrad.cli.study.show_report", lambda path: None)
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["bench", "--quick", "--out", str(tmp_path / "s.h5"), "--executor", "dask",
                                      "--scheduler", "tcp://10.0.0.5:8786", "--worker-threads", "2", "--shard", "1/3"])
    assert result.exit_code == 0, result.output
    (config, _, kw), = calls
    executor = kw["executor"]
    assert isinstance(executor, sweep.DaskExecutor) and executor.scheduler == "tcp://10.0.0.5:8786"
    assert executor.threads == 2 and kw["shard"] == (1, 3) and "shard" not in config


@needs_proc
@pytest.mark.slow
def test_killed_driver_with_a_local_cluster_resumes(tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)
    out = tmp_path / "driver.h5"
    at_kill, log = kill_driver_then_resume(out, "dask")  # `--executor dask` without an address: a LocalCluster
    assert f"resuming {out}: {at_kill} trials already stored" in log and "LocalCluster" in log
    assert_same_study(out, reference)
