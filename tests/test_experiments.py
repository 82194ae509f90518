"""The experiments end to end on tiny settings: the HDF5 file, the verdict, the figures, resuming, the CLI."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

import minigrad.experiments as E
from minigrad.experiments import verdict as V
from minigrad.experiments.stratified import steps_to
from minigrad import store

TINY_DATA = {"data_options": {"n_train": 1200, "n_val": 400, "n_test": 400}, "hidden": [16]}


def tiny(name, **extra):
    return E.make_config(name, quick=True, **{**TINY_DATA, **extra})


def check_file(path, name, outcome):
    saved = store.open(path)
    assert saved.kind == f"experiment/{name}"
    assert saved.config["experiment"] == name and saved.attrs["verdict"] == outcome.verdict
    assert outcome.verdict and all(isinstance(line, str) and line for line in outcome.verdict)
    for fig in outcome.figures:
        assert fig.exists() and fig.stat().st_size > 1000
    return saved


def test_config_rejects_unknown_settings_and_names():
    with pytest.raises(ValueError, match="unknown keskar setting"):
        E.make_config("keskar", epochz=3)
    with pytest.raises(ValueError, match="unknown experiment"):
        E.make_config("hoffer")
    with pytest.raises(ValueError, match=r"seeds must be an integer in \[1, 1000\]"):
        E.make_config("smith", seeds=0)
    assert E.make_config("smith", quick=True)["epochs"] < E.make_config("smith")["epochs"]


def test_noise_experiment(tmp_path):
    out = tmp_path / "noise.h5"
    config = tiny("noise", at_epochs=[0.0, 2.0], batch_sizes=[1, 4, 16, 64, 256], draws=4, min_examples=400)
    outcome = E.run("noise", config, out, echo=lambda *a: None)
    saved = check_file(out, "noise", outcome)
    assert set(saved.runs) == {"noise-e0", "noise-e2"}
    t = saved.runs["noise-e2"].trace
    assert list(t["batch_size"]) == [1, 4, 16, 64, 256] and np.all(t["step_time_s"] > 0)
    for run_id in ("noise-e0", "noise-e2"):
        s = outcome.summary[run_id]
        assert -0.65 < s["spread_slope"] < -0.35
        assert s["fit_slope"] == pytest.approx(s["pred_slope"], rel=0.3)
        # judged by z against the fit's standard error: the exact line lies within a few SEs
        assert abs(s["fit_slope"] - s["pred_slope"]) < 4 * s["fit_slope_se"]
        assert [t["outcome"] for t in s["tests"]] != [] and all(t["lo"] < t["hi"] for t in s["tests"])
    assert outcome.summary["outcome"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.INCONCLUSIVE)


def test_keskar_experiment_and_resume(tmp_path):
    out = tmp_path / "keskar.h5"
    config = tiny("keskar", epochs=2.0, seeds=1, small_batch=16, between=[40], retune_factors=[4.0],
                  curvature_examples=300, power_iters=15, interpolation_points=7)
    outcome = E.run("keskar", config, out, workers=1, echo=lambda *a: None)
    saved = check_file(out, "keskar", outcome)
    assert {"fixed-B00016-s0", "fixed-B00040-s0", "fixed-B00120-s0", "retune-B00120-x4-s0",
            "matched-B00016-s0", "interpolation"} <= set(saved.runs)
    a = saved.runs["fixed-B00120-s0"].attrs
    assert a["lambda_max"] > 0 and a["hvp_check"] < 1e-6 and a["sharpness_0.001"] >= 0
    assert "params" in saved.runs["fixed-B00016-s0"].arrays
    line = saved.runs["interpolation"].trace
    assert len(line["alpha"]) == 7 and line["alpha"][0] == -1 and line["alpha"][-1] == 2
    # alpha = 0 and 1 are the two trained models
    assert line["train_error"][2] == pytest.approx(saved.runs["fixed-B00016-s0"].attrs["train_error"], abs=1e-6)
    assert line["train_error"][4] == pytest.approx(a["train_error"], abs=1e-6)
    s = outcome.summary
    assert s["gap_fixed"] == pytest.approx(s["large_fixed"]["test_error"] - s["small"]["test_error"])
    assert [r["batch_size"] for r in s["lambda_curve"]] == [16, 40, 120]
    # the small batch at matched training loss is its own run cut where its loss reached the large batch's
    matched = saved.runs["matched-B00016-s0"].attrs
    assert matched["steps"] < saved.runs["fixed-B00016-s0"].attrs["steps"] and matched["lambda_max"] > 0
    claims = [t["claim"] for t in s["tests"]]
    assert any("matched training loss" in c for c in claims) and any("fixed budget" in c for c in claims)
    assert not any("HVP agree" in line for line in outcome.verdict)
    # a rerun of the same configuration resumes: nothing is trained again, the verdict is the same
    messages = []
    again = E.run("keskar", config, out, workers=1, echo=messages.append)
    assert again.verdict == outcome.verdict and "already stored" in messages[0]
    with pytest.raises(ValueError, match="different configuration"):
        E.run("keskar", {**config, "epochs": 3.0}, out, workers=1, echo=lambda *a: None)


def test_smith_experiment_with_worker_processes(tmp_path):
    out = tmp_path / "smith.h5"
    config = tiny("smith", epochs=3.0, milestones=[1.0, 2.0], factor=4, seeds=2, batch_size=16)
    outcome = E.run("smith", config, out, workers=2, echo=lambda *a: None)
    saved = check_file(out, "smith", outcome)
    assert len(saved.runs) == 6
    steps = {r.attrs["tag"]: r.attrs["steps"] for r in saved.runs.values() if r.attrs["seed"] == 0}
    # 3 epochs of 75 steps at B=16; growing: 1 epoch at 16, then 64, then 256 (about 75 + 19 + 5 steps)
    assert steps["decay"] == steps["constant"] == 3 * 75 and 75 + 18 <= steps["grow"] <= 75 + 19 + 5
    grow = saved.runs["grow-s0"].trace
    assert set(np.unique(grow["batch_size"])) == {16, 64, 256}
    s = outcome.summary
    assert s["update_ratio"] == pytest.approx(225 / steps["grow"])
    assert math.isfinite(s["seed_to_seed"]) and s["decay_vs_constant"] > 0
    # the verdict is a test with its numbers: statistic, interval, seeds, one of three outcomes
    assert s["outcome"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.INCONCLUSIVE)
    assert [t["seeds"] for t in s["tests"]] == [2, 2] and all(math.isfinite(t["value"]) for t in s["tests"])
    assert any("within-schedule seed-to-seed" in line and "2 seeds" in line for line in outcome.verdict)


def test_stratified_experiment(tmp_path):
    out = tmp_path / "stratified.h5"
    config = tiny("stratified", batch_sizes=[16, 32], seeds=3, epochs=3.0, resamples=300)
    outcome = E.run("stratified", config, out, workers=1, echo=lambda *a: None)
    saved = check_file(out, "stratified", outcome)
    assert {r.attrs["sampler"] for r in saved.runs.values()} == {"shuffle", "stratified"}
    s = outcome.summary
    assert s["intervals"] == 4 and s["level"] == pytest.approx(0.975)
    for B, cell in s["batch_sizes"].items():
        assert len(cell["shuffle"]) == 3 and all(math.isfinite(v) for v in cell["shuffle"] + cell["stratified"])
        assert cell["steps_ratio"] == pytest.approx(np.median(cell["stratified"]) / np.median(cell["shuffle"]))
        assert cell["spread_ratio"] == pytest.approx(cell["cv_stratified"] / cell["cv_shuffle"])
        assert cell["steps_lo"] <= cell["steps_ratio"] <= cell["steps_hi"]
    # every verdict line is a test with its numbers: 2 statistics x 2 batch sizes, 3 seeds, the simultaneous level
    assert len(s["tests"]) == 4 and all(t["seeds"] == 3 for t in s["tests"])
    lines = [line for line in outcome.verdict if "97.5% bootstrap" in line]
    assert len(lines) == 4 and all("within [0.909, 1.1]" in line for line in lines)
    assert s["outcome"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.INCONCLUSIVE) and s["outcome"] in outcome.verdict[-1]
    # resumed from the file alone: the same verdict
    again = E.run("stratified", config, out, workers=1, echo=lambda *a: None)
    assert again.verdict == outcome.verdict


def test_steps_to_target_reads_the_first_evaluation_at_or_below_it():
    trace = {"step": np.array([1, 2, 5, 9]), "val_error": np.array([0.5, 0.3, 0.2, 0.25])}
    assert steps_to(trace, 0.3) == 2 and steps_to(trace, 0.2) == 5 and steps_to(trace, 0.1) == math.inf


def test_momentum_experiment(tmp_path):
    out = tmp_path / "momentum.h5"
    config = tiny("momentum", batch_sizes=[16, 128], seeds=2, reference_epochs=2.0, resamples=200)
    outcome = E.run("momentum", config, out, workers=1, echo=lambda *a: None)
    saved = check_file(out, "momentum", outcome)
    tune = [r.attrs for r in saved.runs.values() if r.attrs["tag"] in ("sgd", "momentum")]
    # momentum per trial: plain SGD records 0, the heavy-ball runs the grid's value; effective rates match
    assert {a["momentum"] for a in tune} == {0.0, 0.9}
    assert all(a["status"] != "DIVERGED" or a["lr"] > 0 for a in tune)
    s = outcome.summary
    for row in s["per_batch"].values():
        assert row["ratio"] == pytest.approx(row["S_mom"] / row["S_sgd"])
        assert row["ratio_lo"] <= row["ratio"] <= row["ratio_hi"] or math.isnan(row["ratio_lo"])
    assert s["outcome"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.INCONCLUSIVE) and len(s["tests"]) == 2


@pytest.mark.slow
def test_gns_experiment_against_a_small_study(tmp_path):
    from minigrad.study import config as study
    from minigrad.study import sweep
    from minigrad.study.executors import LocalExecutor

    study_path = tmp_path / "study.h5"
    sconf = study.make_config(quick=True, **TINY_DATA, batch_sizes=[4, 16, 64], seeds=1, reference_lrs=[0.1, 0.3],
                              reference_epochs=4.0, lr_points=2, max_widen=1, budget_factor=2.0, equal_epochs=0.1,
                              target_margin=0.04)
    sweep.run_study(sconf, study_path, executor=LocalExecutor(2), echo=lambda *a: None, measure_throughput=False)
    # the study's tuning trials carry the noise columns, and the report shows B_simple beside B_crit
    tune = [r for r in store.open(study_path).runs.values() if r.attrs["phase"] == "tune"]
    assert tune and all("gns_b_simple" in r.trace for r in tune)
    out = tmp_path / "gns.h5"
    config = E.make_config("gns", quick=True, study=str(study_path), checkpoints=5)
    outcome = E.run("gns", config, out, echo=lambda *a: None)
    saved = check_file(out, "gns", outcome)
    t = saved.runs["gns-run"].trace
    full = np.isfinite(t["full_b_simple"])
    assert 4 <= full.sum() <= 6 and t["at_target"].sum() == 1
    assert outcome.summary["B_crit"] > 0 and outcome.summary["b_simple_bench"] > 0
    # trained past the target; the two-batch pooled estimate is recorded at every evaluation
    assert t["step"][-1] > t["step"][np.flatnonzero(t["at_target"])[0]] and np.isfinite(t["tb_b_simple"]).any()
    assert outcome.summary["trend"]["n"] >= 4 and any("Spearman" in line for line in outcome.verdict)
    with pytest.raises(ValueError, match="not found"):
        E.run("gns", E.make_config("gns", study=str(tmp_path / "none.h5")), tmp_path / "g2.h5", echo=print)


def test_cli_runs_an_experiment_and_reports_user_errors(tmp_path, monkeypatch):
    from minigrad.cli import main

    monkeypatch.setitem(E.QUICK, "stratified", {**E.QUICK["stratified"], **TINY_DATA, "seeds": 2, "epochs": 1.0,
                                                      "batch_sizes": [32]})
    out = tmp_path / "s.h5"
    result = CliRunner().invoke(main, ["experiment", "stratified", "--quick", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "stratified verdict:" in result.output and "figure:" in result.output and out.exists()
    result = CliRunner().invoke(main, ["experiment", "gns", "--study", str(tmp_path / "missing.h5"),
                                       "--out", str(tmp_path / "g.h5")])
    assert result.exit_code == 2 and "no such study file" in result.output
    result = CliRunner().invoke(main, ["experiment", "gns", "--study", str(out), "--data", "digits",
                                       "--out", str(tmp_path / "g2.h5")])
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(main, ["experiment", "momentum", "--help"])
    assert result.exit_code == 0 and "--batch-sizes" in result.output and "expectation 8" in result.output
