"""Answers that travel: `report --retime` and `--step-times FILE` add step-time tables to a real study file without
touching its trials or its own table, and every output shows each table's answer; bad step-times files are refused
with exit 2 and nothing written."""
import json
import shutil

import h5py
import pytest
from click.testing import CliRunner

import minigrad
from minigrad.cli import main as cli
from minigrad.study.executors import InlineExecutor

SETTINGS = dict(data_options={"n_train": 1200, "n_val": 400, "n_test": 400}, hidden=[16], batch_sizes=[8, 64],
                reference_lrs=[0.1, 0.3], seeds=2, lr_points=2, max_widen=1, reference_epochs=40.0,
                equal_epochs=1.0, adaptive_budget=0)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("retime") / "study.h5"
    minigrad.run_study(minigrad.make_config(**SETTINGS), out, executor=InlineExecutor(), echo=lambda *a: None)
    return out


@pytest.fixture
def study(made, tmp_path):
    path = tmp_path / "study.h5"
    shutil.copyfile(made, path)
    return path


def stored(path):
    """Every dataset and attribute under /runs and /throughput, as raw bytes: what a retime must not change."""
    out = {}
    with h5py.File(path, "r") as f:
        for top in ("runs", "throughput"):
            def visit(name, obj, top=top):
                key = f"{top}/{name}"
                if isinstance(obj, h5py.Dataset):
                    data = obj[()]
                    out[key] = (str(obj.dtype), repr(data.tolist()) if data.dtype == object else data.tobytes())
                out[key + "@"] = {k: repr(v) for k, v in obj.attrs.items()}
            f[top].visititems(visit)
    return out


def test_the_comparison_sees_a_changed_trial(study, tmp_path):
    """Negative control for the bit-identity check: one changed value in one trace is seen."""
    changed = tmp_path / "changed.h5"
    shutil.copyfile(study, changed)
    with h5py.File(changed, "a") as f:
        run = next(iter(f["runs"].values()))
        run["val_error"][0] += 1e-7
    assert stored(changed) != stored(study)


