"""Curvature of the MLP loss: Hessian-vector products, top eigenvalues, trace, eps-sharpness, 1-D interpolation.

Everything here works in float64 on a fixed data subset, through `Objective(model, X, y)`: the mean loss of the
model's architecture at any flat parameter vector, its gradient, and Hv, the Hessian times a vector, two ways:

  exact   forward-mode differentiation of the backward pass (Pearlmutter's R-operator, "forward over backward"):
          push a tangent R(.) = d/dt (.)(theta + t v) at t = 0 through the forward pass and then through the
          hand-written backward. For layer l with z = a W^T + b, a' = f(z), and V_W, V_b the parts of v:
              forward   Rz = Ra W^T + a V_W^T + V_b          Ra' = f'(z) * Rz
              loss      cross-entropy: R dz = (p * Rz - p * sum_k(p_k Rz_k)) / n  (softmax Jacobian)
                        mse:           R dz = 2 Rz / (n K)
              backward  R dW = R dz^T a + dz^T Ra            R db = sum_b R dz
                        R da = R dz W + dz V_W               R dz_prev = R da * f'(z_prev) + da * f''(z_prev) * Rz_prev
          The tangents R dW, R db are Hv. One pass costs about two gradients.
  fd      central differences of gradients: (grad(theta + h v) - grad(theta - h v)) / 2h, with the gradients from
          the model's own Numba kernels in float64. Error O(h^2) from truncation plus O(eps_machine / h) from
          rounding; relu's kinks add an error of order one wherever theta +- h v crosses one (see fd_step), so
          prefer `exact` for relu networks.

On top of any hvp: power iteration for the top eigenvalues with deflation (PyHessian, Yao et al. 2020), Hutchinson's
trace estimator with Rademacher vectors, Keskar et al.'s (2016) eps-sharpness maximised with L-BFGS-B in the box
|y_i| <= eps (|x_i| + 1), and the loss along the line (1 - a) x_A + a x_B.
"""
import math

import numpy as np

from minigrad.engine.model import MLP, layer_views

HVP_METHODS = ("exact", "fd")


# ----------------------------------------------------------------------------- activations and derivatives
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def activation_derivatives(kind, z):
    """(f(z), f'(z), f''(z)) elementwise for relu, tanh and gelu (tanh approximation, as in kernels.py)."""
    if kind == "relu":
        return np.maximum(z, 0.0), (z > 0).astype(z.dtype), np.zeros_like(z)  # f'' = 0 away from the kink
    if kind == "tanh":
        a = np.tanh(z)
        d1 = 1.0 - a * a
        return a, d1, -2.0 * a * d1
    if kind == "gelu":
        u = GELU_K * (z + GELU_C * z ** 3)
        du = GELU_K * (1.0 + 3.0 * GELU_C * z * z)
        ddu = GELU_K * 6.0 * GELU_C * z
        t = np.tanh(u)
        s = 1.0 - t * t  # tanh'(u)
        a = 0.5 * z * (1.0 + t)
        d1 = 0.5 * (1.0 + t) + 0.5 * z * s * du
        # d/dz [0.5 (1 + t)] = 0.5 s du;  d/dz [0.5 z s du] = 0.5 s du + 0.5 z (-2 t s du^2 + s ddu)
        d2 = s * (du + 0.5 * z * (ddu - 2.0 * t * du * du))
        return a, d1, d2
    raise ValueError(f"unknown activation {kind!r}")


