"""The batch-size schedule the study recommends (minigrad.study.schedule) and its verification: stage steps read off
the traces as differences of crossings at one (B, rate), the cheapest rising plan, "no saving" when none is
predicted, and the three-way verdict of the verify phase on runs whose answer is known."""
import math

import numpy as np
import pytest

from minigrad.store import Run, StudyFile
from minigrad.study import analysis
from minigrad.study import plan as S
from minigrad.study import schedule as SCH
from minigrad.study.answer import of
from tests.test_ladder import FLOOR, synthetic_study

TIMES = {4: 12e-6, 16: 18e-6, 64: 42e-6, 256: 138e-6, 1024: 522e-6}  # 10 us + 0.5 us per example


def with_times(study_file, times=TIMES):
    study_file.throughput = [dict(batch_size=B, step_time_s=t) for B, t in times.items()]
    return study_file


@pytest.mark.parametrize("power", [1, 3])
def test_stage_steps_are_the_differences_of_crossings_along_one_trajectory(power):
    """The synthetic study reaches error e at S(e, B) = 20/x + 2000/(B x^p) steps (x = e - floor): a stage from level
    a to level b at B must take S(b, B) - S(a, B) steps, whatever the plan."""
    a = analysis.analyse(with_times(synthetic_study(e_min_power=power)))
    sch = a.schedule
    exact = lambda e, B: 20 / (e - FLOOR) + 2000 / (B * (e - FLOOR) ** power)  # noqa: E731
    for s in sch["stages"]:
        start = exact(s["from_level"], s["batch_size"]) if s["from_level"] is not None else 0.0
        assert s["steps"] == pytest.approx(exact(s["to_level"], s["batch_size"]) - start, rel=0.01)
        assert s["examples"] == pytest.approx(s["steps"] * s["batch_size"])
        assert s["time_s"] == pytest.approx(s["steps"] * TIMES[s["batch_size"]])
    assert [s["batch_size"] for s in sch["stages"]] == sorted({s["batch_size"] for s in sch["stages"]})
    assert sch["fixed"]["batch_size"] == a.recommendation["batch_size"]
    assert sch["time_s"] <= sch["fixed"]["time_s"] * (1 + 1e-9)  # the fixed pick is one of the plans


def test_negative_control_a_flat_critical_batch_size_gives_one_stage_and_no_saving():
    a = analysis.analyse(with_times(synthetic_study(e_min_power=1)))
    assert len(a.schedule["stages"]) == 1 and not a.schedule["saves"]
    assert "predict no saving" in of(a).schedule_sentence and not a.schedule["recipe"]


def trace(points):
    """Evaluations (step, error) as the trace columns the study stores."""
    steps, errors = (np.array(v, float) for v in zip(*points))
    return {"step": steps.astype(int), "val_error": errors, "examples": steps.astype(int)}


def two_phase_study(seeds=3):
    """A study where a small batch is cheapest early and a large one late: at B = 16 the error reaches 0.3 at step
    100 and 0.1 at step 4100; at B = 256, 0.3 at step 90 and 0.1 at step 490 (rate 0.1 best at both, 0.05 worse)."""
    runs = {}
    for B, (c1, c2) in {16: (100, 4100), 256: (90, 490)}.items():
        for lr, slow in ((0.1, 1.0), (0.05, 1.4)):
            for seed in range(seeds):
                f = slow * (1 + 0.1 * seed)  # whole steps at the fast rate
                t = trace([(c1 * f / 2, 0.5), (c1 * f, 0.3), (c2 * f, 0.1)])
                run_id = S.trial("tune", B, lr, seed, 0.1).run_id
                runs[run_id] = Run(run_id, dict(phase="tune", batch_size=B, lr=lr, seed=seed, status="COMPLETE",
                                                steps_to_target=int(t["step"][-1]), best_val_error=0.1), t)
    ladder = [dict(level=0.3, rows=[dict(batch_size=B, lr=0.1) for B in (16, 256)]),
              dict(level=0.1, rows=[dict(batch_size=B, lr=0.1) for B in (16, 256)])]
    results = [S.result_row(rid, r.attrs, r.trace) for rid, r in runs.items()]
    return StudyFile(path=None, attrs={}, runs=runs, throughput=[]), results, ladder


