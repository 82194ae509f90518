"""The whole MLP: gradients against central differences, backends against each other, and the public API's checks."""
import numpy as np
import pytest

from minigrad import MLP, SGD, make_optimizer
from minigrad.engine.model import BACKENDS, DivergenceError
from tests import reference as ref


def batch(sizes, B, seed=0, dtype=np.float64, classes=None):
    r = np.random.default_rng(seed)
    X = r.standard_normal((B, sizes[0])).astype(dtype)
    y = r.integers(0, classes or sizes[-1], B)
    return X, y


def layers(model):
    return [(w.copy(), b.copy()) for w, b in zip(model.weights, model.biases)]


@pytest.mark.parametrize("sizes", [[4, 3], [5, 7, 3], [6, 8, 5, 4], [3, 5, 4, 6, 2]])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_mlp_gradient_matches_central_differences(sizes, activation, loss):
    model = MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=3)
    model.params[...] += np.random.default_rng(9).normal(0, 0.1, model.n_params)  # nonzero biases too
    X, y = batch(sizes, B=5)
    value = model.loss_and_grad(X, y)
    assert value == pytest.approx(ref.mlp_loss(layers(model), X, y, activation, loss), rel=1e-12)
    numeric = ref.numerical_grad(lambda: model.evaluate(X, y)[0], model.params)
    assert ref.rel_error(model.grads, numeric) < 1e-6


def test_gradient_check_fails_for_a_model_with_a_wrong_backward(monkeypatch):
    # negative control: the same check on a model whose relu backward lets every gradient through
    from minigrad.engine import kernels as K

    model = MLP([5, 7, 3], dtype=np.float64, seed=3)
    X, y = batch([5, 7, 3], B=5)
    numeric = ref.numerical_grad(lambda: model.evaluate(X, y)[0], model.params)
    model.loss_and_grad(X, y)
    assert ref.rel_error(model.grads, numeric) < 1e-6
    # the broken backward, in plain NumPy over the model's own forward values
    w0, b0 = model.weights[0], model.biases[0]
    w1 = model.weights[1]
    z0 = X @ w0.T + b0
    a0 = np.maximum(z0, 0)
    logits = a0 @ w1.T + model.biases[1]
    dlogits = np.empty_like(logits)
    K.softmax_cross_entropy_forward_backward(dlogits, logits, y)
    dz0 = dlogits @ w1  # missing the relu mask
    broken = np.concatenate([(dz0.T @ X).ravel(), dz0.sum(0), (dlogits.T @ a0).ravel(), dlogits.sum(0)])
    assert ref.rel_error(broken, numeric) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B", [1, 3, 64, 67])
