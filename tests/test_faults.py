"""Faults from outside, in real processes: SIGTERM and SIGHUP, a reader that closes the pipe, an --overwrite whose
new study diverges, more workers than cores, a framework interpreter that never answers, nowhere to cache
compiled code, a file the user may not read. Each family has a negative control.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minigrad import store
from minigrad.cli import main

SMALL = """
data = "teacher"
data_options = { n_train = 1500, n_val = 500, n_test = 500 }
hidden = [16]
batch_sizes = [4, 16]
reference_lrs = [0.1, 0.3]
reference_epochs = 4.0
seeds = 2
lr_points = 2
max_widen = 0
budget_factor = 2.0
equal_epochs = 1.0
adaptive_budget = 0
"""


def _cli(*args):
    return [sys.executable, "-m", "minigrad.cli", *args]


def _error_lines(stderr):
    """stderr without the progress lines of the phases ('tune trials (local): 3/8 done, ...', 'compute speed ...')."""
    return [x for x in stderr.splitlines() if x.strip() and " trials (" not in x
            and not x.startswith(("compute speed", "adaptive phase"))]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small study, copied by the tests that need one."""
    d = tmp_path_factory.mktemp("finished")
    (d / "small.toml").write_text(SMALL)
    done = subprocess.run(_cli("bench", "--config", "small.toml", "--out", "s.h5", "--workers", "2"), cwd=d,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return d


# ------------------------------------------------------------------------------------------- --overwrite
@pytest.mark.slow
def test_an_overwrite_whose_reference_runs_all_diverge_keeps_the_old_study(finished, tmp_path):
    for name in ("small.toml", "s.h5"):
        shutil.copyfile(finished / name, tmp_path / name)
    before = (tmp_path / "s.h5").read_bytes()
    result = subprocess.run(_cli("bench", "--config", "small.toml", "--out", "s.h5", "--overwrite", "--lrs", "1e6",
                                 "--workers", "2"), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and lines[-1].startswith("Error:") and "diverged" in lines[-1], result.stderr
    assert (tmp_path / "s.h5").read_bytes() == before  # every old run still there, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "small.toml"]  # no journal of diverged runs left


def _run(status):
    return {"phase": "reference", "batch_size": 4, "lr": 0.1, "seed": 0, "status": status, "best_val_error": 0.5}


@pytest.mark.parametrize("status,replaced", [("DIVERGED", False), ("COMPLETE", True)])
def test_a_new_study_takes_the_old_ones_place_only_with_a_run_that_did_not_diverge(tmp_path, status, replaced):
    """The writer's rule under the command: a diverged run is not a result (the old file stays); a complete one is
    (negative control: the same flush with a complete run does replace the old file)."""
    path = tmp_path / "s.h5"
    with store.Store.create(path, {"old": True}) as w:
        w.write_run("old-run", _run("COMPLETE"), {"step": np.arange(3)})
    before = path.read_bytes()
    trace = {"step": np.arange(3), "examples": np.arange(3), "val_error": np.ones(3)}
    with pytest.raises(ValueError):
        with store.Store.create(path, {"new": True}, overwrite=True) as w:
            w.write_throughput([{"batch_size": 4, "step_time_s": 1e-4}])
            w.set_attrs({"ceiling_gflops": 10.0})
            w.write_run("new-run", _run(status), trace)
            w.flush()
            assert store.open(path).config == {"new": True}  # the writer's own view is the new study
            raise ValueError("every reference run diverged")
    assert (path.read_bytes() != before) is replaced
    assert store.open(path).config == ({"new": True} if replaced else {"old": True})


# ------------------------------------------------------------------------------------------- signals
def _start_and_stop(tmp_path, signum, group):
    """Start a study, send `signum` once a run is stored (to the driver alone, or to its process group as a closed
    terminal or a scheduler does), and return (status, stderr, runs kept)."""
    proc = subprocess.Popen(_cli("bench", "--config", "small.toml", "--out", "sig.h5", "--workers", "2"), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while (proc.poll() is None and time.monotonic() < deadline
           and not list((tmp_path / "sig.h5.pending").glob("reference-*.h5"))):
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before it could be stopped"
    (os.killpg if group else os.kill)(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, len(store.open(tmp_path / "sig.h5").runs)


@pytest.mark.slow
@pytest.mark.parametrize("name,group", [("SIGTERM", False), ("SIGHUP", True), ("SIGTERM", True)])
def test_sigterm_and_sighup_stop_a_study_like_ctrl_c(tmp_path, name, group):
    # long reference trials (more than the workers), so the signal comes while some have finished and others run
    (tmp_path / "small.toml").write_text(SMALL.replace("reference_epochs = 4.0", "reference_epochs = 400.0").replace(
        "reference_lrs = [0.1, 0.3]", "reference_lrs = [0.03, 0.05, 0.1, 0.2, 0.3, 0.5]"))
    signum = getattr(signal, name)
    status, err, kept = _start_and_stop(tmp_path, signum, group)
    lines = _error_lines(err)
    assert status == 128 + signum, err[-3000:]
    assert lines == [f"Stopped by {name}: finished runs are stored; rerun the same command to resume"], err[-3000:]
    assert kept >= 1
    rerun = subprocess.run(_cli("bench", "--config", "small.toml", "--out", "sig.h5", "--workers", "2", "--dry-run"),
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr


def test_negative_control_a_signal_with_its_default_action_kills_without_a_word(tmp_path):
    """What the handler replaces: Python's default SIGTERM ends the process on the spot, with no message."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM and "resume" not in err


# ------------------------------------------------------------------------------------------- closed stdout
def _through_head(args, cwd):
    """Run `minigrad ARGS | head -1`: (minigrad's status, its stderr, the one line head printed)."""
    proc = subprocess.Popen(_cli(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = subprocess.Popen(["head", "-1"], stdin=proc.stdout, stdout=subprocess.PIPE, text=True)
    proc.stdout.close()  # head holds the only reading end: when it exits, the pipe is closed
    first, _ = head.communicate(timeout=900)
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err, first


@pytest.mark.slow
def test_a_closed_stdout_stops_only_the_printing(finished, tmp_path):
    shutil.copyfile(finished / "small.toml", tmp_path / "small.toml")
    status, err, first = _through_head(["bench", "--config", "small.toml", "--out", "p.h5", "--workers", "2"], tmp_path)
    assert status == 0 and first and not _error_lines(err), err[-3000:]
    assert set(store.open(tmp_path / "p.h5").runs) == set(store.open(finished / "s.h5").runs)  # the whole study
    assert (tmp_path / "p_steps.png").is_file()
    (tmp_path / "p_steps.png").unlink()
    status, err, first = _through_head(["report", "p.h5"], tmp_path)
    assert status == 0 and first.startswith("target") and not _error_lines(err), err[-3000:]
    assert (tmp_path / "p_steps.png").is_file()  # the figures after the printing were written


def test_negative_control_a_plain_print_to_a_closed_pipe_fails(tmp_path):
    code = "import sys\nfor i in range(100000):\n    print('line', i)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = subprocess.Popen(["head", "-1"], stdin=proc.stdout, stdout=subprocess.PIPE, text=True)
    proc.stdout.close()
    head.communicate(timeout=60)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "BrokenPipeError" in err


# ------------------------------------------------------------------------------------------- the machine
def test_more_workers_than_cores_are_cut_to_the_cores_with_a_word(tmp_path, monkeypatch):
    from minigrad.machine.threads import available_cores

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["bench", "--quick", "--workers", "64", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"--workers 64: this machine has {available_cores()} core(s); running {available_cores()} worker" in \
        result.stderr
    # negative control: a count the machine has passes without a word
    result = CliRunner().invoke(main, ["bench", "--quick", "--workers", "1", "--dry-run"])
    assert result.exit_code == 0 and "--workers" not in result.stderr


def test_a_framework_interpreter_that_never_answers_is_given_up(tmp_path):
    hang = tmp_path / "python-that-hangs"
    hang.write_text("#!/bin/sh\nsleep 100000\n")
    hang.chmod(0o755)
    env = dict(os.environ, MINIGRAD_FRAMEWORK_TIMEOUT="3")
    result = subprocess.run(_cli("bench", "throughput", "--sizes", "8,8,2", "--batch-sizes", "4", "--compare", "torch",
                                 "--compare-python", str(hang)), cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "did not answer in 3 s" in result.stderr
    left = subprocess.run(["pgrep", "-f", "sleep 100000"], capture_output=True, text=True).stdout.split()
    assert not left, "the interpreter's own children were left running"


def test_negative_control_a_framework_interpreter_that_answers_is_timed(tmp_path):
    """The timeout does not cut a worker that answers: this interpreter has no torch, and says so in time."""
    env = dict(os.environ, MINIGRAD_FRAMEWORK_TIMEOUT="300")
    result = subprocess.run(_cli("bench", "throughput", "--sizes", "8,8,2", "--batch-sizes", "4", "--compare", "torch",
                                 "--compare-python", sys.executable), cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and "did not answer" not in result.stderr, result.stderr[-3000:]


def test_nowhere_to_cache_compiled_code_falls_back_to_a_temporary_cache(tmp_path):
    """Numba raises at import when no cache folder is writable (a read-only install, no writable home, a read-only
    NUMBA_CACHE_DIR). As root every real folder is writable, so the package's folder is pointed at /proc, which
    nobody can write; NUMBA_CACHE_DIR and HOME point there too."""
    code = (
        "from minigrad.machine import numba_cache\n"
        "numba_cache._ENGINE = '/proc/minigrad-engine'\n"
        "folder = numba_cache.ensure_writable(print)\n"
        "import numpy as np\n"
        "from minigrad.engine.kernels import relu_forward\n"
        "x = np.ones((2, 3), np.float32)\n"
        "out = np.empty_like(x)\n"
        "relu_forward(out, x)\n"
        "print('cached files:', len(__import__('os').listdir(folder)))\n")
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update(NUMBA_CACHE_DIR="/proc/minigrad-numba", HOME="/proc/minigrad-home")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    note, cached = result.stdout.splitlines()[0], result.stdout.splitlines()[-1]
    assert "set NUMBA_CACHE_DIR to a writable folder" in note and "/proc/minigrad-numba" in note
    assert int(cached.split(":")[1]) >= 1  # Numba did cache there
    # negative control: with a writable NUMBA_CACHE_DIR nothing changes and nothing is said
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    kept = subprocess.run([sys.executable, "-c", "from minigrad.machine import numba_cache\n"
                           "print(numba_cache.ensure_writable(print))"], env=env, capture_output=True, text=True)
    assert kept.stdout.strip() == "None"


def test_an_unreadable_file_says_permission(tmp_path, monkeypatch):
    """Another user's file: as root every file is readable, so the refusal the kernel would give is simulated at
    open(); the message must say why rather than call the file damaged."""
    from minigrad.machine import checks

    np.savez(tmp_path / "theirs.npz", X=np.ones((20, 3)), y=np.arange(20) % 2)
    (tmp_path / "theirs.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    real_open = open

    def refuse(path, *args, **kwargs):
        if Path(path).name.startswith("theirs"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checks, "open", refuse, raising=False)
    monkeypatch.chdir(tmp_path)
    for args in (["train", "--data", "theirs.npz", "--out", "t.h5"], ["report", "theirs.h5"]):
        result = CliRunner().invoke(main, args)
        lines = [x for x in result.stderr.splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "Permission denied" in lines[0], result.stderr
        assert "theirs" in lines[0]
    # negative control: without the refusal the same files are read (and the non-study is called what it is)
    monkeypatch.setattr(checks, "open", real_open, raising=False)
    result = CliRunner().invoke(main, ["report", "theirs.h5"])
    assert "Permission" not in result.stderr
