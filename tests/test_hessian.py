"""Hessian-vector products, eigenvalues, trace, eps-sharpness and interpolation against closed forms.

Closed forms used:
  linear least squares: an MLP with sizes [d, 1] and loss "mse" with every label 0 has output z = x.w + b and loss
      mean((z - 1)^2), whose Hessian in (w, b) is H = 2 Xt^T Xt / n with Xt = [X, 1], at every point;
  linear softmax regression: sizes [d, K], cross-entropy, H = (1/n) sum_i (diag(p_i) - p_i p_i^T) kron (xt_i xt_i^T),
      rearranged into the model's layout (W row-major (K, d), then b).
"""
import numpy as np
import pytest

from minigrad.instruments import hessian as H
from minigrad.engine.model import MLP, layer_views


def least_squares(n=200, d=6, seed=0, scales=None):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d)) * (np.asarray(scales) if scales is not None else 1.0)
    model = MLP([d, 1], loss="mse", dtype=np.float64, seed=seed)
    model.params[...] = r.standard_normal(model.n_params)
    y = np.zeros(n, np.int64)
    Xt = np.hstack([X, np.ones((n, 1))])
    return model, X, y, 2.0 * Xt.T @ Xt / n


def softmax_regression(n=150, d=4, K=3, seed=0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d))
    y = r.integers(0, K, n)
    model = MLP([d, K], dtype=np.float64, seed=seed)
    model.params[...] = r.standard_normal(model.n_params) * 0.5
    W, b = model.weights[0], model.biases[0]
    logits = X @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    Xt = np.hstack([X, np.ones((n, 1))])
    # rows/columns indexed (k, c) with c = d meaning the bias
    Hkc = sum(np.kron(np.diag(p[i]) - np.outer(p[i], p[i]), np.outer(Xt[i], Xt[i])) for i in range(n)) / n
    order = [k * (d + 1) + c for k in range(K) for c in range(d)] + [k * (d + 1) + d for k in range(K)]
    return model, X, y, Hkc[np.ix_(order, order)]


def test_layer_views_match_the_model_layout():
    model = MLP([5, 7, 3], seed=1)
    for (W, b), w, bb in zip(layer_views(model.sizes, model.params), model.weights, model.biases):
        assert np.shares_memory(W, model.params) and np.array_equal(W, w) and np.array_equal(b, bb)


@pytest.mark.parametrize("method", H.HVP_METHODS)
def test_hvp_equals_the_least_squares_hessian(method):
    model, X, y, Hc = least_squares()
    obj = H.Objective(model, X, y)
    dense = H.dense_hessian(lambda v: obj.hvp(v, method=method), model.n_params)
    assert np.abs(dense - Hc).max() < (1e-12 if method == "exact" else 1e-6) * np.abs(Hc).max()


@pytest.mark.parametrize("method", H.HVP_METHODS)
def test_hvp_equals_the_softmax_regression_hessian(method):
    model, X, y, Hc = softmax_regression()
    obj = H.Objective(model, X, y)
    dense = H.dense_hessian(lambda v: obj.hvp(v, method=method), model.n_params)
    assert np.abs(dense - Hc).max() < (1e-12 if method == "exact" else 1e-6) * np.abs(Hc).max()


def test_hvp_check_fails_against_the_wrong_hessian():
    # negative control: the same comparison with the closed form of another data set fails
    model, X, y, _ = softmax_regression(seed=0)
    _, _, _, H_other = softmax_regression(seed=1)
    obj = H.Objective(model, X, y)
    dense = H.dense_hessian(obj.hvp_exact, model.n_params)
    assert np.abs(dense - H_other).max() > 1e-2 * np.abs(H_other).max()


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_exact_hvp_matches_central_differences_of_the_kernels_gradient(activation, loss):
    model = MLP([6, 9, 7, 4], activation=activation, loss=loss, dtype=np.float64, seed=2)
    r = np.random.default_rng(3)
    model.params[...] += r.normal(0, 0.1, model.n_params)
    X, y = r.standard_normal((30, 6)), r.integers(0, 4, 30)
    obj = H.Objective(model, X, y)
    value, grad, _ = H.rop_loss_grad_hvp(obj.sizes, activation, loss, obj.x0, r.standard_normal(model.n_params),
                                         obj.X, obj.y)
    ref_value, ref_grad = obj.loss_grad()
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert np.abs(grad - ref_grad).max() < 1e-12 * np.abs(ref_grad).max()
    for seed in range(3):
        assert obj.hvp_check(seed=seed) < 1e-7
    dense = H.dense_hessian(obj.hvp_exact, model.n_params)
    raw = np.column_stack([obj.hvp_exact(e) for e in np.eye(model.n_params)])
    assert np.abs(raw - raw.T).max() < 1e-12 * np.abs(raw).max()  # a Hessian is symmetric
    assert np.abs(dense - raw).max() < 1e-12 * np.abs(raw).max()


