"""The multilayer perceptron: one flat parameter vector, one flat gradient vector, a compiled train step.

Layer l maps OC_{l-1} features to OC_l. Its weight (OC_l, OC_{l-1}) row-major and then its bias (OC_l,) sit back to
back in `params`; `grads` has the same layout; `weights[l]`, `biases[l]`, `dweights[l]`, `dbiases[l]` are views
into them. Optimizers, gradient-noise estimates and checkpoints all work on the flat vectors.

Per batch size B the model keeps a workspace (allocated once, reused every step):
    zs[l]   (B,OC_l)  pre-activations z_l = a_{l-1} W_l^T + b_l
    acts[l] (B,OC_l)  activations a_l = f(z_l); the last layer has no activation, so acts[L-1] IS zs[L-1] (logits)
    dzs[l]  (B,OC_l)  gradients; dzs[l-1] first receives dL/da_{l-1} from layer l's backward, then the activation
                      backward turns it into dL/dz_{l-1} in place.

How a train step runs at a batch size (BLAS, the small-batch kernels, a fused SGD step, one example at a time) is
its path: `step_for` picks it (engine/steps.py, which also tabulates every path) and the Step object it returns
runs it. The fused SGD steps never form the gradient; `grads` is filled only when someone reads it.
"""
import math

import numpy as np

from minigrad.engine import kernels as K
from minigrad.engine import passes as P
from minigrad.engine import step_choice
from minigrad.engine import steps as S
from minigrad.engine.optim import OPTIMIZERS, Optimizer

