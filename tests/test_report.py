"""The study's arithmetic: fitting S(B) = S_min + E_min/B, choosing the best rate, recommending a batch size."""
import math

import numpy as np
import pytest

from minigrad.study import report
from minigrad.study import plan as S
from minigrad.study.config import make_config


def test_fit_recovers_known_smin_emin():
    B = np.array([1, 2, 4, 8, 16, 64, 256, 1024])
    steps = 300 + 60_000 / B
    s_min, e_min = report.fit_steps(B, steps)
    assert s_min == pytest.approx(300, rel=1e-9) and e_min == pytest.approx(60_000, rel=1e-9)


def test_fit_is_not_fooled_by_pure_perfect_scaling():
    # negative control: S = E/B exactly has S_min = 0, so B_crit is unbounded, not some finite value
    B = np.array([1, 2, 4, 8, 16])
    s_min, e_min = report.fit_steps(B, 5000 / B)
    assert abs(s_min) < 1e-6 and e_min == pytest.approx(5000)


def test_fit_ignores_batch_sizes_that_missed_the_target():
    B = [1, 4, 16, 64]
    s_min, e_min = report.fit_steps(B, [1100, 350, math.inf, 115.625])
    assert s_min == pytest.approx(100) and e_min == pytest.approx(1000)
    assert report.fit_steps([1, 2], [math.inf, 3.0]) is None


def fake_study(steps_by_B, step_times, seeds_noise=(1.0,), target=0.1, lrs=(0.05, 0.1, 0.2)):
    """An in-memory StudyFile: tuning trials at three rates (the middle one best, the others 1.5x slower) with the
    given steps per B, one seed per factor in seeds_noise, and the step time of each B measured in three rounds."""
    from minigrad.store import Run, StudyFile

    config = make_config(batch_sizes=sorted(steps_by_B), target=target)
    runs = {}
    for B, steps in steps_by_B.items():
        for lr in lrs:
            for seed, factor in enumerate(seeds_noise):
                s = steps * factor * (1.0 if lr == 0.1 else 1.5)
                run_id = S.trial("tune", B, lr, seed, target).run_id
                reached = math.isfinite(s)
                runs[run_id] = Run(run_id, dict(phase="tune", batch_size=B, lr=lr, seed=seed,
                                                status="COMPLETE" if reached else "INCOMPLETE",
                                                steps_to_target=int(s) if reached else None, best_val_error=0.05),
                                   {"step": np.arange(3), "val_error": np.array([0.5, 0.2, 0.05])})
    throughput = [dict(batch_size=B, step_time_s=t, iqr_s=0.05 * t, threads=1, busy=0, samples_per_s=B / t,
                       gflops=1.0, rounds_s=" ".join(repr(t * f) for f in (0.97, 1.0, 1.04)))
                  for B, t in step_times.items()]
    return StudyFile(path=None, attrs=dict(config=config, target=target, target_reason="given"), runs=runs,
                     throughput=throughput)


def test_recommendation_picks_from_the_tie_set_and_never_contradicts_the_table():
    steps = {4: 4000.0, 16: 1000.0, 64: 260.0, 256: 120.0}
    times = {4: 1e-4, 16: 1.0e-4, 64: 3.9e-4, 256: 2e-3}  # T: 0.4, 0.1, 0.1014, 0.24 s: 16 and 64 tied
    a = report.analyse(fake_study(steps, times, seeds_noise=(0.9, 1.0, 1.1, 0.95, 1.05)))
    rec = a.recommendation
    assert rec["tied"] == [16, 64] and rec["batch_size"] in (16, 64)
    assert sum(rec["win_fraction"].values()) == pytest.approx(1.0)
    text = report.of(a).text()
    assert text.startswith(f"Use batch size {rec['batch_size']} ") and "16-64 are tied" in text
    assert "minigrad train" in rec["recipe"] and f"--batch-size {rec['batch_size']}" in rec["recipe"]
    assert "--lr 0.1 " in rec["recipe"] and "--target 0.1" in rec["recipe"]
    tied_rows = [r for r in a.rows if r["tied"]]
    assert [r["batch_size"] for r in tied_rows] == rec["tied"]
    for r in a.rows:  # intervals contain the estimates
        assert r["steps_lo"] <= r["steps"] <= r["steps_hi"] and r["time_lo"] <= r["time_s"] <= r["time_hi"]
    # negative control: make 64 clearly slower and it leaves the tie set; the pick is 16 alone
    times[64] = 8e-4
    a = report.analyse(fake_study(steps, times, seeds_noise=(0.9, 1.0, 1.1, 0.95, 1.05)))
    assert a.recommendation["tied"] == [16] and a.recommendation["batch_size"] == 16
    assert "no other batch size comes within" in report.of(a).text()


