"""Censoring: a tuning trial that can no longer be its batch size's best stops early, status CENSORED.

A censored run is the uncensored run cut at one of its own evaluations (train.censor_step says which), so what it
stored is true; read as "more than that many steps" it leaves S(B), its best rate and every resample of them as
they were (plan.censor_bound's argument, checked here by simulation with negative controls where the margin is too
small); the planner runs each B's centre rate first and bounds the rest from it alone, so a resume plans the same.
"""
import math

import numpy as np
import pytest

from minigrad.study import plan as S
from minigrad.study import uncertainty as U
from minigrad.study.config import make_config
from minigrad.training.spec import TrialSpec
from minigrad.training.train import censor_step
from minigrad.training.trial import run_trial

CONFIG = {"data": "teacher", "data_options": {"n_train": 2000, "n_val": 500, "n_test": 500}, "hidden": [16]}
BASE = TrialSpec(run_id="t", phase="tune", batch_size=16, lr=0.05, seed=0, steps=1500, stop_at_target=True)


def _same_columns(a, b, rows=None):
    return all(np.array_equal(a[k][:rows], b[k]) for k in b if not k.endswith("_s"))


@pytest.fixture(scope="module")
def unreached():
    """A run that never reaches its (unreachable) target: it evaluates on its regular schedule throughout."""
    return run_trial(CONFIG, BASE.replace(target=0.001))


def test_a_censored_run_is_the_uncensored_one_cut_at_the_predicted_evaluation(unreached):
    a = unreached["attrs"]
    assert a["status"] == "INCOMPLETE"
    bound = 500
    stop = censor_step(bound, a["eval_gap_floor"], 1.04, BASE.steps)
    cut = run_trial(CONFIG, BASE.replace(target=0.001, censor_steps=bound))
    assert cut["attrs"]["status"] == "CENSORED" and cut["attrs"]["censor_steps"] == bound
    assert cut["attrs"]["steps"] == stop >= bound and cut["columns"]["step"][-1] == stop
    rows = len(cut["columns"]["step"])
    assert rows < len(unreached["columns"]["step"])
    assert _same_columns(unreached["columns"], cut["columns"], rows)
    # negative control: another seed's trace is not a prefix of this one
    other = run_trial(CONFIG, BASE.replace(seed=1, target=0.001, censor_steps=bound))
    assert not _same_columns(unreached["columns"], other["columns"], len(other["columns"]["step"]))


def test_censor_step_names_an_evaluation_of_every_uncensored_trace(unreached):
    a, steps = unreached["attrs"], unreached["columns"]["step"]
    for bound in (1, 37, 200, 777, 1200):
        stop = censor_step(bound, a["eval_gap_floor"], 1.04, BASE.steps)
        assert stop in steps and stop >= bound
        assert steps[np.searchsorted(steps, stop) - 1] < bound or stop == steps[0]  # the first one at or past it
    assert censor_step(BASE.steps, a["eval_gap_floor"], 1.04, BASE.steps) is None  # the budget comes first


