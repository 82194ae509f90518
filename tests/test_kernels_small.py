"""The small-batch kernels (kernels_small.py) and the fused SGD step, against NumPy references and the plain path.

linear_forward / linear_backward of kernels_small also run through every linear test of test_kernels.py (they are
one of its LINEAR_PATHS). Here: the row-range kernels the fused step is built from, the fused step itself against
the plain train step (serial and split across threads), and the model's lazily computed gradient after it.
"""
import numba
import numpy as np
import pytest

from minigrad import MLP, SGD, make_optimizer
from minigrad.engine import kernels_small as KS
from minigrad.engine import model as M
from minigrad.engine import steps as S
from tests import reference as ref

# (B, C, OC): B = 1, B and OC not multiples of the 4-row blocks, C not a multiple of 16, and B * C past L1_FLOATS so
# that the column blocks are cut (C = 1000, B = 9)
SHAPES = [(1, 1, 1), (1, 7, 5), (3, 5, 4), (5, 67, 13), (9, 1000, 6), (17, 515, 9)]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def rng():
    return np.random.default_rng(4321)


def arrays(B, C, OC, dtype):
    r = rng()
    return [r.standard_normal(shape).astype(dtype) for shape in [(B, C), (OC, C), (OC,), (B, OC)]]


def test_column_blocks_cover_the_row_in_equal_multiples_of_16():
    assert KS.column_block(1, 784) == 784          # the whole row fits L1: one block
    kc = KS.column_block(64, 784)
    assert kc % 16 == 0 and kc * 64 <= KS.L1_FLOATS + 16 * 64
    assert KS.column_block(4096, 784) == 64         # never narrower than 64 floats


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,OC", SHAPES)
def test_forward_rows_writes_only_its_rows(B, C, OC, dtype):
    inp, weight, bias, _ = arrays(B, C, OC, dtype)
    lo, hi = OC // 3, OC - OC // 4
    out = np.full((B, OC), 7.0, dtype)
    KS.linear_forward_rows(out, inp, weight, bias, lo, hi)
    expected = ref.linear(inp.astype(np.float64), weight, bias)
    np.testing.assert_allclose(out[:, lo:hi], expected[:, lo:hi], rtol=TOL[dtype], atol=TOL[dtype] * np.sqrt(C))
    assert (out[:, :lo] == 7.0).all() and (out[:, hi:] == 7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,OC", SHAPES)
def test_dinp_rows_accumulates_its_rows(B, C, OC, dtype):
    _, weight, _, dout = arrays(B, C, OC, dtype)
    lo, hi = OC // 3, OC
    start = rng().standard_normal((B, C)).astype(dtype)
    dinp = start.copy()
    KS.linear_dinp_rows(dinp, dout, weight, lo, hi)
    expected = start + dout[:, lo:hi].astype(np.float64) @ weight[lo:hi]
    np.testing.assert_allclose(dinp, expected, rtol=TOL[dtype], atol=TOL[dtype] * np.sqrt(OC))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,OC", SHAPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgd_rows_is_backward_then_sgd_update_on_its_rows(B, C, OC, dtype, weight_decay):
    inp, weight, bias, dout = arrays(B, C, OC, dtype)
    lo, hi, lr = OC // 2, OC, 0.05
    W, b, dinp = weight.copy(), bias.copy(), np.zeros((B, C), dtype)
    KS.linear_sgd_rows(dinp, W, b, dout, inp, lo, hi, lr, weight_decay, True)
    W64, b64, d64, x64 = weight.astype(np.float64), bias.astype(np.float64), dout.astype(np.float64), inp
    expected_W, expected_b = W64.copy(), b64.copy()
    expected_W[lo:hi] -= lr * (d64[:, lo:hi].T @ x64 + weight_decay * W64[lo:hi])
    expected_b[lo:hi] -= lr * (d64[:, lo:hi].sum(0) + weight_decay * b64[lo:hi])
    tol = TOL[dtype]
    np.testing.assert_allclose(W, expected_W, rtol=tol, atol=tol * np.sqrt(B))
    np.testing.assert_allclose(b, expected_b, rtol=tol, atol=tol * np.sqrt(B))
    np.testing.assert_allclose(dinp, d64[:, lo:hi] @ W64[lo:hi], rtol=tol, atol=tol * np.sqrt(OC))  # old weights


def test_sgd_rows_weight_gradient_against_central_differences():
    # the update it applies is -lr times the gradient of loss = sum(out * dout) with respect to the weight
    r = rng()
    B, C, OC, lr = 3, 5, 4, 0.5
    inp, weight, bias, dout = (r.standard_normal(s) for s in [(B, C), (OC, C), (OC,), (B, OC)])
    out = np.empty((B, OC))

    def loss():
        KS.linear_forward(out, inp, weight, bias)
        return (out * dout).sum()

    numeric_w, numeric_b = ref.numerical_grad(loss, weight), ref.numerical_grad(loss, bias)
    W, b = weight.copy(), bias.copy()
    KS.linear_sgd_rows(np.zeros((B, C)), W, b, dout, inp, 0, OC, lr, 0.0, False)
    assert ref.rel_error((weight - W) / lr, numeric_w) < 1e-6
    assert ref.rel_error((bias - b) / lr, numeric_b) < 1e-6


@pytest.mark.parametrize("n,T", [(10, 2), (256, 2), (7, 3), (1000, 4), (3, 1)])
def test_worker_rows_partition_every_layer(n, T):
    blocks = [KS.worker_rows(n, T, w) for w in range(T)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all(lo % 16 == 0 or lo == n for lo, _ in blocks)


# ------------------------------------------------------------------------------------------------ fused step
def thread_counts():
    return [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]


@pytest.fixture
def threads(request):
    before = numba.get_num_threads()
    numba.set_num_threads(request.param)
    yield request.param
    numba.set_num_threads(before)


@pytest.fixture(autouse=True)
def fused_small_step(monkeypatch):
    # these tests are of kernels_small's fused step: take it at the B they test, whatever the thresholds (which give
    # small models, and one thread, kernels_large's step)
    monkeypatch.setattr(S, "FUSED_SGD_MAX", {1: 24, 2: 40})
    monkeypatch.setattr(S, "FUSED_SGD_MIN_PARAMS", 0)


def batch(sizes, B, seed, dtype):
    r = np.random.default_rng(seed)
    return r.standard_normal((B, sizes[0])).astype(dtype), r.integers(0, sizes[-1], B)


# The parallel step is compiled once per process for each dtype and depth (~8 s each): the threaded cases keep to
# 3 layers, the serial ones (cached on disk) cover other depths.
FUSED_CASES = [(sizes, dtype, T) for sizes in ([13, 70, 65, 5], [40, 17, 19, 2]) for dtype in DTYPES
               for T in thread_counts()] + [(sizes, dtype, 1) for sizes in ([5, 33, 3], [40, 17, 19, 23, 2])
                                            for dtype in DTYPES]


@pytest.mark.parametrize("sizes,dtype,threads", FUSED_CASES, indirect=["threads"])
@pytest.mark.parametrize("B", [1, 3, 4, 7, 16])
def test_fused_sgd_step_equals_plain_train_step(threads, dtype, B, sizes):
    assert B <= S.fused_sgd_max(1)
    fused = MLP(sizes, dtype=dtype, seed=1)
    plain = MLP(sizes, dtype=dtype, seed=1, backend="loops")  # never fused; same arithmetic up to rounding
    fused.params[...] += 0.01  # nonzero biases
    plain.params[...] = fused.params
    opt_f, opt_p = SGD(0.1, weight_decay=0.01), SGD(0.1, weight_decay=0.01)
    assert fused.step_path(B, opt_f).startswith("fused-sgd")
    for step in range(3):
        X, y = batch(sizes, B, step, dtype)
        assert fused.train_step(X, y, opt_f) == pytest.approx(plain.train_step(X, y, opt_p), rel=TOL[dtype])
    np.testing.assert_allclose(fused.params, plain.params, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    assert opt_f.steps == opt_p.steps == 3


@pytest.mark.parametrize("threads", thread_counts(), indirect=True)
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_fused_sgd_step_every_activation_and_loss(threads, activation, loss):
    sizes = [9, 21, 18, 4]
    fused = MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=2)
    plain = MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=2, backend="loops")
    opt_f, opt_p = SGD(0.2), SGD(0.2)
    for step in range(3):
        X, y = batch(sizes, 6, step, np.float64)
        assert fused.train_step(X, y, opt_f) == pytest.approx(plain.train_step(X, y, opt_p), rel=1e-12)
    np.testing.assert_allclose(fused.params, plain.params, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("threads", thread_counts(), indirect=True)
def test_grads_after_a_fused_step_are_the_gradient_at_the_parameters_before_it(threads):
    sizes = [11, 30, 20, 3]
    model = MLP(sizes, dtype=np.float64, seed=3)
    X, y = batch(sizes, 5, 0, np.float64)
    before = model.copy()
    loss = model.train_step(X, y, SGD(0.1))
    assert model._pending is not None  # the fused path ran and deferred the gradient
    assert loss == pytest.approx(before.loss_and_grad(X, y), rel=1e-12)
    X[...] = 0.0  # the caller reusing its batch buffer does not change the gradient of the step that used it
    np.testing.assert_allclose(model.grads, before.grads, rtol=1e-10, atol=1e-14)
    assert model.dweights[0].base is model.grads.base or np.shares_memory(model.dweights[0], model.grads)
    # and the step itself was SGD with that gradient
    np.testing.assert_allclose(model.params, before.params - 0.1 * before.grads, rtol=1e-12, atol=1e-14)


def test_grads_are_settled_before_evaluate_reuses_the_workspaces():
    sizes = [6, 8, 3]
    model = MLP(sizes, dtype=np.float64, seed=0)
    X, y = batch(sizes, 4, 0, np.float64)
    reference = model.copy()
    reference.loss_and_grad(X, y)
    model.train_step(X, y, SGD(0.1))
    Xv, yv = batch(sizes, 4, 1, np.float64)  # same batch size: the same workspace
    model.evaluate(Xv, yv)
    np.testing.assert_allclose(model.grads, reference.grads, rtol=1e-12)


def test_optimizers_with_state_and_large_batches_leave_the_fused_small_step():
    sizes = [6, 8, 3]
    model = MLP(sizes, dtype=np.float64, seed=0)
    X, y = batch(sizes, 4, 0, np.float64)
    model.train_step(X, y, make_optimizer("momentum", 0.1))
    assert model._pending is None
    B = S.fused_sgd_max(S.fused_workers()) + 1
    assert model.step_path(B, "sgd") == "blas-fused-sgd"  # kernels_large's step (tests/test_kernels_large.py)
    assert model.step_for(S.SMALL_BATCH_MAX, "adam").linear is S.SMALL
    assert model.step_for(S.SMALL_BATCH_MAX + 1, "adam").linear is S.BACKENDS["blas"]
    assert MLP(sizes, backend="loops").step_for(1, "adam").linear is S.BACKENDS["loops"]


@pytest.mark.parametrize("threads", thread_counts(), indirect=True)
def test_fused_step_with_a_non_finite_loss_keeps_the_parameters(threads):
    sizes = [3, 4, 5, 2]
    model = MLP(sizes, dtype=np.float32, seed=0)
    X, y = batch(sizes, 2, 0, np.float32)
    model.weights[0][0, 0] = np.inf
    before, opt = model.params.copy(), SGD(0.1)
    with pytest.raises(M.DivergenceError):
        model.train_step(X, y, opt)
    np.testing.assert_array_equal(model.params, before)
    assert opt.steps == 0