def test_a_small_batch_early_and_a_large_one_late_is_chosen_and_priced():
    study_file, results, ladder = two_phase_study()
    times = {16: 10e-6, 256: 40e-6}
    sch = SCH.choose(study_file, results, times, ladder, (256, 0.1))
    assert [(s["batch_size"], s["from_level"]) for s in sch["stages"]] == [(16, None), (256, 0.3)]
    assert sch["stages"][0]["steps"] == pytest.approx(110)            # the median seed: 100 * 1.1
    assert sch["stages"][1]["steps"] == pytest.approx(539 - 99)       # its 490 * 1.1 - 90 * 1.1
    fixed = 539 * 40e-6
    assert sch["fixed"]["time_s"] == pytest.approx(fixed)
    assert sch["time_s"] == pytest.approx(110 * 10e-6 + 440 * 40e-6)
    assert sch["saves"] and sch["predicted_ratio"] == pytest.approx(sch["time_s"] / fixed)
    assert sch["text"] == "16:0.1,256:0.1@err=0.3"
    # negative control: when the small batch's steps are no cheaper early, the large batch alone wins
    no_gain = SCH.choose(study_file, results, {16: 40e-6, 256: 40e-6}, ladder, (256, 0.1))
    assert [s["batch_size"] for s in no_gain["stages"]] == [256] and not no_gain["saves"]


def verify_run(run_id, B, reached, stages=None, starts=None, status="COMPLETE"):
    attrs = dict(phase="verify", batch_size=B, lr=0.1, seed=0, status=status, best_val_error=0.1,
                 steps_to_target=reached if status == "COMPLETE" else None)
    if stages:
        attrs.update(batch_stages=stages, stage_starts=starts)
    return run_id, Run(run_id, attrs, trace([(1, 0.5), (max(reached, 2), 0.1)]))


def test_a_verify_run_is_priced_stage_by_stage():
    times = {16: 10e-6, 256: 40e-6}
    _, run = verify_run("x-schedule", 16, 500, "16:0.1,256:0.1@err=0.3", [0, 120])
    assert SCH.arm_costs(run, times) == (500, pytest.approx(120 * 10e-6 + 380 * 40e-6))
    _, never = verify_run("x-schedule", 16, 500, "16:0.1,256:0.1@err=0.3", [0, None])
    assert SCH.arm_costs(never, times) == (500, pytest.approx(500 * 10e-6))
    _, missed = verify_run("x-schedule", 16, 500, "16:0.1,256:0.1@err=0.3", [0, 50], status="INCOMPLETE")
    assert SCH.arm_costs(missed, times) == (math.inf, math.inf)


@pytest.mark.parametrize("schedule_steps,outcome,use", [
    ((400, 410, 420, 430), SCH.REPRODUCED, "schedule"),          # clearly faster
    ((600, 610, 620, 630), SCH.NOT_REPRODUCED, "fixed"),         # clearly slower
    ((495, 500, 505, 510), SCH.NOT_REPRODUCED, "fixed"),         # the same within the equivalence margin
    ((300, 700, 350, 650), SCH.INCONCLUSIVE, "fixed")])          # too noisy to tell
def test_the_verify_phase_verdict(schedule_steps, outcome, use):
    times, text = {16: 10e-6, 256: 40e-6}, "256:0.1,256:0.2@err=0.3"
    runs = dict([verify_run(f"v-s{i}-fixed", 256, n) for i, n in enumerate((500, 498, 502, 505))]
                + [verify_run(f"v-s{i}{SCH.schedule_tag(text)}", 256, n, text, [0, 10]) for i, n in
                   enumerate(schedule_steps)])
    v = SCH.verification(StudyFile(path=None, attrs={}, runs=runs, throughput=[]), times, dict(text=text))
    assert v["outcome"] == outcome and v["use"] == use and v["same"] and v["seeds"] == 4
    assert v["time_ratio_lo"] <= v["time_ratio"] <= v["time_ratio_hi"]


def test_three_way_rule():
    assert SCH.three_way(0.7, 0.9) == SCH.REPRODUCED
    assert SCH.three_way(1.1, 1.3) == SCH.NOT_REPRODUCED
    assert SCH.three_way(0.97, 1.02) == SCH.NOT_REPRODUCED   # inside the equivalence margin
    assert SCH.three_way(0.8, 1.2) == SCH.INCONCLUSIVE
    assert SCH.three_way(math.nan, 0.9) == SCH.INCONCLUSIVE


