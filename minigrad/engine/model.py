"""The multilayer perceptron: one flat parameter vector, one flat gradient vector, a compiled train step.

Layer l maps OC_{l-1} features to OC_l. Its weight (OC_l, OC_{l-1}) row-major and then its bias (OC_l,) sit back to
back in `params`; `grads` has the same layout; `weights[l]`, `biases[l]`, `dweights[l]`, `dbiases[l]` are views
into them. Optimizers, gradient-noise estimates and checkpoints all work on the flat vectors.

Per batch size B the model keeps a workspace (allocated once, reused every step):
    zs[l]   (B,OC_l)  pre-activations z_l = a_{l-1} W_l^T + b_l
    acts[l] (B,OC_l)  activations a_l = f(z_l); the last layer has no activation, so acts[L-1] IS zs[L-1] (logits)
    dzs[l]  (B,OC_l)  gradients; dzs[l-1] first receives dL/da_{l-1} from layer l's backward, then the activation
                      backward turns it into dL/dz_{l-1} in place.

Small batches (the "blas" backend). Up to SMALL_BATCH_MAX examples the linear layers run on kernels_small's
register-blocked kernels instead of BLAS, and a plain-SGD train step of a model with at least FUSED_SGD_MIN_PARAMS
parameters, up to fused_sgd_max(threads) examples on two or more threads, runs kernels_small's fused step: the update
is applied as the weight gradient is formed, every layer's rows are split across the Numba threads, and `grads` is
filled only when someone reads it (see MLP.grads). The thresholds were measured on a 2-vCPU Xeon (float32, see
FUSED_SGD_MAX); `python bench/step_paths.py` measures where they sit on another machine.

Plain SGD otherwise (the "blas" backend): kernels_large's step, BLAS GEMMs with the update
folded into the weight-gradient GEMM and the bias passes merged into the activation passes; `grads` is again filled
only when read. The "blas-unfused" backend runs the same kernels with every op its own pass (train_step below) at
every batch size: the readable step, and what the fusions are measured against.

The "per-example" backend is the no-vectorisation baseline: a step runs B forward/backward passes of one example
each (the kernels the blas backend uses at B = 1) and accumulates their gradients, as a loop over examples with
gradient accumulation would. Same gradients, same updates; `minigrad bench throughput --backend all` sets its cost
against the batched paths.
"""
import math

import numpy as np
from numba import njit

from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import kernels_loops as KL
from minigrad.engine import kernels_small as KS
from minigrad.engine.optim import OPTIMIZERS, STEP, WEIGHT_DECAY, Optimizer, optimizer_update

# backend name -> (linear_forward, linear_backward) with the signatures of kernels.py
BACKENDS = {
    "blas": (K.linear_forward, K.linear_backward),
    # the same kernels with every op a pass of its own at every B (no fused step): the readable path to profile
    "blas-unfused": (K.linear_forward, K.linear_backward),
    "loops": (KL.linear_forward, KL.linear_backward),
    "loops-parallel": (KL.linear_forward_parallel, KL.linear_backward_parallel),
    # B single-example passes with the gradient accumulated (see forward_backward_per_example); batched forward
    # passes (evaluate, logits) go through BLAS
    "per-example": (K.linear_forward, K.linear_backward),
}
SMALL = (KS.linear_forward, KS.linear_backward)
DTYPES = (np.float32, np.float64)

# Batch sizes up to which the "blas" backend uses the small-batch kernels instead of BLAS (loss_and_grad, and train
# steps of optimizers other than plain SGD), and plain SGD the fused step, by number of workers (1, 2 or more).
# Where each path overtakes the other, measured side by side on 2 Zen 5 cores (784-256-256-10, float32, OpenBLAS
# 0.3.30 with its Haswell kernels): small kernels against BLAS between B = 8 and 16; the fused step against BLAS
# between 24 and 32 on one core, between 40 and 48 on two.
SMALL_BATCH_MAX = 8
# Plain SGD on --backend blas: kernels_small's fused step wins where it splits each layer's rows across two or more
# threads and the weights are large enough that each worker's share outweighs the barriers between the layers; else
# kernels_large's BLAS step is faster at every B. Compiled-loop step times, fused / large, on a 2-vCPU Xeon (OpenBLAS
# SkylakeX kernels; python bench/step_paths.py 1 and 2): one thread 1.15-2.2x at B = 1 and 1.3-4x
# at B = 2-24 for 32-64-64-10, 784-128-128-10 and 784-256-256-10 (so never fused on one thread); two threads
# 0.51-0.94x for 784-256-256-10 (270k parameters) at B = 1-24, 1.2x at 40, but 1.0-1.7x for 784-128-128-10 at B <= 8
# and 2.6-4.1x for 32-64-64-10.
FUSED_SGD_MAX = {1: 0, 2: 32}
FUSED_SGD_MIN_PARAMS = 200_000