def rop_loss_grad_hvp(sizes, activation, loss, params, v, X, y):
    """(mean loss, gradient, H v) of an MLP at `params` over (X, y), all float64 NumPy, by the R-operator."""
    P, V = layer_views(sizes, params), layer_views(sizes, v)
    L, n = len(P), X.shape[0]
    a, Ra = X, np.zeros_like(X)
    inputs, Rinputs, derivs = [], [], []
    for l, ((W, b), (VW, Vb)) in enumerate(zip(P, V)):
        inputs.append(a)
        Rinputs.append(Ra)
        z = a @ W.T + b
        Rz = Ra @ W.T + a @ VW.T + Vb
        if l < L - 1:
            a, d1, d2 = activation_derivatives(activation, z)
            derivs.append((d1, d2, Rz))
            Ra = d1 * Rz
    logits, Rlogits = z, Rz
    K = logits.shape[1]
    onehot = np.zeros_like(logits)
    onehot[np.arange(n), y] = 1.0
    if loss == "cross_entropy":
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        value = float(np.mean(np.log(s[:, 0]) - shifted[np.arange(n), y]))
        dz = (p - onehot) / n
        Rdz = (p * Rlogits - p * (p * Rlogits).sum(axis=1, keepdims=True)) / n
    elif loss == "mse":
        diff = logits - onehot
        value = float(np.mean(diff * diff))
        dz = 2.0 * diff / (n * K)
        Rdz = 2.0 * Rlogits / (n * K)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    grads, hv = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        (W, _), (VW, _) = P[l], V[l]
        a_in, Ra_in = inputs[l], Rinputs[l]
        grads[l] = (dz.T @ a_in, dz.sum(axis=0))
        hv[l] = (Rdz.T @ a_in + dz.T @ Ra_in, Rdz.sum(axis=0))
        if l > 0:
            da = dz @ W
            Rda = Rdz @ W + dz @ VW
            d1, d2, Rz_prev = derivs[l - 1]
            dz, Rdz = da * d1, Rda * d1 + da * d2 * Rz_prev
    flat = lambda parts: np.concatenate([np.concatenate([w.ravel(), b]) for w, b in parts])  # noqa: E731
    return value, flat(grads), flat(hv)


# ------------------------------------------------------------------------------------------------ objective
class Objective:
    """The mean loss of `model`'s architecture over (X, y) in float64, as a function of a flat parameter vector.

    x0 is the model's parameters (cast to float64). chunk: rows per pass, to bound memory on large subsets."""

    def __init__(self, model, X, y, chunk=4096):
        self.sizes, self.activation, self.loss_name = list(model.sizes), model.activation, model.loss
        self.net = MLP(model.sizes, activation=model.activation, loss=model.loss, dtype=np.float64,
                       backend=model.backend, seed=model.seed)
        self.x0 = model.params.astype(np.float64)
        self.net.params[...] = self.x0
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.net.check_batch(self.X, self.y)
        self.n_params, self.chunk = model.n_params, int(chunk)
        self.hvp_calls = 0

    def _chunks(self):
        n = self.X.shape[0]
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            yield self.X[start:stop], self.y[start:stop], (stop - start) / n

    def _at(self, params):
        self.net.params[...] = self.x0 if params is None else params

    def loss(self, params=None):
        self._at(params)
        return float(sum(w * self.net.evaluate(xb, yb, batch_size=len(yb))[0] for xb, yb, w in self._chunks()))

    def loss_grad(self, params=None):
        """(mean loss, gradient) from the model's Numba kernels in float64."""
        self._at(params)
        value, grad = 0.0, np.zeros(self.n_params)
        for xb, yb, w in self._chunks():
            value += w * self.net.loss_and_grad(xb, yb)
            grad += w * self.net.grads
        return value, grad

    def error(self, params=None):
        self._at(params)
        return float(sum(w * self.net.evaluate(xb, yb, batch_size=len(yb))[1] for xb, yb, w in self._chunks()))

    def hvp_exact(self, v, params=None):
        x = self.x0 if params is None else np.asarray(params, np.float64)
        v = np.asarray(v, np.float64)
        out = np.zeros(self.n_params)
        for xb, yb, w in self._chunks():
            out += w * rop_loss_grad_hvp(self.sizes, self.activation, self.loss_name, x, v, xb, yb)[2]
        return out

    def fd_step(self, v, params=None):
        """The default h, per unit of v relative to the parameters' size: 1e-5 for smooth activations
        (eps_machine^(1/3) ~ 6e-6 balances the O(h^2) truncation against the O(eps/h) rounding), 1e-7 for relu.
        A relu unit whose pre-activation changes sign between theta - h v and theta + h v adds an error of order
        |jump in the gradient| / h, and the number of such crossings grows like h, so their expected error does
        not shrink with h; only the chance of any crossing does. With about 10^5 to 10^6 pre-activations a step of
        1e-5 crosses several kinks (relative error of order 1), a step of 1e-7 usually none (error about 1e-9)."""
        x = self.x0 if params is None else params
        rel = 1e-7 if self.activation == "relu" else 1e-5
        return rel * max(1.0, float(np.linalg.norm(x))) / max(float(np.linalg.norm(v)), 1e-300)

    def hvp_fd(self, v, params=None, h=None):
        x = self.x0 if params is None else np.asarray(params, np.float64)
        v = np.asarray(v, np.float64)
        h = self.fd_step(v, x) if h is None else h
        _, up = self.loss_grad(x + h * v)
        _, down = self.loss_grad(x - h * v)
        return (up - down) / (2.0 * h)

    def hvp(self, v, params=None, method="exact"):
        if method not in HVP_METHODS:
            raise ValueError(f"unknown HVP method {method!r}; choose one of {', '.join(HVP_METHODS)}")
        self.hvp_calls += 1
        return self.hvp_exact(v, params) if method == "exact" else self.hvp_fd(v, params)

    def hvp_check(self, v=None, seed=0):
        """Relative difference |Hv_exact - Hv_fd| / |Hv_exact| for a random (or given) direction: how far the two
        methods agree at this point, i.e. an error bound for whichever is used."""
        if v is None:
            v = np.random.default_rng(seed).standard_normal(self.n_params)
        exact, fd = self.hvp_exact(v), self.hvp_fd(v)
        return float(np.linalg.norm(exact - fd) / max(np.linalg.norm(exact), 1e-300))