@pytest.mark.slow
def test_the_verify_phase_trains_the_schedule_stores_it_and_report_rebuilds_it(tmp_path, monkeypatch):
    """A real small study whose schedule is set (choose is replaced, so the phase has a schedule whatever the tiny
    study's curves say): the verify runs are stored with their stages, the report rebuilds the verdict from the file,
    a rerun trains nothing more, and verify_seeds = 0 trains none."""
    import json

    from click.testing import CliRunner

    import minigrad
    from minigrad import store
    from minigrad.cli import main
    from minigrad.study.executors import InlineExecutor

    real_choose = SCH.choose

    def set_schedule(study_file, results, times, ladder, pick):
        sch = real_choose(study_file, results, times, ladder, pick)
        first, last = (dict(s, lr=pick[1]) for s in (sch["stages"][0], sch["stages"][-1]))
        stages = [dict(first, batch_size=8, from_level=None), dict(last, batch_size=64, from_level=ladder[2]["level"])]
        return dict(sch, stages=stages, saves=True, text=SCH.stages_text(stages), steps=sch["fixed"]["steps"])

    monkeypatch.setattr(SCH, "choose", set_schedule)
    settings = dict(data_options={"n_train": 1200, "n_val": 400, "n_test": 400}, hidden=[16], batch_sizes=[8, 64],
                    reference_lrs=[0.1, 0.3], seeds=2, lr_points=2, max_widen=1, reference_epochs=20.0,
                    equal_epochs=0.5, adaptive_budget=0, verify_seeds=2)
    out = tmp_path / "s.h5"
    minigrad.run_study(minigrad.make_config(**settings), out, executor=InlineExecutor(), echo=lambda *a: None)
    runs = {rid: r for rid, r in store.open(out).runs.items() if r.attrs["phase"] == "verify"}
    staged = [r for rid, r in runs.items() if "-schedule" in rid]
    assert len(runs) == 4 and len(staged) == 2
    assert all(r.attrs["batch_stages"].startswith("8:") and len(r.attrs["stage_starts"]) == 2 for r in staged)
    result = CliRunner().invoke(main, ["report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    v = json.loads(result.stdout)["schedule"]["verification"]
    assert v["seeds"] == 2 and v["outcome"] in (SCH.REPRODUCED, SCH.NOT_REPRODUCED, SCH.INCONCLUSIVE)
    assert v["text"] == staged[0].attrs["batch_stages"] and v["same"]
    before = set(store.open(out).runs)
    minigrad.run_study(minigrad.make_config(**settings), out, executor=InlineExecutor(), echo=lambda *a: None)
    assert set(store.open(out).runs) == before  # resumed: nothing more to train
    # negative control: the phase off trains no verify run, and the report says it is off
    off = tmp_path / "off.h5"
    minigrad.run_study(minigrad.make_config(**dict(settings, verify_seeds=0)), off, executor=InlineExecutor(),
                       echo=lambda *a: None)
    assert not any(r.attrs["phase"] == "verify" for r in store.open(off).runs.values())
    assert "verify phase is off" in minigrad.open_study(off).answer().schedule_sentence


def test_a_study_made_before_the_verify_phase_says_it_has_not_run(monkeypatch):
    monkeypatch.setattr(SCH, "MIN_SAVING", -1.0)  # any plan of two stages or more counts as a saving here
    old = with_times(synthetic_study(e_min_power=3))
    del old.attrs["config"]["verify_seeds"]  # a file written before the setting existed
    a = analysis.analyse(old)
    assert a.schedule["saves"] and len(a.schedule["stages"]) > 1 and a.schedule["recipe"]
    assert "--batch-stages" in a.schedule["recipe"] and a.schedule["text"] in a.schedule["recipe"]
    assert "has not run" in of(a).schedule_sentence
    off = with_times(synthetic_study(e_min_power=3))
    off.attrs["config"]["verify_seeds"] = 0  # negative control: switched off is said as such
    assert "is off" in of(analysis.analyse(off)).schedule_sentence