def fused_sgd_max(workers):
    return FUSED_SGD_MAX[min(workers, 2)]

_fused_threading = {}  # threading layer -> True if the fused step may run its workers in parallel under it


def fused_workers():
    """How many workers the fused SGD step splits the layers across: numba.get_num_threads() under the OpenMP
    threading layer, else 1. Its barriers need every worker running at once, which OpenMP's static schedule gives
    and a work-stealing pool (TBB) does not promise."""
    import numba

    T = numba.get_num_threads()
    if T < 2:
        return 1
    if not _fused_threading:
        KS._probe(np.zeros(2))  # makes Numba choose its threading layer, so that it can be asked
        _fused_threading["ok"] = numba.threading_layer() == "omp"
    return T if _fused_threading["ok"] else 1


# The three step bodies take the backend's linear kernels as arguments, so one body serves every backend. Numba
# specialises them per backend and cannot cache such specialisations, so they are compiled once per process (about a
# second) while the leaf kernels they call come from the on-disk cache.
@njit
def forward(linear_forward, act, weights, biases, zs, acts, X):
    # X (B,C) -> logits acts[L-1] (B,K)
    L = len(weights)
    for l in range(L):
        inp = X if l == 0 else acts[l - 1]
        linear_forward(zs[l], inp, weights[l], biases[l])
        if l < L - 1:
            K.activation_forward(act, acts[l], zs[l])


@njit
def forward_backward(linear_forward, linear_backward, act, loss, weights, biases, dweights, dbiases, zs, acts, dzs,
                     X, y, sqnorms):
    # X (B,C), y (B,) -> mean loss; fills dweights/dbiases (views of the flat gradient).
    # sqnorms (B,) or (0,): if not empty, receives each example's squared gradient norm (of loss/B; see kernels).
    forward(linear_forward, act, weights, biases, zs, acts, X)
    L = len(weights)
    value = K.loss_forward_backward(loss, dzs[L - 1], acts[L - 1], y)
    if sqnorms.shape[0] > 0:
        sqnorms[:] = 0.0
    for l in range(L - 1, -1, -1):
        inp = X if l == 0 else acts[l - 1]
        if sqnorms.shape[0] > 0:
            K.linear_grad_sqnorms(sqnorms, dzs[l], inp)
        # layer 0 needs no input gradient; dzs[0] is passed only to fill the argument
        dinp = dzs[l - 1] if l > 0 else dzs[0]
        linear_backward(dinp, dweights[l], dbiases[l], dzs[l], inp, weights[l], l > 0)
        if l > 0:
            K.activation_backward(act, dzs[l - 1], dzs[l - 1], zs[l - 1], acts[l - 1])
    return value


@njit
def train_step(linear_forward, linear_backward, act, loss, weights, biases, dweights, dbiases, zs, acts, dzs, X, y,
               sqnorms, opt_kind, params, grads, opt_state, hyper):
    # forward, backward and update in one compiled call. A non-finite loss skips the update, so the parameters
    # stay those that produced it, and the caller reports it.
    value = forward_backward(linear_forward, linear_backward, act, loss, weights, biases, dweights, dbiases, zs, acts,
                             dzs, X, y, sqnorms)
    if math.isfinite(value):
        hyper[STEP] += 1
        optimizer_update(opt_kind, params, grads, opt_state, hyper)
    return value