def dense_hessian(hvp, n):
    """The full n x n matrix from n HVPs with the unit vectors, symmetrised (for small models and tests)."""
    H = np.empty((n, n))
    e = np.zeros(n)
    for i in range(n):
        e[i] = 1.0
        H[:, i] = hvp(e)
        e[i] = 0.0
    return 0.5 * (H + H.T)


# ------------------------------------------------------------------------------------- eigenvalues, trace
def top_eigenvalues(hvp, n, k=1, tol=1e-3, max_iter=100, seed=0):
    """The k eigenvalues of largest magnitude of the symmetric operator v -> hvp(v), by power iteration with
    deflation: the i-th iteration is kept orthogonal to the i-1 eigenvectors already found. Each stops when the
    Rayleigh quotient changes by less than `tol` relative (or after max_iter).

    Returns (eigenvalues (k,), eigenvectors (k, n), iterations per eigenvalue)."""
    rng = np.random.default_rng(seed)
    values, vectors, iterations = [], [], []

    def deflate(w):
        for u in vectors:
            w -= np.dot(u, w) * u
        return w

    for _ in range(k):
        v = deflate(rng.standard_normal(n))
        v /= np.linalg.norm(v)
        lam, it = None, 0
        for it in range(1, max_iter + 1):
            w = deflate(hvp(v))
            new = float(np.dot(v, w))
            norm = np.linalg.norm(w)
            if norm == 0:
                lam = 0.0
                break
            v = w / norm
            converged = lam is not None and abs(new - lam) < tol * max(abs(lam), 1e-30)
            lam = new
            if converged:
                break
        values.append(lam)
        vectors.append(v)
        iterations.append(it)
    return np.array(values), np.array(vectors), iterations


def hutchinson_trace(hvp, n, samples=100, seed=0):
    """tr(H) ~ mean over Rademacher vectors z of z^T H z. Returns (estimate, standard error)."""
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    for s in range(samples):
        z = rng.integers(0, 2, n) * 2.0 - 1.0
        values[s] = np.dot(z, hvp(z))
    se = values.std(ddof=1) / math.sqrt(samples) if samples > 1 else math.nan
    return float(values.mean()), float(se)


