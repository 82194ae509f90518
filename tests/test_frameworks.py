"""minigrad.profile.frameworks: --compare validation, skipping what is not installed, the worker's rows, and (where PyTorch
or JAX can be run) that the framework's step is minigrad's step.

PyTorch and JAX are not minigrad dependencies. The tests that need them run in the interpreter named by
MINIGRAD_COMPARE_PYTHON (e.g. a venv with torch and jax; it needs numpy, not minigrad), else in this one if it has
torch or jax, else they skip.
"""
import functools
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from minigrad import MLP, make_optimizer
from minigrad.profile import frameworks
from minigrad.profile.batches import make_batches

SIZES, BATCH_SIZES = [8, 8, 2], [1, 4]
ROW_KEYS = {"backend", "threads", "dtype", "batch_size", "step_time_s", "iqr_s", "samples_per_s", "repeats",
            "first_call_s", "version", "rounds_s", "remeasured", "busy", "busy_reason"}


def _installed(name):
    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------------------------------ always run
def test_parse_compare():
    assert frameworks.parse_compare("torch,jax") == ["torch", "jax"]
    assert frameworks.parse_compare(" jax , torch,jax,") == ["jax", "torch"]
    assert frameworks.parse_compare(["torch"]) == ["torch"]
    assert frameworks.parse_compare(None) == frameworks.parse_compare("") == frameworks.parse_compare([]) == []
    with pytest.raises(ValueError, match=r"^unknown framework 'tensorflow' for --compare; choose from torch, jax$"):
        frameworks.parse_compare("torch,tensorflow")
    assert {frameworks.FRAMEWORKS[n] for n in ("torch", "jax")} == {"torch-eager", "jax-jit"}


def test_import_loads_no_framework():
    code = "import sys, minigrad.profile.frameworks; print(sorted({'torch', 'jax', 'numba'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_input_is_one_line_value_error():
    cases = [(dict(threads=[0]), "threads must lie between 1"), (dict(dtypes=["float16"]), "dtype must be"),
             (dict(batch_sizes=[0]), "batch sizes must be >= 1"), (dict(optimizer="lbfgs"), "can't be compared"),
             (dict(activation="swish"), "unknown activation")]
    for change, message in cases:
        kwargs = dict(names=["torch"], sizes=SIZES, batch_sizes=BATCH_SIZES, threads=[1], dtypes=["float32"]) | change
        with pytest.raises(ValueError, match=message) as info:
            frameworks.measure(**kwargs)
        assert "\n" not in str(info.value)


def test_missing_framework_is_skipped_not_an_error():
    missing = [n for n in frameworks.FRAMEWORKS if not _installed(n)]
    if not missing:
        pytest.skip("torch and jax are both installed in this interpreter")
    lines = []
    rows, skipped = frameworks.measure(missing, SIZES, BATCH_SIZES, [1], ["float32", "float64"], repeats=1,
                                       python=sys.executable, echo=lines.append)
    assert rows == []
    assert skipped == {n: f"{n} is not installed in {sys.executable} (pip install {n} to compare); skipped"
                       for n in missing}
    # one attempt per framework, not one per thread count and dtype
    assert lines == [line for n in missing for line in (
        f"timing {frameworks.FRAMEWORKS[n]}, 1 thread(s), float32 ...", skipped[n])]


def test_interpreter_that_cannot_run_is_skipped(tmp_path):
    rows, skipped = frameworks.measure("jax", SIZES, [1], [1], ["float32"], python=str(tmp_path / "no-python"))
    assert rows == [] and list(skipped) == ["jax"]
    assert skipped["jax"].startswith(f"jax-jit: cannot run {tmp_path / 'no-python'}")


def test_worker_failure_is_one_line_skip(tmp_path):
    job = frameworks.make_job("jax-jit", str(tmp_path / "missing.npz"), [1], 1)
    out = frameworks.run_worker(job, sys.executable)
    assert out["skipped"].startswith("jax-jit failed (1 thread(s)): FileNotFoundError") and "\n" not in out["skipped"]


def _stub_builder(weights, biases, activation, hyper, threads, fail=None):
    # a numpy "framework": the worker's bookkeeping without PyTorch or JAX
    def make_step(X, y):
        def step():
            if fail:
                raise RuntimeError(fail)
            return float((X @ weights[0].T).sum())
        return step

    return make_step, lambda: list(zip(weights, biases)), "stub 1.0"


