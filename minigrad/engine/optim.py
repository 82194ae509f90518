"""Optimizers over the flat parameter vector, in increasing complexity, each one fused in-place kernel.

Because every parameter of the model lives in one contiguous vector (and every gradient in another), an optimizer is
one loop over one array: no per-layer bookkeeping. The Python classes hold hyper-parameters and state; the kernels
do the arithmetic and are also called from inside the model's compiled train step.

Weight decay: SGD, momentum and Nesterov add it to the gradient (classic L2); Adam decouples it (AdamW).
"""
import numpy as np
from numba import njit

OPTIMIZERS = {"sgd": 0, "momentum": 1, "nesterov": 2, "adam": 3}
# hyper: one float64 vector every kernel reads, so a learning-rate schedule is one store into hyper[LR]
LR, MOMENTUM, BETA2, EPS, WEIGHT_DECAY, STEP = range(6)


@njit(cache=True)
def sgd_update(params, grads, lr, weight_decay):
    # params (P,), grads (P,):  p <- p - lr (g + wd p)
    for i in range(params.shape[0]):
        params[i] -= lr * (grads[i] + weight_decay * params[i])


@njit(cache=True)
def momentum_update(params, grads, velocity, lr, mu, weight_decay):
    # heavy ball, PyTorch's form:  v <- mu v + g;  p <- p - lr v
    for i in range(params.shape[0]):
        velocity[i] = mu * velocity[i] + grads[i] + weight_decay * params[i]
        params[i] -= lr * velocity[i]


@njit(cache=True)
def nesterov_update(params, grads, velocity, lr, mu, weight_decay):
    # Nesterov in the same variables: v <- mu v + g;  p <- p - lr (g + mu v)  (looks ahead along the new velocity)
    for i in range(params.shape[0]):
        g = grads[i] + weight_decay * params[i]
        velocity[i] = mu * velocity[i] + g
        params[i] -= lr * (g + mu * velocity[i])


@njit(cache=True)
def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, t):
    # m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  bias-corrected by 1/(1-b^t) since m, v start at zero;
    # p <- p - lr (m_hat / (sqrt(v_hat) + eps) + wd p)   (AdamW: decay not scaled by the adaptive denominator)
    c1 = 1.0 / (1.0 - beta1**t)
    c2 = 1.0 / (1.0 - beta2**t)
    for i in range(params.shape[0]):
        g = grads[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        params[i] -= lr * (m[i] * c1 / (np.sqrt(v[i] * c2) + eps) + weight_decay * params[i])


@njit(cache=True)
def optimizer_update(kind, params, grads, state, hyper):
    # kind: OPTIMIZERS code; state (S,P) with S = 0, 1 (velocity) or 2 (m, v) rows; hyper (6,) float64
    if kind == 0:
        sgd_update(params, grads, hyper[LR], hyper[WEIGHT_DECAY])
    elif kind == 1:
        momentum_update(params, grads, state[0], hyper[LR], hyper[MOMENTUM], hyper[WEIGHT_DECAY])
    elif kind == 2:
        nesterov_update(params, grads, state[0], hyper[LR], hyper[MOMENTUM], hyper[WEIGHT_DECAY])
    else:
        adam_update(params, grads, state[0], state[1], hyper[LR], hyper[MOMENTUM], hyper[BETA2], hyper[EPS],
                    hyper[WEIGHT_DECAY], hyper[STEP])


class Optimizer:
    """Hyper-parameters and state of one optimizer; `step(model)` applies one update to model.params."""

    name = ""
    state_rows = 0

    def __init__(self, lr, weight_decay=0.0, momentum=0.0, beta2=0.999, eps=1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.kind = OPTIMIZERS[self.name]
        self.hyper = np.array([lr, momentum, beta2, eps, weight_decay, 0.0])
        self.state = None

    @property
    def lr(self):
        return float(self.hyper[LR])

    @lr.setter
    def lr(self, value):
        self.hyper[LR] = value

    @property
    def steps(self):
        return int(self.hyper[STEP])

    def bind(self, model):
        """Allocate the state for `model` (once); returns self."""
        if self.state is None or self.state.shape[1] != model.params.size or self.state.dtype != model.dtype:
            self.state = np.zeros((self.state_rows, model.params.size), dtype=model.dtype)
        return self

    def step(self, model):
        """One update from model.grads (filled by model.loss_and_grad)."""
        self.bind(model)
        self.hyper[STEP] += 1
        optimizer_update(self.kind, model.params, model.grads, self.state, self.hyper)

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr:g})"


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, lr, weight_decay=0.0):
        super().__init__(lr, weight_decay)


class Momentum(Optimizer):
    name, state_rows = "momentum", 1

    def __init__(self, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay, momentum)


class Nesterov(Optimizer):
    name, state_rows = "nesterov", 1

    def __init__(self, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay, momentum)


class Adam(Optimizer):
    name, state_rows = "adam", 2

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay, beta1, beta2, eps)


_CLASSES = {cls.name: cls for cls in (SGD, Momentum, Nesterov, Adam)}


def make_optimizer(name, lr, **options):
    """An optimizer by name ("sgd", "momentum", "nesterov", "adam")."""
    if name not in _CLASSES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(_CLASSES)}")
    return _CLASSES[name](lr, **options)
