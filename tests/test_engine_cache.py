"""The engine's Numba cache follows its sources: an edit to one engine file reaches compiled functions in another
(the training loop calling kernels_large's step), where Numba's own check (a function's own file) would keep the
stale code."""
import os
import shutil
import subprocess
import sys

import numba
import pytest

import minigrad.engine as engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_cache_directory_is_named_after_every_engine_source(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    first = engine.cache_dir(str(tmp_path))
    (tmp_path / "notes.txt").write_text("not a source")
    assert engine.cache_dir(str(tmp_path)) == first  # only .py files count
    (tmp_path / "b.py").write_text("y = 3\n")
    assert engine.cache_dir(str(tmp_path)) != first  # negative control: an edit gives another directory
    (tmp_path / "b.py").write_text("y = 2\n")
    assert engine.cache_dir(str(tmp_path)) == first


@pytest.mark.skipif(bool(os.environ.get("NUMBA_CACHE_DIR")), reason="NUMBA_CACHE_DIR chooses the cache here")
def test_the_engine_caches_into_that_directory():
    assert numba.config.CACHE_DIR == engine.cache_dir()


# Five steps of the compiled training loop (engine.step_loops.run_large, which calls kernels_large.sgd_step) on a
# copy of the package; prints the parameters' sum.
LOOP_SCRIPT = r"""
import numpy as np
from minigrad.engine import loop as L
from minigrad.engine.model import MLP
from minigrad.engine.optim import make_optimizer
from minigrad.machine.threads import limit_threads
from minigrad.training.schedules import BatchSchedule, LRSchedule
from minigrad.training.train import Budget
r = np.random.default_rng(0)
X, y = r.standard_normal((256, 8)).astype(np.float32), r.integers(0, 4, 256)
with limit_threads(1):
    model, opt = MLP([8, 16, 4], seed=0), make_optimizer("sgd", 0.1)
    assert model.step_path(64, opt) == "blas-fused-sgd"
    sampler = L.SamplerState("shuffle", y, seed=0, drop_last=True)
    stepper = L.Stepper(model, X, y, opt, sampler, LRSchedule(0.1), BatchSchedule(64), Budget(steps=10**9))
    stepper.run(5)
print(repr(float(model.params.astype(np.float64).sum())))
"""


def loop_result(package_root, cache=None):
    env = dict(os.environ, PYTHONPATH=package_root)
    env.pop("NUMBA_CACHE_DIR", None)
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    done = subprocess.run([sys.executable, "-c", LOOP_SCRIPT], capture_output=True, text=True, env=env,
                          cwd=package_root, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_edit_to_the_step_reaches_the_compiled_loop(tmp_path):
    package = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "minigrad"), package / "minigrad",
                    ignore=shutil.ignore_patterns("__pycache__"))
    fixed = str(tmp_path / "one-numba-cache")
    before, before_fixed = loop_result(str(package)), loop_result(str(package), fixed)
    assert before == before_fixed
    # the edit: kernels_large's step takes twice the learning rate (a file the loop's cached function does not live in)
    step = package / "minigrad" / "engine" / "kernels_large.py"
    text = step.read_text()
    marker = "    L = len(weights)\n    for l in range(L):\n"
    assert text.count(marker) == 1
    step.write_text(text.replace(marker, "    lr = 2.0 * lr\n" + marker))
    assert loop_result(str(package)) != before  # the loop runs the edited step
    # negative control: with one fixed cache directory (Numba's own check alone) the loop keeps the stale step
    assert loop_result(str(package), fixed) == before_fixed