def test_finite_difference_error_shrinks_like_h_squared():
    # the error of the fd method itself, on a smooth network: halving h quarters the truncation error
    model = MLP([5, 8, 3], activation="tanh", dtype=np.float64, seed=4)
    r = np.random.default_rng(5)
    X, y = r.standard_normal((40, 5)), r.integers(0, 3, 40)
    obj = H.Objective(model, X, y)
    v = r.standard_normal(model.n_params)
    exact = obj.hvp_exact(v)
    errors = [np.linalg.norm(obj.hvp_fd(v, h=h) - exact) for h in (4e-2, 2e-2, 1e-2)]
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5
    assert np.linalg.norm(obj.hvp_fd(v) - exact) < 1e-8 * np.linalg.norm(exact)  # the default step


def test_exact_hvp_fails_the_check_without_the_second_derivative_term(monkeypatch):
    # negative control: drop f'' from the R-operator (a plausible bug) and the check against differences fails
    model = MLP([5, 8, 3], activation="tanh", dtype=np.float64, seed=4)
    r = np.random.default_rng(5)
    obj = H.Objective(model, r.standard_normal((40, 5)), r.integers(0, 3, 40))
    assert obj.hvp_check() < 1e-7
    real = H.activation_derivatives
    monkeypatch.setattr(H, "activation_derivatives", lambda kind, z: real(kind, z)[:2] + (np.zeros_like(z),))
    assert obj.hvp_check() > 1e-3


def test_relu_kinks_break_large_finite_difference_steps():
    # why fd uses a small step for relu: with h large enough that theta +- h v crosses kinks, the error is O(1),
    # while the exact product is unaffected (it agrees with the default small step)
    model = MLP([8, 64, 64, 5], dtype=np.float64, seed=6)
    r = np.random.default_rng(7)
    obj = H.Objective(model, r.standard_normal((400, 8)), r.integers(0, 5, 400))
    v = r.standard_normal(model.n_params)
    exact = obj.hvp_exact(v)
    rel = lambda a: np.linalg.norm(a - exact) / np.linalg.norm(exact)  # noqa: E731
    assert rel(obj.hvp_fd(v)) < 1e-6
    assert rel(obj.hvp_fd(v, h=obj.fd_step(v) * 1e4)) > 1e-2


def test_power_iteration_with_deflation_finds_the_top_eigenvalues():
    model, X, y, Hc = least_squares(n=300, d=6, scales=[4.0, 2.5, 1.5, 1.0, 0.6, 0.3])
    obj = H.Objective(model, X, y)
    truth = np.sort(np.linalg.eigvalsh(Hc))[::-1]
    values, vectors, iterations = H.top_eigenvalues(obj.hvp, model.n_params, k=3, tol=1e-10, max_iter=1000)
    assert np.allclose(values, truth[:3], rtol=1e-8)
    assert np.allclose(vectors @ vectors.T, np.eye(3), atol=1e-6)
    for lam, u in zip(values, vectors):
        assert np.linalg.norm(Hc @ u - lam * u) < 1e-4 * lam
    # the default stopping rule (relative change < 1e-3) is close enough for a report
    values, _, iterations = H.top_eigenvalues(obj.hvp, model.n_params, k=1)
    assert values[0] == pytest.approx(truth[0], rel=1e-2) and iterations[0] <= 100


def test_without_deflation_every_run_finds_the_same_eigenvalue():
    # negative control: k separate single-eigenvalue runs all converge to lambda_1, which fails the top-3 check
    model, X, y, Hc = least_squares(n=300, d=6, scales=[4.0, 2.5, 1.5, 1.0, 0.6, 0.3])
    obj = H.Objective(model, X, y)
    truth = np.sort(np.linalg.eigvalsh(Hc))[::-1][:3]
    found = [H.top_eigenvalues(obj.hvp, model.n_params, k=1, tol=1e-10, max_iter=1000, seed=s)[0][0]
             for s in range(3)]
    assert np.allclose(found, truth[0], rtol=1e-6)
    assert not np.allclose(found, truth, rtol=1e-2)