@njit
def forward_backward_per_example(act, loss, weights, biases, dweights, dbiases, example_grads, zs, acts, dzs, x1, y1,
                                 X, y, sqnorms, grads):
    # X (B,C), y (B,) -> mean loss; grads (flat) = the mean of the B examples' gradients, each from a forward and
    # backward pass of that example alone: the "no vectorisation" baseline of the per-example backend. The passes run
    # on the B = 1 workspace (zs, acts, dzs; the example is copied into x1 (1,C), y1 (1,)) with the kernels the blas
    # backend uses at B = 1; dweights/dbiases are views of example_grads (flat), which is added into grads.
    # sqnorms (B,) or (0,): if not empty, receives |gradient of example b|^2 / B^2 (the scale of forward_backward's).
    # (explicit loops: Numba's in-place array operators go through its generic ufunc loop, 4x slower here)
    B, C = X.shape
    P = grads.shape[0]
    scale = grads.dtype.type(1.0 / B)
    for i in range(P):
        grads[i] = 0.0
    total = 0.0
    for b in range(B):
        for c in range(C):
            x1[0, c] = X[b, c]
        y1[0] = y[b]
        total += forward_backward(KS.linear_forward, KS.linear_backward, act, loss, weights, biases, dweights,
                                  dbiases, zs, acts, dzs, x1, y1, sqnorms[:0])
        norm2 = 0.0
        for i in range(P):
            grads[i] += scale * example_grads[i]
        if sqnorms.shape[0] > 0:
            for i in range(P):
                norm2 += example_grads[i] * example_grads[i]
            sqnorms[b] = norm2 / (B * B)
    return total / B