def test_a_run_that_reaches_the_target_before_the_bound_is_bit_for_bit_the_same():
    plain = run_trial(CONFIG, BASE.replace(target=0.5))
    assert plain["attrs"]["status"] == "COMPLETE"
    bounded = run_trial(CONFIG, BASE.replace(target=0.5, censor_steps=plain["attrs"]["steps_to_target"] + 1))
    assert bounded["attrs"]["status"] == "COMPLETE" and "censor_steps" not in bounded["attrs"]
    assert _same_columns(plain["columns"], bounded["columns"])
    timing = ("compute_s", "eval_s", "replay_s", "compile_s")
    assert {k: v for k, v in plain["attrs"].items() if k not in timing} == {
        k: v for k, v in bounded["attrs"].items() if k not in timing}
    # negative control: a bound below the steps it needs censors it
    early = run_trial(CONFIG, BASE.replace(target=0.5, censor_steps=max(1, plain["attrs"]["steps_to_target"] // 3)))
    assert early["attrs"]["status"] == "CENSORED"


# ---------------------------------------------------------------------------------- the statistics, simulated
def _censor(cells, centre, margin, budget=10**9):
    """The cells as a censored study stores them, stopped at the bound itself (the earliest a run can stop): seeds
    of other rates that needed more read as inf."""
    out = {}
    for (B, lr), v in cells.items():
        bound = S.censor_bound(cells[(B, centre[B])], budget, margin) if lr != centre[B] else None
        out[(B, lr)] = [x if bound is None or x <= bound else math.inf for x in v]  # reached by the bound
    return out


def _random_cells(rng, seeds, Bs=(4, 16, 64), rates=5):
    cells, centre = {}, {}
    for B in Bs:
        lrs = [0.01 * 2**k for k in range(rates)]
        centre[B] = lrs[rates // 2]
        for k, lr in enumerate(lrs):
            scale = 1000 / B**0.5 * (1 + 0.6 * abs(k - rates // 2 - rng.integers(-1, 2)))
            v = scale * rng.lognormal(0, 0.35, seeds)
            v[rng.random(seeds) < 0.1] = math.inf  # a seed that missed
            cells[(B, lr)] = list(np.round(v))
    return cells, centre


@pytest.mark.parametrize("seeds", [2, 3, 4, 5, 7])
def test_censoring_leaves_every_resample_of_S_and_its_rate_unchanged(seeds):
    rng = np.random.default_rng(seeds)
    times = {B: np.array([1e-5 * B**0.5, 1.1e-5 * B**0.5]) for B in (4, 16, 64)}
    censored_any = 0
    for trial in range(30):
        cells, centre = _random_cells(rng, seeds)
        cut = _censor(cells, centre, None)
        censored_any += sum(np.isinf(cut[k]).sum() - np.isinf(cells[k]).sum() for k in cells)
        a, b = U.resample(cells, times), U.resample(cut, times)
        assert np.array_equal(a["S"], b["S"]) and np.array_equal(a["lr"], b["lr"], equal_nan=True)
        assert U.best_steps(cells) == U.best_steps(cut)
        Bs = a["batch_sizes"]
        pick = Bs[int(np.argmin(np.median(a["T"], axis=0)))]
        assert U.regret(a["T"], Bs, pick) == U.regret(b["T"], Bs, pick)
        assert U.choice(a["T"], Bs) == U.choice(b["T"], Bs)
    assert censored_any > 20  # the simulation did censor seeds


def test_negative_control_a_margin_too_small_changes_S():
    """An even count of seeds with margin 1: a cell {10, >100} has a true median of more than 55, below the
    centre's 100, but censored it reads as infinite. An odd count with a bound under the centre's slowest seed:
    a cell's median seed itself is cut."""
    even = {(16, 0.1): [100.0, 100.0], (16, 0.2): [10.0, 150.0]}
    assert U.best_steps(even)[16] == (80.0, 0.2)
    assert U.best_steps(_censor(even, {16: 0.1}, 1.0))[16] == (100.0, 0.1)
    assert U.best_steps(_censor(even, {16: 0.1}, None))[16] == (80.0, 0.2)  # the rule's margin 2
    odd = {(16, 0.1): [100.0, 100.0, 100.0], (16, 0.2): [90.0, 90.0, 200.0]}
    assert U.best_steps(_censor(odd, {16: 0.1}, 0.8))[16] == (100.0, 0.1)
    assert U.best_steps(_censor(odd, {16: 0.1}, None))[16] == (90.0, 0.2)  # the rule's margin 1


def test_no_bound_when_the_centre_missed_or_the_bound_reaches_the_budget():
    assert S.censor_bound([100, 120, math.inf], 10_000) is None
    assert S.censor_bound([100, 120], 240) is None
    assert S.censor_bound([100, 120], 241) == 240  # even: twice the slowest seed
    assert S.censor_bound([100, 130, 120], 10_000) == 130  # odd: the slowest seed
    assert S.censor_bound([], 1000) is None


# --------------------------------------------------------------------------------------------- the planner
def _row(B, lr, seed, steps):
    return dict(run_id=f"tune-B{B:05d}-lr{S.lr_key(lr)}-s{seed}", phase="tune", batch_size=B, lr=lr, seed=seed,
                status="COMPLETE" if steps is not None else "INCOMPLETE", steps_to_target=steps, best_val_error=0.1)


def _plan(config, results):
    return S.tune_trials(config, 0.1, 0.2, [16, 64], results, (1000.0, 32000.0))


def test_the_centre_rate_runs_first_and_bounds_the_others():
    config = make_config(quick=True, batch_sizes=[16, 64], seeds=3)
    first = _plan(config, [])
    centre = {B: S.grid_for(config, 0.1, B)[1] for B in (16, 64)}
    assert {(t.batch_size, t.lr) for t in first} == {(B, centre[B]) for B in centre}
    assert all(t.censor_steps is None for t in first)
    # B = 16's centre done (slowest of its 3 seeds 400 steps); B = 64's missing a seed: only B = 16 goes on
    done = [_row(16, centre[16], s, x) for s, x in enumerate((300, 400, 350))] + [_row(64, centre[64], 0, 200)]
    second = _plan(config, done)
    by_B = {B: [t for t in second if t.batch_size == B] for B in (16, 64)}
    assert {t.lr for t in by_B[64]} == {centre[64]}
    others = [t for t in by_B[16] if t.lr != centre[16]]
    assert len(others) == 2 * 3 and all(t.censor_steps == 400 for t in others)
    # a resume with some of the second wave stored plans the same trials with the same bounds
    partial = done + [S.result_row(t.run_id, dict(vars(t), status="CENSORED", best_val_error=0.3), {})
                      for t in others[:2]]
    again = {t.run_id: t for t in _plan(config, partial)}
    assert all(again[t.run_id] == t for t in second)
    # off: the whole grid at once, no bounds (negative control of the ordering above)
    off = _plan(dict(config, censor="off"), [])
    assert len(off) == 2 * 3 * 3 and all(t.censor_steps is None for t in off)
    # a centre seed that missed the target: no bound at that B
    missed = [_row(16, centre[16], s, x) for s, x in enumerate((300, None, 350))]
    assert all(t.censor_steps is None for t in _plan(config, missed) if t.batch_size == 16)


# ------------------------------------------------------------------------------------------- a real study
STUDY = {"data_options": {"n_train": 2000, "n_val": 500, "n_test": 500}, "hidden": [16], "batch_sizes": [8, 32],
         "reference_lrs": [0.1, 0.3], "reference_epochs": 20.0, "seeds": 3, "lr_points": 3, "lr_factor": 3.0,
         "max_widen": 1, "budget_factor": 3.0, "adaptive_budget": 0, "equal_epochs": 0.05}


@pytest.mark.slow
def test_a_censored_study_answers_as_the_uncensored_one(tmp_path):
    """The same small study with censoring on and off: the same runs, some CENSORED and each a prefix of its
    uncensored twin, and the same S(B), intervals, best rates, fit and pick."""
    import subprocess
    import sys
    from pathlib import Path

    from minigrad import store
    from minigrad.study import sweep
    from minigrad.study.analysis import analyse

    files = {}
    for censor in ("on", "off"):
        files[censor] = tmp_path / f"{censor}.h5"
        sweep.run_study(make_config(censor=censor, **STUDY), files[censor], executor=sweep.LocalExecutor(2),
                        measure_throughput=False, echo=lambda *a: None)
    on, off = store.open(files["on"]), store.open(files["off"])
    assert set(on.runs) == set(off.runs)
    cut = [rid for rid, run in on.runs.items() if run.attrs["status"] == "CENSORED"]
    assert cut and all(off.runs[rid].attrs["status"] != "CENSORED" for rid in cut)
    same = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "bench" / "same_study.py"),
                           str(files["off"]), str(files["on"])], capture_output=True, text=True)
    assert same.returncode == 0 and f"{len(cut)} runs censored after" in same.stdout, same.stdout
    a, b = analyse(off), analyse(on)
    keys = ("steps", "steps_lo", "steps_hi", "best_lr")
    assert [{k: r[k] for k in keys} for r in a.rows] == [{k: r[k] for k in keys} for r in b.rows]
    assert a.fit["B_crit"] == b.fit["B_crit"] or (math.isnan(a.fit["B_crit"]) and math.isnan(b.fit["B_crit"]))
    assert a.recommendation["batch_size"] == b.recommendation["batch_size"]
    # the heat map marks the stopped cells as stopped, not as missed; the uncensored study has none to mark
    cut_cells = {(int(on.runs[rid].attrs["batch_size"]), float(on.runs[rid].attrs["lr"])) for rid in cut
                 if on.runs[rid].attrs["phase"] in ("tune", "adapt")}
    assert b.heat["censored"] == cut_cells and a.heat["censored"] == set()
    # negative control: the other way round the censored runs are no longer the longer ones, and the check fails
    swapped = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "bench" / "same_study.py"),
                              str(files["on"]), str(files["off"])], capture_output=True, text=True)
    assert swapped.returncode == 1 and "differs" in swapped.stdout
