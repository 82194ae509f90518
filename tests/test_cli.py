"""The `minigrad` command as a user meets it: real subprocesses, real files, one-line errors with exit status 2."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigrad import store

TINY_STUDY = """
data = "teacher"
data_options = { n_train = 1500, n_val = 500, n_test = 500 }
hidden = [16]
batch_sizes = [1, 4, 16, 64]
reference_lrs = [0.1, 0.3]
reference_epochs = 4.0
target_margin = 0.04
seeds = 3
lr_points = 3
max_widen = 1
budget_factor = 2.0
equal_epochs = 1.0
"""


def minigrad(*args, cwd, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "minigrad.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error") and "Traceback" not in result.stderr


def test_help_and_version_compile_nothing(tmp_path):
    result = minigrad("--help", cwd=tmp_path)
    assert result.returncode == 0 and "bench" in result.stdout and "train" in result.stdout
    assert "numba" not in subprocess.run([sys.executable, "-c", "import sys, minigrad.cli; print(sorted(sys.modules))"],
                                         capture_output=True, text=True).stdout
    assert minigrad("--version", cwd=tmp_path).stdout.strip().endswith("0.1.0")


def test_train_writes_a_run_and_refuses_to_overwrite(tmp_path):
    args = ["train", "--data", "teacher", "--hidden", "16", "--batch-size", "32", "--lr", "0.2", "--epochs", "2",
            "--target", "0.5", "--out", "runs.h5"]
    first = minigrad(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "COMPLETE" in first.stdout and "runs.h5" in first.stdout
    run = store.open(tmp_path / "runs.h5").runs["run"]
    assert run.attrs["status"] == "COMPLETE" and run.attrs["steps_to_target"] > 0
    assert len(run.trace["val_error"]) == len(run.trace["step"]) > 3
    before = (tmp_path / "runs.h5").read_bytes()
    again = minigrad(*args, cwd=tmp_path)
    assert one_error_line(again) and "--overwrite" in again.stderr
    assert (tmp_path / "runs.h5").read_bytes() == before
    assert minigrad(*args, "--overwrite", cwd=tmp_path).returncode == 0


def test_export_writes_csv(tmp_path):
    assert minigrad("train", "--hidden", "8", "--epochs", "1", "--out", "r.h5", cwd=tmp_path).returncode == 0
    result = minigrad("export", "r.h5", "--csv", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    traces = (tmp_path / "csv" / "traces.csv").read_text().splitlines()
    assert traces[0].startswith("run_id") and "val_error" in traces[0] and len(traces) > 3


@pytest.mark.parametrize("args,needle", [
    (["train", "--data", "nosuchset"], "nosuchset"),
    (["train", "--data", "missing.npz"], "missing.npz"),
    (["train", "--batch-size", "0"], "batch-size"),
    (["train", "--batch-size", "99999999"], "batch-size"),
    (["train", "--lr", "-1"], "learning rate"),
    (["train", "--steps", "10", "--epochs", "2"], "one budget"),
    (["export", "notes.txt", "--csv", "out"], "notes.txt"),
    (["report", "notes.txt"], "notes.txt"),
    (["bench", "--batch-sizes", "0,4", "--dry-run"], "batch sizes"),
    (["bench", "--seeds", "0", "--dry-run"], "seeds"),
    (["bench", "--batch-sizes", "a,b"], "comma-separated"),
])
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "notes.txt").write_text("not a study\n")
    result = minigrad(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and needle in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written


def test_train_rejects_nan_in_user_data(tmp_path):
    X = np.random.default_rng(0).standard_normal((100, 4))
    X[3, 2] = np.nan
    np.savez(tmp_path / "bad.npz", X=X, y=np.arange(100) % 3)
    result = minigrad("train", "--data", "bad.npz", "--out", "r.h5", cwd=tmp_path)
    assert one_error_line(result) and "NaN" in result.stderr
    assert not (tmp_path / "r.h5").exists()


def test_dry_run_prints_config_and_trial_count(tmp_path):
    result = minigrad("bench", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"batch_sizes"' in result.stdout and "trials:" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_study_end_to_end_killed_then_resumed(tmp_path):
    """A real study in a subprocess, SIGKILLed once tuning trials are being stored, then rerun: the rerun keeps
    every finished trial, runs only the rest, and the report and figures rebuild from the file alone."""
    (tmp_path / "tiny.toml").write_text(TINY_STUDY)
    cmd = [sys.executable, "-m", "minigrad.cli", "bench", "--config", "tiny.toml", "--out", "s.h5", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    journal = tmp_path / "s.h5.pending"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(list(journal.glob("tune-*.h5"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be killed: make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a crash would
    proc.wait()
    survived = set(store.open(tmp_path / "s.h5").runs)
    assert sum(r.startswith("tune-") for r in survived) >= 2

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stdout
    final = store.open(tmp_path / "s.h5")
    assert survived <= set(final.runs)
    phases = [r.attrs["phase"] for r in final.runs.values()]
    assert {"reference", "tune", "equal"} <= set(phases)
    assert "Use batch size" in rerun.stdout
    assert final.throughput and final.attrs["target"] > 0
    for name in ("steps", "throughput", "time", "lr", "curves", "heatmap"):
        assert (tmp_path / f"s_{name}.png").stat().st_size > 10_000

    # a second rerun has nothing left to do; the report rebuilds from the file alone
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and set(store.open(tmp_path / "s.h5").runs) == set(final.runs)
    report = minigrad("report", "s.h5", cwd=tmp_path)
    assert report.returncode == 0 and "Use batch size" in report.stdout

    # the same file with another configuration is refused, and left as it was
    before = (tmp_path / "s.h5").read_bytes()
    other = minigrad("bench", "--config", "tiny.toml", "--out", "s.h5", "--seeds", "2", cwd=tmp_path)
    assert one_error_line(other) and "different configuration" in other.stderr
    assert (tmp_path / "s.h5").read_bytes() == before
