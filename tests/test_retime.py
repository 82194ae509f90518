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
    assert sorted(r["batch_size"] for r in table["rows"]) == [8, 64]
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
