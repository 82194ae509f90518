"""One settings table (minigrad.machine.settings): every command's --help shows the table's default, the study's
configuration is the table's, the ranges are the table's everywhere, and the vocabularies are spelled once."""
import click
import pytest
from click.testing import CliRunner

from minigrad.cli import main
from minigrad.cli.app import float_list, int_list
from minigrad.machine import settings
from minigrad.study.config import DEFAULT_CONFIG, QUICK_OVERRIDES, make_config


def options_of(command):
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


def bench_defaults_disagreeing(command):
    """(setting, what --help says) for every bench option whose bracketed default is not the table's."""
    bad = []
    for name, setting in settings.for_command("bench").items():
        param = options_of(command).get("data_name" if name == "data" else name)
        if param is None:
            continue
        default = setting.defaults["bench"]
        want = "" if default is None else f"[{setting.shown(default)}]"
        if param.default is not None or not (param.help or "").endswith(want):
            bad.append((name, param.help))
    return bad


def train_defaults_disagreeing(command):
    bad = []
    for name, setting in settings.for_command("train").items():
        param = options_of(command).get("data_name" if name == "data" else name)
        if param is None:
            continue
        value = param.default
        if setting.kind in ("ints", "floats"):
            value = (int_list if setting.kind == "ints" else float_list)(None, param, value)
        if value != setting.defaults["train"]:
            bad.append((name, param.default))
    return bad


def test_bench_help_shows_the_tables_defaults():
    bench = main.commands["bench"]
    assert bench_defaults_disagreeing(bench) == []
    help_text = " ".join(CliRunner().invoke(main, ["bench", "--help"], terminal_width=400).output.split())
    assert "[1,2,4,8,16,32,64,128,256,512,1024]" in help_text and "Hidden layer widths. [64,64]" in help_text


def test_train_help_shows_the_tables_defaults():
    train = main.commands["train"]
    assert train_defaults_disagreeing(train) == []
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=400).output.split())
    assert "[default: 128,128]" in help_text and "[default: 0.05]" in help_text


def test_negative_control_a_hand_typed_default_that_drifted_is_caught():
    @click.command()
    @click.option("--hidden", "hidden", default=None, help="Hidden layer widths. [128,128]")
    @click.option("--seeds", "seeds", type=int, default=None, help="Seeds per cell. [5]")
    def bench(hidden, seeds):
        pass

    assert [name for name, _ in bench_defaults_disagreeing(bench)] == ["hidden"]

    @click.command()
    @click.option("--lr", "lr", type=float, default=0.1)
    def train(lr):
        pass

    assert train_defaults_disagreeing(train) == [("lr", 0.1)]


def test_the_study_configuration_is_the_table():
    assert DEFAULT_CONFIG == settings.defaults("bench")
    assert QUICK_OVERRIDES == settings.quick_overrides()
    assert set(make_config(quick=True)) == set(settings.for_command("bench"))


@pytest.mark.parametrize("name, bad, said", [("momentum", 1.0, "momentum"), ("seeds", 0, "seeds"),
                                             ("lr_points", 1.5, "lr_points"), ("hidden", [0], "hidden"),
                                             ("activation", "sigmoid", "activation"), ("target", 1.0, "target"),
                                             ("reference_lrs", ["0.1"], "--lrs")])
def test_a_value_out_of_the_tables_range_is_refused_by_the_study(name, bad, said):
    with pytest.raises(ValueError, match=said):
        make_config(**{name: bad})


def test_momentum_has_one_range_for_the_study_train_and_the_experiments():
    """It had drifted: [0, 1) for the study and train, [0, 1] for the experiments."""
    from minigrad.experiments.common import make_config as experiment_config

    with pytest.raises(ValueError, match="momentum"):
        make_config(momentum=1.0)
    with pytest.raises(ValueError, match=r"momenta must be .*\[0, 1\)"):
        experiment_config("momentum", momenta=[0.5, 1.0])
    result = CliRunner().invoke(main, ["train", "--momentum", "1", "--steps", "1"])
    assert result.exit_code == 2 and "--momentum" in result.output


def test_the_vocabularies_are_spelled_once():
    from minigrad.engine import kernels, optim
    from minigrad.store import files
    from minigrad.training import train

    assert tuple(kernels.ACTIVATIONS) == settings.ACTIVATIONS and tuple(kernels.LOSSES) == settings.LOSSES
    assert set(optim.OPTIMIZERS) == set(settings.OPTIMIZERS)
    assert files.STATUSES is settings.STATUSES and train.COMPLETE is settings.COMPLETE
    bench = options_of(main.commands["bench"])
    assert tuple(bench["optimizer"].type.choices) == settings.OPTIMIZERS
    assert tuple(bench["sampler"].type.choices) == settings.SAMPLERS


def test_a_file_written_before_a_setting_existed_still_resumes(tmp_path):
    """beta2, beta2_rule and beta2_halflife joined the study's settings later: a file without them resumes while the
    new configuration keeps their defaults, and is refused once one of them differs."""
    from minigrad import store
    from minigrad.store.files import StoreError

    config = make_config(quick=True)
    older = {k: v for k, v in config.items() if not k.startswith("beta2")}
    with store.Store.create(tmp_path / "s.h5", older, kind="study") as w:
        w.write_throughput([{"batch_size": 1, "step_time_s": 1e-4}])
    with store.Store.create(tmp_path / "s.h5", config, kind="study", defaults=DEFAULT_CONFIG):
        pass
    with pytest.raises(StoreError, match="beta2"):
        store.Store.create(tmp_path / "s.h5", {**config, "beta2": 0.99}, kind="study", defaults=DEFAULT_CONFIG)
    with pytest.raises(StoreError, match="different configuration"):  # negative control: without the defaults
        store.Store.create(tmp_path / "s.h5", config, kind="study")