def test_backends_agree_with_blas(backend, B):
    sizes = [13, 70, 65, 5]
    X, y = batch(sizes, B, seed=B)
    reference_model = MLP(sizes, dtype=np.float64, backend="blas", seed=1)
    model = MLP(sizes, dtype=np.float64, backend=backend, seed=1)
    assert model.loss_and_grad(X, y) == pytest.approx(reference_model.loss_and_grad(X, y), rel=1e-12)
    np.testing.assert_allclose(model.grads, reference_model.grads, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_float32_close_to_float64(activation):
    sizes = [20, 32, 10]
    X, y = batch(sizes, 16)
    m64 = MLP(sizes, activation=activation, dtype=np.float64, seed=2)
    m32 = MLP(sizes, activation=activation, dtype=np.float32, seed=2)
    l64, l32 = m64.loss_and_grad(X, y), m32.loss_and_grad(X.astype(np.float32), y)
    assert l32 == pytest.approx(l64, rel=1e-5)
    assert ref.rel_error(m32.grads.astype(np.float64), m64.grads) < 1e-4


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_same_seed_gives_bitwise_identical_parameters(optimizer):
    sizes = [10, 16, 16, 4]

    def run():
        model = MLP(sizes, dtype=np.float32, seed=5)
        opt = make_optimizer(optimizer, 0.01)
        for step in range(20):
            X, y = batch(sizes, 8, seed=step, dtype=np.float32)
            model.train_step(X, y, opt)
        return model.params.copy()

    first, second = run(), run()
    assert first.tobytes() == second.tobytes()
    assert not np.array_equal(first, MLP(sizes, dtype=np.float32, seed=5).params)


def test_train_step_equals_loss_and_grad_then_optimizer_step():
    sizes = [6, 9, 3]
    X, y = batch(sizes, 4)
    fused, split = MLP(sizes, dtype=np.float64, seed=0), MLP(sizes, dtype=np.float64, seed=0)
    opt_fused, opt_split = make_optimizer("adam", 0.01), make_optimizer("adam", 0.01)
    for _ in range(3):
        fused.train_step(X, y, opt_fused)
        split.loss_and_grad(X, y)
        opt_split.step(split)
    np.testing.assert_allclose(fused.params, split.params, rtol=1e-12)


def test_training_reduces_the_loss_on_a_batch_with_a_single_class():
    sizes = [4, 8, 3]
    X, y = batch(sizes, 10, classes=1)
    model = MLP(sizes, dtype=np.float64, seed=0)
    opt = SGD(0.5)
    first = model.train_step(X, y, opt)
    for _ in range(30):
        last = model.train_step(X, y, opt)
    assert last < first / 10
    assert (model.predict(X) == 0).all()


def test_per_example_gradient_norms_match_single_example_gradients():
    sizes = [5, 6, 4, 3]
    X, y = batch(sizes, 7)
    model = MLP(sizes, dtype=np.float64, seed=0)
    sqnorms = np.empty(7)
    model.loss_and_grad(X, y, sqnorms=sqnorms)
    brute = []
    for b in range(7):
        model.loss_and_grad(X[b:b + 1], y[b:b + 1])
        brute.append(np.sum(model.grads**2))
    np.testing.assert_allclose(sqnorms, brute, rtol=1e-10)


def test_per_example_backend_gives_the_same_norms_and_steps_as_blas():
    # the per-example backend forms each example's gradient on its own; norms and updates must equal the batched ones
    sizes = [5, 6, 4, 3]
    X, y = batch(sizes, 9)
    batched, single = MLP(sizes, dtype=np.float64, seed=0), MLP(sizes, dtype=np.float64, seed=0, backend="per-example")
    norms_batched, norms_single = np.empty(9), np.empty(9)
    batched.loss_and_grad(X, y, sqnorms=norms_batched)
    single.loss_and_grad(X, y, sqnorms=norms_single)
    np.testing.assert_allclose(norms_single, norms_batched, rtol=1e-10)
    for optimizer in ("sgd", "adam"):
        opt_b, opt_s = make_optimizer(optimizer, 0.05), make_optimizer(optimizer, 0.05)
        for _ in range(3):
            assert single.train_step(X, y, opt_s) == pytest.approx(batched.train_step(X, y, opt_b), rel=1e-10)
        np.testing.assert_allclose(single.params, batched.params, rtol=1e-9, atol=1e-12)
    # negative control: a step on a different batch moves the parameters elsewhere
    single.train_step(X[::-1].copy(), y, opt_s)
    batched.train_step(X, y, opt_b)
    assert not np.allclose(single.params, batched.params, rtol=1e-6)


def test_predict_and_evaluate():
    sizes = [3, 5, 4]
    X, y = batch(sizes, 2500)
    model = MLP(sizes, dtype=np.float64, seed=0)
    logits = model.logits(X)
    expected = ref.linear(np.maximum(ref.linear(X, model.weights[0], model.biases[0]), 0), model.weights[1],
                          model.biases[1])
    np.testing.assert_allclose(logits, expected, rtol=1e-12)
    loss, error = model.evaluate(X, y)
    assert loss == pytest.approx(ref.cross_entropy(expected, y), rel=1e-10)
    assert error == pytest.approx(np.mean(expected.argmax(1) != y))


def test_params_are_one_flat_vector_with_layer_views():
    model = MLP([3, 4, 2], seed=0)
    assert model.n_params == 3 * 4 + 4 + 4 * 2 + 2
    model.weights[1][0, 1] = 42.0
    assert model.params[3 * 4 + 4 + 1] == 42.0
    model.grads[-1] = 7.0
    assert model.dbiases[1][-1] == 7.0
    assert np.abs(model.biases[0]).max() == 0 and np.abs(model.weights[0]).max() > 0


def test_nan_loss_is_reported_and_parameters_kept():
    sizes = [3, 4, 2]
    model = MLP(sizes, dtype=np.float64, seed=0)
    X, y = batch(sizes, 4)
    model.weights[0][0, 0] = np.inf
    before = model.params.copy()
    with pytest.raises(DivergenceError, match="diverged"):
        model.train_step(X, y, SGD(0.1))
    np.testing.assert_array_equal(model.params, before)


@pytest.mark.parametrize("X,y,match", [
    (np.zeros((4, 5)), np.zeros(4, np.int64), r"shape \(B, 3\)"),
    (np.zeros((4, 3), np.float32), np.zeros(4, np.int64), "dtype float32"),
    (np.zeros((3, 4)).T, np.zeros(4, np.int64), "C-contiguous"),
    (np.full((4, 3), np.nan), np.zeros(4, np.int64), "NaN"),
    (np.zeros((4, 3)), np.zeros(5, np.int64), r"shape \(4,\)"),
    (np.zeros((4, 3)), np.zeros(4, np.float64), "int64"),
    (np.zeros((4, 3)), np.array([0, 1, 2, 0]), r"\[0, 2\)"),
    (np.zeros((4, 3)), np.array([0, -1, 1, 0]), r"\[0, 2\)"),
])
def test_bad_input_raises_a_value_error_naming_the_problem(X, y, match):
    model = MLP([3, 4, 2], dtype=np.float64)
    with pytest.raises(ValueError, match=match):
        model.loss_and_grad(X, y)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sizes=[3]), "at least 2"),
    (dict(sizes=[3, 0, 2]), "positive"),
    (dict(sizes=[3, 2], activation="swish"), "unknown activation"),
    (dict(sizes=[3, 2], loss="hinge"), "unknown loss"),
    (dict(sizes=[3, 2], dtype=np.int32), "float32 or float64"),
    (dict(sizes=[3, 2], backend="gpu"), "unknown backend"),
])
def test_bad_model_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)
