"""The large-batch step's GEMMs (kernels_large.gemm) and the library behind them (engine/blas.py): every transpose
against NumPy, MINIGRAD_BLAS=mkl running the same step on MKL, and a bad choice refused in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minigrad.machine import blas
from minigrad.engine import kernels_large as KG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_is_alpha_op_a_op_b_plus_beta_out(dtype, trans_a, trans_b):
    r = np.random.default_rng(0)
    M, N, K = 7, 5, 11
    a = r.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = r.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    out = r.standard_normal((M, N)).astype(dtype)
    A, B = (a.T if trans_a else a).astype(np.float64), (b.T if trans_b else b).astype(np.float64)
    expected = 0.5 * A @ B + 0.25 * out.astype(np.float64)
    KG.gemm(out, a, b, trans_a, trans_b, 0.5, 0.25, *KG.gemm_scratch(dtype))
    np.testing.assert_allclose(out, expected, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    # negative control: with a square a, the check tells the product from the one with a's transpose flag flipped
    sq = r.standard_normal((K, K)).astype(dtype)
    right = (sq.T if trans_a else sq).astype(np.float64) @ B
    flipped = np.zeros((K, N), dtype)
    KG.gemm(flipped, sq, b, not trans_a, trans_b, 1.0, 0.0, *KG.gemm_scratch(dtype))
    assert not np.allclose(flipped, right, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


def test_a_bad_choice_of_blas_is_a_one_line_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("MINIGRAD_BLAS", "atlas")
    with pytest.raises(ValueError, match="MINIGRAD_BLAS='atlas'.*openblas or mkl"):
        blas.choice()
    monkeypatch.setenv("MINIGRAD_BLAS", " MKL ")
    assert blas.choice() == "mkl"
    monkeypatch.delenv("MINIGRAD_BLAS")
    assert blas.choice() == "openblas"


def test_mkl_asked_for_but_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(blas, "mkl_path", lambda: None)
    with pytest.raises(ValueError, match=r"pip install 'minigrad\[mkl\]'"):
        blas._addresses("mkl")


def test_the_cli_refuses_a_bad_blas_in_one_line_with_status_2(tmp_path):
    env = dict(os.environ, MINIGRAD_BLAS="atlas")
    done = subprocess.run([sys.executable, "-m", "minigrad", "bench", "throughput", "--batch-sizes", "64",
                           "--sizes", "8,16,4", "--threads", "1"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MINIGRAD_BLAS='atlas'" in lines[0], done.stderr


# In a fresh process set up as a study's worker (Numba's parallel code, and with it GNU OpenMP, loaded first; then
# a thread limit, before anything imports the engine): which library the step ran on, on which OpenMP runtime
# and how many threads, and the parameters after three large steps next to blas-unfused's (NumPy's np.dot).
STEP_SCRIPT = r"""
import json
import numpy as np
from numba import njit, prange
@njit(parallel=True)
def probe(x):
    for i in prange(x.shape[0]):
        x[i] = i
probe(np.zeros(4))
from minigrad.machine.threads import limit_threads
limits = limit_threads(1)
from threadpoolctl import threadpool_info
from minigrad import MLP, SGD
from minigrad.machine import blas
sizes, B = [20, 70, 30, 5], 80
fused, plain = MLP(sizes, dtype=np.float64, seed=1), MLP(sizes, dtype=np.float64, seed=1, backend="blas-unfused")
opt_f, opt_p = SGD(0.1), SGD(0.1)
r = np.random.default_rng(0)
for step in range(3):
    X, y = r.standard_normal((B, sizes[0])), r.integers(0, sizes[-1], B)
    fused.train_step(X, y, opt_f)
    plain.train_step(X, y, opt_p)
mkl = [(i["num_threads"], i["threading_layer"]) for i in threadpool_info() if i["internal_api"] == "mkl"]
print(json.dumps(dict(bound=blas.bound(), path=fused.step_path(B, opt_f), mkl=mkl,
                      max_diff=float(np.abs(fused.params - plain.params).max()),
                      moved=float(np.abs(fused.params - MLP(sizes, dtype=np.float64, seed=1).params).max()))))
"""


def run_step_script(choice):
    env = dict(os.environ, MINIGRAD_BLAS=choice)
    done = subprocess.run([sys.executable, "-c", STEP_SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(blas.mkl_path() is None, reason="MKL is not installed (pip install '.[mkl]', x86-64 Linux)")
def test_minigrad_blas_mkl_runs_the_large_step_on_mkl_with_the_same_updates():
    mkl = run_step_script("mkl")
    assert mkl["bound"] == "mkl" and mkl["path"] == "blas-fused-sgd"
    # loaded by the thread limit, so the limit reaches it; on Intel's OpenMP although GNU's was loaded first (MKL
    # would take GNU's by itself: slower, and in a study's workers it spun for minutes)
    assert mkl["mkl"] == [[1, "intel"]]
    assert mkl["moved"] > 1e-3 and mkl["max_diff"] < 1e-12  # the same three SGD steps as NumPy's BLAS
    # negative control: by default the step runs on OpenBLAS, and MKL is never loaded
    default = run_step_script("openblas")
    assert default["bound"] == "openblas" and default["mkl"] == [] and default["max_diff"] < 1e-12
