"""Each kernel against its NumPy reference, and its backward against float64 central differences.

The upstream gradient is random (loss = sum(out * dout)), never all-ones, so a backward that mixes up rows, columns
or a transpose cannot pass by symmetry.
"""
import numpy as np
import pytest

from minigrad.engine import kernels as K
from minigrad.engine import kernels_loops as KL
from minigrad.engine import kernels_small as KS
from tests import reference as ref

LINEAR_PATHS = {
    "blas": (K.linear_forward, K.linear_backward),
    "loops": (KL.linear_forward, KL.linear_backward),
    "loops-parallel": (KL.linear_forward_parallel, KL.linear_backward_parallel),
    "small": (KS.linear_forward, KS.linear_backward),
}
SHAPES = [(1, 1, 1), (1, 7, 5), (3, 5, 4), (13, 67, 129), (65, 130, 3)]  # (B, C, OC): B = 1, odd, past a tile


def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("path", LINEAR_PATHS)
@pytest.mark.parametrize("B,C,OC", SHAPES)
def test_linear_forward_matches_reference(path, B, C, OC):
    r = rng()
    inp, weight, bias = r.standard_normal((B, C)), r.standard_normal((OC, C)), r.standard_normal(OC)
    out = np.empty((B, OC))
    LINEAR_PATHS[path][0](out, inp, weight, bias)
    np.testing.assert_allclose(out, ref.linear(inp, weight, bias), rtol=1e-12, atol=1e-12)


def linear_grads(backward, dout, inp, weight):
    dinp, dweight, dbias = np.empty_like(inp), np.empty_like(weight), np.empty(weight.shape[0])
    backward(dinp, dweight, dbias, dout, inp, weight, True)
    return dinp, dweight, dbias


@pytest.mark.parametrize("path", LINEAR_PATHS)
@pytest.mark.parametrize("B,C,OC", [(1, 3, 2), (4, 5, 3), (7, 6, 9)])
def test_linear_backward_central_differences(path, B, C, OC):
    r = rng()
    inp, weight, bias = r.standard_normal((B, C)), r.standard_normal((OC, C)), r.standard_normal(OC)
    dout = r.standard_normal((B, OC))
    forward, backward = LINEAR_PATHS[path]
    out = np.empty((B, OC))

    def loss():
        forward(out, inp, weight, bias)
        return (out * dout).sum()

    dinp, dweight, dbias = linear_grads(backward, dout, inp, weight)
    assert ref.rel_error(dinp, ref.numerical_grad(loss, inp)) < 1e-6
    assert ref.rel_error(dweight, ref.numerical_grad(loss, weight)) < 1e-6
    assert ref.rel_error(dbias, ref.numerical_grad(loss, bias)) < 1e-6


@pytest.mark.parametrize("path", LINEAR_PATHS)
@pytest.mark.parametrize("B,C,OC", SHAPES)
def test_linear_backward_matches_reference_on_awkward_shapes(path, B, C, OC):
    r = rng()
    inp, weight, dout = r.standard_normal((B, C)), r.standard_normal((OC, C)), r.standard_normal((B, OC))
    dinp, dweight, dbias = linear_grads(LINEAR_PATHS[path][1], dout, inp, weight)
    np.testing.assert_allclose(dweight, dout.T @ inp, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dbias, dout.sum(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dinp, dout @ weight, rtol=1e-10, atol=1e-10)


def test_linear_backward_skips_input_gradient_when_not_needed():
    r = rng()
    inp, weight, dout = r.standard_normal((3, 4)), r.standard_normal((2, 4)), r.standard_normal((3, 2))
    for backward in (K.linear_backward, KL.linear_backward, KS.linear_backward):
        dinp = np.full_like(inp, 7.0)
        backward(dinp, np.empty_like(weight), np.empty(2), dout, inp, weight, False)
        assert (dinp == 7.0).all()


ACT_BACKWARD_INPUT = {"relu": "inp", "tanh": "out", "gelu": "inp"}


@pytest.mark.parametrize("name", K.ACTIVATIONS)
def test_activation_forward_and_backward(name):
    r = rng()
    inp = r.standard_normal((5, 9)) * 2
    inp[np.abs(inp) < 1e-3] = 0.5  # keep relu's kink away from the finite-difference step
    dout = r.standard_normal(inp.shape)
    out = np.empty_like(inp)
    kind = K.ACTIVATIONS[name]

    def loss():
        K.activation_forward(kind, out, inp)
        return (out * dout).sum()

    loss()
    np.testing.assert_allclose(out, ref.ACTIVATIONS[name](inp), rtol=1e-12, atol=1e-12)
    dinp = np.empty_like(inp)
    K.activation_backward(kind, dinp, dout, inp, out.copy())
    assert ref.rel_error(dinp, ref.numerical_grad(loss, inp)) < 1e-6


@pytest.mark.parametrize("name", K.LOSSES)
@pytest.mark.parametrize("B,Kc", [(1, 2), (6, 10), (9, 3)])
def test_loss_forward_backward(name, B, Kc):
    r = rng()
    logits = r.standard_normal((B, Kc)) * 3
    targets = r.integers(0, Kc, B)
    dlogits = np.empty_like(logits)
    kind = K.LOSSES[name]
    value = K.loss_forward_backward(kind, dlogits, logits, targets)
    assert value == pytest.approx(ref.LOSSES[name](logits, targets), rel=1e-12)
    numeric = ref.numerical_grad(lambda: ref.LOSSES[name](logits, targets), logits)
    assert ref.rel_error(dlogits, numeric) < 1e-6


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]])
    dlogits = np.empty_like(logits)
    value = K.softmax_cross_entropy_forward_backward(dlogits, logits, np.array([0, 0]))
    assert np.isfinite(value) and np.isfinite(dlogits).all()
    assert value == pytest.approx(1e5 / 2)


