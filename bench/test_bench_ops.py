"""Each op of the step on its own: linear forward/backward per GEMM path, activations, loss, optimizer updates.

Shapes are the first (784 -> 256) and last (256 -> 10) layers of the 784-256-256-10 MLP, float32. The paths:
"blas" (kernels.py, OpenBLAS through Numba), "small" (kernels_small.py, the register-blocked kernels the model uses
for small batches), "loops" and "loops-parallel" (kernels_loops.py).
"""
import numpy as np
import pytest

from minigrad.engine import kernels as K
from minigrad.engine import kernels_loops as KL
from minigrad.engine import kernels_small as KS
from minigrad.engine import optim

PATHS = {
    "blas": (K.linear_forward, K.linear_backward),
    "small": (KS.linear_forward, KS.linear_backward),
    "loops": (KL.linear_forward, KL.linear_backward),
    "loops-parallel": (KL.linear_forward_parallel, KL.linear_backward_parallel),
}
LAYERS = {"784x256": (784, 256), "256x10": (256, 10)}
N_PARAMS = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10


def arrays(B, C, OC, seed=0):
    r = np.random.default_rng(seed)
    f = np.float32
    return dict(inp=r.standard_normal((B, C)).astype(f), weight=(r.standard_normal((OC, C)) * 0.05).astype(f),
                bias=np.zeros(OC, f), out=np.empty((B, OC), f), dout=r.standard_normal((B, OC)).astype(f),
                dinp=np.empty((B, C), f), dweight=np.empty((OC, C), f), dbias=np.empty(OC, f))


def timed(benchmark, fn, *args):
    fn(*args)  # JIT warm-up
    benchmark(fn, *args)


@pytest.mark.parametrize("B", [1, 8, 64, 1024])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("path", PATHS)
def test_linear_forward(benchmark, record, path, layer, B):
    C, OC = LAYERS[layer]
    a = arrays(B, C, OC)
    record(op="linear_forward", path=path, batch_size=B, C=C, OC=OC, flops=2 * B * C * OC)
    timed(benchmark, PATHS[path][0], a["out"], a["inp"], a["weight"], a["bias"])


@pytest.mark.parametrize("B", [1, 8, 64, 1024])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("path", PATHS)
def test_linear_backward(benchmark, record, path, layer, B):
    C, OC = LAYERS[layer]
    a = arrays(B, C, OC)
    record(op="linear_backward", path=path, batch_size=B, C=C, OC=OC, flops=4 * B * C * OC)
    timed(benchmark, PATHS[path][1], a["dinp"], a["dweight"], a["dbias"], a["dout"], a["inp"], a["weight"], True)


@pytest.mark.parametrize("B", [1, 8, 16])
def test_fused_sgd_rows(benchmark, record, B):
    # kernels_small.linear_sgd_rows: the first layer's backward and SGD update in one pass (one core, all rows)
    a = arrays(B, 784, 256)
    record(op="linear_sgd_rows", path="small", batch_size=B, C=784, OC=256, flops=2 * B * 784 * 256)
    timed(benchmark, KS.linear_sgd_rows, a["dinp"], a["weight"], a["bias"], a["dout"], a["inp"], 0, 256, 1e-6, 0.0,
          False)


@pytest.mark.parametrize("B", [1, 1024])
@pytest.mark.parametrize("name", K.ACTIVATIONS)
def test_activation_forward(benchmark, record, name, B):
    r = np.random.default_rng(0)
    inp = r.standard_normal((B, 256)).astype(np.float32)
    record(op="activation_forward", activation=name, batch_size=B, N=256)
    timed(benchmark, K.activation_forward, K.ACTIVATIONS[name], np.empty_like(inp), inp)


@pytest.mark.parametrize("B", [1, 1024])
@pytest.mark.parametrize("name", K.ACTIVATIONS)
def test_activation_backward_in_place(benchmark, record, name, B):
    r = np.random.default_rng(0)
    inp = r.standard_normal((B, 256)).astype(np.float32)
    out, d = np.empty_like(inp), r.standard_normal((B, 256)).astype(np.float32)
    K.activation_forward(K.ACTIVATIONS[name], out, inp)
    record(op="activation_backward", activation=name, batch_size=B, N=256)
    timed(benchmark, K.activation_backward, K.ACTIVATIONS[name], d, d, inp, out)


@pytest.mark.parametrize("B", [1, 1024])
@pytest.mark.parametrize("name", K.LOSSES)
def test_loss(benchmark, record, name, B):
    r = np.random.default_rng(0)
    logits = r.standard_normal((B, 10)).astype(np.float32)
    record(op="loss_forward_backward", loss=name, batch_size=B, K=10)
    timed(benchmark, K.loss_forward_backward, K.LOSSES[name], np.empty_like(logits), logits, r.integers(0, 10, B))


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_optimizer_update(benchmark, record, name):
    # one update of all 784-256-256-10 parameters: a pass over ~1 MB (float32) per array, memory bound
    r = np.random.default_rng(0)
    params, grads = r.standard_normal(N_PARAMS).astype(np.float32), r.standard_normal(N_PARAMS).astype(np.float32)
    state = np.zeros((2, N_PARAMS), np.float32)
    hyper = np.array([1e-6, 0.9, 0.999, 1e-8, 0.0, 1.0])
    record(op="optimizer_update", optimizer=name, n_params=N_PARAMS)
    timed(benchmark, optim.optimizer_update, optim.OPTIMIZERS[name], params, grads, state, hyper)
