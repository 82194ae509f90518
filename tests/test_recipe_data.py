"""The recipe trains on the study's data: every data option a study can hold (its TOML data_options, --data-dir,
--n-val) goes onto the `minigrad train` line, which takes them (--data-options KEY=VALUE,...) and loads the same
splits; a mistake in them is one line and exit 2."""
import shlex

import numpy as np
import pytest
from click.testing import CliRunner

from minigrad import data
from minigrad.cli import main as cli
from minigrad.machine.settings import parse_table, table_item
from minigrad.study.analysis import recipe
from minigrad.study.config import make_config
from minigrad.training import trial

ROW = dict(batch_size=8, best_lr=0.1, steps=100, steps_hi=120, seed_steps=(90, 130), budget_steps=None)


class Loaded(Exception):
    pass


def loaded_by_train(words, monkeypatch):
    """The dataset `minigrad train WORDS` would train on: its load_data is called, then the run stops (exit 2)."""
    seen = {}

    def load(config):
        seen["config"] = dict(config)
        seen["data"] = real(config)
        raise ValueError("stopped after loading the data")

    real = trial.load_data
    monkeypatch.setattr(trial, "load_data", load)
    result = CliRunner().invoke(cli, ["train", *words, "--out", "never.h5"])
    monkeypatch.setattr(trial, "load_data", real)
    assert "config" in seen, result.output
    return seen["data"]


def shapes(dataset):
    return tuple(a.shape for a in (dataset.X_train, dataset.X_val, dataset.X_test))


def recipe_words(config):
    line = recipe(config, ROW, 0.1)
    assert "#" not in line, line  # nothing left to a comment
    words = shlex.split(line)
    assert words[:2] == ["minigrad", "train"]
    return words[2:]


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, n in (("train", 500), ("t10k", 120)):
        data.write_idx(folder / f"{name}-images-idx3-ubyte", rng.integers(0, 255, (n, 4, 4), dtype=np.uint8))
        data.write_idx(folder / f"{name}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


@pytest.fixture
def npz_file(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "mine.npz"
    np.savez(path, X=rng.normal(size=(400, 6)), y=rng.integers(0, 3, 400))
    return path


def study_configs(idx_dir, npz_file):
    return {
        "teacher": make_config(data="teacher", data_options={
            "n_train": 1200, "n_val": 300, "n_test": 250, "n_features": 12, "latent_dim": 4, "n_classes": 5,
            "label_noise": 0.1, "teacher_seed": 2}),
        "mnist": make_config(data="mnist", data_options={"data_dir": str(idx_dir), "n_val": 100}),
        "mnist, n_val as a number": make_config(data="mnist", data_options={"data_dir": str(idx_dir),
                                                                            "n_val": 150.0}),
        "file": make_config(data=str(npz_file), data_options={"val_fraction": 0.25, "test_fraction": 0.15}),
    }


@pytest.mark.parametrize("name", ["teacher", "mnist", "mnist, n_val as a number", "file"])
def test_the_recipe_loads_the_studys_splits(name, idx_dir, npz_file, monkeypatch):
    config = study_configs(idx_dir, npz_file)[name]
    study = trial.load_data(config)
    words = recipe_words(config)
    ctx = cli.commands["train"].make_context("train", list(words))  # click parses the line
    assert ctx.params["data_name"] == config["data"]
    got = loaded_by_train(words, monkeypatch)
    assert shapes(got) == shapes(study)
    assert np.array_equal(got.y_train, study.y_train) and np.array_equal(got.y_val, study.y_val)


def test_negative_control_a_dropped_data_option_is_seen(idx_dir, npz_file, monkeypatch):
    """The old recipe (data options only in a comment) trains on other splits, and the check sees it."""
    config = study_configs(idx_dir, npz_file)["teacher"]
    words = recipe_words(config)
    i = words.index("--data-options")
    dropped = words[:i] + words[i + 2:]
    assert shapes(loaded_by_train(dropped, monkeypatch)) != shapes(trial.load_data(config))
    # one option less (n_test) is seen too
    fewer = list(words)
    fewer[i + 1] = ",".join(x for x in words[i + 1].split(",") if not x.startswith("n_test="))
    assert shapes(loaded_by_train(fewer, monkeypatch)) != shapes(trial.load_data(config))


def test_a_value_the_line_cannot_write_is_said_not_dropped():
    line = recipe(make_config(data_options={"n_train": 1200, "odd": "a,b"}), ROW, 0.1)
    assert "--data-options n_train=1200" in line and "odd = 'a,b'" in line.split("  #")[1]


@pytest.mark.parametrize("value", [1200, 0.1, 1e-7, True, False, "teacher", "/a b/c"])
def test_table_items_read_back_as_the_same_value(value):
    item = table_item("k", value)
    assert item is not None and parse_table(item) == {"k": value} and type(parse_table(item)["k"]) is type(value)


@pytest.mark.parametrize("value", ["12", "a,b", "x=y", float("nan")])
def test_table_items_that_would_read_back_otherwise_are_refused(value):
    assert table_item("k", value) is None


@pytest.mark.parametrize("args, said", [
    (["--data-options", "n_train"], "KEY=VALUE"),
    (["--data-options", "n_train=100,n_train=200"], "twice"),
    (["--data-options", "bogus=1"], "unknown option bogus"),
    (["--data-options", "n_train=0"], "n_train must be an integer"),
    (["--n-val", "300", "--data-options", "n_val=200"], "give one"),
])
def test_bad_data_options_are_one_line_and_exit_2(args, said, tmp_path):
    out = tmp_path / "run.h5"
    result = CliRunner().invoke(cli, ["train", *args, "--steps", "2", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert said in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()
