"""adam-batch, lr-surge and data-vs-width: end to end on tiny settings (HDF5 file, figure, resume), and their verdict
logic on synthetic numbers with planted effects, each with a control that must not pass."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

import minigrad.experiments as E
from minigrad.experiments import adam_batch, data_vs_width, grids, lr_surge
from minigrad.experiments import verdict as V
from minigrad import store

from tests.test_experiments import TINY_DATA, check_file


def tiny(name, **extra):
    return E.make_config(name, quick=True, **{**TINY_DATA, "reference_epochs": 2.0, "resamples": 100, **extra})


def quiet(*args):
    pass


# ------------------------------------------------------------------------------------------- synthetic cells
def parabola_cell(best_steps, curvature, lrs=(0.25, 0.5, 1.0, 2.0, 4.0), seeds=4, noise=0.01, seed=0):
    """{lr: [steps per seed]}: log steps = log best + curvature (log2 lr)^2, times a little seed noise."""
    rng = np.random.default_rng(seed)
    return {lr: list(best_steps * np.exp(curvature * math.log2(lr) ** 2) * np.exp(rng.normal(0, noise, seeds)))
            for lr in lrs}


def adam_cells(basin_small, basin_large, gap_small, gap_large, efficiency=1.0):
    """Cells for Bs = [4, 1024]: the half-life arm's curvature at each B, S_sgd / S_adam at each B."""
    cells = {}
    for j, (B, curv, gap) in enumerate(((4, basin_small, gap_small), (1024, basin_large, gap_large))):
        S = 1000.0 * efficiency if B == 4 else 4.0  # E(4) = 4000 x efficiency, E(1024) = 4096
        cells["adam-halflife", B] = parabola_cell(S, curv, seed=j)
        cells["adam-fixed", B] = parabola_cell(S, curv, seed=j + 10)
        cells["sgd", B] = parabola_cell(S * gap, 0.3, seed=j + 20)
    return cells


def no_divergence(cells):
    return {k: {lr: [False] * len(v) for lr, v in c.items()} for k, c in cells.items()}


CONFIG = dict(seeds=4, resamples=300, basin_tolerance=0.1, same_margin=1.25)


def test_adam_batch_verdicts_follow_planted_effects():
    good = adam_cells(basin_small=0.02, basin_large=0.5, gap_small=1.0, gap_large=3.0)
    t = adam_batch.judge(CONFIG, good, no_divergence(good), [4, 1024])
    assert [t[k].outcome for k in ("stable", "efficient", "basin", "gap")] == [V.REPRODUCED] * 4
    # the opposite effects: not reproduced
    bad = adam_cells(basin_small=0.5, basin_large=0.02, gap_small=3.0, gap_large=1.0, efficiency=2.0)
    diverged = no_divergence(bad)
    diverged["adam-halflife", 4] = {lr: [True] * len(v) for lr, v in bad["adam-halflife", 4].items()}
    t = adam_batch.judge(CONFIG, bad, diverged, [4, 1024])
    assert [t[k].outcome for k in ("stable", "efficient", "basin", "gap")] == [V.NOT_REPRODUCED] * 4
    # no effect, within the noise: the basin and gap tests cannot tell
    same = adam_cells(basin_small=0.1, basin_large=0.1, gap_small=2.0, gap_large=2.0)
    for k, c in same.items():  # more seed noise, so that equal effects leave intervals around 1
        same[k] = {lr: list(np.asarray(v) * np.exp(np.random.default_rng(len(k[0]) + k[1]).normal(0, 0.1, len(v))))
                   for lr, v in c.items()}
    t = adam_batch.judge(CONFIG, same, no_divergence(same), [4, 1024])
    assert t["basin"].outcome == V.INCONCLUSIVE and t["gap"].outcome == V.INCONCLUSIVE
    # the planted effects again, but SGD's best rate at B=4 on its grid's edge: its S is a bound, so no verdict
    edge = dict(good)
    edge["sgd", 4] = {lr: list(np.asarray(v) * lr ** 2) for lr, v in good["sgd", 4].items()}  # fewest at the least
    t = adam_batch.judge(CONFIG, edge, no_divergence(edge), [4, 1024])
    assert t["gap"].outcome == V.INCONCLUSIVE and "grid's edge" in t["gap"].line()
    assert t["efficient"].outcome == V.REPRODUCED  # control: the tests that do not rest on that cell still judge


def test_basin_width_reads_the_parabola_and_refuses_an_edge():
    cell = {lr: [math.exp(0.1 * math.log(lr) ** 2)] for lr in (0.5, 1.0, 2.0)}
    # log steps = 0.1 (log lr)^2 is within log(1.1) of its minimum for |log lr| < sqrt(log(1.1)/0.1)
    assert adam_batch.basin(cell, 0.1) == pytest.approx(math.exp(2 * math.sqrt(math.log(1.1) / 0.1)))
    assert math.isnan(adam_batch.basin({lr: [1 / lr] for lr in (0.5, 1.0, 2.0)}, 0.1))  # best on the edge
    missed = {0.5: [math.inf], 1.0: [1.0], 2.0: [2.0]}
    assert math.isnan(adam_batch.basin(missed, 0.1))


