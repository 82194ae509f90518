"""The critical batch size along training (minigrad.study.ladder): steps-to-level read off the traces the study
already has, and the study's statistics at each level. Checked on synthetic studies whose S(B) at every level is
known: B_crit must come out where it was put, rising where it rises and flat where it is flat."""
import math

import numpy as np
import pytest

from minigrad.study import analysis, ladder
from minigrad.study import plan as S
from minigrad.study.answer import of
from minigrad.study.config import make_config


def test_crossing_is_interpolated_between_evaluations():
    steps, errors = np.array([100, 200, 300, 400]), np.array([0.5, 0.4, 0.2, 0.1])
    assert ladder.crossing_step(steps, errors, 0.3) == pytest.approx(250)  # halfway from 0.4 to 0.2
    assert ladder.crossing_step(steps, errors, 0.4) == 200                 # reached exactly at an evaluation
    assert ladder.crossing_step(steps, errors, 0.05) == math.inf           # never
    assert ladder.crossing_step(steps, errors, 0.6) == 100                 # before the first: its step, a bound


def test_negative_control_the_first_evaluation_at_or_below_is_not_the_crossing():
    steps, errors = np.array([100, 200, 300]), np.array([0.5, 0.25, 0.1])
    first_hit = steps[np.flatnonzero(errors <= 0.3)[0]]  # what reading the first evaluation below would give
    assert ladder.crossing_step(steps, errors, 0.3) != first_hit and 100 < ladder.crossing_step(steps, errors, 0.3) < 200


FLOOR = 0.05


def synthetic_study(e_min_power, seeds=(0.95, 1.0, 1.05), batch_sizes=(4, 16, 64, 256, 1024), target=0.1):
    """An in-memory study whose best rate reaches error e at step S_min(e) + E_min(e)/B exactly, with
    S_min(e) = 20/x and E_min(e) = 2000/x**e_min_power, x = e - FLOOR: B_crit(e) = 100 x**(1 - e_min_power), rising as
    the error falls when e_min_power > 1, flat when it is 1. Two worse rates at 1.5x the steps; seeds scale the steps."""
    from minigrad.store import Run, StudyFile

    def error_at(step, B):  # solve step = a/x + b/(B x^p) for x, by bisection (monotone in x)
        lo, hi = 1e-6, 10.0
        for _ in range(80):
            x = (lo + hi) / 2
            lo, hi = (lo, x) if 20 / x + 2000 / (B * x ** e_min_power) < step else (x, hi)
        return FLOOR + (lo + hi) / 2

    runs = {}
    for B in batch_sizes:
        for lr, slow in ((0.05, 1.5), (0.1, 1.0), (0.2, 1.5)):
            for seed, factor in enumerate(seeds):
                s_target = (20 / (target - FLOOR) + 2000 / (B * (target - FLOOR) ** e_min_power)) * factor * slow
                steps = np.unique(np.geomspace(max(1.0, s_target / 60), s_target, 80).astype(int))
                errors = np.array([error_at(s / (factor * slow), B) for s in steps])
                errors[-1] = min(errors[-1], target)
                run_id = S.trial("tune", B, lr, seed, target).run_id
                runs[run_id] = Run(run_id, dict(phase="tune", batch_size=B, lr=lr, seed=seed, status="COMPLETE",
                                                steps_to_target=int(steps[-1]), best_val_error=float(errors.min())),
                                   {"step": steps, "val_error": errors, "examples": steps * B})
    config = make_config(batch_sizes=list(batch_sizes), target=target)
    return StudyFile(path=None, attrs=dict(config=config, target=target, target_reason="given"), runs=runs,
                     throughput=[])


def test_a_rising_critical_batch_size_is_found_at_every_level():
    a = analysis.analyse(synthetic_study(e_min_power=2))
    assert len(a.ladder) == ladder.LEVELS and a.ladder[-1]["is_target"]
    for r in a.ladder:
        x = r["level"] - FLOOR
        assert r["determined"] and r["B_crit"] == pytest.approx(100 / x, rel=0.1), r["level"]
        assert r["cbs"] == pytest.approx(0.2 * r["B_crit"])
    crits = [r["B_crit"] for r in a.ladder]
    assert crits == sorted(crits) and crits[-1] > 1.5 * crits[0]
    assert "rises" in of(a).ladder_sentence and "beyond" in of(a).ladder_sentence
    assert a.ladder[-1]["B_crit"] == pytest.approx(a.fit["B_crit"])  # the target's rung is the answer's fit


def test_negative_control_a_flat_critical_batch_size_is_not_called_rising():
    a = analysis.analyse(synthetic_study(e_min_power=1))
    crits = [r["B_crit"] for r in a.ladder]
    assert all(c == pytest.approx(100, rel=0.1) for c in crits)
    assert "within noise" in of(a).ladder_sentence or max(crits) < 1.2 * min(crits)


def test_the_ladder_reaches_json_and_the_levels_span_to_the_target():
    import json

    answer = of(analysis.analyse(synthetic_study(e_min_power=2)))
    levels = json.loads(json.dumps(answer.to_dict()))["ladder"]["levels"]
    assert [lv["level"] for lv in levels] == sorted((lv["level"] for lv in levels), reverse=True)
    assert levels[-1]["is_target"] and levels[-1]["level"] == 0.1
    assert {"b_crit", "cbs_20", "b_simple", "s_min", "e_min", "rows"} <= set(levels[0])