def test_retime_adds_a_table_and_keeps_every_trial_bit_identical(study):
    before = stored(study)
    result = CliRunner().invoke(cli, ["report", str(study), "--retime", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert stored(study) == before
    file = minigrad.open_study(study).file
    assert len(file.step_times) == 1
    (name, table), = file.step_times.items()
    assert {"host", "cpu", "blas", "threads", "measured"} <= set(table["attrs"]) and table["attrs"]["threads"] == "1"
    assert sorted(r["batch_size"] for r in table["rows"]) == [8, 32, 64]  # and the reference B, so the cost counts every trial
    assert all(r["step_time_s"] > 0 and r["threads"] == 1 for r in table["rows"])
    answer = json.loads(result.output[result.output.index("{"):])
    others = answer["other_answers"]
    assert [o["name"] for o in others] == ["study", name]
    assert "the study's own" in others[0]["source"] and table["attrs"]["host"] in others[1]["source"]
    for o in others:
        assert o["pick"] in o["tied"] and [r["batch_size"] for r in o["rows"]] == [8, 64]
        for r in o["rows"]:
            lo, hi = r["time_interval_s"]
            assert lo <= r["time_to_target_s"] <= hi
    # the same convergence: steps to target are the study's, the times are the new table's
    assert [r["steps_to_target"] for r in others[1]["rows"]] == [r["steps_to_target"] for r in answer["rows"]]
    t = {r["batch_size"]: r["step_time_s"] for r in table["rows"]}
    assert [r["step_time_s"] for r in others[1]["rows"]] == [t[8], t[64]]


def test_a_file_with_two_tables_reports_both_everywhere(study, tmp_path):
    api = minigrad.open_study(study).retime(threads=[1], echo=lambda *a: None)
    times = tmp_path / "gpu.csv"
    times.write_text("batch_size,step_time_s\n8,0.5\n8,0.6\n64,0.001\n")
    result = CliRunner().invoke(cli, ["report", str(api.path), "--step-times", str(times), "--html"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    file = minigrad.open_study(study).file
    assert len(file.step_times) == 2 and "file-gpu" in file.step_times
    # terminal: one column per table, each named under it with where it came from
    assert "[0] study" in result.output and "] file-gpu" in result.output
    assert all(f"] {name}" in result.output for name in file.step_times)
    assert "file gpu.csv" in result.output
    # a GPU whose large batches are cheap picks B = 64 whatever the study's own times say
    answer = minigrad.open_study(study).answer()
    gpu = next(o for o in answer.others if o["name"] == "file-gpu")
    assert gpu["pick"] == 64 and gpu["tied"] == [64]
    html = study.with_suffix(".html").read_text()
    assert "other-answers" in html and "file-gpu" in html and html.count("gpu.csv") >= 1
    assert len(answer.to_dict()["other_answers"]) == 3


def test_a_study_without_other_tables_shows_no_side_by_side(study):
    answer = minigrad.open_study(study).answer()
    assert answer.others == [] and answer.to_dict()["other_answers"] == []
    result = CliRunner().invoke(cli, ["report", str(study)], terminal_width=200)
    assert result.exit_code == 0 and "for each step-time table" not in result.output


BAD = {
    "missing.csv": ("batch_size,step_time_s\n8,0.001\n", "no step time for batch size(s) 64"),
    "nan.csv": ("batch_size,step_time_s\n8,nan\n64,0.001\n", "not a positive, finite number"),
    "zero.csv": ("batch_size,step_time_s\n8,0\n64,0.001\n", "not a positive, finite number"),
    "negative.json": ('{"step_times": {"8": -1, "64": 0.001}}', "not a positive, finite number"),
    "header.csv": ("B,seconds\n8,0.001\n64,0.001\n", "lacks batch_size and step_time_s"),
    "broken.json": ('{"step_times": {"8": 0.001,', "not valid JSON"),
    "batch.csv": ("batch_size,step_time_s\n8.5,0.001\n64,0.001\n", "is not a positive integer"),
    "empty.csv": ("batch_size,step_time_s\n", "no step times in it"),
    "wrong.json": ('{"times": {}}', 'no "step_times" object'),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_step_times_files_are_refused_and_nothing_is_written(study, tmp_path, name):
    text, message = BAD[name]
    bad = tmp_path / name
    bad.write_text(text)
    before = study.read_bytes()
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", str(bad)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and name in lines[0]
    assert study.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_good_json_step_times_file_is_taken(study, tmp_path):
    """The positive control of the refusals: the same shapes, correct, are stored."""
    good = tmp_path / "good.json"
    good.write_text('{"source": "a GPU", "threads": 4, "step_times": {"8": [0.001, 0.0011], "64": 0.002}}')
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", str(good), "--json"])
    assert result.exit_code == 0, result.output
    table = minigrad.open_study(study).file.step_times["file-good"]
    assert table["attrs"]["source"] == "a GPU"
    rows = {r["batch_size"]: r for r in table["rows"]}
    assert rows[8]["rounds_s"].split() == ["0.001", "0.0011"] and rows[64]["step_time_s"] == 0.002
    assert rows[8]["threads"] == 4


def test_the_recipe_trains_on_the_thread_count_behind_its_step_time(study, tmp_path):
    """The time the answer promises is t(B) on the threads it was timed with, so the recipe says --threads."""
    import shlex

    answer = minigrad.open_study(study).answer()
    pick = next(r for r in answer.rows if r["batch_size"] == answer.pick)
    words = shlex.split(answer.recipe.split("  #")[0])
    assert words[words.index("--threads") + 1] == str(int(pick["threads"]))
    assert f"on {int(pick['threads'])} thread" in answer.sentence
    # a table timed on 2 threads gives a recipe on 2; one that does not say gives none (negative control)
    two = tmp_path / "two.csv"
    two.write_text("batch_size,step_time_s,threads\n8,0.002,2\n64,0.003,2\n")
    unsaid = tmp_path / "unsaid.csv"
    unsaid.write_text("batch_size,step_time_s\n8,0.002\n64,0.003\n")
    for f in (two, unsaid):
        assert CliRunner().invoke(cli, ["report", str(study), "--step-times", str(f), "--json"]).exit_code == 0
    others = {o["name"]: o for o in minigrad.open_study(study).answer().others}
    assert "--threads 2" in others["file-two"]["recipe"]
    assert "--threads" not in others["file-unsaid"]["recipe"] and others["file-unsaid"]["recipe"]


def test_minigrad_train_takes_the_recipe(study, tmp_path):
    """The recipe, --threads included, is a command `minigrad train` runs (a short budget: the words, not the time)."""
    import shlex

    words = shlex.split(minigrad.open_study(study).answer().recipe.split("  #")[0])[2:]
    words[words.index("--steps") + 1] = "20"
    result = CliRunner().invoke(cli, ["train", *words, "--out", str(tmp_path / "run.h5")])
    assert result.exit_code == 0, result.output
    from minigrad import store

    run, = store.open(tmp_path / "run.h5").runs.values()
    assert run.attrs["threads"] == int(words[words.index("--threads") + 1])


def test_the_convergence_half_exports_and_answers_again_from_json(study, tmp_path):
    conv = tmp_path / "conv.json"
    result = CliRunner().invoke(cli, ["export", str(study), "--convergence", str(conv)])
    assert result.exit_code == 0, result.output
    doc = json.loads(conv.read_text())
    assert doc["format"] == "minigrad.convergence" and doc["version"] == 1
    runs = minigrad.open_study(study).file.runs
    tuned = [r for r in runs.values() if r.attrs["phase"] == "tune"]
    cells = {(c["batch_size"], c["lr"]): c for c in doc["convergence"]}
    assert sum(len(c["seeds"]) for c in cells.values()) == len(tuned)
    for r in tuned:
        c = cells[(r.attrs["batch_size"], r.attrs["lr"])]
        i = c["seeds"].index(r.attrs["seed"])
        assert c["status"][i] == r.attrs["status"]
        assert c["steps_to_target"][i] == (r.attrs["steps_to_target"] if r.attrs["status"] == "COMPLETE" else None)
    assert {"S_min", "E_min", "B_crit", "ok"} <= set(doc["fit"])
    # read back, it gives the study's own answer: the same rows, pick, recipe and sentence
    from_h5 = json.loads(CliRunner().invoke(cli, ["report", str(study), "--json"]).output)
    from_json = json.loads(CliRunner().invoke(cli, ["report", str(conv), "--json"]).output)
    for key in ("recommendation", "sentence", "fit", "b_crit", "target"):
        assert from_json[key] == from_h5[key], key
    assert [r["steps_to_target"] for r in from_json["rows"]] == [r["steps_to_target"] for r in from_h5["rows"]]
    # with step times from anywhere, beside the study's own; the JSON file is not written to
    times = tmp_path / "times.csv"
    times.write_text("batch_size,step_time_s\n8,0.5\n64,0.001\n")
    before = conv.read_bytes()
    result = CliRunner().invoke(cli, ["report", str(conv), "--step-times", str(times)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "[1] file-times" in result.output and "figures: none" in result.output
    assert conv.read_bytes() == before


def test_a_damaged_convergence_file_is_refused(study, tmp_path):
    conv = tmp_path / "conv.json"
    assert CliRunner().invoke(cli, ["export", str(study), "--convergence", str(conv)]).exit_code == 0
    doc = json.loads(conv.read_text())
    for name, text, message in (("other.json", json.dumps({"format": "else"}), "not a convergence file"),
                                ("newer.json", json.dumps(dict(doc, version=99)), "newer than"),
                                ("cut.json", json.dumps({k: v for k, v in doc.items() if k != "runs"}), "lacks"),
                                ("broken.json", conv.read_text()[:100], "not a readable JSON")):
        bad = tmp_path / name
        bad.write_text(text)
        result = CliRunner().invoke(cli, ["report", str(bad)])
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1, \
            (name, result.output)
    assert CliRunner().invoke(cli, ["report", str(conv)]).exit_code == 0  # the positive control


def test_step_times_of_a_missing_framework_are_refused_in_one_line(study, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: the missing-framework path cannot be shown")
    before = study.read_bytes()
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", "torch", "--threads", "1"])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert "torch is not installed" in last and "MINIGRAD_COMPARE_PYTHON" in last
    assert [line for line in result.output.splitlines() if "not installed" in line] == [last]  # said once
    assert study.read_bytes() == before
    monkeypatch.setenv("MINIGRAD_COMPARE_PYTHON", "/nonexistent/python")
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", "jax", "--threads", "1"])
    assert result.exit_code == 2 and "cannot run /nonexistent/python" in result.output
    assert study.read_bytes() == before


@pytest.mark.slow
def test_step_times_of_pytorch_answer_beside_the_study(study):
    pytest.importorskip("torch")
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", "torch", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    names = [o["name"] for o in json.loads(result.output[result.output.index("{\n"):])["other_answers"]]
    assert any(n.startswith("torch-eager") for n in names)


def test_the_convergence_export_never_writes_through_a_link(tmp_path):
    """It goes through the one place outputs are made (machine/outputs.py): a link at its name is refused and the
    file it points to kept (negative control: a plain name is written)."""
    import tomllib

    from minigrad.study.config import make_config
    from tests.test_bad_input import SMALL_TOML, _fake_study

    _fake_study(tmp_path / "s.h5", make_config(**tomllib.loads(SMALL_TOML)))
    (tmp_path / "victim.txt").write_text("keep")
    (tmp_path / "conv.json").symlink_to(tmp_path / "victim.txt")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "s.h5"), "--convergence", str(tmp_path / "conv.json")])
    assert result.exit_code == 2 and "link" in result.output and (tmp_path / "victim.txt").read_text() == "keep"
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "s.h5"), "--convergence", str(tmp_path / "c.json")])
    assert result.exit_code == 0 and (tmp_path / "c.json").read_text().startswith("{")


# ------------------------------------------------------------------------------------ what the study's trials cost
def _cost_by_hand(path, times):
    """Sum over the file's runs (read with h5py, not minigrad) of steps run x times[B], for B in times."""
    with h5py.File(path, "r") as f:
        runs = [(int(g.attrs["batch_size"]), int(g.attrs["steps"])) for g in f["runs"].values()]
    return sum(steps * times[B] for B, steps in runs if B in times), sum(B in times for B, _ in runs)


def test_the_study_times_the_reference_batch_size_so_its_cost_counts_every_trial(study):
    own, = minigrad.open_study(study).answer().costs
    with h5py.File(study, "r") as f:
        assert own["trials"] == len(f["runs"]) and not own["left_out"]
        assert 32 in set(f["throughput"]["batch_size"][()]) and 32 not in SETTINGS["batch_sizes"]


def test_the_study_cost_is_steps_run_times_step_time_on_each_table(study, tmp_path):
    times = tmp_path / "lib.csv"
    times.write_text("batch_size,step_time_s\n8,0.002\n8,0.0022\n8,0.0018\n64,0.003\n")
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", str(times), "--html"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    answer = minigrad.open_study(study).answer()
    own, lib = answer.costs
    expected, trials = _cost_by_hand(study, {8: 0.002, 64: 0.003})  # the median of each batch size's rounds
    assert lib["library"] == "file lib.csv" and lib["seconds"] == pytest.approx(expected, rel=1e-12)
    assert lib["trials"] == own["trials"] == trials and lib["left_out"] == [32]  # the file does not time B = 32
    with h5py.File(study, "r") as f:
        assert lib["left_out_trials"] == sum(int(g.attrs["batch_size"]) == 32 for g in f["runs"].values()) > 0
    with h5py.File(study, "r") as f:
        t = {int(B): float(s) for B, s in zip(f["throughput"]["batch_size"][()], f["throughput"]["step_time_s"][()])
             if int(B) in (8, 64)}  # the batch sizes both tables time
    assert own["library"] == "minigrad" and own["seconds"] == pytest.approx(_cost_by_hand(study, t)[0], rel=1e-9)
    # the same sentence in every output
    assert answer.cost_sentence.startswith("This study's trials: ") and "on file lib.csv" in answer.cost_sentence
    assert answer.cost_sentence in " ".join(result.output.split())
    printed = json.loads(CliRunner().invoke(cli, ["report", str(study), "--json"]).output)
    assert printed["study_cost"]["sentence"] == answer.cost_sentence
    assert [c["seconds"] for c in printed["study_cost"]["tables"]] == pytest.approx([own["seconds"], expected])
    assert answer.cost_sentence in study.with_suffix(".html").read_text().replace("&#x27;", "'")
    # negative control: times twice as long cost twice as much, and the sum by hand sees it
    double = tmp_path / "double.csv"
    double.write_text("batch_size,step_time_s\n8,0.004\n64,0.006\n")
    assert CliRunner().invoke(cli, ["report", str(study), "--step-times", str(double)]).exit_code == 0
    costs = {c["name"]: c["seconds"] for c in minigrad.open_study(study).answer().costs}
    assert costs["file-double"] == pytest.approx(2 * expected) and costs["file-double"] != pytest.approx(expected)


def test_a_study_alone_states_its_own_cost(study):
    answer = minigrad.open_study(study).answer()
    assert [c["name"] for c in answer.costs] == ["study"] and "of compute on minigrad" in answer.cost_sentence
    assert "PyTorch" not in answer.cost_sentence


# ------------------------------------------------------------------------------------ merge keeps every table
def _tables(path):
    """{name: its attrs and rows as text} (text, so that a NaN equals a NaN)"""
    return {name: repr((t["attrs"], t["rows"])) for name, t in minigrad.open_study(path).file.step_times.items()}


def test_merge_keeps_every_machines_step_time_table(study, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    shutil.copyfile(study, a)
    shutil.copyfile(study, b)
    for path, name, times in ((a, "gpu.csv", "8,0.5\n64,0.001\n"), (b, "tpu.csv", "8,0.4\n8,0.41\n64,0.002\n")):
        (tmp_path / name).write_text("batch_size,step_time_s\n" + times)
        assert CliRunner().invoke(cli, ["report", str(path), "--step-times", str(tmp_path / name)]).exit_code == 0
    out = tmp_path / "merged.h5"
    result = CliRunner().invoke(cli, ["merge", str(out), str(a), str(b)])
    assert result.exit_code == 0, result.output
    merged = _tables(out)
    assert set(merged) == {"file-gpu", "file-tpu"} and "2 step-time table(s)" in result.output
    assert merged["file-gpu"] == _tables(a)["file-gpu"] and merged["file-tpu"] == _tables(b)["file-tpu"]
    names = [o["name"] for o in minigrad.open_study(out).answer().others]
    assert names == ["study", "file-gpu", "file-tpu"]
    # merged again into the same file: each table once
    assert CliRunner().invoke(cli, ["merge", str(out), str(a)]).exit_code == 0 and set(_tables(out)) == set(merged)


def test_merge_refuses_one_table_name_with_other_times(study, tmp_path):
    """Negative control: the same table name with other times in two files is refused, and nothing written."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path, times in ((a, "8,0.5\n64,0.001\n"), (b, "8,0.5\n64,0.002\n")):
        shutil.copyfile(study, path)
        folder = tmp_path / path.stem
        folder.mkdir()
        (folder / "gpu.csv").write_text("batch_size,step_time_s\n" + times)
        assert CliRunner().invoke(cli, ["report", str(path), "--step-times", str(folder / "gpu.csv")]).exit_code == 0
    out = tmp_path / "merged.h5"
    result = CliRunner().invoke(cli, ["merge", str(out), str(a), str(b)])
    assert result.exit_code == 2 and "step-time table 'file-gpu' differs" in result.output, result.output
    assert not out.exists()
    shutil.copyfile(study, b)  # the positive control: without the conflicting table the merge goes through
    assert CliRunner().invoke(cli, ["merge", str(out), str(a), str(b)]).exit_code == 0 and set(_tables(out)) == {
        "file-gpu"}


# ------------------------------------------------------------------------- the real frameworks (skip without them)
def _minigrad_steps(step, lr, seed=0, **options):
    from minigrad import MLP, make_optimizer
    from minigrad.profile.batches import make_batches

    model = MLP(step["sizes"], activation=step["activation"], dtype=step["dtype"], seed=seed)
    opt = make_optimizer(step["optimizer"], lr, **options)
    losses = [model.train_step(X, y, opt) for X, y in
              make_batches(step["sizes"], step["batch_sizes"], step["dtype"], seed).values()]
    return losses, model.params


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_the_framework_times_the_studys_own_step(study, name):
    """framework_step is what --step-times torch|jax times: the framework's steps from it are minigrad's steps on the
    same batches (the study's model, and a momentum study's momentum); other seeds or momenta are told apart."""
    import types

    import numpy as np

    pytest.importorskip(name)
    from minigrad.profile import frameworks
    from minigrad.study.retime import framework_step

    file = minigrad.open_study(study).file
    for config, options, wrong in ((file.config, {}, dict(seed=1)),
                                   (dict(file.config, optimizer="momentum", momentum=0.5), dict(momentum=0.5),
                                    dict(momentum=0.9))):
        step = framework_step(types.SimpleNamespace(config=config))
        assert step["sizes"] == [32, 16, 10] and step["batch_sizes"] == [8, 64]
        kw = {k: step[k] for k in ("activation", "optimizer", "momentum", "beta2")}
        losses, params = frameworks.train_steps(name, step["sizes"], step["batch_sizes"], step["dtype"], lr=0.3, **kw)
        ours = _minigrad_steps(step, 0.3, **options)
        assert np.allclose(losses, ours[0], rtol=1e-5, atol=1e-5) and np.allclose(params, ours[1], atol=1e-5)
        other = _minigrad_steps(step, 0.3, **{**options, **wrong})  # negative control
        assert not np.allclose(params, other[1], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name, backend", [("torch", "torch-eager"), ("jax", "jax-jit")])
def test_framework_step_times_answer_with_their_rounds(study, name, backend):
    """A real framework's table answers beside the study's, its step times in rounds whose spread widens T(B)'s
    interval (against the same table with the rounds dropped: the control)."""
    import dataclasses

    from minigrad.study.analysis import analyse

    pytest.importorskip(name)
    result = CliRunner().invoke(cli, ["report", str(study), "--step-times", name, "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    file = minigrad.open_study(study).file
    (table_name, table), = file.step_times.items()
    assert table_name.startswith(backend) and table["attrs"]["source"].startswith(f"{backend} {name} ")
    rows = table["rows"]
    assert [r["batch_size"] for r in rows] == [8, 64] and all(len(r["rounds_s"].split()) == 3 for r in rows)
    answer = json.loads(result.output[result.output.index("{\n"):])
    assert [o["name"] for o in answer["other_answers"]] == ["study", table_name]
    cost = answer["study_cost"]["tables"][1]
    assert cost["library"] == {"torch": "PyTorch eager", "jax": "JAX jit"}[name] and cost["seconds"] > 0
    assert cost["seconds"] == pytest.approx(_cost_by_hand(study, {r["batch_size"]: r["step_time_s"] for r in rows})[0])

    def widths(rows):
        a = analyse(dataclasses.replace(file, throughput=rows))
        return [r["time_hi"] - r["time_lo"] for r in a.rows]

    with_rounds = widths(rows)
    without = widths([{k: v for k, v in r.items() if k != "rounds_s"} for r in rows])
    assert all(w >= v - 1e-15 for w, v in zip(with_rounds, without)) and with_rounds != without


def test_the_recipe_evaluates_where_its_trials_did(study, tmp_path):
    """The recipe's budget is its trials' (the budget sets the floor on steps between evaluations, and with it where
    a run evaluates and so the step at which it meets the target): the printed line runs with its trials' floor; the
    budget it had before (1.5x the most steps needed) gives another (the control). bench/recipe_time.py shows the
    steps then match on the default study; this study's n_train is not a `minigrad train` option."""
    import math
    import shlex

    from minigrad import store

    file = minigrad.open_study(study).file
    answer = minigrad.open_study(study).answer()
    row = next(r for r in answer.rows if r["batch_size"] == answer.pick)
    trials = [r.attrs for r in file.runs.values() if r.attrs["phase"] in ("tune", "adapt")
              and r.attrs["batch_size"] == answer.pick and r.attrs["lr"] == row["best_lr"]]
    words = shlex.split(answer.recipe.split("  #")[0])[2:]
    assert int(words[words.index("--steps") + 1]) == max(int(t["budget_steps"]) for t in trials)
    floors = {}
    for name, steps in (("recipe", words[words.index("--steps") + 1]),
                        ("before", str(math.ceil(1.5 * max(row["steps_hi"], row["seed_steps"][1]))))):
        words[words.index("--steps") + 1] = steps
        result = CliRunner().invoke(cli, ["train", *words, "--out", str(tmp_path / f"{name}.h5")])
        assert result.exit_code == 0, result.output
        run, = store.open(tmp_path / f"{name}.h5").runs.values()
        floors[name] = run.attrs["eval_gap_floor"]
    assert floors["recipe"] == trials[0]["eval_gap_floor"] != floors["before"]


def two_more_tables(study, tmp_path):
    """The study file with two further step-time tables: one given as a file, one as a re-timing elsewhere stores it
    (host, CPU, BLAS, threads, date); returns their names."""
    from minigrad.study import retime as R

    times = tmp_path / "laptop.csv"
    times.write_text("batch_size,step_time_s,threads\n8,0.004\n8,0.005\n64,0.0009\n64,0.001\n")
    assert CliRunner().invoke(cli, ["report", str(study), "--step-times", str(times), "--json"]).exit_code == 0
    attrs = {"source": "minigrad (re-timed)", "host": "node-7", "cpu": "Example CPU @ 2.0GHz", "blas": "mkl",
             "threads": "1,4", "measured": "2026-11-30T10:00:00+00:00"}
    name = R.table_name(attrs["host"], attrs["blas"], "thr1+4", "2026-11-30T100000")
    rows = [dict(batch_size=8, step_time_s=0.0002, iqr_s=0.0, threads=4, rounds_s="0.0002 0.00021", host="node-7"),
            dict(batch_size=64, step_time_s=0.003, iqr_s=0.0, threads=1, rounds_s="0.003 0.0031", host="node-7")]
    R.add_table(study, minigrad.open_study(study).file, name, rows, attrs)
    return ["file-laptop", name], attrs


def answers_by_table(report_json):
    """{table name: its answer (source, pick, tie set, rate, recipe, rows)} of `report --json`'s output."""
    return {o["name"]: o for o in report_json["other_answers"]}


def test_the_convergence_export_carries_every_step_time_table(study, tmp_path):
    names, attrs = two_more_tables(study, tmp_path)
    conv = tmp_path / "conv.json"
    assert CliRunner().invoke(cli, ["export", str(study), "--convergence", str(conv)]).exit_code == 0
    doc = json.loads(conv.read_text())
    stored = minigrad.open_study(study).file.step_times
    assert list(doc["step_time_tables"]) == list(stored) and sorted(stored) == sorted(names)
    assert {k: doc["step_time_tables"][names[1]]["attrs"][k] for k in attrs} == attrs  # named by its source
    # read back, `report` answers for each table as it does from the study file
    from_h5 = json.loads(CliRunner().invoke(cli, ["report", str(study), "--json"]).output)
    result = CliRunner().invoke(cli, ["report", str(conv), "--json"])
    assert result.exit_code == 0, result.output
    from_json = json.loads(result.output)
    assert set(names) < set(answers_by_table(from_h5))  # beside the study's own
    assert answers_by_table(from_json) == answers_by_table(from_h5)
    assert from_json["recommendation"] == from_h5["recommendation"]
    text = CliRunner().invoke(cli, ["report", str(conv)], terminal_width=200).output
    assert all(name in text for name in names), text
    # negative control: an export without the tables (as before) answers for none of them, and the check sees it
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in doc.items() if k != "step_time_tables"}))
    from_old = json.loads(CliRunner().invoke(cli, ["report", str(old), "--json"]).output)
    assert answers_by_table(from_old) != answers_by_table(from_h5)
    assert not set(names) & set(answers_by_table(from_old))
    # a table in another shape is refused in one line
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(doc, step_time_tables={"x": {"rows": []}})))
    result = CliRunner().invoke(cli, ["report", str(bad)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