def test_one_seed_gives_degenerate_intervals_said_as_such():
    a = report.analyse(fake_study({4: 4000.0, 16: 1000.0, 64: 260.0, 256: 90.0}, {4: 1e-4, 16: 1e-4, 64: 4e-4,
                                                                                   256: 2e-3}))
    r = a.recommended
    assert r["steps_lo"] == r["steps_hi"] == r["steps"]
    assert "interval degenerate" in report.of(a).text()
    assert " to ".join([f"{a.fit['B_crit']:.0f}"] * 2) not in report.of(a).text()


def test_a_fit_that_does_not_describe_the_data_does_not_speak():
    # S falls, then rises: a target too strict for large batches within their budget
    a = report.analyse(fake_study({16: 1000.0, 64: 260.0, 256: 40.0, 1024: 160.0},
                                  {16: 1e-4, 64: 4e-4, 256: 1.6e-3, 1024: 6.4e-3}))
    assert not a.fit["ok"] and not a.fit["determined"]
    text = report.of(a).text()
    assert "does not describe these data" in text and "B_crit is not determined" in text
    assert "doubling B nearly halves" not in text
    assert a.rows[-1]["misfit"] > 1.3
    answer = report.of(a).to_dict()
    assert answer["fit"]["ok"] is False and answer["b_crit"]["determined"] is False
    # negative control: data on the curve S = 50 + 16000/B keep B_crit, with an interval that brackets it
    a = report.analyse(fake_study({B: 50 + 16000 / B for B in (4, 16, 64, 256, 1024)},
                                  {B: 1e-4 * (1 + B / 64) for B in (4, 16, 64, 256, 1024)},
                                  seeds_noise=(0.9, 1.0, 1.1)))
    assert a.fit["ok"] and a.fit["determined"] and a.fit["B_crit"] == pytest.approx(320, rel=0.05)
    assert a.fit["B_crit_lo"] <= a.fit["B_crit"] <= a.fit["B_crit_hi"]
    assert "doubling B nearly halves" in report.of(a).text()


def test_the_json_answer_has_the_promised_fields():
    import json

    a = report.analyse(fake_study({4: 4000.0, 16: 1000.0, 64: 260.0, 256: 90.0},
                                  {4: 1e-4, 16: 1e-4, 64: 4e-4, 256: 2e-3}, seeds_noise=(0.9, 1.0, 1.1)))
    answer = json.loads(json.dumps(report.of(a).to_dict()))  # plain JSON types, NaN as null
    row = answer["rows"][0]
    assert {"batch_size", "step_time_s", "step_time_iqr_s", "lr", "steps_to_target", "steps_interval",
            "time_to_target_s", "time_interval_s", "misfit", "status"} <= set(row)
    assert row["status"] == {"COMPLETE": 9, "INCOMPLETE": 0, "DIVERGED": 0, "CENSORED": 0}
    assert {"s_min", "e_min", "max_misfit", "ok", "reason"} <= set(answer["fit"])
    assert {"estimate", "interval", "determined"} <= set(answer["b_crit"])
    assert {"batch_size", "lr", "tied", "win_fraction", "stable"} <= set(answer["recommendation"])


def result(B, lr, seed, steps, status="COMPLETE", phase="tune"):
    return dict(run_id=f"{phase}-{B}-{lr}-{seed}", phase=phase, batch_size=B, lr=lr, seed=seed, status=status,
                steps_to_target=steps if status == "COMPLETE" else None, best_val_error=0.1)


def test_best_rate_uses_the_median_over_seeds_and_counts_misses_as_infinite():
    results = [result(8, 0.1, 0, 100), result(8, 0.1, 1, 120), result(8, 0.1, 2, 5000),
               result(8, 0.2, 0, 90), result(8, 0.2, 1, 80, "INCOMPLETE"), result(8, 0.2, 2, 70, "DIVERGED")]
    assert S.steps_by_lr(results, 8) == {0.1: 120.0, 0.2: math.inf}
    assert S.best_lr(results, 8) == (0.1, 120.0)


