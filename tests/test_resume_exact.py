"""A study killed at any moment and resumed is the uninterrupted study: the same trials and the same answer.

Every decision a phase takes (a grid's widening, the best rate, an adaptive round) must read only trials that are
complete for it, so where a kill falls cannot change it. The unit tests build the deciding states by hand (no
training); the end-to-end test SIGKILLs a real `minigrad bench` at each phase boundary and in the middle of a grid.
"""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import h5py
import pytest

from minigrad import api, store
from minigrad.study import plan as S
from minigrad.study import sweep
from minigrad.study.config import make_config

# ------------------------------------------------------------------------------------------ the widening rule


def _tune_row(B, lr, seed, steps):
    return dict(run_id=f"tune-B{B:05d}-lr{S.lr_key(lr)}-s{seed}", phase="tune", batch_size=B, lr=lr, seed=seed,
                status="COMPLETE", steps_to_target=steps, best_val_error=0.1)


def _split_decision():
    """A grid of two rates at B = 16 where seed 0 alone and both seeds pick different edges: seed 0 is fastest at
    the low rate (100 vs 200 steps), the median of both seeds at the high rate (300 vs 200)."""
    config = make_config(batch_sizes=[16], reference_batch_size=16, lr_points=2, seeds=2, max_widen=1, censor="off")
    lo, hi = S.grid_for(config, 0.1, 16)
    seed0 = [_tune_row(16, lo, 0, 100), _tune_row(16, hi, 0, 200)]
    seed1 = [_tune_row(16, lo, 1, 500), _tune_row(16, hi, 1, 200)]
    return config, lo, hi, seed0, seed1


def _planned_rates(config, results):
    return sorted({t.lr for t in S.tune_trials(config, 0.1, 0.2, [16], results, (100.0, 1600.0))})


def test_a_grid_is_widened_only_once_every_seed_of_it_is_stored():
    config, lo, hi, seed0, seed1 = _split_decision()
    widened_up = float(f"{hi * config['lr_factor']:.4g}")
    assert _planned_rates(config, seed0 + seed1) == [lo, hi, widened_up]  # the complete grid's decision
    assert _planned_rates(config, seed0) == [lo, hi]  # half stored (a kill): no decision yet, only the missing seeds
    missing = {t.run_id for t in S.tune_trials(config, 0.1, 0.2, [16], seed0, (100.0, 1600.0))} - {
        r["run_id"] for r in seed0}
    assert missing == {r["run_id"] for r in seed1}


def test_negative_control_deciding_on_one_seed_widens_the_wrong_way():
    """The rule the study used before: one stored seed per rate was enough (here: a study of one seed deciding on
    the same rows). It widens downwards, a rate the complete grid never asks for."""
    config, lo, hi, seed0, _ = _split_decision()
    one_seed = dict(config, seeds=1)
    assert _planned_rates(one_seed, seed0) == [float(f"{lo / config['lr_factor']:.4g}"), lo, hi]


# ------------------------------------------------------------------------------------------ SIGKILL end to end
RESUME_TOML = """
data = "teacher"
data_options = { n_train = 1500, n_val = 500, n_test = 500 }
hidden = [16]
batch_sizes = [1, 4, 16, 64]
reference_lrs = [0.1, 0.3]
reference_epochs = 4.0
seeds = 2
lr_points = 2
max_widen = 1
budget_factor = 2.0
equal_epochs = 1.0
adaptive_budget = 4
"""  # two rates per grid: the best is always on an edge, so every grid is widened once


def _bench(out):
    return [sys.executable, "-m", "minigrad.cli", "bench", "--config", "resume.toml", "--out", out, "--workers", "2"]


def _phases(path):
    """Stored runs by phase, from the run ids in the file and its journal (what a resume sees): names only, so the
    watcher looks often and the kill lands close to the boundary."""
    ids = {p.stem for p in path.with_name(path.name + ".pending").glob("*.h5")}
    try:
        with h5py.File(path, "r") as f:
            ids |= set(f["runs"])
    except (OSError, KeyError):
        pass  # not written yet, or replaced between two looks
    return Counter(run_id.split("-")[0] for run_id in ids)


# when to kill: just after each phase boundary, and in the middle of the initial tuning grid (16 trials)
KILL_WHEN = [
    ("tuning started", lambda c: c["tune"] >= 1),
    ("initial grid half done", lambda c: c["tune"] >= 9),
    ("widening started", lambda c: c["tune"] >= 17),
    ("adaptive phase started", lambda c: c["adapt"] >= 1 or c["equal"] >= 1),
    ("equal-budget phase started", lambda c: c["equal"] >= 1),
]


def _decided(path):
    """A study's answer without what the clock decides (the trials' own seconds per step and the lines about them,
    the machine): everything the trials' results decide."""
    answer = api.open_study(path).answer().to_dict()
    for key in ("notes", "machine"):
        answer.pop(key)
    for row in answer["rows"]:
        row.pop("trial_step_s"), row.pop("trial_eval_s")
    return answer


def _same_study(a, b):
    """(the same run ids, the same answer) of two study files."""
    return set(store.open(a).runs) == set(store.open(b).runs) and _decided(a) == _decided(b)


@pytest.mark.slow
def test_a_study_killed_at_every_phase_boundary_resumes_to_the_uninterrupted_study(tmp_path):
    (tmp_path / "resume.toml").write_text(RESUME_TOML)
    whole = subprocess.run(_bench("whole.h5"), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    counts = _phases(tmp_path / "whole.h5")
    assert counts["tune"] > 16, f"no grid was widened: the test would not exercise widening ({counts})"

    # the killed study starts from the uninterrupted one's compute-speed table: step times are measured, not
    # replayed, and the adaptive phase weighs batch sizes by them; everything after them must then agree
    reference = store.open(tmp_path / "whole.h5")
    with store.Store.create(tmp_path / "killed.h5", reference.config, kind="study") as w:
        w.write_throughput(reference.throughput)
        w.set_attrs({k: reference.attrs.get(k) for k in ("ceiling_gflops", "throughput_host")})

    kills = []
    for name, due in KILL_WHEN:
        if due(_phases(tmp_path / "killed.h5")):
            continue  # an earlier process ran past this boundary before it was killed
        proc = subprocess.Popen(_bench("killed.h5"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and not due(_phases(tmp_path / "killed.h5")):
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-work
            kills.append((name, dict(_phases(tmp_path / "killed.h5"))))
        proc.communicate(timeout=120)
    assert len(kills) >= 3, f"too few kills landed to test anything: {kills}"

    final = subprocess.run(_bench("killed.h5"), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    print(f"kills: {json.dumps(kills)}")
    assert set(store.open(tmp_path / "killed.h5").runs) == set(reference.runs)
    assert _decided(tmp_path / "killed.h5") == _decided(tmp_path / "whole.h5")
    assert sweep.study_complete(reference.config, tmp_path / "killed.h5")

    # negative control: the same comparison tells a study with one trial fewer from the uninterrupted one
    with store.Store.create(tmp_path / "fewer.h5", reference.config, kind="study") as w:
        w.write_throughput(reference.throughput)
        for run_id, run in list(reference.runs.items())[:-1]:
            w.write_run(run_id, run.attrs, run.trace)
    assert not _same_study(tmp_path / "fewer.h5", tmp_path / "whole.h5")
    assert _same_study(tmp_path / "killed.h5", tmp_path / "whole.h5")