BACKENDS = S.BACKENDS
DTYPES = (np.float32, np.float64)


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite."""


class Workspace:
    """Buffers for one batch size; see the module docstring. work: zs, acts, dzs as a kernels.Work."""

    def __init__(self, sizes, B, dtype):
        self.zs = tuple(np.zeros((B, n), dtype) for n in sizes[1:])
        self.acts = tuple(np.zeros((B, n), dtype) for n in sizes[1:-1]) + self.zs[-1:]
        self.dzs = tuple(np.zeros((B, n), dtype) for n in sizes[1:])
        self.work = K.Work(self.zs, self.acts, self.dzs)
        self.sqnorms = np.zeros(B, dtype)
        self.no_sqnorms = np.zeros(0, dtype)
        self.X = np.zeros((B, sizes[0]), dtype)   # a batch gathered from the data set lands here
        self.y = np.zeros(B, np.int64)


def layer_views(sizes, flat):
    """[(W (OC,C), b (OC,)), ...] views into a flat vector laid out as MLP.params (weight row-major, then bias)."""
    out, offset = [], 0
    for o, c in zip(sizes[1:], sizes[:-1]):
        W = flat[offset:offset + o * c].reshape(o, c)
        offset += o * c
        out.append((W, flat[offset:offset + o]))
        offset += o
    return out


class MLP:
    """A multilayer perceptron trained by hand-written kernels.

    sizes: [inputs, hidden..., outputs]; activation: "relu", "tanh" or "gelu"; loss: "cross_entropy" (mean over the
    batch) or "mse" (against one-hot targets, mean over all entries); dtype float32 or float64; backend "blas",
    "loops", "loops-parallel" or "per-example"; seed fixes the initialisation (He for relu/gelu, Glorot for tanh).
    """

    def __init__(self, sizes, activation="relu", loss="cross_entropy", dtype=np.float32, backend="blas", seed=0):
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least 2 positive layer widths (inputs, ..., outputs), got {sizes}")
        if activation not in K.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(K.ACTIVATIONS)}")
        if loss not in K.LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(K.LOSSES)}")
        if np.dtype(dtype) not in [np.dtype(d) for d in DTYPES]:
            raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.sizes, self.activation, self.loss, self.backend, self.seed = sizes, activation, loss, backend, seed
        self.dtype = np.dtype(dtype)

        shapes = list(zip(sizes[1:], sizes[:-1]))  # (OC, C) per layer
        self.n_params = sum(o * c + o for o, c in shapes)
        self.params = np.zeros(self.n_params, self.dtype)
        # the gradient's storage as the kernels write it; `grads` is the same vector, settled (see grads)
        self.grads_buffer = np.zeros(self.n_params, self.dtype)
        self.weights, self.biases = self._views(self.params)
        self.grads_views = K.Grads(*self._views(self.grads_buffer))
        self.net = K.Net(K.ACTIVATIONS[activation], K.LOSSES[loss], self.weights, self.biases)
        self._workspaces = {}
        self._steps = {}  # (path, B, workers) -> its Step (step_for)
        self.one_example = None
        if backend == "per-example":  # one example's gradient, added into grads after each single-example pass
            example_grads = np.zeros(self.n_params, self.dtype)
            ws1 = self.workspace(1)
            self.one_example = P.OneExample(example_grads, K.Grads(*self._views(example_grads)), ws1.work, ws1.X,
                                            ws1.y)
        self._pending = None  # the Step that left the gradient to form on first read (see grads)
        self.init_params(seed)

    # The gradient of the last loss_and_grad or train_step. The fused SGD steps (kernels_small at small batches,
    # kernels_large at large ones) never form it; they keep what it is made of (per layer the output gradient and
    # the input: activations, a copy of the batch) and the gradient is computed here, at the first read, as each
    # layer's dout^T inp (their Step's settle). Reading grads therefore costs nothing in the training loop and one
    # weight-gradient pass's worth of arithmetic after a fused step.
    @property
    def grads(self):
        """Flat gradient vector (same layout as params) of the last loss_and_grad or train_step."""
        self._settle_grads()
        return self.grads_buffer

    @property
    def dweights(self):
        self._settle_grads()
        return self.grads_views.dweights

    @property
    def dbiases(self):
        self._settle_grads()
        return self.grads_views.dbiases

    @property
    def grads_deferred(self):
        """Whether the last step left its gradient to be formed on first read of grads (a fused SGD step)."""
        return self._pending is not None

    def defer_grads(self, step):
        """`step` (a Step) left the gradient of its last batch to be formed on first read; None: nothing is left."""
        self._pending = step

    def _settle_grads(self):
        if self._pending is not None:
            step, self._pending = self._pending, None
            step.settle()

    def _views(self, flat):
        views = layer_views(self.sizes, flat)
        return tuple(W for W, _ in views), tuple(b for _, b in views)

    def init_params(self, seed):
        """He normal (relu, gelu) or Glorot uniform (tanh) weights, zero biases, drawn in float64 from `seed`,
        so float32 and float64 models of the same seed start from the same values up to rounding."""
        rng = np.random.default_rng(seed)
        for w, b in zip(self.weights, self.biases):
            fan_out, fan_in = w.shape
            if self.activation == "tanh":
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                w[...] = rng.uniform(-limit, limit, w.shape)
            else:
                w[...] = rng.normal(0.0, math.sqrt(2.0 / fan_in), w.shape)
            b[...] = 0.0

    # ------------------------------------------------------------------------------------------- checks on input
    def check_batch(self, X, y=None):
        """Raise ValueError naming the problem if X (B, inputs) or y (B,) can't go to the kernels as they are."""
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.shape[1] != self.sizes[0] or X.shape[0] < 1:
            shape = getattr(X, "shape", type(X).__name__)
            raise ValueError(f"X must have shape (B, {self.sizes[0]}) with B >= 1, got {shape}")
        if X.dtype != self.dtype:
            raise ValueError(f"X has dtype {X.dtype} but the model is {self.dtype}; convert with X.astype(np.{self.dtype})")
        if not X.flags.c_contiguous:
            raise ValueError("X is not C-contiguous; pass np.ascontiguousarray(X)")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        if y is None:
            return
        if not isinstance(y, np.ndarray) or y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {getattr(y, 'shape', type(y).__name__)}")
        if y.dtype != np.int64:
            raise ValueError(f"y must hold int64 class labels, got dtype {y.dtype}; convert with y.astype(np.int64)")
        if y.min() < 0 or y.max() >= self.sizes[-1]:
            raise ValueError(f"labels must lie in [0, {self.sizes[-1]}) for {self.sizes[-1]} outputs, "
                             f"got values from {y.min()} to {y.max()}")

    def workspace(self, B):
        ws = self._workspaces.get(B)
        if ws is None:
            ws = self._workspaces[B] = Workspace(self.sizes, B, self.dtype)
        return ws


    # ---------------------------------------------------------------------------------------------- public API
    def step_for(self, batch_size, optimizer, threads=None):
        """The Step object of the path a training step at this batch size takes: the one place that decides it
        (engine/steps.py has the table of paths). optimizer: an Optimizer, its name, or None (a gradient without an
        update); threads: the Numba threads the step may use (default: numba.get_num_threads())."""
        kind = None if optimizer is None else OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer.kind
        T = S.fused_workers(threads)
        name = S.choose(self.backend, self.n_params, batch_size, kind, T)
        measured = step_choice.lookup(self, batch_size, kind, T, S.candidates(self.backend, self.n_params,
                                                                              batch_size, kind, T))
        name = measured or name
        key = name, batch_size, T
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = S.make(self, name, batch_size, T)
        return step

    def step_path(self, batch_size, optimizer):
        """The name of the path step_for picks (recorded in every trace and throughput row)."""
        return self.step_for(batch_size, optimizer).name

    def loss_and_grad(self, X, y, sqnorms=None):
        """Mean loss over the batch; fills self.grads. With sqnorms (B,) given, also each example's squared
        gradient norm |grad loss_b|^2 (the gradient of that example's own loss, not of the mean)."""
        self.check_batch(X, y)
        B = X.shape[0]
        step = self.step_for(B, None)
        self._pending = None
        value = step.gradient(X, y, step.ws.no_sqnorms if sqnorms is None else step.ws.sqnorms)
        if sqnorms is not None:
            # the kernels saw the gradient of the mean, (1/B) sum_b loss_b: scale back to each loss_b, in the
            # caller's precision (a float64 sqnorms keeps a blowing-up float32 run's norms from overflowing)
            np.multiply(step.ws.sqnorms, sqnorms.dtype.type(B * B), out=sqnorms)
        return float(value)

    def train_step(self, X, y, optimizer):
        """One step of forward, backward and `optimizer` update, in one compiled call. Returns the mean loss;
        raises DivergenceError (parameters untouched) if the loss is NaN or infinite."""
        self.check_batch(X, y)
        return self.train_step_trusted(X, y, optimizer)

    def train_step_trusted(self, X, y, optimizer: Optimizer):
        """train_step on a batch the caller validated (check_batch) once: the training loop's path."""
        value = self.step_for(X.shape[0], optimizer.bind(self))(X, y, optimizer)
        if not math.isfinite(value):
            raise DivergenceError(f"loss is {value} at step {optimizer.steps + 1} (lr={optimizer.lr:g}): training diverged")
        return value

    def logits(self, X, batch_size=1024):
        """Outputs (N, K) for X (N, inputs), computed in batches."""
        self.check_batch(X)
        self._settle_grads()  # the workspaces are about to be overwritten
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        for start in range(0, X.shape[0], batch_size):
            chunk = X[start:start + batch_size]
            ws = self.workspace(chunk.shape[0])
            P.forward(S.linear_kernels(self.backend, chunk.shape[0])[0], K.plain(self.net), K.plain(ws.work), chunk)
            out[start:start + chunk.shape[0]] = ws.acts[-1]
        return out

    def predict(self, X, batch_size=1024):
        """Predicted class per row of X."""
        return self.logits(X, batch_size).argmax(axis=1)

    def evaluate(self, X, y, batch_size=1024):
        """(mean loss, error rate) over a whole data split, computed in batches without touching self.grads."""
        self.check_batch(X, y)
        self._settle_grads()  # the workspaces are about to be overwritten
        total_loss, wrong = 0.0, 0
        for start in range(0, X.shape[0], batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            ws = self.workspace(xb.shape[0])
            P.forward(S.linear_kernels(self.backend, xb.shape[0])[0], K.plain(self.net), K.plain(ws.work), xb)
            logits = ws.acts[-1]
            total_loss += K.loss_forward_backward(self.net.loss, ws.dzs[-1], logits, yb) * xb.shape[0]
            wrong += K.errors_count(logits, yb)
        return total_loss / X.shape[0], wrong / X.shape[0]

    def flops_per_step(self, B):
        """Floating-point operations the GEMMs of one train step execute: 2*B*C*OC for the forward product, the
        weight gradient and the input gradient of each layer, except the input gradient of the first layer."""
        total = 0
        for l, (o, c) in enumerate(zip(self.sizes[1:], self.sizes[:-1])):
            total += 2 * B * c * o * (3 if l > 0 else 2)
        return total


    def memory_count(self, B, optimizer="sgd"):
        """Bytes that training at batch size B holds, by part, counted from the buffers this class and the step's
        path allocate: parameters, gradients (plus one example's for per-example), optimizer state, activations kept
        for the backward pass (zs and hidden acts), and the rest of the workspace (dzs, the batch buffer, per-example
        norms, the fused SGD step's per-worker partial sums, the B = 1 workspace of per-example), at the current
        Numba thread count (the fused step's buffers grow with its workers)."""
        from minigrad.engine.optim import make_optimizer

        item, P_ = self.dtype.itemsize, self.n_params
        opt = make_optimizer(optimizer, 1.0)
        parts = dict(parameters=P_ * item, gradients=P_ * item, optimizer_state=opt.state_rows * P_ * item,
                     activations=B * (sum(self.sizes[1:]) + sum(self.sizes[1:-1])) * item,
                     workspace=S.workspace_bytes(self.sizes, B, item))
        self.step_for(B, optimizer).count_bytes(parts)
        parts["total"] = sum(parts.values())
        return parts

    def copy(self):
        """A new model with the same configuration and parameters."""
        twin = MLP(self.sizes, self.activation, self.loss, self.dtype, self.backend, self.seed)
        twin.params[...] = self.params
        return twin

    def __repr__(self):
        return (f"MLP({self.sizes}, activation={self.activation!r}, loss={self.loss!r}, "
                f"dtype={self.dtype.name}, backend={self.backend!r}, params={self.n_params})")