def test_grid_is_widened_where_the_best_rate_is_on_its_edge():
    config = make_config(batch_sizes=[32], lr_points=3, seeds=1, max_widen=2)
    grid = S.grid_for(config, 0.1, 32)
    assert grid == [0.05, 0.1, 0.2]
    results = [result(32, 0.05, 0, 300), result(32, 0.1, 0, 200), result(32, 0.2, 0, 100)]
    wanted = {t.lr for t in S.tune_trials(config, 0.1, 0.2, [32], results, (100, 3200))}
    assert wanted == {0.05, 0.1, 0.2, 0.4}
    # best in the middle: no widening
    results[2] = result(32, 0.2, 0, 250)
    assert {t.lr for t in S.tune_trials(config, 0.1, 0.2, [32], results, (100, 3200))} == {0.05, 0.1, 0.2}
    # the largest rate diverged: widen downwards only if the best is at the bottom
    results = [result(32, 0.05, 0, 100), result(32, 0.1, 0, 200), result(32, 0.2, 0, None, "DIVERGED")]
    assert {t.lr for t in S.tune_trials(config, 0.1, 0.2, [32], results, (100, 3200))} == {0.025, 0.05, 0.1, 0.2}


def test_grid_widening_stops_after_max_widen():
    config = make_config(batch_sizes=[32], lr_points=2, seeds=1, max_widen=1)
    results = [result(32, lr, 0, 1000 / lr) for lr in (0.07071, 0.1414, 0.2828)]
    assert len({t.lr for t in S.tune_trials(config, 0.1, 0.2, [32], results, (100, 3200))}) == 3


def test_trial_ids_are_stable_and_store_safe():
    t = S.trial("tune", 64, 0.1234567, 2, 0.1, steps=10)
    assert t.run_id == "tune-B00064-lr0.1235-s2"
    assert S.trial("equal", 8, 0.5, 0, 0.1, epochs=5.0, tag="-tuned").run_id.endswith("-tuned")


@pytest.mark.parametrize("overrides,match", [
    (dict(batch_sizes=[0, 4]), "batch sizes"),
    (dict(batch_sizes=[4, 4]), "repeat"),
    (dict(seeds=0), "seeds"),
    (dict(target=1.5), "target"),
    (dict(budget_factor=0), "budget factor"),
    (dict(reference_lrs=[-0.1]), "learning rates"),
    (dict(nonsense=1), "unknown study setting"),
])
def test_bad_study_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(**overrides)


def reference_result(lr, seed, steps, examples, errors):
    return dict(run_id=f"ref-{lr}-{seed}", phase="reference", batch_size=32, lr=lr, seed=seed, status="COMPLETE",
                steps_to_target=None, best_val_error=min(errors),
                curve={"step": np.array(steps), "examples": np.array(examples), "val_error": np.array(errors)})


def test_reference_cost_reads_when_the_best_rate_first_met_the_target():
    config = make_config()
    results = [reference_result(0.1, 0, [10, 20, 30], [320, 640, 960], [0.5, 0.2, 0.1]),
               reference_result(0.1, 1, [10, 20, 30], [320, 640, 960], [0.5, 0.15, 0.12]),
               reference_result(0.3, 0, [10, 20, 30], [320, 640, 960], [0.4, 0.3, 0.3])]
    assert S.best_reference(results) == (pytest.approx(0.11), 0.1)
    assert S.reference_cost(config, results, 0.16) == (25.0, 800.0)
    # budget: budget_factor * max(S_ref, E_ref / B)
    assert S.tune_budget(config, (15.0, 480.0), 1) == math.ceil(config["budget_factor"] * 480)
    assert S.tune_budget(config, (15.0, 480.0), 1024) == math.ceil(config["budget_factor"] * 15)
    with pytest.raises(ValueError, match="did not reach"):
        S.reference_cost(config, results, 0.05)


def test_grids_centre_linearly_below_the_reference_batch_and_by_sqrt_above():
    config = make_config()
    assert S.centre_lr(config, 0.1, 8) == pytest.approx(0.025)
    assert S.centre_lr(config, 0.1, 128) == pytest.approx(0.2)
    assert S.centre_lr(config, 0.1, 32) == pytest.approx(0.1)


def test_trial_step_times_far_from_t_b_are_pointed_out():
    from minigrad.study.report import time_gaps

    rows = [dict(batch_size=1, step_time_s=10e-6, trial_step_s=11.9e-6),   # within 20%: not pointed out
            dict(batch_size=8, step_time_s=10e-6, trial_step_s=15e-6),     # 1.5x
            dict(batch_size=64, step_time_s=10e-6, trial_step_s=7e-6),     # 0.7x
            dict(batch_size=512, step_time_s=10e-6, trial_step_s=float("nan"))]
    assert time_gaps(rows) == [(8, pytest.approx(1.5)), (64, pytest.approx(0.7))]
