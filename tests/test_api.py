"""The Python API: a study run and read from Python is the one the CLI runs and reads; figures are Figure objects that
leave the global matplotlib backend alone; `python -m minigrad` is the command line."""
import io
import subprocess
import sys

import matplotlib
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

import minigrad
from minigrad.cli import main as cli
from minigrad.study.executors import InlineExecutor

SETTINGS = dict(data_options={"n_train": 1200, "n_val": 400, "n_test": 400}, hidden=[16], batch_sizes=[8, 64],
                reference_lrs=[0.1, 0.3], seeds=1, lr_points=2, max_widen=1, reference_epochs=40.0,
                equal_epochs=1.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "api.h5"
    config = minigrad.make_config(**SETTINGS)
    return minigrad.run_study(config, out, executor=InlineExecutor(), echo=lambda *a: None, measure_throughput=False)


def test_the_api_is_exported_and_listed():
    for name in ("make_config", "run_study", "open_study", "Study", "MLP", "SGD"):
        assert name in dir(minigrad) and getattr(minigrad, name) is not None


def test_summary_and_traces_as_columns(study):
    summary = study.summary()
    columns = summary if isinstance(summary, dict) else {k: list(summary[k]) for k in summary.columns}
    assert list(columns["batch_size"]) == [8, 64]
    assert {"step_time_s", "best_lr", "steps", "time_s"} <= set(columns)
    traces = study.traces("tune")
    t = traces if isinstance(traces, dict) else {k: list(traces[k]) for k in traces.columns}
    assert set(t["phase"]) == {"tune"} and {"step", "val_error", "run_id", "batch_size"} <= set(t)
    n_points = sum(len(r.trace["step"]) for r in study.file.runs.values() if r.attrs["phase"] == "tune")
    assert len(t["step"]) == n_points > 0


def test_figures_are_figure_objects_and_the_backend_is_untouched(study):
    before = matplotlib.get_backend()
    figures = study.figures()
    assert set(figures) == {"steps", "throughput", "time", "lr", "curves", "heatmap", "ladder"}
    assert all(isinstance(f, Figure) for f in figures.values())
    assert matplotlib.get_backend() == before
    buf = io.BytesIO()
    figures["steps"].savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_the_cli_report_is_the_api_report(study):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    study.report(console)
    from_api = console.file.getvalue()
    result = CliRunner().invoke(cli, ["report", str(study.path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    recommendation = next(line for line in from_api.splitlines() if "batch size" in line.lower())
    assert recommendation.strip()[:60] in result.output


def test_report_json_is_the_api_answer(study):
    import json

    result = CliRunner().invoke(cli, ["report", str(study.path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == json.loads(json.dumps(study.answer().to_dict()))
    assert [r["batch_size"] for r in printed["rows"]] == [8, 64]
    assert {"rows", "fit", "b_crit", "recommendation", "adaptive"} <= set(printed)
    rec = printed["recommendation"]
    assert rec["batch_size"] in rec["tied"] and "minigrad train" in rec["recipe"]


def test_open_study_reads_the_same_file(study):
    again = minigrad.open_study(study.path)
    assert repr(again.analysis.rows) == repr(study.analysis.rows)  # repr: NaN step times compare equal


def test_python_dash_m_minigrad_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "minigrad", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and minigrad.__version__ in done.stdout


def says(output, answer):
    """Whether an output (terminal text or an HTML page) carries the answer's sentence and recipe verbatim."""
    import html

    flat = " ".join(html.unescape(output).split())
    return all(" ".join(text.split()) in flat for text in (answer.sentence, answer.recipe))


def test_every_output_says_the_same_answer(study, tmp_path):
    """The terminal, --json, the HTML page and the Python API render one Answer: the same sentence, the same
    recipe, character for character."""
    import json
    import shutil

    answer = study.answer()
    assert answer.recipe.startswith("minigrad train ") and answer.sentence
    terminal = CliRunner().invoke(cli, ["report", str(study.path)], terminal_width=100)
    assert terminal.exit_code == 0, terminal.output
    printed = json.loads(CliRunner().invoke(cli, ["report", str(study.path), "--json"]).output)
    copy = tmp_path / "copy.h5"
    shutil.copyfile(study.path, copy)
    assert CliRunner().invoke(cli, ["report", str(copy), "--html"]).exit_code == 0
    assert says(terminal.output, answer) and says((tmp_path / "copy.html").read_text(), answer)
    assert printed["recommendation"]["recipe"] == answer.recipe and printed["sentence"] == answer.sentence
    assert str(answer) == answer.text() and says(answer._repr_html_(), answer)


def test_negative_control_a_page_with_its_own_recipe_is_caught(study):
    import dataclasses

    from minigrad.study import html as report_html

    answer = study.answer()
    own = dataclasses.replace(answer, recipe=answer.recipe.replace("--steps ", "--steps 1"))
    assert not says(report_html.render(own, study.file, []), answer)
    assert says(report_html.render(answer, study.file, []), answer)
