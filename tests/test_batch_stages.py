"""A staged batch schedule (--batch-stages): each stage's B and rate, a stage keyed on steps beginning at exactly
that step, one keyed on the validation error at the first evaluation at or below its level; without stages, runs are
what they were bit for bit."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

from minigrad import store
from minigrad.cli import main
from minigrad.training.schedules import BatchSchedule, LRSchedule, Stage, format_stages, parse_stages
from minigrad.training.train import Budget, build_model, train


def run(ds, batch_schedule=None, B=16, lr=0.1, steps=400, target=None, lr_schedule=None):
    return train(build_model(ds, [16], seed=3), ds, B, lr, budget=Budget(steps=steps), target=target,
                 batch_schedule=batch_schedule, lr_schedule=lr_schedule, seed=5)


def test_stages_parse_and_print_back():
    text = "32:0.1,128:0.2@err=0.2,512:0.3@err=0.15"
    stages = parse_stages(text)
    assert stages == [Stage(32, 0.1), Stage(128, 0.2, error=0.2), Stage(512, 0.3, error=0.15)]
    assert format_stages(stages) == text
    assert parse_stages(" 8:0.05 , 64:0.1 @ step = 300") == [Stage(8, 0.05), Stage(64, 0.1, step=300)]


@pytest.mark.parametrize("text,needle", [
    ("", "empty"), ("32", "not B:LR"), ("32:0.1,64:0.2", "needs its start"), ("32:0.1@step=4", "first stage"),
    ("32:0.1,64:0.2@err=0.1,128:0.3@err=0.2", "fall"), ("32:0.1,64:0.2@step=9,128:0.3@step=9", "rise"),
    ("32:0.1,64:0.2@err=0.1,128:0.3@step=90", "not both"), ("0:0.1", ">= 1"), ("32:inf", "learning rate")])
def test_bad_stages_are_refused_with_the_reason(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_stages(text)


def test_one_stage_is_the_fixed_run_bit_for_bit(blobs):
    fixed = run(blobs)
    staged = run(blobs, BatchSchedule(16, stages="16:0.1"))
    late = run(blobs, BatchSchedule(16, stages="16:0.1,64:0.3@step=100000"))  # a stage never begun
    for other in (staged, late):
        assert np.array_equal(fixed.params, other.params)
        assert np.array_equal(fixed.columns["val_error"], other.columns["val_error"])
    # negative control: a stage that does begin changes the run
    assert not np.array_equal(fixed.params, run(blobs, BatchSchedule(16, stages="16:0.1,64:0.3@step=50")).params)


def test_a_stage_keyed_on_steps_begins_at_that_step(blobs):
    t = run(blobs, BatchSchedule(16, stages="16:0.1,64:0.3@step=150,128:0.05@step=300"), steps=400)
    c = t.columns
    assert t.attrs["stage_starts"] == [0, 150, 300]
    # examples count the batch sizes exactly: 150 steps of 16, 150 of 64, then 128
    for step, examples in zip(c["step"], c["examples"]):
        assert examples == 16 * min(step, 150) + 64 * max(0, min(step, 300) - 150) + 128 * max(0, step - 300)
    after = c["step"] > 300
    assert np.all(c["lr"][after] == pytest.approx(0.05)) and np.all(c["batch_size"][after] == 128)


def test_a_stage_keyed_on_the_error_begins_at_the_first_evaluation_at_or_below_its_level(blobs):
    level = 0.3
    t = run(blobs, BatchSchedule(16, stages=f"16:0.02,64:0.1@err={level}"), lr=0.02, steps=600)
    c, start = t.columns, t.attrs["stage_starts"][1]
    first = int(np.flatnonzero(c["val_error"] <= level)[0])
    assert start == c["step"][first]  # the evaluation that first saw the level
    later = c["step"] > start
    assert later.any() and np.all(c["examples"][later] - c["examples"][first] == 64 * (c["step"][later] - start))
    # negative control: a level never reached never begins its stage, and the run stays at the first stage's B
    never = run(blobs, BatchSchedule(16, stages="16:0.02,64:0.1@err=0.0001"), lr=0.02, steps=600)
    assert never.attrs["stage_starts"] == [0, None] and np.all(never.columns["batch_size"] == 16)


def test_the_target_replay_keeps_the_stage_switch(blobs):
    # a target reached in a wide gap is located by a replay from the evaluation before; the stage switch taken
    # before that evaluation must survive the rewind
    t = run(blobs, BatchSchedule(16, stages="16:0.02,64:0.1@err=0.3"), lr=0.02, steps=5000, target=0.05)
    assert t.status == "COMPLETE" and t.attrs["stage_starts"][1] is not None
    assert t.attrs["stage_starts"][1] < t.steps_to_target
    s, e = t.columns["step"], t.columns["examples"]
    i = list(s).index(t.steps_to_target)
    assert e[i] == 16 * t.attrs["stage_starts"][1] + 64 * (s[i] - t.attrs["stage_starts"][1])


def test_the_learning_rate_schedule_multiplies_the_stage_rate(blobs):
    warm = LRSchedule(0.1, warmup_epochs=1.0)
    t = run(blobs, BatchSchedule(16, stages="16:0.1,64:0.4@step=200"), lr_schedule=warm, steps=300)
    c = t.columns
    epochs_done = c["epoch"] >= 1.0
    assert np.all(c["lr"][(c["step"] > 200) & epochs_done] == pytest.approx(0.4))
    early = c["epoch"] < 0.5
    assert early.any() and np.all(c["lr"][early] < 0.1)


def test_minigrad_train_takes_stages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", "--hidden", "16", "--batch-stages", "16:0.1,64:0.2@err=0.5",
                                       "--steps", "600", "--out", "run.h5"])
    assert result.exit_code == 0, result.output
    a = store.open(tmp_path / "run.h5").runs["run"].attrs
    assert a["batch_stages"] == "16:0.1,64:0.2@err=0.5" and a["batch_size"] == 16 and a["lr"] == 0.1
    assert isinstance(a["stage_starts"][1], int) and a["stage_starts"][1] > 0
    bad = CliRunner().invoke(main, ["train", "--hidden", "16", "--batch-stages", "16:0.1,64", "--out", "bad.h5"])
    assert bad.exit_code == 2 and "--batch-stages" in bad.stderr and not (tmp_path / "bad.h5").exists()
    assert len(bad.stderr.strip().splitlines()) == 1
