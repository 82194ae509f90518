"""The package's layers (pyproject.toml [tool.importlinter]) hold, and the check catches an upward import."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint(package_parent, config):
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--config", str(config), "--no-cache"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=package_parent)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "minigrad", tmp / "minigrad", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_the_import_contracts_are_kept(package_copy):
    done = lint(package_copy, package_copy / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_layers(package_copy, tmp_path):
    # negative control: the engine importing the study is reported
    broken = tmp_path / "broken"
    shutil.copytree(package_copy, broken)
    model = broken / "minigrad" / "engine" / "model.py"
    model.write_text(model.read_text() + "\n\ndef _upward():\n    from minigrad.study import sweep  # noqa: F401\n")
    done = lint(broken, broken / "pyproject.toml")
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "minigrad.engine.model -> minigrad.study.sweep" in done.stdout


def test_planning_importing_the_engine_is_reported(package_copy, tmp_path):
    broken = tmp_path / "impure"
    shutil.copytree(package_copy, broken)
    plan = broken / "minigrad" / "study" / "plan.py"
    plan.write_text(plan.read_text() + "\n\ndef _engine():\n    import numba  # noqa: F401\n")
    done = lint(broken, broken / "pyproject.toml")
    assert done.returncode != 0 and "Study planning is pure" in done.stdout and "BROKEN" in done.stdout
