"""Nothing lost through outputs: figures, the HTML page, JSON and CSV appear whole or not at all, never through a
symbolic link, never over the study (or any HDF5 file); a study --out that is a link keeps updating the real study;
`bench --overwrite` keeps the old study until the new one has a run that did not diverge.

Each family has a negative control: the same check applied to a plain open() shows the harm it is there to catch.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from minigrad import store
from minigrad.cli import main
from minigrad.machine.outputs import OutputError, output_file, write_text
from minigrad.study.config import make_config

CONFIG = make_config(batch_sizes=[4, 16], seeds=2, hidden=[8])


def _study(path, runs=8, points=40):
    """A small study file as bench writes it (reference and tuning runs, their traces, a throughput table)."""
    rng = np.random.default_rng(0)
    with store.Store.create(path, CONFIG, kind="study") as w:
        w.write_throughput([{"batch_size": B, "step_time_s": 1e-4 * B, "threads": 1} for B in CONFIG["batch_sizes"]])
        for i in range(runs):
            phase, B = ("reference", 32) if i < 2 else ("tune", CONFIG["batch_sizes"][i % 2])
            steps = np.arange(1, points + 1)
            val = np.maximum(0.9 * np.exp(-steps / 10) + rng.random(points) * 0.01, 0.1)
            w.write_run(f"{phase}-{i:04d}", {
                "phase": phase, "batch_size": B, "lr": 0.1 * (1 + i % 3), "seed": i % 2, "status": "COMPLETE",
                "steps_to_target": 12, "best_val_error": float(val.min())},
                {"step": steps, "examples": steps * B, "val_error": val})
        w.set_attrs({"target": 0.3})
    return path


def _invoke(args, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    return result.exit_code, lines


# ------------------------------------------------------------------------------------------- the helper itself
def test_an_output_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("the good earlier version\n")
    with pytest.raises(RuntimeError):
        with output_file(path) as f:
            f.write("half of the new ")
            raise RuntimeError("the disk filled, or a bug")
    assert path.read_text() == "the good earlier version\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary file left behind
    write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the umask's mode, not mkstemp's 0600


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_negative_control_a_plain_write_leaves_half_a_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("the good earlier version\n")
    with pytest.raises(RuntimeError):
        with open(path, "w") as f:
            f.write("half of the new ")
            raise RuntimeError("the disk filled")
    assert path.read_text() == "half of the new "  # what the helper prevents


@pytest.mark.parametrize("kind", ["link to a file", "dangling link", "directory", "hdf5", "input"])
def test_a_final_name_that_must_not_be_replaced_is_refused(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    path = tmp_path / "out.png"
    if kind == "link to a file":
        path.symlink_to(victim)
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "directory":
        path.mkdir()
    elif kind == "hdf5":
        _study(path, runs=0)
    else:
        path.write_text("the command's own input\n")
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(OutputError) as caught:
        write_text(path, "x", protect=[victim] if kind != "input" else [path])
    assert "out.png" in str(caught.value) and "\n" not in str(caught.value)
    assert victim.read_text() == "someone else's file\n"
    assert (path.read_bytes() if path.is_file() else None) == before
    assert not (tmp_path / "nowhere").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_negative_control_a_plain_write_follows_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    (tmp_path / "out.png").symlink_to(victim)
    (tmp_path / "out.png").write_text("overwritten")
    assert victim.read_text() == "overwritten"


# ------------------------------------------------------------------------------------------- the commands
@pytest.mark.parametrize("args,needle", [
    (["report", "results.html", "--html"], "results.html"),
    (["export", "summary.csv", "--csv", "."], "summary.csv"),
    (["export", "traces.csv", "--csv", "."], "traces.csv"),
])
def test_an_output_named_like_the_study_never_replaces_it(tmp_path, monkeypatch, args, needle):
    _study(tmp_path / args[1])
    before = (tmp_path / args[1]).read_bytes()
    status, lines = _invoke(args, tmp_path, monkeypatch)
    assert status == 2 and len(lines) == 1 and needle in lines[0], lines
    assert (tmp_path / args[1]).read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_output_over_another_study_is_refused(tmp_path, monkeypatch):
    _study(tmp_path / "s.h5")
    (tmp_path / "csv").mkdir()
    _study(tmp_path / "csv" / "summary.csv", runs=2)  # another study, named like an output
    before = (tmp_path / "csv" / "summary.csv").read_bytes()
    status, lines = _invoke(["export", "s.h5", "--csv", "csv"], tmp_path, monkeypatch)
    assert status == 2 and "HDF5" in lines[0], lines
    assert (tmp_path / "csv" / "summary.csv").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["summary.csv"]  # nothing else written either


@pytest.mark.parametrize("args,link", [
    (["report", "s.h5"], "s_steps.png"),
    (["report", "s.h5", "--html"], "s.html"),
    (["export", "s.h5", "--csv", "."], "traces.csv"),
    (["export", "s.h5", "--csv", "."], "summary.csv"),
])
def test_no_output_is_written_through_a_planted_link(tmp_path, monkeypatch, args, link):
    _study(tmp_path / "s.h5")
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    (tmp_path / link).symlink_to(victim)
    status, lines = _invoke(args, tmp_path, monkeypatch)
    assert status == 2 and len(lines) == 1 and link in lines[0] and "link" in lines[0], lines
    assert victim.read_text() == "someone else's file\n" and (tmp_path / link).is_symlink()


def test_the_pages_old_fixed_temporary_name_is_not_followed(tmp_path, monkeypatch):
    """The page used to go through `.S.html.tmp`, a name anyone could plant a link at in advance."""
    _study(tmp_path / "s.h5")
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    (tmp_path / ".s.html.tmp").symlink_to(victim)
    status, lines = _invoke(["report", "s.h5", "--html"], tmp_path, monkeypatch)
    assert status == 0, lines
    assert victim.read_text() == "someone else's file\n"
    assert (tmp_path / "s.html").read_text().startswith("<!DOCTYPE html>")


def test_a_study_out_that_is_a_link_keeps_updating_the_real_study(tmp_path):
    real = _study(tmp_path / "real.h5", runs=3)
    (tmp_path / "link.h5").symlink_to("real.h5")
    with store.Store.create(tmp_path / "link.h5", CONFIG, kind="study") as w:
        assert w.resumed
        w.write_run("tune-extra", {"phase": "tune", "batch_size": 4, "lr": 0.1, "seed": 0, "status": "COMPLETE",
                                   "best_val_error": 0.2}, {"step": np.arange(3), "examples": np.arange(3) * 4,
                                                            "val_error": np.array([0.5, 0.3, 0.2])})
    assert (tmp_path / "link.h5").is_symlink()
    assert "tune-extra" in store.open(real).runs and "tune-extra" in store.open(tmp_path / "link.h5").runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.h5", "real.h5"]


# ------------------------------------------------------------------------------------------- real processes
def _cli(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "minigrad.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_export_killed_while_writing_leaves_the_complete_file_or_none(tmp_path):
    _study(tmp_path / "s.h5", runs=60, points=4000)  # traces.csv of about 20 MB: seconds to write
    (tmp_path / "csv").mkdir()
    proc = _cli("export", "s.h5", "--csv", "csv", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not list((tmp_path / "csv").glob(".traces.csv.*")):
        time.sleep(0.005)
    assert proc.poll() is None, "export finished before it could be killed"
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (tmp_path / "csv" / "traces.csv").exists()  # never a partial file under the complete file's name
    done = subprocess.run([sys.executable, "-m", "minigrad.cli", "export", "s.h5", "--csv", "csv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "csv" / "traces.csv").read_text().splitlines()
    assert len(lines) == 1 + 60 * 4000  # the header and every point: whole


as_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a tmpfs")


@as_root
def test_a_full_disk_leaves_the_earlier_outputs_in_place(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        _study(tmp_path / "small.h5", runs=4, points=10)
        _study(tmp_path / "big.h5", runs=40, points=8000)  # its traces.csv (about 10 MB) cannot fit
        first = subprocess.run([sys.executable, "-m", "minigrad.cli", "export", "small.h5", "--csv", "disk"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        before = {p.name: p.read_bytes() for p in disk.iterdir()}
        full = subprocess.run([sys.executable, "-m", "minigrad.cli", "export", "big.h5", "--csv", "disk"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        lines = [x for x in full.stderr.splitlines() if x.strip()]
        assert full.returncode == 2 and len(lines) == 1 and "No space left" in lines[0], full.stderr
        after = {p.name: p.read_bytes() for p in disk.iterdir()}
        # summary.csv and throughput.csv of the big study fit and are whole; traces.csv is the earlier one
        assert after["traces.csv"] == before["traces.csv"] and set(after) == set(before)
    finally:
        subprocess.run(["umount", str(disk)])
