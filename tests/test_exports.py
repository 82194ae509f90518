"""`minigrad export --tensorboard / --parquet`: the event files, read back with TensorBoard's own loader (not the
writer that made them), hold every trace point of every run; the Parquet files are the CSVs' twins."""
import csv
import math

import pytest
from click.testing import CliRunner

import minigrad
from minigrad import store
from minigrad.cli import main as cli
from minigrad.study.executors import InlineExecutor
from tests.test_api import SETTINGS

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "s.h5"
    minigrad.run_study(minigrad.make_config(**SETTINGS), out, executor=InlineExecutor(), echo=lambda *a: None,
                       measure_throughput=False)
    return out


def read_back(run_dir):
    """{tag: [(step, value)]} and {text tag: text} of one run directory, by TensorBoard's EventAccumulator."""
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0,
                                                                          event_accumulator.TENSORS: 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    texts = {t.removesuffix("/text_summary"): acc.Tensors(t)[0].tensor_proto.string_val[0].decode()
             for t in acc.Tags()["tensors"]}
    return scalars, texts


def test_every_trace_point_of_every_run_reads_back(study, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(study), "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    f = store.open(study)
    assert f.runs
    for run_id, run in f.runs.items():
        a = run.attrs
        run_dir = tmp_path / "tb" / a["phase"] / f"B{a['batch_size']}_lr{a['lr']:g}_seed{a['seed']}"
        run_dir = next(p for p in run_dir.parent.iterdir() if p.name.startswith(run_dir.name))
        scalars, texts = read_back(run_dir)
        steps = run.trace["step"].tolist()
        finite = [(s, v) for s, v in zip(steps, run.trace["val_error"].tolist()) if math.isfinite(v)]
        assert [s for s, _ in scalars["val/error"]] == [s for s, _ in finite]  # one row per evaluation
        assert [v for _, v in scalars["val/error"]] == pytest.approx([v for _, v in finite], rel=1e-6)
        assert [v for _, v in scalars["examples_seen"]] == pytest.approx(run.trace["examples"].tolist())
        assert {"train/loss", "train/lr", "val/loss"} <= set(scalars)
        assert f'"status": "{a["status"]}"' in texts["run/attributes"]
    _, texts = read_back(tmp_path / "tb" / "study")
    assert '"batch_sizes"' in texts["study/config"]


def test_a_second_export_into_the_same_folder_is_refused_and_changes_nothing(study, tmp_path):
    assert CliRunner().invoke(cli, ["export", str(study), "--tensorboard", str(tmp_path / "tb")]).exit_code == 0
    before = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in (tmp_path / "tb").rglob("*"))
    again = CliRunner().invoke(cli, ["export", str(study), "--tensorboard", str(tmp_path / "tb")])
    assert again.exit_code == 2 and "not an empty folder" in again.output
    assert sorted((p.relative_to(tmp_path), p.stat().st_size) for p in (tmp_path / "tb").rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tb"]  # no temporary folder left behind


def test_negative_control_the_reader_sees_a_missing_point(study, tmp_path):
    from tensorboardX import SummaryWriter

    with SummaryWriter(logdir=str(tmp_path / "one")) as w:
        w.add_scalar("val/error", 0.5, 0)
    scalars, _ = read_back(tmp_path / "one")
    run = next(iter(store.open(study).runs.values()))
    assert len(scalars["val/error"]) == 1 != len(run.trace["step"])


def test_parquet_is_the_csv_twin(study, tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    result = CliRunner().invoke(cli, ["export", str(study), "--parquet", str(tmp_path / "pq"), "--csv",
                                      str(tmp_path / "csv")])
    assert result.exit_code == 0, result.output
    traces = pandas.read_parquet(tmp_path / "pq" / "traces.parquet")
    with open(tmp_path / "csv" / "traces.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(traces) == len(rows) and list(traces["run_id"]) == [r["run_id"] for r in rows]
    assert traces["val_error"].tolist() == pytest.approx([float(r["val_error"]) for r in rows])
    summary = pandas.read_parquet(tmp_path / "pq" / "summary.parquet")
    assert len(summary) == len(store.open(study).runs)


def test_export_needs_a_destination(study):
    result = CliRunner().invoke(cli, ["export", str(study)])
    assert result.exit_code == 2 and "--tensorboard" in result.output
