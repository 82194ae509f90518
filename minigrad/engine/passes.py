"""The plain step bodies: forward, forward + backward, and the train step, with every op of kernels.py its own pass.

They take the backend's linear kernels as arguments, so one body serves every backend (kernels.py's BLAS GEMMs,
kernels_small's register-blocked ones, kernels_loops'). Numba specialises them per backend and cannot cache such
specialisations, so they are compiled once per process (about a second) while the leaf kernels they call come from
the on-disk cache. net, grads, work, update: tuples laid out as the named tuples of kernels.py (plain tuples:
kernels.plain), unpacked by position.

The per-example bodies are the no-vectorisation baseline: B forward/backward passes of one example each (the kernels
the blas backend uses at B = 1), their gradients accumulated, as a loop over examples with gradient accumulation
would. Same gradients, same updates.

Legend: B = batch size, C = input features, K = classes, P = parameters.
"""
import math
from collections import namedtuple

from numba import njit

from minigrad.engine import kernels as K
from minigrad.engine import kernels_small as KS
from minigrad.engine.optim import STEP, optimizer_update

# The per-example backend's single-example pass: grads (P,) one example's gradient, dgrads (kernels.Grads) its layer
# views, work (kernels.Work) the B = 1 workspace, X (1,C), y (1,) where each example is copied
OneExample = namedtuple("OneExample", "grads dgrads work X y")


@njit
def forward(linear_forward, net, work, X):
    # X (B,C) -> logits acts[L-1] (B,K)
    act, _, weights, biases = net
    zs, acts, _ = work
    L = len(weights)
    for l in range(L):
        inp = X if l == 0 else acts[l - 1]
        linear_forward(zs[l], inp, weights[l], biases[l])
        if l < L - 1:
            K.activation_forward(act, acts[l], zs[l])


@njit
def forward_backward(linear_forward, linear_backward, net, grads, work, X, y, sqnorms):
    # X (B,C), y (B,) -> mean loss; fills grads (views of the flat gradient).
    # sqnorms (B,) or (0,): if not empty, receives each example's squared gradient norm (of loss/B; see kernels).
    forward(linear_forward, net, work, X)
    act, loss, weights, _ = net
    dweights, dbiases = grads
    zs, acts, dzs = work
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
def train_step(linear_forward, linear_backward, net, grads, work, X, y, sqnorms, update):
    # forward, backward and update in one compiled call. A non-finite loss skips the update, so the parameters
    # stay those that produced it, and the caller reports it.
    value = forward_backward(linear_forward, linear_backward, net, grads, work, X, y, sqnorms)
    if math.isfinite(value):
        kind, params, flat_grads, state, hyper = update
        hyper[STEP] += 1
        optimizer_update(kind, params, flat_grads, state, hyper)
    return value


@njit
def forward_backward_per_example(net, one, X, y, sqnorms, grads):
    # X (B,C), y (B,) -> mean loss; grads (P,) = the mean of the B examples' gradients, each from a forward and
    # backward pass of that example alone (copied into one.X, one.y, through one.work) into one.grads.
    # sqnorms (B,) or (0,): if not empty, receives |gradient of example b|^2 / B^2 (the scale of forward_backward's).
    # (explicit loops: Numba's in-place array operators go through its generic ufunc loop, 4x slower here)
    B, C = X.shape
    P = grads.shape[0]
    example_grads, dgrads, work1, x1, y1 = one
    scale = grads.dtype.type(1.0 / B)
    for i in range(P):
        grads[i] = 0.0
    total = 0.0
    for b in range(B):
        for c in range(C):
            x1[0, c] = X[b, c]
        y1[0] = y[b]
        total += forward_backward(KS.linear_forward, KS.linear_backward, net, dgrads, work1, x1, y1,
                                  sqnorms[:0])
        norm2 = 0.0
        for i in range(P):
            grads[i] += scale * example_grads[i]
        if sqnorms.shape[0] > 0:
            for i in range(P):
                norm2 += example_grads[i] * example_grads[i]
            sqnorms[b] = norm2 / (B * B)
    return total / B


@njit
def train_step_per_example(net, one, X, y, sqnorms, update):
    # train_step of the per-example backend: B single-example passes, then one update with their mean gradient
    kind, params, grads, state, hyper = update
    value = forward_backward_per_example(net, one, X, y, sqnorms, grads)
    if math.isfinite(value):
        hyper[STEP] += 1
        optimizer_update(kind, params, grads, state, hyper)
    return value
