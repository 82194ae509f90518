"""Every forward and backward pass of the MLP, written out by hand as Numba kernels.

This is the file to read. Each op is a pair `<op>_forward` / `<op>_backward`; arguments come outputs first, then
inputs, then saved statistics; gradient buffers start with d. Weights use PyTorch's layout (OC, C), so any tensor can
be checked against a reference without transposes. The kernels trust their inputs: the public wrappers in model.py
check shapes, dtypes and contiguity once. None of them allocates: the model hands them preallocated workspaces.

Legend: B = batch size, C = input features, OC = output features, K = classes.

The GEMMs here go through BLAS (Numba lowers np.dot on 2-D float arrays to scipy's cython BLAS). kernels_loops.py has
linear_forward / linear_backward with the same signatures written as plain loops, to set BLAS against, and
kernels_small.py the register-blocked kernels the model uses instead of BLAS for small batches.

Which kernels a training step runs is its path. engine/steps.py holds one object per path (its kernels, buffers
and compiled loop) and MLP.step_for is the one place that picks it; the table of paths, generated from that
registry, is in docs/architecture.md and `minigrad bench throughput --help`. The default study (plain SGD) runs
the path blas-fused-sgd, whose step is kernels_large.sgd_step: this file's ops with the bias folded into the
activation pass and the SGD update into the weight-gradient GEMM.

The step bodies take the model's arrays as tuples laid out as the named tuples below, and unpack them by position.
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit

# Every flag but nnan and ninf: lets LLVM reassociate sums into SIMD lanes, while isfinite checks keep working.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

ACTIVATIONS = {"relu": 0, "tanh": 1, "gelu": 2}
LOSSES = {"cross_entropy": 0, "mse": 1}

# act, loss: ACTIVATIONS and LOSSES codes; weights[l] (OC_l,C_l), biases[l] (OC_l,): views into the flat parameters
Net = namedtuple("Net", "act loss weights biases")
# dweights[l], dbiases[l]: views into the flat gradient, shaped as weights and biases
Grads = namedtuple("Grads", "dweights dbiases")
# zs[l], acts[l], dzs[l] (B,OC_l): pre-activations, activations (acts[L-1] is zs[L-1], the logits), gradients
Work = namedtuple("Work", "zs acts dzs")
# an optimizer's update (optim.optimizer_update): kind code, params (P,), grads (P,), state (S,P), hyper (6,)
Update = namedtuple("Update", "kind params grads state hyper")


def plain(value):
    """`value` with every named tuple in it turned into a plain tuple: what compiled code is handed. Numba types a
    plain tuple argument in C and a named tuple in Python: kernels_large.sgd_step took 7.7 us a call from Python at
    B = 1 with named tuples, 5.2 us with plain ones (5.3 us with the arrays one by one)."""
    return tuple(plain(v) for v in value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------------------------------------- linear
@njit(cache=True)
def linear_forward(out, inp, weight, bias):
    # inp (B,C), weight (OC,C), bias (OC,) -> out (B,OC)
    # out = inp @ weight^T + bias. weight.T is a view: BLAS gets a "transposed" flag, not a copy.
    np.dot(inp, weight.T, out)
    B, OC = out.shape
    for b in range(B):
        for o in range(OC):
            out[b, o] += bias[o]


@njit(cache=True)
def linear_backward(dinp, dweight, dbias, dout, inp, weight, need_dinp):
    # dout (B,OC), inp (B,C), weight (OC,C) -> dweight (OC,C), dbias (OC,), dinp (B,C) if need_dinp
    # dweight = dout^T @ inp   (each example adds the outer product dout_b inp_b^T)
    # dbias   = sum_b dout_b
    # dinp    = dout @ weight  (skipped for the first layer: nobody needs the gradient of the data)
    np.dot(dout.T, inp, dweight)
    B, OC = dout.shape
    dbias[:] = 0
    for b in range(B):
        for o in range(OC):
            dbias[o] += dout[b, o]
    if need_dinp:
        np.dot(dout, weight, dinp)


@njit(cache=True)
def linear_grad_sqnorms(sqnorms, dout, inp):
    # dout (B,OC), inp (B,C) -> sqnorms (B,) += |dweight_b|_F^2 + |dbias_b|^2 of this layer, per example b.
    # The per-example weight gradient is the outer product dout_b inp_b^T, whose squared Frobenius norm factors:
    # |dout_b|^2 * |inp_b|^2 (Goodfellow 2015), plus |dout_b|^2 for the bias. No (B,OC,C) tensor is ever formed.
    # dout is the gradient of whatever loss the caller differentiated (for a mean over B, scale by B^2).
    B, OC = dout.shape
    C = inp.shape[1]
    for b in range(B):
        d2 = 0.0
        for o in range(OC):
            d2 += dout[b, o] * dout[b, o]
        a2 = 0.0
        for c in range(C):
            a2 += inp[b, c] * inp[b, c]
        sqnorms[b] += d2 * (a2 + 1.0)


# ---------------------------------------------------------------------------------------------------- activations
# out (B,OC) = f(inp (B,OC)), elementwise. The backward kernels get both the input and the output of the forward
# pass and use whichever makes the derivative cheapest; dinp may be the same buffer as dout.
GELU_K = math.sqrt(2.0 / math.pi)


@njit(cache=True)
def relu_forward(out, inp):
    B, N = inp.shape
    for b in range(B):
        for j in range(N):
            out[b, j] = inp[b, j] if inp[b, j] > 0 else 0.0


@njit(cache=True)
def same_buffer(a, b):
    # True if a and b start at the same address: the backward kernels below then work in place
    return a.ctypes.data == b.ctypes.data


# The backward kernels are often called in place (dinp IS dout). LLVM vectorises a loop only after a run-time check
# that the arrays it writes and reads do not overlap; exact overlap fails that check, and the scalar fallback costs
# 10-20x (for relu, a mispredicted branch per element). In place they therefore only scale dinp by the derivative,
# a loop whose one written array (dinp) overlaps none it reads (inp or out).
@njit(cache=True)
def relu_backward(dinp, dout, inp):
    # relu'(x) = 1 where x > 0, else 0
    B, N = inp.shape
    if same_buffer(dinp, dout):
        for b in range(B):
            for j in range(N):
                if not inp[b, j] > 0:  # (a NaN input gives 0, as below)
                    dinp[b, j] = 0.0
        return
    for b in range(B):
        for j in range(N):
            dinp[b, j] = dout[b, j] if inp[b, j] > 0 else 0.0


@njit(cache=True)
def tanh_forward(out, inp):
    B, N = inp.shape
    for b in range(B):
        for j in range(N):
            out[b, j] = math.tanh(inp[b, j])


@njit(cache=True)
def tanh_backward(dinp, dout, out):
    # tanh'(x) = 1 - tanh(x)^2, read from the saved output: no second tanh
    B, N = out.shape
    if same_buffer(dinp, dout):
        for b in range(B):
            for j in range(N):
                dinp[b, j] *= 1.0 - out[b, j] * out[b, j]
        return
    for b in range(B):
        for j in range(N):
            dinp[b, j] = dout[b, j] * (1.0 - out[b, j] * out[b, j])


@njit(cache=True)
def gelu_forward(out, inp):
    # GELU, tanh approximation: 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
    B, N = inp.shape
    for b in range(B):
        for j in range(N):
            x = inp[b, j]
            out[b, j] = 0.5 * x * (1.0 + math.tanh(GELU_K * (x + 0.044715 * x * x * x)))


@njit(cache=True)
def gelu_derivative(x):
    # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3*0.044715 x^2), with t = tanh(k (x + 0.044715 x^3))
    t = math.tanh(GELU_K * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * 0.044715 * x * x)


@njit(cache=True)
def gelu_backward(dinp, dout, inp):
    B, N = inp.shape
    if same_buffer(dinp, dout):
        for b in range(B):
            for j in range(N):
                dinp[b, j] *= gelu_derivative(inp[b, j])
        return
    for b in range(B):
        for j in range(N):
            dinp[b, j] = dout[b, j] * gelu_derivative(inp[b, j])


@njit(cache=True)
def activation_forward(kind, out, inp):
    # kind: ACTIVATIONS code (0 relu, 1 tanh, 2 gelu)
    if kind == 0:
        relu_forward(out, inp)
    elif kind == 1:
        tanh_forward(out, inp)
    else:
        gelu_forward(out, inp)


@njit(cache=True)
def activation_backward(kind, dinp, dout, inp, out):
    # dinp may be dout (in place)
    if kind == 0:
        relu_backward(dinp, dout, inp)
    elif kind == 1:
        tanh_backward(dinp, dout, out)
    else:
        gelu_backward(dinp, dout, inp)


# --------------------------------------------------------------------------------------------------------- losses
@njit(cache=True)
def softmax_cross_entropy_forward_backward(dlogits, logits, targets):
    # logits (B,K), targets (B,) int -> dlogits (B,K); returns the mean loss over the batch.
    # loss_b = logsumexp(logits_b) - logits_b[y_b]; subtracting the row max first keeps exp() from overflowing.
    # d(mean loss)/dlogits_b = (softmax(logits_b) - onehot(y_b)) / B: forward and backward share the softmax.
    B, K = logits.shape
    total = 0.0
    for b in range(B):
        m = logits[b, 0]
        for k in range(1, K):
            if logits[b, k] > m:
                m = logits[b, k]
        s = 0.0
        for k in range(K):
            e = math.exp(logits[b, k] - m)
            dlogits[b, k] = e
            s += e
        y = targets[b]
        total += math.log(s) + m - logits[b, y]
        for k in range(K):
            dlogits[b, k] = dlogits[b, k] / s / B
        dlogits[b, y] -= 1.0 / B
    return total / B


@njit(cache=True)
def mse_forward_backward(dout, out, targets):
    # out (B,K), targets (B,) int, compared with one-hot rows -> dout (B,K); returns the mean over all B*K entries
    # (PyTorch's MSELoss): loss = 1/(B K) sum (out - onehot)^2, dout = 2 (out - onehot) / (B K)
    B, K = out.shape
    total = 0.0
    scale = 2.0 / (B * K)
    for b in range(B):
        for k in range(K):
            diff = out[b, k] - (1.0 if k == targets[b] else 0.0)
            total += diff * diff
            dout[b, k] = scale * diff
    return total / (B * K)


@njit(cache=True)
def loss_forward_backward(kind, dout, out, targets):
    # kind: LOSSES code (0 cross_entropy, 1 mse)
    if kind == 0:
        return softmax_cross_entropy_forward_backward(dout, out, targets)
    return mse_forward_backward(dout, out, targets)


@njit(cache=True)
def errors_count(logits, targets):
    # logits (B,K), targets (B,) -> number of rows whose argmax is not the target
    B, K = logits.shape
    wrong = 0
    for b in range(B):
        best = 0
        for k in range(1, K):
            if logits[b, k] > logits[b, best]:
                best = k
        if best != targets[b]:
            wrong += 1
    return wrong