def test_lr_surge_peak_is_the_vertex_and_an_edge_is_no_peak():
    Bs = [8, 64, 512, 4096]
    B, edge = lr_surge.peak(Bs, [math.exp(-(math.log(b) - math.log(300)) ** 2 / 8) for b in Bs])
    assert not edge and B == pytest.approx(300, rel=0.3)
    assert lr_surge.peak(Bs, [1, 2, 3, 4]) == (4096, True)


def surge_stats(adam_lrs, sgd_lrs, Bs, adam_on_edge=False, peak_ratio=(1.0, 1.0, 1.0)):
    def stat(lrs):
        lrs = np.asarray(lrs, float)
        mid = len(Bs) // 2
        return dict(rise=(lrs[mid] / lrs[0],) * 3, fall=(lrs[-1] / lrs.max(),) * 3,
                    upper_slope=(math.log(lrs[-1] / lrs[mid]) / math.log(Bs[-1] / Bs[mid]),) * 3,
                    peak=(float(Bs[int(np.argmax(lrs))]),) * 3, on_edge=adam_on_edge)
    return {("sgd", "strict"): stat(sgd_lrs), ("adam", "strict"): stat(adam_lrs), ("adam", "loose"): stat(adam_lrs),
            ("adam", "peak_ratio"): peak_ratio}


def test_lr_surge_verdicts_follow_planted_shapes():
    config = dict(seeds=3, fall_margin=1.25, peak_range=3.0, saturated_slope=0.5)
    Bs = [8, 64, 512, 4096]
    surge = surge_stats([1, 4, 8, 2], [1, 8, 12, 13], Bs, peak_ratio=(2.0, 1.5, 3.0))
    t = lr_surge.judge(config, Bs, surge, (512.0, 400.0, 600.0))
    assert all(v.outcome == V.REPRODUCED for v in t.values()), [v.line() for v in t.values()]
    # negative controls: Adam's rate rising to the last B (no peak: where it lies is unresolved), SGD's still
    # rising linearly, a loose target's peak to the right of the strict one's
    flat = surge_stats([1, 8, 64, 512], [1, 8, 64, 512], Bs, adam_on_edge=True, peak_ratio=(0.5, 0.3, 0.8))
    t = lr_surge.judge(config, Bs, flat, (512.0, 400.0, 600.0))
    assert t["adam_falls"].outcome == V.NOT_REPRODUCED and t["sgd_saturates"].outcome == V.NOT_REPRODUCED
    assert t["peak_near_b_simple"].outcome == V.INCONCLUSIVE
    assert t["stricter_moves_right"].outcome == V.NOT_REPRODUCED
    far = lr_surge.judge(config, Bs, surge, (20.0, 15.0, 30.0))  # the peak 25x past B_simple
    assert far["peak_near_b_simple"].outcome == V.NOT_REPRODUCED
    # a tuned rate still on its grid's edge is a bound, not a measurement: every test on that arm is inconclusive
    surge["adam", "strict"]["grid_edge"] = [False, False, True, False]
    t = lr_surge.judge(config, Bs, surge, (512.0, 400.0, 600.0))
    assert all(t[k].outcome == V.INCONCLUSIVE for k in ("adam_falls", "peak_near_b_simple", "stricter_moves_right"))
    assert t["sgd_rises"].outcome == V.REPRODUCED and "grid's edge" in t["adam_falls"].line()


