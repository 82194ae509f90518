"""The large-batch fusions (kernels_large.py) against NumPy references, and the fused BLAS step against the unfused
one (blas-unfused): the same updates, the gradient recovered on demand, bitwise repeatable, untouched on divergence.
"""
import numpy as np
import pytest

from minigrad import MLP, SGD, make_optimizer
from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import model as M
from minigrad.engine import steps as S
from tests import reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}
# past the fused small-batch step on any thread count, so train_step takes kernels_large's path
B_LARGE = S.FUSED_SGD_MAX[2] + 9


def batch(sizes, B, seed, dtype):
    r = np.random.default_rng(seed)
    return r.standard_normal((B, sizes[0])).astype(dtype), r.integers(0, sizes[-1], B)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,OC", [(1, 1, 1), (3, 5, 4), (50, 67, 13), (7, 300, 129)])
def test_gemm_sgd_update_is_decay_times_w_minus_lr_dout_t_inp(dtype, B, C, OC):
    r = np.random.default_rng(0)
    W, dout, inp = (r.standard_normal(s).astype(dtype) for s in [(OC, C), (B, OC), (B, C)])
    W0 = W.astype(np.float64)
    expected = 0.9 * W0 - 0.05 * dout.T.astype(np.float64) @ inp
    KG.gemm_sgd_update(W, dout, inp, 0.05, 0.9, *KG.gemm_scratch(dtype))
    np.testing.assert_allclose(W, expected, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    # negative control: the check tells a step uphill (alpha's sign flipped) from the right one
    assert not np.allclose(W, 0.9 * W0 + 0.05 * dout.T.astype(np.float64) @ inp, rtol=TOL[dtype] * 10,
                           atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_bias_activation_forward_is_bias_then_activation(dtype, activation):
    r = np.random.default_rng(1)
    z, bias = r.standard_normal((6, 19)).astype(dtype), r.standard_normal(19).astype(dtype)
    expected_z = z + bias
    expected = {"relu": ref.relu, "tanh": np.tanh, "gelu": ref.gelu}[activation](expected_z.astype(np.float64))
    out = np.zeros_like(z)
    KG.bias_activation_forward(K.ACTIVATIONS[activation], out, z, bias)
    np.testing.assert_allclose(z, expected_z, rtol=TOL[dtype])
    np.testing.assert_allclose(out, expected, rtol=TOL[dtype] * 10, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_activation_backward_bias_sgd_matches_the_separate_passes(dtype, activation):
    r = np.random.default_rng(2)
    z = r.standard_normal((7, 11)).astype(dtype)
    out = np.zeros_like(z)
    K.activation_forward(K.ACTIVATIONS[activation], out, z)
    da, bias = r.standard_normal((7, 11)).astype(dtype), r.standard_normal(11).astype(dtype)
    dz_ref = np.zeros_like(da)
    K.activation_backward(K.ACTIVATIONS[activation], dz_ref, da, z, out)
    bias_ref = 0.99 * bias - 0.1 * dz_ref.sum(axis=0)
    KG.activation_backward_bias_sgd(K.ACTIVATIONS[activation], da, z, out, bias, 0.1, 0.99, np.zeros(11, dtype))
    np.testing.assert_allclose(da, dz_ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(bias, bias_ref, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


# (sizes, B): B < OC_0 folds the first layer too (and keeps a copy of the batch), B >= OC_0 gives it an update pass
CASES = [([13, 70, 65, 5], B_LARGE), ([13, 20, 17, 4], B_LARGE), ([9, 12, 3], B_LARGE)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,B", CASES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_blas_step_takes_the_unfused_steps(dtype, sizes, B, weight_decay):
    fused = MLP(sizes, dtype=dtype, seed=1)
    plain = MLP(sizes, dtype=dtype, seed=1, backend="blas-unfused")
    opt_f, opt_p = SGD(0.1, weight_decay=weight_decay), SGD(0.1, weight_decay=weight_decay)
    assert fused.step_path(B, opt_f) == "blas-fused-sgd" and plain.step_path(B, opt_p) == "blas-unfused"
    for step in range(3):
        X, y = batch(sizes, B, step, dtype)
        assert fused.train_step(X, y, opt_f) == pytest.approx(plain.train_step(X, y, opt_p), rel=TOL[dtype])
        np.testing.assert_allclose(fused.grads, plain.grads, rtol=TOL[dtype] * 10, atol=TOL[dtype])
    np.testing.assert_allclose(fused.params, plain.params, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    assert opt_f.steps == opt_p.steps == 3


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_fused_blas_step_every_activation_and_loss(activation, loss):
    sizes = [9, 60, 18, 4]
    fused = MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=2)
    plain = MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=2, backend="loops")
    opt_f, opt_p = SGD(0.2), SGD(0.2)
    for step in range(3):
        X, y = batch(sizes, B_LARGE, step, np.float64)
        assert fused.train_step(X, y, opt_f) == pytest.approx(plain.train_step(X, y, opt_p), rel=1e-12)
    np.testing.assert_allclose(fused.params, plain.params, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("sizes", [[11, 80, 20, 3], [11, 30, 20, 3]])
def test_grads_after_a_fused_blas_step_are_the_gradient_at_the_parameters_before_it(sizes):
    model = MLP(sizes, dtype=np.float64, seed=3)
    X, y = batch(sizes, B_LARGE, 0, np.float64)
    before = model.copy()
    loss = model.train_step(X, y, SGD(0.1))
    assert model._pending is not None  # the gradient was deferred
    assert loss == pytest.approx(before.loss_and_grad(X, y), rel=1e-12)
    X[...] = 0.0  # the caller reusing its batch buffer does not change the gradient of the step that used it
    np.testing.assert_allclose(model.grads, before.grads, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(model.params, before.params - 0.1 * before.grads, rtol=1e-12, atol=1e-14)
    # negative control: a step with another learning rate is told apart by the same check
    other = before.copy()
    other.train_step(*batch(sizes, B_LARGE, 0, np.float64), SGD(0.11))
    assert not np.allclose(other.params, before.params - 0.1 * before.grads, rtol=1e-12, atol=1e-14)


def test_fused_blas_step_is_bitwise_repeatable_on_one_thread():
    from minigrad.machine.threads import limit_threads

    sizes = [30, 40, 20, 5]
    with limit_threads(1):
        runs = []
        for _ in range(2):
            model, opt = MLP(sizes, seed=4), SGD(0.05)
            for step in range(4):
                model.train_step(*batch(sizes, B_LARGE, step, np.float32), opt)
            runs.append((model.params.copy(), model.grads.copy()))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])


def test_a_diverging_fused_blas_step_leaves_the_parameters_and_reports():
    sizes = [6, 50, 3]
    model = MLP(sizes, dtype=np.float64, seed=0)
    X, y = batch(sizes, B_LARGE, 0, np.float64)
    model.params[:5] = 1e308  # logits overflow to inf: the loss is not finite
    before = model.params.copy()
    with pytest.raises(M.DivergenceError):
        model.train_step(X, y, SGD(0.1))
    np.testing.assert_array_equal(model.params, before)
    assert model._pending is None


def test_other_optimizers_and_the_unfused_backend_keep_the_plain_step():
    sizes = [6, 8, 3]
    X, y = batch(sizes, B_LARGE, 0, np.float64)
    model = MLP(sizes, dtype=np.float64)
    model.train_step(X, y, make_optimizer("momentum", 0.1))
    assert model._pending is None and model.step_path(B_LARGE, "momentum") == "blas"
    unfused = MLP(sizes, dtype=np.float64, backend="blas-unfused")
    unfused.train_step(X, y, SGD(0.1))
    assert unfused._pending is None
    assert [unfused.step_path(B, "sgd") for B in (1, B_LARGE)] == ["blas-unfused"] * 2
