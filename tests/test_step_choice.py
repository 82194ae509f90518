"""The measured step choice (engine/step_choice.py): MLP.step_for takes the kept path, a corrupt, stale or foreign
file is ignored and remeasured, writes are whole; and the blocked large step (the path only a measurement picks)
takes the same steps as the unfused one."""
import json
import os

import numpy as np
import pytest

from minigrad import MLP, SGD
from minigrad.engine import step_choice as C
from minigrad.engine import steps as S

SIZES = [20, 24, 16, 3]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGRAD_STEP_CHOICES", str(tmp_path))
    C.forget()
    yield tmp_path
    C.forget()


def keep(model, B, path, kind=0, T=1):
    C.store({C.entry(model, B, kind, T): {"path": path, "seconds": {path: 1e-5}}})


def test_step_for_takes_the_kept_choice_and_the_file_names_the_machine(folder):
    model = MLP(SIZES, seed=0)
    assert model.step_for(12, SGD(0.1), threads=1).name == "blas-fused-sgd"  # nothing kept: the thresholds
    keep(model, 12, "blas-fused-sgd-blocked")
    fresh = MLP(SIZES, seed=0)
    assert fresh.step_for(12, SGD(0.1), threads=1).name == "blas-fused-sgd-blocked"
    assert C.chosen_by(fresh, 12, SGD(0.1), 1) == "measured" and C.chosen_by(fresh, 16, SGD(0.1), 1) == "thresholds"
    assert fresh.step_for(16, SGD(0.1), threads=1).name == "blas-fused-sgd"  # other B: untouched
    data = json.loads(open(C.cache_file()).read())
    assert data["key"] == C.machine_key() and data["key"]["cpu"] and data["key"]["numba"]
    assert [p.name for p in folder.iterdir()] == [os.path.basename(C.cache_file())]  # no temporary left behind
    with C.disabled():  # the thresholds only, whatever is kept
        assert MLP(SIZES, seed=0).step_for(12, SGD(0.1), threads=1).name == "blas-fused-sgd"


@pytest.mark.parametrize("content", [b"\x00\xffnot json", b"[1, 2]", b'{"format": 1}', b""])
def test_a_corrupt_file_is_ignored_and_remeasured(folder, content):
    model = MLP(SIZES, seed=0)
    keep(model, 12, "blas-fused-sgd-blocked")
    path = C.cache_file()
    with open(path, "wb") as f:
        f.write(content)
    C.forget()
    assert MLP(SIZES, seed=0).step_for(12, SGD(0.1), threads=1).name == "blas-fused-sgd"  # ignored, no error
    C.ensure(model, [12], SGD(0.1), 1)  # measured again: the file is whole and names every candidate
    kept = json.loads(open(path).read())["choices"][C.entry(model, 12, 0, 1)]
    assert set(kept["seconds"]) == set(S.candidates("blas", model.n_params, 12, 0, 1)) and kept["path"] in kept["seconds"]


def test_a_stale_file_or_a_path_the_step_cannot_take_is_ignored(folder):
    model = MLP(SIZES, seed=0)
    keep(model, 12, "blas-fused-sgd-blocked")
    keep(model, 16, "loops")  # not a candidate of --backend blas: never taken
    assert MLP(SIZES, seed=0).step_for(16, SGD(0.1), threads=1).name == "blas-fused-sgd"
    data = json.loads(open(C.cache_file()).read())
    data["key"]["numba"] = "0.0.1"  # another library version wrote it
    with open(C.cache_file(), "w") as f:
        json.dump(data, f)
    C.forget()
    assert MLP(SIZES, seed=0).step_for(12, SGD(0.1), threads=1).name == "blas-fused-sgd"
    # negative control: the same file with the right key is taken
    data["key"] = C.machine_key()
    with open(C.cache_file(), "w") as f:
        json.dump(data, f)
    C.forget()
    assert MLP(SIZES, seed=0).step_for(12, SGD(0.1), threads=1).name == "blas-fused-sgd-blocked"


def test_ensure_measures_once_and_keeps_what_another_process_wrote(folder, monkeypatch):
    model = MLP(SIZES, seed=0)
    C.ensure(model, [12, 24], SGD(0.1), 1)
    before = set(json.loads(open(C.cache_file()).read())["choices"])
    assert before == {C.entry(model, B, 0, 1) for B in (12, 24)}
    keep(MLP([5, 4, 2], seed=0), 12, "blas-fused-sgd-blocked")  # as if another process wrote meanwhile
    monkeypatch.setattr(C, "measure", lambda *a, **k: pytest.fail("measured again"))
    C.forget()
    assert set(C.ensure(model, [12, 24], SGD(0.1), 1)) == {12, 24}
    assert len(json.loads(open(C.cache_file()).read())["choices"]) == 3


def test_off_keeps_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_STEP_CHOICES", "off")
    C.forget()
    assert C.cache_file() is None
    C.ensure(MLP(SIZES, seed=0), [12], SGD(0.1), 1)
    assert not list(tmp_path.iterdir())


def test_the_measured_choice_is_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv("MINIGRAD_STEP_CHOICES", raising=False)
    C.forget()
    assert C.cache_file() is None  # a default run uses the thresholds and measures nothing
    # negative control: "on" keeps the file beside Numba's cache
    monkeypatch.setenv("MINIGRAD_STEP_CHOICES", "on")
    path = C.cache_file()
    assert path is not None and os.path.basename(path).startswith("minigrad-step-choices-")
    C.forget()


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("B", [9, 12, 17])
def test_the_blocked_large_step_takes_the_unfused_steps(dtype, tol, B):
    blocked, plain = MLP(SIZES, dtype=dtype, seed=1), MLP(SIZES, dtype=dtype, seed=1, backend="blas-unfused")
    step = S.make(blocked, "blas-fused-sgd-blocked", B, 1)
    assert step.buffers.rows == 8 < B  # more than one block
    opt_b, opt_p = SGD(0.1), SGD(0.1)
    r = np.random.default_rng(0)
    for _ in range(3):
        X, y = r.standard_normal((B, SIZES[0])).astype(dtype), r.integers(0, SIZES[-1], B)
        assert step(X, y, opt_b) == pytest.approx(plain.train_step(X, y, opt_p), rel=tol)
        np.testing.assert_allclose(blocked.grads, plain.grads, rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(blocked.params, plain.params, rtol=tol * 10, atol=tol * 10)
    # negative control: a block that skipped its last rows would leave them out of the forward pass
    assert not np.allclose(blocked.params, MLP(SIZES, dtype=dtype, seed=1).params)