@njit
def train_step_per_example(act, loss, weights, biases, dweights, dbiases, example_grads, zs, acts, dzs, x1, y1, X,
                           y, sqnorms, opt_kind, params, grads, opt_state, hyper):
    # train_step of the per-example backend: B single-example passes, then one update with their mean gradient
    value = forward_backward_per_example(act, loss, weights, biases, dweights, dbiases, example_grads, zs, acts, dzs,
                                         x1, y1, X, y, sqnorms, grads)
    if math.isfinite(value):
        hyper[STEP] += 1
        optimizer_update(opt_kind, params, grads, opt_state, hyper)
    return value


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite."""


class _Workspace:
    """Buffers for one batch size; see the module docstring."""

    def __init__(self, sizes, B, dtype):
        self.zs = tuple(np.zeros((B, n), dtype) for n in sizes[1:])
        self.acts = tuple(np.zeros((B, n), dtype) for n in sizes[1:-1]) + self.zs[-1:]
        self.dzs = tuple(np.zeros((B, n), dtype) for n in sizes[1:])
        self.sqnorms = np.zeros(B, dtype)
        self.no_sqnorms = np.zeros(0, dtype)
        self.X = np.zeros((B, sizes[0]), dtype)   # a batch gathered from the data set lands here
        self.y = np.zeros(B, np.int64)
        self.fused = {}  # T -> buffers of the fused SGD step with T workers (kernels_small.sgd_step_worker)
        self.large = None  # buffers of kernels_large.sgd_step (_LargeBuffers)


class _FusedBuffers:
    """What the fused SGD step needs besides a workspace, for T workers: each worker's partial input gradients and
    its copy of the loss gradient, the barrier counter, the loss, and a copy of the batch (for MLP.grads)."""

    def __init__(self, sizes, B, T, dtype):
        self.parts = tuple(np.zeros((T, B, n), dtype) for n in sizes[:-1])
        self.dlogits = np.zeros((T, B, sizes[-1]), dtype)
        self.counter = np.zeros(16, np.int64)
        self.value = np.zeros(1, np.float64)
        self.X = np.zeros((B, sizes[0]), dtype)


class _LargeBuffers:
    """What kernels_large.sgd_step needs besides a workspace: the batch copy when the first layer is folded (else
    empty), a scratch row for the bias sums, and the scalars handed to BLAS."""

    def __init__(self, sizes, B, dtype):
        self.fold_first = B < sizes[1]  # see kernels_large's docstring
        self.X = np.zeros((B if self.fold_first else 0, sizes[0]), dtype)
        self.sums = np.zeros(max(sizes[1:]), dtype)
        self.gemm = KG.gemm_scratch(dtype)


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
        self._act, self._loss = K.ACTIVATIONS[activation], K.LOSSES[loss]
        self._linear = BACKENDS[backend]

        shapes = list(zip(sizes[1:], sizes[:-1]))  # (OC, C) per layer
        self.n_params = sum(o * c + o for o, c in shapes)
        self.params = np.zeros(self.n_params, self.dtype)
        self._grads = np.zeros(self.n_params, self.dtype)
        self.weights, self.biases, self._dweights, self._dbiases = self._views(self.params) + self._views(self._grads)
        self._workspaces = {}
        if backend == "per-example":  # one example's gradient, added into grads after each single-example pass
            self._example_grads = np.zeros(self.n_params, self.dtype)
            self._example_dweights, self._example_dbiases = self._views(self._example_grads)
        self._pending = None  # what a fused SGD step left to form its gradient from (see _settle_grads)
        self.init_params(seed)

    # The gradient of the last loss_and_grad or train_step. The fused SGD steps (kernels_small at small batches,
    # kernels_large at large ones) never form it; they keep what it is made of (per layer the output gradient and
    # the input: activations, a copy of the batch) and the gradient is computed here, at the first read, as each
    # layer's dout^T inp. Reading grads therefore costs nothing in the training loop and one weight-gradient pass's
    # worth of arithmetic after a fused step.
    @property
    def grads(self):
        """Flat gradient vector (same layout as params) of the last loss_and_grad or train_step."""
        self._settle_grads()
        return self._grads

    @property
    def dweights(self):
        self._settle_grads()
        return self._dweights

    @property
    def dbiases(self):
        self._settle_grads()
        return self._dbiases

    def _settle_grads(self):
        # _pending: (workspace, _FusedBuffers or _LargeBuffers) of the fused step that deferred its gradient. Per
        # layer, dweight = dout^T inp and dbias = sum_b dout from what that step kept (the first layer's input is its
        # copy of the batch; after a large step that did not fold the first layer, its dweight is in place already
        # and only the bias is summed). The small step's layers are summed by the register-blocked kernels, else BLAS.
        if self._pending is None:
            return
        (ws, buffers), self._pending = self._pending, None
        small, L = isinstance(buffers, _FusedBuffers), len(self.weights)
        for l in range(L):
            dout = buffers.dlogits[0] if small and l == L - 1 else ws.dzs[l]
            inp = ws.acts[l - 1] if l > 0 else buffers.X
            if l == 0 and not small and not buffers.fold_first:
                KG.column_sums(self._dbiases[0], dout)
            elif small:
                KS.linear_dweight_rows(self._dweights[l], self._dbiases[l], dout, inp, 0, self.sizes[l + 1])
            else:
                K.linear_backward(dout, self._dweights[l], self._dbiases[l], dout, inp, self.weights[l], False)

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
            ws = self._workspaces[B] = _Workspace(self.sizes, B, self.dtype)
        return ws

    # ---------------------------------------------------------------------------------------------- public API
    def loss_and_grad(self, X, y, sqnorms=None):
        """Mean loss over the batch; fills self.grads. With sqnorms (B,) given, also each example's squared
        gradient norm |grad loss_b|^2 (the gradient of that example's own loss, not of the mean)."""
        self.check_batch(X, y)
        return self._loss_and_grad(X, y, sqnorms)

    def step_path(self, batch_size, optimizer):
        """The path a training step at this batch size takes, by name; the one place that decides it (the training
        loop follows it, traces and throughput rows record it; kernels.py's docstring says which kernels to read):

          fused-sgd-serial / fused-sgd-parallel  blas + plain SGD up to FUSED_SGD_MAX rows with at least
                                                 FUSED_SGD_MIN_PARAMS parameters: kernels_small's one-pass step
                                                 (forward, backward and update, rows split across the threads)
          blas-fused-sgd  blas + plain SGD otherwise: kernels_large.sgd_step, BLAS GEMMs with the update folded
                          into the weight-gradient GEMM and the bias passes into the activation passes
          blas-small      blas up to SMALL_BATCH_MAX rows: kernels_small's register-blocked linear kernels
          blas            BLAS GEMMs (kernels.py)
          blas-unfused    --backend blas-unfused: every op its own pass at every B (model.train_step), to profile
          loops, loops-parallel, per-example     the --backend of that name (kernels_loops.py; B single-example
                                                 passes of the blas kernels)

        optimizer: an Optimizer or its name."""
        kind = OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer.kind
        if self.backend == "blas" and kind == OPTIMIZERS["sgd"]:
            T = fused_workers()
            if batch_size <= fused_sgd_max(T) and self.n_params >= FUSED_SGD_MIN_PARAMS:
                return "fused-sgd-parallel" if T > 1 else "fused-sgd-serial"
            return "blas-fused-sgd"
        if self.backend == "blas" and batch_size <= SMALL_BATCH_MAX:
            return "blas-small"
        return self.backend

    def _linear_for(self, B):
        # the backend's linear kernels for batch size B: the small-batch kernels stand in for BLAS below the threshold
        return SMALL if self.backend in ("blas", "blas-unfused", "per-example") and B <= SMALL_BATCH_MAX else self._linear

    def _loss_and_grad(self, X, y, sqnorms=None):
        B = X.shape[0]
        ws = self.workspace(B)
        self._pending = None
        out = ws.no_sqnorms if sqnorms is None else ws.sqnorms
        if self.backend == "per-example":
            value = forward_backward_per_example(self._act, self._loss, self.weights, self.biases,
                                                 *self._per_example_buffers(), X, y, out, self._grads)
        else:
            value = forward_backward(*self._linear_for(B), self._act, self._loss, self.weights, self.biases,
                                     self._dweights, self._dbiases, ws.zs, ws.acts, ws.dzs, X, y, out)
        if sqnorms is not None:
            # the kernels saw the gradient of the mean, (1/B) sum_b loss_b: scale back to each loss_b, in the
            # caller's precision (a float64 sqnorms keeps a blowing-up float32 run's norms from overflowing)
            np.multiply(ws.sqnorms, sqnorms.dtype.type(B * B), out=sqnorms)
        return float(value)

    def train_step(self, X, y, optimizer):
        """One step of forward, backward and `optimizer` update, in one compiled call. Returns the mean loss;
        raises DivergenceError (parameters untouched) if the loss is NaN or infinite."""
        self.check_batch(X, y)
        return self._train_step(X, y, optimizer)

    def _train_step(self, X, y, optimizer: Optimizer):
        # the training loop's path: X and y were validated once when the data set was loaded
        B = X.shape[0]
        ws = self.workspace(B)
        optimizer.bind(self)
        path = self.step_path(B, optimizer)
        if path.startswith("fused-sgd"):
            value = self._fused_sgd_step(ws, X, y, optimizer, fused_workers())
        elif path == "blas-fused-sgd":
            value = self._large_sgd_step(ws, X, y, optimizer)
        elif path == "per-example":
            dweights, dbiases, example_grads, zs, acts, dzs, x1, y1 = self._per_example_buffers()
            value = train_step_per_example(self._act, self._loss, self.weights, self.biases, dweights, dbiases,
                                           example_grads, zs, acts, dzs, x1, y1, X, y, ws.no_sqnorms, optimizer.kind,
                                           self.params, self._grads, optimizer.state, optimizer.hyper)
        else:
            self._pending = None
            value = train_step(*self._linear_for(B), self._act, self._loss, self.weights, self.biases,
                               self._dweights, self._dbiases, ws.zs, ws.acts, ws.dzs, X, y, ws.no_sqnorms,
                               optimizer.kind, self.params, self._grads, optimizer.state, optimizer.hyper)
        if not math.isfinite(value):
            raise DivergenceError(f"loss is {value} at step {optimizer.steps + 1} (lr={optimizer.lr:g}): training diverged")
        return value

    def _per_example_buffers(self):
        # what forward_backward_per_example takes after the weights: the per-example gradient (views, flat), the
        # B = 1 workspace and its input buffers
        ws1 = self.workspace(1)
        return (self._example_dweights, self._example_dbiases, self._example_grads, ws1.zs, ws1.acts, ws1.dzs,
                ws1.X, ws1.y)

    def _fused_sgd_step(self, ws, X, y, optimizer, T):
        # kernels_small's fused step: forward, backward and the SGD update in one pass, rows split across T workers
        fb = ws.fused.get(T)
        if fb is None:
            fb = ws.fused[T] = _FusedBuffers(self.sizes, X.shape[0], T, self.dtype)
        lr, wd = optimizer.lr, float(optimizer.hyper[WEIGHT_DECAY])
        self._pending = None
        if T == 1:
            KS.sgd_step_serial(self._act, self._loss, self.weights, self.biases, ws.zs, ws.acts, ws.dzs, fb.parts,
                               fb.dlogits, X, y, lr, wd, fb.counter, fb.value, fb.X)
        else:
            KS.sgd_step_parallel(T, self._act, self._loss, self.weights, self.biases, ws.zs, ws.acts, ws.dzs,
                                 fb.parts, fb.dlogits, X, y, lr, wd, fb.counter, fb.value, fb.X)
            if fb.counter[KS.BARRIER_FAILED]:
                raise RuntimeError(f"the fused SGD step's {T} workers did not all run at once (threading layer "
                                   "problem); set numba.set_num_threads(1) to run it on one core")
        value = float(fb.value[0])
        self._after_fused_step(value, optimizer, ws, fb, X, y)
        return value

    def _large_sgd_step(self, ws, X, y, optimizer):
        # kernels_large's step: BLAS GEMMs with the SGD update folded into the weight-gradient GEMMs
        lb = ws.large
        if lb is None:
            lb = ws.large = _LargeBuffers(self.sizes, X.shape[0], self.dtype)
        self._pending = None
        value = KG.sgd_step(self._act, self._loss, self.weights, self.biases, self._dweights[0], ws.zs, ws.acts,
                            ws.dzs, X, y, optimizer.lr, float(optimizer.hyper[WEIGHT_DECAY]), lb.fold_first, lb.X,
                            lb.sums, *lb.gemm)
        self._after_fused_step(value, optimizer, ws, lb, X, y)
        return value

    def _after_fused_step(self, value, optimizer, ws, buffers, X, y):
        # a fused step defers its gradient (see grads); one that met a non-finite loss skipped the update, and the
        # gradient (which the caller may inspect) comes from the plain path
        if math.isfinite(value):
            optimizer.hyper[STEP] += 1
            self._pending = (ws, buffers)
        else:
            forward_backward(*self._linear_for(X.shape[0]), self._act, self._loss, self.weights, self.biases,
                             self._dweights, self._dbiases, ws.zs, ws.acts, ws.dzs, X, y, ws.no_sqnorms)

    def logits(self, X, batch_size=1024):
        """Outputs (N, K) for X (N, inputs), computed in batches."""
        self.check_batch(X)
        self._settle_grads()  # the workspaces are about to be overwritten
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        for start in range(0, X.shape[0], batch_size):
            chunk = X[start:start + batch_size]
            ws = self.workspace(chunk.shape[0])
            forward(self._linear_for(chunk.shape[0])[0], self._act, self.weights, self.biases, ws.zs, ws.acts, chunk)
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
            forward(self._linear_for(xb.shape[0])[0], self._act, self.weights, self.biases, ws.zs, ws.acts, xb)
            logits = ws.acts[-1]
            total_loss += K.loss_forward_backward(self._loss, ws.dzs[-1], logits, yb) * xb.shape[0]
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
        """Bytes that training at batch size B holds, by part, counted from the buffers this class allocates:
        parameters, gradients (plus one example's for per-example), optimizer state, activations kept for the
        backward pass (zs and hidden acts), and the rest of the workspace (dzs, the batch buffer, per-example norms,
        the fused SGD step's per-worker partial sums, the B = 1 workspace of per-example), at the current Numba
        thread count (the fused step's buffers grow with its workers)."""
        from minigrad.engine.optim import make_optimizer

        item, P = self.dtype.itemsize, self.n_params
        out_widths, hidden, inputs = sum(self.sizes[1:]), sum(self.sizes[1:-1]), self.sizes[0]

        def workspace(b):  # _Workspace(b) minus its activations
            return b * out_widths * item + b * item + b * inputs * item + b * 8

        opt = make_optimizer(optimizer, 1.0)
        parts = dict(parameters=P * item,
                     gradients=P * item * (2 if self.backend == "per-example" else 1),
                     optimizer_state=opt.state_rows * P * item,
                     activations=B * (out_widths + hidden) * item,
                     workspace=workspace(B))
        if self.backend == "per-example" and B != 1:
            parts["workspace"] += workspace(1) + (out_widths + hidden) * item
        path = self.step_path(B, optimizer)
        if path.startswith("fused-sgd"):
            # _FusedBuffers: parts, dlogits and the batch copy, then the int64 counter (16) and float64 loss
            T = fused_workers()
            parts["workspace"] += (T * B * sum(self.sizes[:-1]) + T * B * self.sizes[-1] + B * inputs) * item
            parts["workspace"] += 16 * 8 + 8
        elif path == "blas-fused-sgd":
            # _LargeBuffers: the batch copy (first layer folded), the bias sums and BLAS's scalars (6 int32, 2 uint8)
            parts["workspace"] += ((B * inputs if B < self.sizes[1] else 0) + max(self.sizes[1:]) + 2) * item + 26
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