# --------------------------------------------------------------------------------------------- sharpness
def eps_sharpness(objective, eps=1e-3, maxiter=10, seed=0):
    """Keskar et al.'s sharpness: 100 * (max_{y in C} f(x + y) - f(x)) / (1 + f(x)) over the box
    C = {|y_i| <= eps (|x_i| + 1)}, the max found by L-BFGS-B (scipy) from a random point of the box in `maxiter`
    iterations (Keskar et al. use about 10), in the full parameter space.

    Returns dict(phi, f0, fmax, iterations, evaluations)."""
    from scipy.optimize import minimize

    x = objective.x0
    f0 = objective.loss(x)
    bound = eps * (np.abs(x) + 1.0)
    y0 = np.random.default_rng(seed).uniform(-bound, bound)

    def negative(y):
        value, grad = objective.loss_grad(x + y)
        return -value, -grad

    result = minimize(negative, y0, jac=True, method="L-BFGS-B", bounds=list(zip(-bound, bound)),
                      options={"maxiter": maxiter})
    fmax = max(-float(result.fun), f0)
    return dict(phi=100.0 * (fmax - f0) / (1.0 + f0), f0=f0, fmax=fmax, iterations=int(result.nit),
                evaluations=int(result.nfev))


# ----------------------------------------------------------------------------------------- interpolation
def interpolate(model, params_a, params_b, splits, alphas=None):
    """Loss and error along f((1 - a) x_A + a x_B), by default 25 points for a in [-1, 2] (Keskar et al.).

    splits: {name: (X, y)}. Returns {"alpha": ..., "<name>_loss": ..., "<name>_error": ...} as arrays."""
    alphas = np.linspace(-1.0, 2.0, 25) if alphas is None else np.asarray(alphas, float)
    a64, b64 = np.asarray(params_a, np.float64), np.asarray(params_b, np.float64)
    if a64.shape != (model.n_params,) or b64.shape != (model.n_params,):
        raise ValueError(f"both parameter vectors must have the model's {model.n_params} entries")
    twin = model.copy()
    data = {name: (np.ascontiguousarray(X, dtype=model.dtype), y) for name, (X, y) in splits.items()}
    out = {"alpha": alphas}
    for name in data:
        out[f"{name}_loss"], out[f"{name}_error"] = np.empty(len(alphas)), np.empty(len(alphas))
    for i, a in enumerate(alphas):
        twin.params[...] = (1.0 - a) * a64 + a * b64
        for name, (X, y) in data.items():
            out[f"{name}_loss"][i], out[f"{name}_error"][i] = twin.evaluate(X, y)
    return out


def curvature(model, dataset, cfg, seed):
    """Keskar's measurements on the first `examples` training rows (the split is random), in float64:
    the top Hessian eigenvalue (power iteration, exact HVPs), eps-sharpness for each eps, optionally Hutchinson's
    trace, and how far the exact HVP and central differences of gradients agree there (hvp_check)."""
    n = min(cfg["examples"], len(dataset.y_train))
    objective = Objective(model, dataset.X_train[:n], dataset.y_train[:n])
    lam, _, its = top_eigenvalues(objective.hvp, objective.n_params, k=1, tol=cfg["power_tol"],
                                    max_iter=cfg["power_iters"], seed=seed)
    out = {"lambda_max": float(lam[0]), "power_iterations": int(its[0]), "hvp_check": objective.hvp_check(seed=seed),
           "curvature_examples": n, "train_loss_subset": objective.loss(),
           "param_norm": float(np.linalg.norm(objective.x0))}
    for eps in cfg["eps"]:
        out[f"sharpness_{eps:g}"] = eps_sharpness(objective, eps, maxiter=cfg["sharpness_iters"], seed=seed)["phi"]
    if cfg.get("hutchinson_samples"):
        out["hessian_trace"], out["hessian_trace_se"] = hutchinson_trace(objective.hvp, objective.n_params,
                                                                           cfg["hutchinson_samples"], seed=seed)
    return out