def test_hutchinson_trace_matches_the_closed_form_within_its_standard_error():
    model, X, y, Hc = softmax_regression()
    obj = H.Objective(model, X, y)
    estimate, se = H.hutchinson_trace(obj.hvp, model.n_params, samples=400, seed=1)
    assert abs(estimate - np.trace(Hc)) < 4 * se
    assert se < 0.1 * np.trace(Hc)
    # Rademacher vectors: z^T H z = tr(H) + sum_{i != j} z_i z_j H_ij, so a diagonal matrix is exact
    diag = np.diag(np.arange(1.0, 6.0))
    assert H.hutchinson_trace(lambda v: diag @ v, 5, samples=3)[0] == pytest.approx(15.0)


def test_hutchinson_check_rejects_a_wrong_trace():
    # negative control: the same tolerance test against tr(H) of another data set fails
    model, X, y, _ = softmax_regression(seed=0)
    _, _, _, H_other = softmax_regression(seed=1, n=40)
    estimate, se = H.hutchinson_trace(H.Objective(model, X, y).hvp, model.n_params, samples=400, seed=1)
    assert abs(estimate - np.trace(H_other)) > 4 * se


def orthogonal_least_squares(n=64, d=5, scales=(3.0, 2.0, 1.0, 0.5, 0.25)):
    """A least-squares model at its minimum whose Hessian is diagonal: columns orthogonal to each other and to 1."""
    r = np.random.default_rng(0)
    Q, _ = np.linalg.qr(np.hstack([np.ones((n, 1)), r.standard_normal((n, d))]))
    X = Q[:, 1:] * np.sqrt(n) * np.asarray(scales)
    model = MLP([d, 1], loss="mse", dtype=np.float64)
    model.params[...] = 0.0
    model.biases[0][...] = 1.0  # w = 0, b = 1 fits the target 1 exactly: f = 0, gradient 0
    h = 2.0 * np.concatenate([np.asarray(scales) ** 2, [1.0]])  # diag of 2 Xt^T Xt / n
    return model, X, np.zeros(n, np.int64), h


def test_eps_sharpness_reaches_the_corner_of_the_box_on_a_quadratic():
    # f(x + y) = f(x) + y^T H y / 2 with H diagonal: the max over the box is at a corner, sum h_i b_i^2 / 2
    model, X, y, h = orthogonal_least_squares()
    obj = H.Objective(model, X, y)
    assert obj.loss() < 1e-20
    for eps in (1e-3, 5e-4):
        bound = eps * (np.abs(obj.x0) + 1.0)
        expected = 100.0 * (0.5 * np.sum(h * bound ** 2)) / (1.0 + 0.0)
        result = H.eps_sharpness(obj, eps=eps)
        assert result["phi"] == pytest.approx(expected, rel=1e-6)
        assert result["iterations"] <= 10


def test_eps_sharpness_is_smaller_for_a_flatter_minimum():
    # negative control: scaling the inputs by 0.3 scales the weights' curvature by 0.09 (the bias keeps its 2);
    # a measure that could not tell this flatter minimum from the sharp one would fail here
    sharp, X, y, h = orthogonal_least_squares()
    phi_sharp = H.eps_sharpness(H.Objective(sharp, X, y))["phi"]
    phi_flat = H.eps_sharpness(H.Objective(sharp, 0.3 * X, y))["phi"]
    bound = 1e-3 * (np.abs(sharp.params) + 1.0)
    h_flat = np.concatenate([0.09 * h[:-1], h[-1:]])
    assert phi_flat == pytest.approx(100 * 0.5 * np.sum(h_flat * bound ** 2), rel=1e-2)
    assert phi_flat < 0.5 * phi_sharp


def test_interpolation_is_the_exact_quadratic_along_the_line():
    model, X, y, Hc = least_squares()
    r = np.random.default_rng(1)
    pa, pb = r.standard_normal(model.n_params), r.standard_normal(model.n_params)
    line = H.interpolate(model, pa, pb, {"train": (X, y)})
    assert len(line["alpha"]) == 25 and line["alpha"][0] == -1.0 and line["alpha"][-1] == 2.0
    twin = model.copy()
    for a, i in ((0.0, 8), (1.0, 16)):
        assert line["alpha"][i] == pytest.approx(a)
        twin.params[...] = pa if a == 0 else pb
        assert line["train_loss"][i] == pytest.approx(twin.evaluate(X, y)[0], rel=1e-12)
    c2, c1, c0 = np.polyfit(line["alpha"], line["train_loss"], 2)
    d = pb - pa
    assert 2 * c2 == pytest.approx(d @ Hc @ d, rel=1e-9)  # f'' along the line = d^T H d
    resid = np.polyval([c2, c1, c0], line["alpha"]) - line["train_loss"]
    assert np.abs(resid).max() < 1e-9 * line["train_loss"].max()
    with pytest.raises(ValueError, match="entries"):
        H.interpolate(model, pa[:-1], pb, {"train": (X, y)})
