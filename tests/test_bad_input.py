"""Every bad input a user can give, across every command: one short line on stderr, no traceback, exit status 2
(1 for failures that are not the user's mistake), and every file that existed byte-identical afterwards.

The table runs in this process through click's CliRunner (fast: the cases validate before they work, so each fails
in well under a second); the cases that need a real process (another user's permissions, a full disk, a file held
open by another program, Ctrl-C, SIGKILL) run the command in a subprocess. The bench and train cases write to
existing files with --overwrite wherever they can: a command that failed after replacing its --out would lose them.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from minigrad import store
from minigrad.cli import main

SMALL_TOML = """
data = "teacher"
data_options = { n_train = 1500, n_val = 500, n_test = 500 }
hidden = [16]
batch_sizes = [1, 4, 16, 64]
reference_lrs = [0.1, 0.3]
reference_epochs = 4.0
seeds = 2
lr_points = 3
max_widen = 1
budget_factor = 2.0
equal_epochs = 1.0
"""

BAD_TOMLS = {  # file name -> the line that replaces or adds a setting of SMALL_TOML
    "seeds_str.toml": 'seeds = "3"', "seeds_bool.toml": "seeds = true", "seeds_float.toml": "seeds = 2.5",
    "hidden_str.toml": 'hidden = "64"', "hidden_zero.toml": "hidden = [0]", "bs_zero.toml": "batch_sizes = [0, 4]",
    "bs_float.toml": "batch_sizes = [1.5, 4]", "bs_repeat.toml": "batch_sizes = [4, 4]",
    "target2.toml": "target = 2.0", "lrs_neg.toml": "reference_lrs = [-0.1]", "lrs_str.toml": 'reference_lrs = ["a"]',
    "budget_inf.toml": "budget_factor = inf", "momentum_nan.toml": "momentum = nan", "equal_inf.toml": "equal_epochs = inf",
    "unknown.toml": "learning_rate = 0.1", "options_str.toml": 'data_options = "n_train=100"',
    "sampler.toml": 'sampler = "random"', "dtype.toml": 'dtype = "float16"', "lr_points.toml": "lr_points = 1",
    "data_int.toml": "data = 3", "growth.toml": "eval_growth = 1.0",
    "quick_str.toml": 'quick = "false"', "seeds_huge.toml": "seeds = " + "9" * 401,
    "bs_huge.toml": "batch_sizes = [4, " + "9" * 401 + "]", "n_val_huge.toml": "data_options = { n_val = " + "9" * 401 + " }",
}
HUGE = "9" * 401  # an integer no setting can hold
LONG = "x" * 5000  # a path longer than any one-line message


def _replace_setting(text, line):
    key = line.split("=")[0].strip()
    kept = [x for x in text.splitlines() if x.split("=")[0].strip() != key]
    return "\n".join(kept + [line]) + "\n"


def _fake_study(path, config, runs=24):
    """A study file as `bench` leaves it: reference and tuning runs with their traces, and a throughput table."""
    rng = np.random.default_rng(0)
    with store.Store.create(path, config, kind="study") as w:
        w.write_throughput([{"batch_size": B, "step_time_s": 1e-4 * (1 + B / 16), "samples_per_s": B / 1e-4,
                             "threads": 1} for B in config["batch_sizes"]])
        for i in range(runs):
            B = config["batch_sizes"][i % len(config["batch_sizes"])]
            phase = "reference" if i < 4 else "tune"
            steps = np.arange(1, 41)
            val = np.maximum(0.9 * np.exp(-steps * B ** 0.5 / 40) + rng.random(40) * 0.01, 0.1)
            reached = np.flatnonzero(val <= 0.3)
            w.write_run(f"{phase}-{i:03d}", {
                "phase": phase, "batch_size": B if phase == "tune" else 4, "lr": 0.1 * (1 + i % 3), "seed": i % 2,
                "status": "COMPLETE", "steps_to_target": int(steps[reached[0]]) if len(reached) else None,
                "best_val_error": float(val.min()), "final_val_error": float(val[-1]), "test_error": float(val[-1])},
                {"step": steps, "examples": steps * B, "val_error": val})
        w.set_attrs({"target": 0.3, "target_reason": "test"})


def _runs_a_dataset(f):
    del f["runs"]
    f["runs"] = np.arange(3)


def _without_val_error(f):
    for run in f["runs"].values():
        del run["val_error"]


DAMAGES = {  # file name -> what is done to a copy of the study
    "no_config.h5": lambda f: f.attrs.__delitem__("config"),
    "list_config.h5": lambda f: f.attrs.__setitem__("config", "[1, 2]"),
    "runs_dataset.h5": _runs_a_dataset,
    "no_val_error.h5": _without_val_error,
}
FLIPS = {  # file name -> (bytes to find, which occurrence, offset of the flipped bit from it)
    "flipped_header.h5": (b"OHDR", 4, 8),  # an object header: HDF5's checksum fails (KeyError from h5py)
    "flipped_config.h5": (b'"batch_sizes"', 1, 0),  # the config's JSON
    "flipped_status.h5": (b"COMPLETE", 2, 3),  # a run's status
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of good and bad files, shared by all cases (each case checks that it leaves it unchanged)."""
    from minigrad.study.config import make_config

    d = tmp_path_factory.mktemp("world")
    (d / "small.toml").write_text(SMALL_TOML)
    (d / "filedata.toml").write_text("\n".join(x for x in SMALL_TOML.splitlines() if "data_options" not in x))
    for name, line in BAD_TOMLS.items():
        (d / name).write_text(_replace_setting(SMALL_TOML, line))
    (d / "syntax.toml").write_text("seeds = = 3\n")
    (d / "nested.toml").write_text("hidden = " + "[" * 5000 + "]" * 5000 + "\n")
    os.mkfifo(d / "fifo.toml")  # no writer: opening it would wait forever
    from minigrad.cli import load_toml

    config = make_config(**load_toml(d / "small.toml"))
    _fake_study(d / "study.h5", config)
    _fake_study(d / "empty.h5", config, runs=0)
    with store.Store.create(d / "train.h5", {"lr": 0.1}, kind="train", resume=False) as w:
        w.write_run("run", {"status": "COMPLETE", "batch_size": 8}, {"step": np.arange(3)})
    shutil.copyfile(d / "study.h5", d / "truncated.h5")
    os.truncate(d / "truncated.h5", (d / "truncated.h5").stat().st_size // 2)
    (d / "text.h5").write_text("not hdf5\n")
    for name, damage in DAMAGES.items():  # a study file broken in one way each
        shutil.copyfile(d / "study.h5", d / name)
        with h5py.File(d / name, "a") as f:
            damage(f)
    for name, (anchor, nth, offset) in FLIPS.items():  # one flipped bit, found by content (offsets vary by host)
        data = bytearray((d / "study.h5").read_bytes())
        at = -1
        for _ in range(nth):
            at = data.index(anchor, at + 1)
        data[at + offset] ^= 0x10
        (d / name).write_bytes(bytes(data))
    shutil.copyfile(d / "study.h5", d / "named.html")  # a study named like the page `report --html` writes
    shutil.copyfile(d / "study.h5", d / "summary.csv")  # and one named like a CSV `export` writes
    with h5py.File(d / "other.h5", "w") as f:
        f.attrs["schema"] = "someone.else"

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 5)), np.arange(200) % 3
    np.savez(d / "good.npz", X=X, y=y)
    bad = {"nan_X": dict(X=np.where(X > 2, np.nan, X), y=y), "inf_X": dict(X=np.where(X > 2, np.inf, X), y=y),
           "onehot": dict(X=X, y=np.eye(3)[y]), "neg_labels": dict(X=X, y=y - 1), "float_labels": dict(X=X, y=y + 0.5),
           "one_class": dict(X=X, y=np.zeros(200, int)), "no_y": dict(X=X), "empty_X": dict(X=X[:0], y=y[:0]),
           "string_X": dict(X=X.astype(str), y=y), "mismatched": dict(X=X, y=y[:150]), "vector_X": dict(X=X[:, 0], y=y),
           "val_alone": dict(X=X, y=y, X_val=X[:10]), "val_width": dict(X=X, y=y, X_val=X[:10, :3], y_val=y[:10]),
           "val_labels": dict(X=X, y=y, X_val=X[:10], y_val=y[:10] + 7)}
    for name, arrays in bad.items():
        np.savez(d / f"{name}.npz", **arrays)
    np.savez(d / "pickled.npz", X=np.array([{"a": 1}] * 200, dtype=object), y=y)
    (d / "notzip.npz").write_text("X,y\n1,2\n")
    good = (d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(good[: len(good) // 2])
    with h5py.File(d / "no_X.hdf5", "w") as f:
        f["y"] = y
    (d / "x.txt").write_text("hello\n")
    (d / "data.csv").write_text("a,b\n1,2\n")
    (d / "datadir").mkdir()
    (d / "emptydata").mkdir()
    (d / "mnist_bad").mkdir()
    (d / "mnist_bad" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0" * 10)  # truncated header
    return d


def snapshot(root):
    return {p.relative_to(root): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def assert_one_line_error(status, stderr, stdout, expected, needle):
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert status == expected, f"exit {status}, wanted {expected}; stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("Error:") and len(lines[0]) < 400, stderr
    if needle:
        assert needle.lower() in lines[0].lower(), lines[0]


# ------------------------------------------------------------------------------------------------------- cases
BENCH = ["bench", "--config", "small.toml", "--out", "study.h5", "--overwrite"]
BENCH_DATA = ["bench", "--config", "filedata.toml", "--out", "study.h5", "--overwrite"]  # no teacher options
TRAIN = ["train", "--hidden", "8", "--epochs", "0.5", "--out", "train.h5", "--overwrite"]
BAD_DATA = {  # --data value -> words of the message
    "nan_X.npz": "NaN/Inf", "inf_X.npz": "NaN/Inf", "missing.npz": "not found", "datadir": "is a directory",
    "notzip.npz": "npz archive", "truncated.npz": "not a complete", "pickled.npz": "cannot read",
    "no_y.npz": "needs arrays", "onehot.npz": "one-hot", "neg_labels.npz": "negative", "float_labels.npz": "integer",
    "one_class.npz": "at least 2", "empty_X.npz": "n >= 1", "string_X.npz": "numeric", "mismatched.npz": "shape",
    "vector_X.npz": "shape", "val_alone.npz": "together", "val_width.npz": "feature counts",
    "val_labels.npz": "never occur", "no_X.hdf5": "needs arrays", "x.txt": "unsupported", "data.csv": "unsupported",
    "text.h5": "cannot read", "nosuchset": "unknown dataset",
}


def case(args, needle="", status=2, env=None, id=None):
    return pytest.param(args, needle, status, env, id=id or " ".join(a if len(a) < 40 else f"<{len(a)} characters>"
                                                                      for a in args))


CASES = [
    # ---- bench: data (each with --overwrite of a study that must survive)
    *[case(BENCH_DATA + ["--data", name], needle, id=f"bench --data {name}") for name, needle in BAD_DATA.items()],
    case(BENCH_DATA + ["--data", "mnist"], "not found", env={"MINIGRAD_DATA": "{world}/emptydata"},
         id="bench mnist absent"),
    case(BENCH_DATA + ["--data", "mnist", "--data-dir", "emptydata"], "not found", id="bench mnist --data-dir empty"),
    case(BENCH_DATA + ["--data", "mnist", "--data-dir", "mnist_bad"], "truncated", id="bench mnist truncated idx"),
    case(BENCH_DATA + ["--data", "mnist", "--data-dir", "x.txt"], "", id="bench --data-dir a file"),
    case(BENCH + ["--n-val", "0"], "n_val"), case(BENCH + ["--n-val", "-3"], "n_val"),
    case(BENCH_DATA + ["--data", "digits", "--n-val", "10"], "unknown option n_val"),
    # ---- bench: model and grid
    *[case(BENCH + ["--hidden", v], n) for v, n in (("0", "hidden"), ("-1", "hidden"), ("abc", "integers"),
                                                    ("1000000000000", "hidden"), ("", "hidden"),
                                                    ("100000,100000", "memory"))],
    *[case(BENCH + ["--lrs", v], n) for v, n in (("nan", "learning rates"), ("inf", "learning rates"),
                                                 ("0", "learning rates"), ("-1", "learning rates"),
                                                 ("abc", "numbers"), ("", "learning rates"), ("1e9", "learning rates"))],
    *[case(BENCH + ["--momentum", v], "momentum") for v in ("nan", "1", "-0.1", "inf", "1.5")],
    *[case(BENCH + ["--batch-sizes", v], n) for v, n in (("0", "batch sizes"), ("-4", "batch sizes"),
                                                         ("1000000000", "exceed"), ("1,1", "repeat"),
                                                         ("abc", "integers"), ("1.5", "integers"), ("", "batch sizes"))],
    *[case(BENCH + ["--lr-points", v], "lr_points") for v in ("1", "0", "1000")],
    *[case(BENCH + ["--seeds", v], "seeds") for v in ("0", "-1", "100000")],
    *[case(BENCH + ["--target", v], "target") for v in ("2", "0", "nan", "-0.1", "1", "inf")],
    *[case(BENCH + ["--budget-factor", v], "budget factor") for v in ("inf", "0", "nan", "-1", "1e9")],
    *[case(BENCH + ["--equal-epochs", v], "equal epochs") for v in ("inf", "0", "nan", "-2")],
    *[case(BENCH + ["--workers", v], "--workers") for v in ("0", "-2")],
    case(BENCH + ["--workers", "two"], "--workers"),
    case(BENCH + ["--worker-threads", "0"], "--worker-threads"),
    *[case(BENCH + ["--shard", v], "shard") for v in ("3/2", "x", "1/0", "-1/2")],
    case(BENCH + ["--scheduler", "tcp://nowhere:1"], "--executor dask"),
    *[case(BENCH + [opt, "bogus"], "bogus") for opt in ("--activation", "--optimizer", "--sampler", "--executor")],
    case(BENCH + ["--bogus-option"], "no such option"),
    # ---- integers and sizes beyond every limit
    *[case(BENCH + [opt, HUGE], words) for opt, words in (
        ("--seeds", "401-digit"), ("--batch-sizes", "401-digit"), ("--hidden", "401-digit"),
        ("--lr-points", "401-digit"), ("--n-val", "401-digit"), ("--threads", "--threads"),
        ("--shard", "shard"))],
    case(BENCH + ["--threads", "1000"], "NUMBA_NUM_THREADS"),
    *[case(TRAIN + [opt, HUGE], "401-digit") for opt in ("--batch-size", "--seed", "--steps", "--n-val",
                                                         "--data-seed")],
    case(TRAIN + ["--threads", "1000"], "NUMBA_NUM_THREADS"),
    case(["bench", "throughput", "--repeats", "1000000000"], "repeats"),
    case(["bench", "throughput", "--repeats", HUGE], "repeats"),
    case(["experiment", "smith", "--seeds", HUGE, "--out", "smith.h5"], "401-digit"),
    case(["experiment", "smith", "--threads", "999", "--out", "smith.h5"], "NUMBA_NUM_THREADS"),
    # ---- paths too long for a one-line message (shortened, still naming what is wrong)
    case(BENCH_DATA + ["--data", LONG + ".npz"], "", id="bench --data <5000-character path>"),
    case(["report", LONG + ".h5"], "", id="report <5000-character path>"),
    case(["export", "study.h5", "--csv", LONG], "", id="export --csv <5000-character path>"),
    case(["bench", "--config", "small.toml", "--out", LONG + ".h5"], "", id="bench --out <5000-character path>"),
    # ---- bench: configuration files
    case(["bench", "--config", "fifo.toml", "--dry-run"], "not a regular file"),
    case(["bench", "--config", "/dev/zero", "--dry-run"], "not a regular file"),
    case(["bench", "--config", "nested.toml", "--dry-run"], "nested too deeply"),
    case(["bench", "--config", "missing.toml", "--out", "study.h5", "--overwrite"], "missing.toml"),
    case(["bench", "--config", "syntax.toml", "--out", "study.h5", "--overwrite"], "not valid TOML"),
    case(["bench", "--config", "datadir", "--out", "study.h5", "--overwrite"], "directory"),
    *[case(["bench", "--config", name, "--out", "study.h5", "--overwrite"], "", id=f"bench --config {name}")
      for name in BAD_TOMLS],
    *[case(["bench", "--config", name, "--dry-run"], "", id=f"bench --dry-run --config {name}")
      for name in ("seeds_str.toml", "budget_inf.toml", "momentum_nan.toml")],
    # ---- bench: where the study goes
    case(["bench", "--config", "small.toml", "--out", "nodir/study.h5"], "does not exist"),
    case(["bench", "--config", "small.toml", "--out", "datadir"], "directory"),
    case(["bench", "--config", "small.toml", "--out", "/proc/study.h5"], "/proc/study.h5"),
    case(["bench", "--config", "small.toml", "--out", "text.h5"], "not an HDF5 file"),
    case(["bench", "--config", "small.toml", "--out", "other.h5"], "another kind"),
    case(["bench", "--config", "small.toml", "--out", "truncated.h5"], "truncated or damaged"),
    case(["bench", "--config", "small.toml", "--out", "study.h5", "--seeds", "3"], "different configuration"),
    case(["bench", "--config", "small.toml", "--out", "train.h5"], "different configuration"),
    case(["bench", "--config", "small.toml", "--out", "study.h5", "--shard", "0/2"], "not a shard"),
    # ---- bench throughput
    *[case(["bench", "throughput", *args], n) for args, n in (
        (["--sizes", "0,10"], "sizes"), (["--sizes", "abc"], "integers"), (["--sizes", "784"], "sizes"),
        (["--batch-sizes", "0"], "batch sizes"), (["--batch-sizes", "-1"], "batch sizes"),
        (["--batch-sizes", ""], "batch sizes"), (["--threads", "0"], "threads"), (["--threads", "999"], "threads"),
        (["--dtype", "float16"], "dtype"), (["--backend", "x"], "x"), (["--repeats", "0"], "repeats"),
        (["--repeats", "-1"], "repeats"), (["--json", "nodir/x.json"], "does not exist"),
        (["--figures", "text.h5"], "--figures"), (["--breakdown", "0"], "breakdown"),
        (["--activation", "x"], "x"), (["--compare-python", "missing-python"], "missing-python"),
        (["--json", "/proc/x.json"], "/proc"))],
    # ---- train (each with --overwrite of a run file that must survive)
    *[case(TRAIN + ["--data", name], needle, id=f"train --data {name}") for name, needle in list(BAD_DATA.items())[:12]],
    case(TRAIN + ["--data", "mnist"], "not found", env={"MINIGRAD_DATA": "{world}/emptydata"}, id="train mnist absent"),
    case(TRAIN + ["--data", "mnist", "--data-dir", "emptydata"], "not found", id="train mnist --data-dir empty"),
    *[case(TRAIN + [opt, v], opt) for opt, values in (
        ("--momentum", ("nan", "1", "-1")), ("--target", ("2", "-0.5", "nan")), ("--lr", ("inf", "nan", "0", "-1")),
        ("--epochs", ("inf", "0", "-1", "nan")), ("--steps", ("0", "-5")), ("--examples", ("0",)),
        ("--hidden", ("0", "1000000000000")), ("--batch-size", ("0", "99999999")),
        ("--weight-decay", ("nan", "-1")), ("--gamma", ("0", "nan")), ("--warmup-epochs", ("-1", "inf")),
        ("--batch-growth", ("0",)), ("--patience", ("-1", "0")), ("--milestones", ("-1", "nan")),
        ("--seed", ("-1",)), ("--data-seed", ("-1",)), ("--n-val", ("0",)), ("--reference-batch-size", ("0",)))
      for v in values],
    *[case(TRAIN + ["--batch-stages", v], "--batch-stages") for v in (
        "", "32", "32:0", "x:0.1", "32:0.1@err=0.2", "32:0.1,64:0.2", "32:0.1,64:0.2@err=0.1,128:0.3@err=0.2",
        "32:0.1,64:0.2@err=0.1,128:0.3@step=9", "32:0.1,64:0.2@err=1.5", "32:0.1,64:0.2@step=0", "32:nan",
        "32:0.1,99999999:0.2@step=5")],
    case(TRAIN + ["--batch-stages", "32:0.1,64:0.2@step=5", "--batch-growth", "2"], "--batch-growth"),
    case(TRAIN + ["--steps", "1e30"], "--steps"),
    case(TRAIN + ["--hidden", "100000,100000"], "memory"),
    case(TRAIN + ["--hidden", "abc"], "integers"),
    case(TRAIN + ["--milestones", "abc"], "numbers"),
    case(TRAIN + ["--steps", "10", "--epochs", "2"], "one budget"),
    case(TRAIN + ["--scale-lr", "linear", "--reference-batch-size", "0"], "--reference-batch-size"),
    case(TRAIN + ["--lr-schedule", "cosine", "--epochs", "inf"], "--epochs"),
    case(TRAIN + ["--data", "digits", "--n-val", "10"], "unknown option n_val"),
    *[case(TRAIN + [opt, "bogus"], "bogus") for opt in ("--lr-schedule", "--dtype", "--backend", "--loss", "--sampler",
                                                        "--scale-lr", "--optimizer", "--activation")],
    case(["train", "--hidden", "8", "--out", "study.h5"], "exists"),
    case(["train", "--hidden", "8", "--out", "nodir/x.h5"], "does not exist"),
    case(["train", "--hidden", "8", "--out", "/proc/x.h5"], "/proc/x.h5"),
    case(["train", "--hidden", "8", "--out", "datadir"], "directory"),
    # ---- report
    *[case(["report", name], needle) for name, needle in (
        ("missing.h5", "no such study file"), ("text.h5", "not an HDF5 file"), ("truncated.h5", "truncated or damaged"),
        ("other.h5", "another kind"), ("train.h5", "not a study"), ("datadir", "directory"), ("x.txt", "not an HDF5"),
        ("empty.h5", "no tuning trials"))],
    case(["report"], "missing argument"),
    # ---- a damaged study, on every command that reads one: one line naming the file
    *[case([*command, name], name) for name in (*DAMAGES, *FLIPS) for command in (
        ["report"], ["report", "--json"], ["experiment", "gns", "--out", "gns.h5", "--study"])],
    # export reads any file minigrad wrote: a study whose runs lack what the analysis needs still exports
    *[case(["export", "--csv", "csv", name], name) for name in ("no_config.h5", "list_config.h5", "runs_dataset.h5",
                                                                "flipped_header.h5", "flipped_config.h5",
                                                                "flipped_status.h5")],
    *[case(["bench", "--config", "small.toml", "--out", name], name) for name in (*DAMAGES, *FLIPS)],
    case(["report", "--json", "train.h5"], "not a study"),
    case(["report", "--json", "other.h5"], "another kind"),
    case(["report", "--html", "named.html"], "named.html"),
    case(["export", "--csv", ".", "summary.csv"], "summary.csv", id="export a study named summary.csv --csv ."),
    # ---- export
    *[case(["export", name, "--csv", "csv"], needle) for name, needle in (
        ("missing.h5", "no such study file"), ("text.h5", "not an HDF5 file"), ("truncated.h5", "truncated or damaged"),
        ("other.h5", "another kind"))],
    case(["export", "study.h5", "--csv", "text.h5"], "text.h5"),
    case(["export", "study.h5", "--csv", "/proc/csv"], "/proc/csv"),
    case(["export", "study.h5"], "--csv"),
    # ---- merge
    case(["merge", "merged.h5"], "missing argument"),
    case(["merge", "merged.h5", "missing.h5"], "missing.h5"),
    *[case(["merge", "merged.h5", name], needle) for name, needle in (
        ("text.h5", "not an HDF5 file"), ("truncated.h5", "truncated or damaged"), ("other.h5", "another kind"))],
    case(["merge", "/proc/merged.h5", "study.h5"], "/proc/merged.h5"),
    case(["merge", "nodir/merged.h5", "study.h5"], "does not exist"),
    case(["merge", "train.h5", "study.h5"], "different configuration"),
    # ---- data
    case(["data", "fetch", "nosuch"], "nosuch"),
    case(["data", "fetch"], "missing argument"),
    case(["data", "fetch", "mnist", "--data-dir", "/proc/mnist"], "/proc/mnist"),
    case(["data", "fetch", "mnist", "--data-dir", "x.txt"], "x.txt"),
    # ---- experiments
    *[case(["experiment", "noise", *args, "--out", "noise.h5"], n) for args, n in (
        (["--at-epochs", "-1"], "at epochs"), (["--at-epochs", "nan"], "at epochs"), (["--draws", "0"], "draws"),
        (["--batch-sizes", "0"], "batch sizes"), (["--workers", "0"], "--workers"),
        (["--data", "nan_X.npz"], "NaN"), (["--data", "datadir"], "directory"))],
    *[case(["experiment", "keskar", *args, "--out", "keskar.h5"], n) for args, n in (
        (["--epochs", "inf"], "epochs"), (["--epochs", "0"], "epochs"), (["--lr", "nan"], "lr "),
        (["--lr", "-1"], "lr "), (["--seeds", "0"], "seeds"), (["--data", "missing.npz"], "not found"))],
    *[case(["experiment", "smith", *args, "--out", "smith.h5"], n) for args, n in (
        (["--factor", "0"], "factor"), (["--factor", "1"], "factor"), (["--lr", "inf"], "lr "),
        (["--seeds", "-1"], "seeds"), (["--workers", "-1"], "--workers"))],
    *[case(["experiment", "stratified", *args, "--out", "strat.h5"], n) for args, n in (
        (["--seeds", "0"], "seeds"), (["--batch-sizes", "-1"], "batch sizes"), (["--data", "one_class.npz"], "2"))],
    *[case(["experiment", "gns", *args, "--out", "gns.h5"], n) for args, n in (
        (["--study", "missing.h5"], "missing.h5"), (["--study", "text.h5"], "not an HDF5"),
        (["--study", "train.h5"], "study"), (["--study", "study.h5", "--data", "digits"], "not both"))],
    *[case(["experiment", "momentum", *args, "--out", "momentum.h5"], n) for args, n in (
        (["--seeds", "0"], "seeds"), (["--batch-sizes", "0"], "batch sizes"), (["--data", "missing.npz"], "not found"))],
    *[case(["experiment", "cbs", *args, "--out", "cbs.h5"], n) for args, n in (
        (["--seeds", "0"], "seeds"), (["--at-epochs", "-1"], "at epochs"), (["--batch-size", "0"], "batch size"),
        (["--study", "train.h5"], "study"))],
    case(["experiment", "noise", "--out", "nodir/noise.h5", "--quick"], "does not exist"),
    case(["experiment", "noise", "--out", "study.h5", "--quick"], "different configuration"),
    # ---- the group
    case(["nosuchcommand"], "no such command"),
    case(["--bogus"], "no such option"),
    case(["bench", "throughput", "--bogus"], "no such option"),
]


@pytest.mark.parametrize("args,needle,status,env", CASES)
def test_bad_input(world, monkeypatch, args, needle, status, env):
    monkeypatch.chdir(world)
    before = snapshot(world)
    env = {k: v.format(world=world) for k, v in (env or {}).items()}
    started = time.monotonic()
    result = CliRunner().invoke(main, args, env=env)
    seconds = time.monotonic() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_one_line_error(result.exit_code, result.stderr, result.stdout, status, needle)
    assert snapshot(world) == before, "a file changed, appeared or vanished"
    assert store._STAGED == {}
    assert seconds < 60, f"validation took {seconds:.0f} s: it should come before the work"


def test_the_table_covers_every_command():
    counts = {}
    for param in CASES:
        args = [a for a in param.values[0] if not a.startswith("-")] or ["minigrad"]
        command = " ".join(args[:2]) if args[0] in ("bench", "data", "experiment") and len(args) > 1 and args[1] in (
            "throughput", "fetch", "noise", "keskar", "smith", "gns", "stratified", "momentum") else args[0]
        counts[command] = counts.get(command, 0) + 1
    assert len(CASES) >= 150, len(CASES)
    for command in ("bench", "bench throughput", "train", "report", "export", "merge", "data fetch",
                    "experiment noise", "experiment keskar", "experiment smith", "experiment gns",
                    "experiment stratified", "experiment momentum"):
        assert counts.get(command, 0) >= 1, command
    print(f"{len(CASES)} cases: {counts}")


def test_negative_control_a_harmful_command_is_caught(world, monkeypatch, tmp_path):
    """The checks above can fail: a command that replaces a file, or that exits 0, is noticed."""
    shutil.copyfile(world / "study.h5", tmp_path / "victim.h5")
    before = snapshot(tmp_path)
    with store.Store.create(tmp_path / "victim.h5", {"other": 1}, overwrite=True):
        pass  # an overwrite that succeeds replaces the file
    assert snapshot(tmp_path) != before
    with pytest.raises(AssertionError):
        assert_one_line_error(0, "", "", 2, "")
    with pytest.raises(AssertionError):
        assert_one_line_error(2, "Traceback (most recent call last):\n  boom\nError: x", "", 2, "")


# --------------------------------------------------------------------------------------------- real processes
def _traversable(path):
    """Let other users pass through `path` and its parents (execute bit only, no listing): the interpreter's
    environment may sit in a folder of mode 700, as a venv made in `mktemp -d` does."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            os.chmod(folder, mode | 0o001)


def minigrad(*args, cwd, user=None, timeout=300, **kwargs):
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if user else []
    env = None
    if user:  # another user cannot write this user's Numba cache: give it its own, outside the folder checked
        _traversable(Path(sys.prefix))
        cache = tempfile.mkdtemp(prefix="numba-cache-")
        os.chmod(cache, 0o777)
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    return subprocess.run([*prefix, sys.executable, "-m", "minigrad.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env, **kwargs)


as_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                             reason="needs root to run a command as another user")


@as_root
@pytest.mark.parametrize("args", [
    ["train", "--hidden", "8", "--epochs", "0.2", "--out", "ro/new.h5"],
    ["bench", "--config", "small.toml", "--out", "ro/new.h5"],
    ["merge", "ro/merged.h5", "study.h5"],
    ["export", "study.h5", "--csv", "ro/csv"],
    ["report", "ro/study.h5"],
    ["data", "fetch", "mnist", "--data-dir", "ro/data"],
    ["bench", "throughput", "--json", "ro/x.json", "--batch-sizes", "1"],
], ids=lambda a: " ".join(a[:2]))
def test_read_only_directory(world, tmp_path, args):
    """Another user's read-only folder: permissions are the user's to fix, so one line and status 2."""
    for name in ("small.toml", "study.h5"):
        shutil.copyfile(world / name, tmp_path / name)
    (tmp_path / "ro").mkdir()
    shutil.copyfile(world / "study.h5", tmp_path / "ro" / "study.h5")
    os.chmod(tmp_path, 0o777)
    os.chmod(tmp_path / "ro", 0o555)
    before = snapshot(tmp_path)
    result = minigrad(*args, cwd=tmp_path, user="nobody")
    assert_one_line_error(result.returncode, result.stderr, result.stdout, 2, "")
    assert snapshot(tmp_path) == before


@as_root
def test_full_disk(world, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = minigrad("train", "--hidden", "256,256", "--epochs", "0.2", "--out", "disk/run.h5", cwd=tmp_path)
        assert_one_line_error(result.returncode, result.stderr, result.stdout, 2, "No space left")
        assert sorted(p.name for p in disk.iterdir() if not p.name.startswith(".")) in ([], ["run.h5.pending"])
    finally:
        subprocess.run(["umount", str(disk)])


def test_study_file_held_open_by_another_program(world, tmp_path):
    shutil.copyfile(world / "study.h5", tmp_path / "study.h5")
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time\nf = h5py.File(sys.argv[1], 'a')\n"
                               "print('open', flush=True)\ntime.sleep(120)", str(tmp_path / "study.h5")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        before = snapshot(tmp_path)
        for args in (["report", "study.h5"], ["export", "study.h5", "--csv", "csv"]):
            result = minigrad(*args, cwd=tmp_path)
            assert_one_line_error(result.returncode, result.stderr, result.stdout, 2, "open for writing")
        assert snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


def test_sigkilled_train_leaves_nothing_that_blocks_a_rerun(tmp_path):
    args = ["train", "--hidden", "64", "--epochs", "5000", "--out", "run.h5"]  # far longer than the 1 s it gets
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.cli", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run.h5.pending").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run.h5").exists()  # no 0-run file
    rerun = minigrad("train", "--hidden", "8", "--epochs", "0.2", "--out", "run.h5", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert list(store.open(tmp_path / "run.h5").runs) == ["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_quietly_and_says_how_to_resume(world, tmp_path):
    # more and longer reference trials than workers, so finished trials wait in the journal while others still run
    # (at 40 epochs the compiled loop finished the whole phase between two looks at the journal, now and then)
    (tmp_path / "small.toml").write_text(_replace_setting(_replace_setting(
        SMALL_TOML, "reference_lrs = [0.03, 0.05, 0.1, 0.2, 0.3, 0.5]"), "reference_epochs = 400.0"))
    # SIGINT's default action in the driver even when this suite runs as a background job (which ignores SIGINT,
    # and a child inherits that)
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.cli", "bench", "--config", "small.toml", "--out", "s.h5",
                             "--workers", "2"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((tmp_path / "s.h5.pending").glob("reference-*.h5"))) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "rerun the same command to resume" in err
    assert len([x for x in err.splitlines() if x.strip() and "trials" not in x]) <= 2, err[-3000:]
    assert len(store.open(tmp_path / "s.h5").runs) >= 1  # the finished runs were kept
