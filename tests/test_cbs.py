"""`minigrad experiment cbs`: branches share their seed's prefix bit for bit and switch B at the checkpoint; CBS is
the largest multiple whose progress stays within the tolerance; the verdict rests on bootstrap intervals."""
import math

import numpy as np
import pytest

import minigrad.experiments as E
from minigrad import store
from minigrad.experiments import cbs
from minigrad.experiments import verdict as V
from tests.test_experiments import TINY_DATA, check_file


def test_cbs_is_the_largest_multiple_within_the_tolerance_and_every_smaller_one_too():
    ks = [1, 2, 4, 8]
    progress = np.array([[[1.0, 0.95, 0.92, 0.5], [1.0, 0.5, 0.99, 0.99]]])  # (seed, checkpoint, k)
    assert list(cbs.cbs_of(progress, ks, 16, 0.1)) == [64, 16]  # 0.5 at k = 2 stops the second, though 4 and 8 pass
    assert list(cbs.cbs_of(progress, ks, 16, 0.6)) == [128, 128]
    # negative control: no tolerance, nothing but the base branch counts
    assert list(cbs.cbs_of(progress, ks, 16, 0.0)) == [16, 16]


def test_branch_specs_switch_at_the_checkpoint_step():
    config = E.make_config("cbs", quick=True, **TINY_DATA)
    specs = cbs.branch_specs(config, 800)
    n_rates = 1 + 2 * (len(config["multipliers"]) - 1)
    assert len(specs) == config["seeds"] * len(config["at_epochs"]) * n_rates
    s = next(x for x in specs if x.run_id.startswith("c1-k4-") and x.seed == 0)
    n_c = round(config["at_epochs"][1] * 800 / 32)
    assert s.batch_schedule["stages"].endswith(f"@step={n_c}") and s.batch_schedule["stages"].startswith("32:")
    assert s.steps == n_c + math.ceil(config["branch_epochs"] * 800 / 128)


@pytest.mark.slow
def test_cbs_experiment_end_to_end(tmp_path):
    out = tmp_path / "cbs.h5"
    config = E.make_config("cbs", quick=True, **TINY_DATA, seeds=2, at_epochs=[0.25, 1.0, 2.0],
                           multipliers=[1, 2, 4])
    outcome = E.run("cbs", config, out, workers=2, echo=lambda *a: None)
    saved = check_file(out, "cbs", outcome)
    runs = saved.runs
    # a branch is its seed's base run up to the checkpoint: the same evaluations there, bit for bit
    base, branch = runs["c1-k1-lr0.1-s0"].trace, runs["c1-k4-lr0.4-s0"].trace
    n_c = runs["c1-k4-lr0.4-s0"].attrs["stage_starts"][1]
    before = (base["step"] <= n_c)
    shared = np.intersect1d(base["step"][before], branch["step"][branch["step"] <= n_c])
    assert len(shared) > 3
    for step in shared:
        assert base["val_loss"][base["step"] == step] == branch["val_loss"][branch["step"] == step]
    assert set(np.unique(branch["batch_size"][branch["step"] > n_c])) == {128}
    other = runs["c1-k4-lr0.4-s1"].trace  # negative control: another seed's prefix is another run
    step = shared[-1]
    assert other["val_loss"][other["step"] == step] != base["val_loss"][base["step"] == step]
    s = outcome.summary
    assert s["outcome"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.INCONCLUSIVE)
    for p in s["points"]:
        assert p["cbs"] in (32, 64, 128) and p["cbs_lo"] <= p["cbs"] <= p["cbs_hi"]
    again = E.run("cbs", config, out, workers=2, echo=lambda *a: None)  # resumes: nothing more to train
    assert again.verdict == outcome.verdict and set(store.open(out).runs) == set(runs)
