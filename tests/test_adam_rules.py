"""Adam's per-batch-size settings: beta2 by its half-life in samples, the square-root rule for the study's rate
centre, the settings recorded in every run and carried by the study's recipe line and `minigrad train`."""
import math
import shlex

import pytest

from minigrad import store
from minigrad.study import plan
from minigrad.study.analysis import recipe
from minigrad.study.config import make_config
from minigrad.training.schedules import beta2_halflife, scaled_beta2
from minigrad.training.spec import TrialSpec
from minigrad.training.trial import run_trial

from tests.test_cli import minigrad, one_error_line

TINY = {"data": "teacher", "data_options": {"n_train": 600, "n_val": 200, "n_test": 200}, "hidden": [8],
        "optimizer": "adam"}


def test_halflife_keeps_the_samples_constant_across_batch_sizes():
    t_half = beta2_halflife(0.999, 128)
    assert t_half == pytest.approx(88_700, rel=2e-3)
    assert scaled_beta2(0.999, 128, "halflife", reference_batch_size=128) == pytest.approx(0.999, abs=1e-15)
    assert scaled_beta2(0.999, 1, "halflife", reference_batch_size=128) == pytest.approx(0.9999922, abs=1e-7)
    assert scaled_beta2(0.999, 512, "halflife", reference_batch_size=128) == pytest.approx(0.996, abs=1e-5)
    # the average halves after t_half samples at every B: beta2(B)^(t_half / B) = 1/2
    for B in (1, 7, 64, 1024):
        assert scaled_beta2(0.999, B, "halflife", t_half) ** (t_half / B) == pytest.approx(0.5, rel=1e-9)
    # negative control: held fixed, the half-life in samples grows with B, 512x from B=1 to B=512
    fixed = [beta2_halflife(scaled_beta2(0.999, B, "fixed"), B) for B in (1, 512)]
    assert fixed[1] / fixed[0] == pytest.approx(512)
    assert scaled_beta2(0.999, 1, "fixed") == 0.999


def test_beta2_rule_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown beta2 rule"):
        scaled_beta2(0.999, 8, "steps")
    with pytest.raises(ValueError, match="half-life must be > 0"):
        scaled_beta2(0.999, 8, "halflife", halflife=-5.0)
    with pytest.raises(ValueError, match="needs a half-life"):
        scaled_beta2(0.999, 8, "halflife")
    with pytest.raises(ValueError, match="beta2"):
        make_config(beta2=1.0)
    with pytest.raises(ValueError, match="beta2_rule"):
        make_config(beta2_rule="steps")


def test_adam_grid_centres_on_the_square_root_rule_and_sgd_keeps_its_own():
    adam, sgd = make_config(optimizer="adam"), make_config()
    assert plan.centre_lr(adam, 1e-3, 8) == pytest.approx(1e-3 * math.sqrt(8 / 32))
    assert plan.centre_lr(adam, 1e-3, 128) == pytest.approx(2e-3)
    # negative control: SGD's centre is linear below the reference batch size
    assert plan.centre_lr(sgd, 0.1, 8) == pytest.approx(0.1 * 8 / 32)
    assert plan.centre_lr(sgd, 0.1, 128) == pytest.approx(0.2)


def trial(config, B, **spec):
    return run_trial(config, TrialSpec(run_id="r", batch_size=B, lr=3e-3, seed=0, steps=60, **spec))


def test_every_adam_run_records_and_uses_its_beta2():
    config = dict(TINY, beta2_rule="halflife", beta2=0.99, reference_batch_size=32)
    small = trial(config, 4)["attrs"]
    assert small["beta2"] == pytest.approx(0.99 ** (4 / 32)) and small["beta2_rule"] == "halflife"
    assert small["beta2_halflife"] == pytest.approx(beta2_halflife(0.99, 32))
    fixed = trial(dict(config, beta2_rule="fixed"), 4)
    assert fixed["attrs"]["beta2"] == 0.99 and fixed["attrs"]["beta2_rule"] == "fixed"
    # the value reaches the optimizer: another beta2 is another trajectory; the same one (the rule at B_ref,
    # or the value given in the spec) is the same trajectory bit for bit (negative control)
    halflife = trial(config, 4)
    assert list(halflife["columns"]["val_loss"]) != list(fixed["columns"]["val_loss"])
    at_ref = trial(config, 32)["columns"]["val_loss"]
    assert list(at_ref) == list(trial(dict(config, beta2_rule="fixed"), 32)["columns"]["val_loss"])
    given = trial(config, 4, beta2=0.99 ** (4 / 32), beta2_rule="halflife")
    assert list(given["columns"]["val_loss"]) == list(halflife["columns"]["val_loss"])
    assert "beta2" not in trial(dict(config, optimizer="sgd"), 4)["attrs"]  # SGD has no beta2 to record


def test_recipe_carries_the_beta2_the_batch_size_trained_with():
    row = dict(batch_size=4, best_lr=1e-3, steps=100.0, steps_hi=120.0, seed_steps=(90.0, 130.0))
    config = make_config(optimizer="adam", beta2_rule="halflife")
    args = shlex.split(recipe(config, row, 0.1))
    beta2 = float(args[args.index("--beta2") + 1])
    assert beta2 == pytest.approx(0.999 ** (4 / 32), abs=1e-12)
    assert "--beta2" not in recipe(make_config(), row, 0.1)  # SGD: nothing to carry
    fixed = shlex.split(recipe(make_config(optimizer="adam"), row, 0.1))
    assert fixed[fixed.index("--beta2") + 1] == "0.999"


def test_train_takes_the_beta2_rule_and_records_it(tmp_path):
    base = ["train", "--hidden", "8", "--optimizer", "adam", "--lr", "0.003", "--batch-size", "10", "--steps", "30"]
    result = minigrad(*base, "--beta2-rule", "halflife", "--beta2-halflife", "1000", "--out", "r.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    attrs = store.open(tmp_path / "r.h5").runs["run"].attrs
    assert attrs["beta2"] == pytest.approx(0.5 ** (10 / 1000)) and attrs["beta2_halflife"] == pytest.approx(1000)
    # from the reference batch size when no half-life is given
    result = minigrad(*base, "--beta2-rule", "halflife", "--beta2", "0.99", "--reference-batch-size", "20",
                      "--out", "ref.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert store.open(tmp_path / "ref.h5").runs["run"].attrs["beta2"] == pytest.approx(0.99 ** 0.5)
    bad = minigrad(*base, "--beta2", "1.5", "--out", "bad.h5", cwd=tmp_path)
    assert one_error_line(bad) and "--beta2" in bad.stderr and not (tmp_path / "bad.h5").exists()
