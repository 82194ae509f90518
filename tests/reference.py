"""Plain NumPy references for every op, written as readable math, and a central-difference gradient check."""
import numpy as np


def linear(inp, weight, bias):
    return inp @ weight.T + bias


def relu(x):
    return np.maximum(x, 0.0)


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {"relu": relu, "tanh": np.tanh, "gelu": gelu}


def cross_entropy(logits, targets):
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(targets)), targets].mean()


def mse(out, targets):
    onehot = np.eye(out.shape[1])[targets]
    return ((out - onehot) ** 2).mean()


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def mlp_loss(params_by_layer, X, y, activation="relu", loss="cross_entropy"):
    """Mean loss of an MLP given [(weight, bias), ...]."""
    a = X
    for l, (w, b) in enumerate(params_by_layer):
        a = linear(a, w, b)
        if l < len(params_by_layer) - 1:
            a = ACTIVATIONS[activation](a)
    return LOSSES[loss](a, y)


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of the float64 array x (in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def rel_error(a, b):
    """Largest entrywise error relative to the size of the gradients: max|a-b| / max(max|a|, max|b|, tiny)."""
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    return float(np.abs(a - b).max() / scale)