def test_cross_entropy_with_a_single_class_present():
    r = rng()
    logits, targets = r.standard_normal((8, 4)), np.full(8, 2)
    dlogits = np.empty_like(logits)
    value = K.softmax_cross_entropy_forward_backward(dlogits, logits, targets)
    assert value == pytest.approx(ref.cross_entropy(logits, targets), rel=1e-12)
    assert ref.rel_error(dlogits, ref.numerical_grad(lambda: ref.cross_entropy(logits, targets), logits)) < 1e-6


def test_per_example_gradient_sqnorms_match_brute_force():
    r = rng()
    B, C, OC = 6, 5, 4
    inp, dout = r.standard_normal((B, C)), r.standard_normal((B, OC))
    sqnorms = np.zeros(B)
    K.linear_grad_sqnorms(sqnorms, dout, inp)
    brute = [np.sum(np.outer(dout[b], inp[b]) ** 2) + np.sum(dout[b] ** 2) for b in range(B)]
    np.testing.assert_allclose(sqnorms, brute, rtol=1e-12)


def test_errors_count():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert K.errors_count(logits, np.array([1, 1, 1])) == 1


# ------------------------------------------------------------------------------------------- negative controls
def broken_tanh_backward(dinp, dout, out):
    dinp[...] = dout * (1.0 - out)  # forgot to square


def broken_linear_backward(dinp, dweight, dbias, dout, inp, weight, need_dinp):
    dweight[...] = dout.T @ inp
    dbias[...] = dout.sum(axis=0)
    dinp[...] = 1.001 * (dout @ weight)  # off by 0.1%


def test_gradient_check_catches_a_wrong_activation_backward():
    r = rng()
    inp, dout = r.standard_normal((4, 5)), r.standard_normal((4, 5))
    out = np.empty_like(inp)

    def loss():
        K.tanh_forward(out, inp)
        return (out * dout).sum()

    loss()
    dinp = np.empty_like(inp)
    broken_tanh_backward(dinp, dout, out.copy())
    assert ref.rel_error(dinp, ref.numerical_grad(loss, inp)) > 1e-3


def test_gradient_check_catches_a_small_error_in_linear_backward():
    r = rng()
    inp, weight, bias = r.standard_normal((4, 5)), r.standard_normal((3, 5)), r.standard_normal(3)
    dout = r.standard_normal((4, 3))
    out = np.empty((4, 3))

    def loss():
        K.linear_forward(out, inp, weight, bias)
        return (out * dout).sum()

    dinp, _, _ = linear_grads(broken_linear_backward, dout, inp, weight)
    assert ref.rel_error(dinp, ref.numerical_grad(loss, inp)) > 1e-4


def test_random_upstream_gradient_catches_a_transposed_weight_gradient():
    # with dout all ones the rows of dweight would all be equal and a swapped sum could hide; a random dout cannot
    r = rng()
    inp, weight, bias = r.standard_normal((4, 4)), r.standard_normal((4, 4)), r.standard_normal(4)
    dout = r.standard_normal((4, 4))
    out = np.empty((4, 4))

    def loss():
        K.linear_forward(out, inp, weight, bias)
        return (out * dout).sum()

    wrong = (dout.T @ inp).T
    assert ref.rel_error(wrong, ref.numerical_grad(loss, weight)) > 1e-2


@pytest.mark.parametrize("name", K.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_backward_in_place_matches_out_of_place(name, dtype):
    # the model calls the backward kernels with dinp IS dout, which takes their separate in-place loop
    r = rng()
    inp = (r.standard_normal((7, 33)) * 2).astype(dtype)
    inp[0, :3] = 0.0  # relu's kink: the derivative is 0 there, in place as well
    dout = r.standard_normal(inp.shape).astype(dtype)
    out = np.empty_like(inp)
    kind = K.ACTIVATIONS[name]
    K.activation_forward(kind, out, inp)
    separate = np.empty_like(inp)
    K.activation_backward(kind, separate, dout, inp, out)
    in_place = dout.copy()
    K.activation_backward(kind, in_place, in_place, inp, out)
    np.testing.assert_array_equal(in_place, separate)