def test_worker_rows_and_errors(tmp_path, monkeypatch):
    path = frameworks.write_inputs(str(tmp_path / "inputs.npz"), SIZES, BATCH_SIZES, "float64", "relu", 0)
    monkeypatch.setitem(frameworks.BUILDERS, "stub", _stub_builder)
    monkeypatch.setitem(frameworks.BUILDERS, "stub-fails", functools.partial(_stub_builder, fail="boom\nmore"))
    job = frameworks.make_job("stub", path, BATCH_SIZES, 1, repeats=3) | {"cores": None}  # don't pin pytest itself
    out = frameworks.worker(job)
    assert out["version"] == "stub 1.0" and [r["batch_size"] for r in out["rows"]] == BATCH_SIZES
    for r in out["rows"]:
        assert set(r) == ROW_KEYS and r["backend"] == "stub" and r["dtype"] == "float64" and r["repeats"] == 3
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] / r["step_time_s"]) and r["iqr_s"] >= 0
        # timed in rounds, as minigrad's own step times: one median per round, the answer resamples them
        assert len(r["rounds_s"].split()) == 3 and all(float(t) > 0 for t in r["rounds_s"].split())
        assert r["busy"] == int(r["remeasured"] == 1 and bool(r["busy_reason"]))
    assert frameworks.worker(job | {"backend": "stub-fails"}) == {"error": "RuntimeError: boom"}
    # check mode: one step per batch, then the parameters in MLP.params' layout (the stub leaves them as they were)
    out = frameworks.worker(job | {"check": True})
    assert len(out["losses"]) == 2 and out["params"] == MLP(SIZES, dtype="float64", seed=0).params.tolist()


# ------------------------------------------------------------------------------- with PyTorch and/or JAX
@pytest.fixture(scope="module")
def compare_python():
    python = os.environ.get("MINIGRAD_COMPARE_PYTHON")
    if python:
        return python
    if _installed("torch") or _installed("jax"):
        return sys.executable
    pytest.skip("neither torch nor jax here; set MINIGRAD_COMPARE_PYTHON to an interpreter that has them")


def test_real_run_rows_are_consistent(compare_python):
    lines = []
    rows, skipped = frameworks.measure(["torch", "jax"], SIZES, BATCH_SIZES, [1], ["float32"], repeats=3,
                                       python=compare_python, echo=lines.append)
    ran = [n for n in ("torch", "jax") if n not in skipped]
    if not ran:
        pytest.skip("; ".join(skipped.values()))
    assert [(r["backend"], r["batch_size"]) for r in rows] == [
        (frameworks.FRAMEWORKS[n], B) for n in ran for B in BATCH_SIZES]
    for r in rows:
        assert set(r) == ROW_KEYS and r["threads"] == 1 and r["dtype"] == "float32" and r["repeats"] == 3
        assert r["step_time_s"] > 0 and r["iqr_s"] >= 0 and r["first_call_s"] > 0
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] / r["step_time_s"])
        assert r["version"].startswith(r["backend"].split("-")[0] + " ")
    assert all(v.endswith("; skipped") and "\n" not in v for v in skipped.values())


@functools.lru_cache(maxsize=None)
def _framework_steps(python, name, optimizer, activation, dtype):
    try:
        return frameworks.train_steps(name, SIZES, [4, 1, 3], dtype, activation=activation, optimizer=optimizer,
                                      lr=0.5, seed=0, python=python)
    except RuntimeError as exc:
        if "is not installed" not in str(exc):
            raise
        pytest.skip(str(exc))


def _minigrad_steps(optimizer, activation, dtype, lr=0.5, seed=0):
    model, opt = MLP(SIZES, activation=activation, dtype=dtype, seed=seed), make_optimizer(optimizer, lr)
    losses = [model.train_step(X, y, opt) for X, y in make_batches(SIZES, [4, 1, 3], dtype, seed).values()]
    return losses, model.params


def _same(a, b, tol):
    return np.allclose(a[0], b[0], rtol=tol, atol=tol) and np.allclose(a[1], b[1], rtol=tol, atol=tol)


# Adam's first steps are about lr * sign(gradient), so float32 rounding of a near-zero gradient entry moves that
# parameter by up to 2 lr: Adam is checked in float64, where the gradients agree to ~1e-16
@pytest.mark.parametrize("name", ["torch", "jax"])
@pytest.mark.parametrize("optimizer, activation, dtype, tol", [("sgd", "relu", "float32", 1e-5),
                                                               ("adam", "gelu", "float64", 1e-10)])
def test_step_is_minigrads_step(compare_python, name, optimizer, activation, dtype, tol):
    theirs = _framework_steps(compare_python, name, optimizer, activation, dtype)
    assert theirs[1].dtype == np.dtype(dtype)
    assert _same(theirs, _minigrad_steps(optimizer, activation, dtype), tol)


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_step_check_can_fail(compare_python, name):
    # negative controls: the same comparison against minigrad with another learning rate, or another seed
    theirs = _framework_steps(compare_python, name, "sgd", "relu", "float32")
    assert not _same(theirs, _minigrad_steps("sgd", "relu", "float32", lr=0.25), 1e-5)
    assert not _same(theirs, _minigrad_steps("sgd", "relu", "float32", seed=1), 1e-5)