def steps_cells(b_crit, s_min=100.0, Bs=(4, 16, 64, 256, 1024), seeds=3, noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    return {B: {0.1: list((s_min + b_crit * s_min / B) * np.exp(rng.normal(0, noise, seeds)))} for B in Bs}


def test_data_vs_width_recovers_a_planted_b_crit_and_judges_ratios():
    value, draws, _ = data_vs_width.critical(steps_cells(50.0), 400, seed=0)
    assert value == pytest.approx(50, rel=0.1) and np.nanmedian(draws) == pytest.approx(50, rel=0.15)
    config = dict(seeds=3, move_margin=1.5)
    crit = {name: data_vs_width.critical(steps_cells(b, seed=i), 400, seed=i)[:2]
            for i, (name, b) in enumerate({"w16": 50.0, "w256": 52.0, "n1": 20.0, "n8": 80.0}.items())}
    t = data_vs_width.judge(config, crit, crit, ["w16", "w256"], ["n1", "n8"])
    assert t["width"].outcome == V.REPRODUCED and t["data"].outcome == V.REPRODUCED
    # negative controls: B_crit 4x wider with width, and falling with data
    crit = {"w16": crit["n1"], "w256": crit["n8"], "n1": crit["n8"], "n8": crit["n1"]}
    t = data_vs_width.judge(config, crit, crit, ["w16", "w256"], ["n1", "n8"])
    assert t["width"].outcome == V.NOT_REPRODUCED and t["data"].outcome == V.NOT_REPRODUCED


def test_grid_widens_towards_the_side_of_the_best_rate():
    config = dict(lr_grid=[-1, 0, 1], lr_step=2.0, seeds=1, max_widen=1)
    arm = {"sgd": dict(optimizer="sgd", centre=lambda B: 0.1)}

    def fake(k, steps):  # a stored run whose trace first reaches the target at `steps`
        spec = grids.spec(config, "sgd", arm["sgd"], 8, k, 0, 0.1, 100)
        trace = {"step": np.array([steps]), "val_error": np.array([0.05])}
        return SimpleNamespace(run_id=spec.run_id, attrs=dict(vars(spec), status="COMPLETE"), trace=trace)

    saved = SimpleNamespace(runs={r.run_id: r for r in (fake(-1, 300), fake(0, 200), fake(1, 100))})
    ks = sorted(s.lr_factor for s in grids.plan(config, arm, [8], saved, 0.1, lambda B: 100))
    assert ks == [0.5, 1.0, 2.0, 4.0]  # the best (largest) rate got a neighbour above it
    saved = SimpleNamespace(runs={r.run_id: r for r in (fake(-1, 300), fake(0, 100), fake(1, 200))})
    ks = sorted(s.lr_factor for s in grids.plan(config, arm, [8], saved, 0.1, lambda B: 100))
    assert ks == [0.5, 1.0, 2.0]  # control: an interior best widens nothing


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_adam_batch_end_to_end_and_resume(tmp_path):
    out = tmp_path / "adam.h5"
    config = tiny("adam-batch", batch_sizes=[16, 128, 1024], max_widen=0)
    outcome = E.run("adam-batch", config, out, workers=1, echo=quiet)
    saved = check_file(out, "adam-batch", outcome)
    a = saved.runs["adam-halflife-B00016-k+0-s0"].attrs
    assert a["beta2"] == pytest.approx(0.5 ** (16 / outcome.summary["t_half"])) and a["beta2_rule"] == "halflife"
    assert saved.runs["adam-fixed-B00016-k+0-s0"].attrs["beta2"] == 0.999
    assert set(outcome.summary["outcome"]) == {"stable", "efficient", "basin", "gap", "small_b"}
    assert len(outcome.figures) == 1
    n = len(saved.runs)
    lines = []
    again = E.run("adam-batch", config, out, workers=1, echo=lines.append)
    assert f"{n} runs already stored" in lines[0] and again.verdict == outcome.verdict
    assert len(store.open(out).runs) == n


@pytest.mark.slow
def test_lr_surge_and_data_vs_width_end_to_end(tmp_path):
    out = tmp_path / "surge.h5"
    outcome = E.run("lr-surge", tiny("lr-surge", batch_sizes=[8, 64, 512], max_widen=0), out, workers=1, echo=quiet)
    saved = check_file(out, "lr-surge", outcome)
    assert "gns_g2" in saved.runs["adam-B00008-k+0-s0"].trace  # B_simple from the same trials
    assert len(outcome.summary["tests"]) == 6 and math.isfinite(outcome.summary["b_simple"][0])
    out = tmp_path / "dvw.h5"
    config = tiny("data-vs-width", widths=[8, 32], width=8, data_fractions=[0.5, 1.0], batch_sizes=[4, 32, 256],
                  max_widen=0)
    outcome = E.run("data-vs-width", config, out, workers=1, echo=quiet)
    saved = check_file(out, "data-vs-width", outcome)
    v = outcome.summary["variants"]
    assert set(v) == {"w8-n1200", "w32-n1200", "w8-n600"} and set(v["w8-n1200"]) >= {"width_sweep", "data_sweep"}
    sweep = outcome.summary["sweeps"]["width"]  # one target for the sweep: the loosest of its variants' own
    assert sweep["target"] == max(v[k]["width_sweep"]["own"]["target"] for k in sweep["variants"])
    t = saved.runs["w8-n600-sgd-B00004-k+0-s0"].trace  # trained on the first 600 examples: epoch = examples / 600
    assert t["epoch"][-1] * 600 == pytest.approx(t["examples"][-1])
    assert set(outcome.summary["outcome"]) == {"width", "data"}


def test_cli_refuses_bad_settings_before_any_file(tmp_path):
    from click.testing import CliRunner

    from minigrad.cli import main

    for args, needle in ((["lr-surge", "--seeds", "0"], "seeds"),
                         (["lr-surge", "--batch-sizes", "8,64"], "needs 3 batch sizes"),
                         (["data-vs-width", "--data-fractions", "0.001", "--data", "digits"], "needs 3 batch sizes"),
                         (["adam-batch", "--adam-lr", "-1"], "adam lr")):
        out = tmp_path / "x.h5"
        result = CliRunner().invoke(main, ["experiment", *args, "--out", str(out)])
        assert result.exit_code == 2 and needle in result.output, result.output
        assert not out.exists()
    result = CliRunner().invoke(main, ["experiment", "adam-batch", "--help"])
    assert result.exit_code == 0 and "half-life" in result.output  # control: the command itself is there
