"""Large-batch fusions around the BLAS GEMMs: a plain-SGD step with fewer passes over memory.

Past the fused small-batch step (kernels_small), a training step is GEMMs through BLAS plus elementwise passes. The
textbook step (model.train_step, the "blas-unfused" backend) makes these passes besides the GEMMs, per layer:
bias (read and write z), activation (read z, write a), bias gradient (read dout), activation backward (read z,
read and write dz), and then the optimizer: write dweight in the GEMM, read it back with the weights, write the
weights. `sgd_step` here makes the same arithmetic with fewer passes:

  - the bias is added in the pass that applies the activation (bias_activation_forward): one pass over z, not two;
  - the SGD update is folded into the weight-gradient GEMM: BLAS computes W <- (1 - lr wd) W - lr dout^T inp
    directly (its alpha and beta; gemm_sgd_update), so dweight is never written nor read back;
  - each layer's bias update is summed in the pass that forms its output gradient (the activation backward, or the
    loss for the last layer): no separate pass over dout for the bias gradient.

The gradient itself is then never formed. The model keeps what it is made of (each layer's output gradient in
dzs, its input in acts, a copy of the batch) and computes it on the first read of MLP.grads, as after the fused
small-batch step. The first layer's input is the batch itself, which the caller may overwrite: keeping a copy costs
2 B C_0 values of traffic against the 2 OC_0 C_0 the fold saves, so the first layer is folded only while B < OC_0;
from there on its gradient is formed by an ordinary GEMM and applied by an update pass (the step's `fold_first`).

Legend: B = batch size, C = input features, OC = output features, K = classes.
"""
import math
from collections import namedtuple

import numpy as np
from llvmlite import binding as llvm
from numba import njit, types

from minigrad.engine import kernels as K
from minigrad.engine.kernels import FASTMATH
from minigrad.machine import blas

# BLAS's gemm with its alpha and beta, which np.dot does not expose, through its Fortran interface (every argument a
# pointer; column-major matrices). The symbols are bound when this module loads, to scipy's OpenBLAS (the one
# Numba's np.dot calls) or to MKL (machine/blas.py), so the kernels that call them can be cached (a ctypes pointer
# cannot). Every GEMM of sgd_step goes through them, so the step runs on one library.
for _name, _address in blas.load().items():
    llvm.add_symbol(f"minigrad_{_name}", _address)
_gemm_signature = types.void(*([types.voidptr] * 13))
_sgemm = types.ExternalFunction("minigrad_sgemm", _gemm_signature)
_dgemm = types.ExternalFunction("minigrad_dgemm", _gemm_signature)


def gemm_scratch(dtype):
    """The scalars gemm hands BLAS by pointer: (int32 (6,) sizes and leading dimensions, uint8 (2,) transpose flags,
    dtype (2,) alpha and beta), allocated once per workspace."""
    return np.zeros(6, np.int32), np.zeros(2, np.uint8), np.zeros(2, dtype)


@njit(cache=True)
def gemm(out, a, b, trans_a, trans_b, alpha, beta, ints, flags, scalars):
    # out (M,N) <- alpha op(a) op(b) + beta out, row-major, op(x) = x^T when trans_x: a is (M,K), or (K,M) if
    # trans_a; b is (K,N), or (N,K) if trans_b. A row-major matrix is its column-major transpose, so BLAS computes
    # out^T <- alpha op(b)^T op(a)^T + beta out^T, each operand "N" as it lies or "T" when transposed.
    M, N = out.shape
    K = a.shape[0] if trans_a else a.shape[1]
    flags[0] = ord("T") if trans_b else ord("N")
    flags[1] = ord("T") if trans_a else ord("N")
    ints[0], ints[1], ints[2] = N, M, K                      # m, n, k of the column-major product
    ints[3], ints[4], ints[5] = b.shape[1], a.shape[1], N    # leading dimensions of b, a, out
    scalars[0], scalars[1] = alpha, beta
    args = (flags[0:].ctypes, flags[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes, scalars[0:].ctypes,
            b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes, scalars[1:].ctypes, out.ctypes, ints[5:].ctypes)
    if out.itemsize == 4:
        _sgemm(*args)
    else:
        _dgemm(*args)


@njit(cache=True)
def gemm_rows(out, a, b, trans_b, rows, ints, flags, scalars):
    # out (M,N) <- a (M,K) op(b), in blocks of at most `rows` rows of out and a (rows >= M: one GEMM). OpenBLAS
    # runs a GEMM of few rows by a small-matrix kernel that is up to 3x faster per row than its packed kernel
    # (measured at M = 8 against 10-32, 784x128 weights on a Xeon with SkylakeX kernels)
    M = out.shape[0]
    for i in range(0, M, rows):
        j = min(i + rows, M)
        gemm(out[i:j], a[i:j], b, False, trans_b, 1.0, 0.0, ints, flags, scalars)


@njit(cache=True)
def gemm_sgd_update(weight, dout, inp, lr, decay, ints, flags, scalars):
    # dout (B,OC), inp (B,C) -> weight (OC,C) <- decay * weight - lr * dout^T inp   (one GEMM, beta = decay)
    gemm(weight, dout, inp, True, False, -lr, decay, ints, flags, scalars)


# ------------------------------------------------------------------------------------------ elementwise passes
# Each kernel has one loop nest per activation, chosen before the loops: a test of `kind` inside the inner loop keeps
# LLVM from vectorising it (measured 1.1-1.2x slower than the separate passes it replaces).
@njit(cache=True, fastmath=FASTMATH)
def bias_activation_forward(kind, out, z, bias):
    # z (B,OC) GEMM output, bias (OC,) -> z += bias, out (B,OC) = f(z)   (kind: kernels.ACTIVATIONS code)
    # Saves kernels.linear_forward's separate bias pass (a read and a write of z).
    B, N = z.shape
    if kind == 0:
        for b in range(B):
            for j in range(N):
                x = z[b, j] + bias[j]
                z[b, j] = x
                out[b, j] = x if x > 0 else 0.0
    elif kind == 1:
        for b in range(B):
            for j in range(N):
                x = z[b, j] + bias[j]
                z[b, j] = x
                out[b, j] = math.tanh(x)
    else:
        for b in range(B):
            for j in range(N):
                x = z[b, j] + bias[j]
                z[b, j] = x
                out[b, j] = 0.5 * x * (1.0 + math.tanh(K.GELU_K * (x + 0.044715 * x * x * x)))


@njit(cache=True, fastmath=FASTMATH)
def activation_backward_bias_sgd(kind, dz, z, out, bias, lr, decay, sums):
    # dz (B,OC) holds dL/da on entry, dL/dz = dL/da * f'(z) on exit (in place); z, out (B,OC) the forward's;
    # bias (OC,) <- decay * bias - lr * sum_b dz[b]; sums (OC,) scratch. Saves the bias gradient's pass over dz.
    B, N = dz.shape
    sums[:] = 0.0
    if kind == 0:
        for b in range(B):
            for j in range(N):
                d = dz[b, j] if z[b, j] > 0 else 0.0
                dz[b, j] = d
                sums[j] += d
    elif kind == 1:
        for b in range(B):
            for j in range(N):
                d = dz[b, j] * (1.0 - out[b, j] * out[b, j])
                dz[b, j] = d
                sums[j] += d
    else:
        for b in range(B):
            for j in range(N):
                d = dz[b, j] * K.gelu_derivative(z[b, j])
                dz[b, j] = d
                sums[j] += d
    bias_sgd_update(bias, sums, lr, decay)


@njit(cache=True)
def bias_sgd_update(bias, dbias, lr, decay):
    # bias (OC,) <- decay * bias - lr * dbias
    for j in range(bias.shape[0]):
        bias[j] = decay * bias[j] - lr * dbias[j]


@njit(cache=True)
def add_bias(out, bias):
    # out (B,OC) += bias (OC,) on every row
    for b in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[b, j] += bias[j]


@njit(cache=True)
def column_sums(sums, dout):
    # dout (B,OC) -> sums (OC,) = sum_b dout[b]
    sums[:] = 0.0
    for b in range(dout.shape[0]):
        for j in range(dout.shape[1]):
            sums[j] += dout[b, j]


@njit(cache=True)
def weight_sgd_update(weight, dweight, lr, decay):
    # weight, dweight (OC,C): weight <- decay * weight - lr * dweight   (the unfolded first layer)
    for o in range(weight.shape[0]):
        for c in range(weight.shape[1]):
            weight[o, c] = decay * weight[o, c] - lr * dweight[o, c]


# -------------------------------------------------------------------------------------------------- the step
# What sgd_step needs besides the workspace: dweight0 (OC_0,C_0) the first layer's weight gradient when it is not
# folded; fold_first (B < OC_0, see the module docstring); X (B,C_0) the batch copy when folded, else (0,C_0);
# sums (max OC,) scratch for the bias sums; ints, flags, scalars the GEMM's scalars (gemm_scratch); rows the
# largest block of batch rows a forward or input-gradient GEMM is given at once (gemm_rows; B: unblocked)
Large = namedtuple("Large", "dweight0 fold_first X sums ints flags scalars rows")


def large_buffers(sizes, B, dtype, dweight0, rows=None):
    fold_first = B < sizes[1]
    return Large(dweight0, fold_first, np.zeros((B if fold_first else 0, sizes[0]), dtype),
                 np.zeros(max(sizes[1:]), dtype), *gemm_scratch(dtype), max(1, min(rows or B, B)))


@njit(cache=True)
def sgd_step(net, work, large, X, y, lr, weight_decay):
    # X (B,C_0), y (B,) -> mean loss; forward, backward and the plain-SGD update (module docstring). A non-finite
    # loss returns before any update. net, work, large: laid out as kernels.Net, kernels.Work and Large. With fold_first
    # the first layer's update is folded into its GEMM and X copied into large.X for MLP.grads; else its weight
    # gradient goes to large.dweight0 and an update pass.
    act, loss, weights, biases = net
    zs, acts, dzs = work
    dweight0, fold_first, x_saved, sums, ints, flags, scalars, rows = large
    L = len(weights)
    for l in range(L):
        inp = X if l == 0 else acts[l - 1]
        if l < L - 1:
            gemm_rows(zs[l], inp, weights[l], True, rows, ints, flags, scalars)
            bias_activation_forward(act, acts[l], zs[l], biases[l])
        else:
            gemm_rows(zs[l], inp, weights[l], True, rows, ints, flags, scalars)  # the logits
            add_bias(zs[l], biases[l])  # a (B,K) pass: negligible
    value = K.loss_forward_backward(loss, dzs[L - 1], acts[L - 1], y)
    if not math.isfinite(value):
        return value
    decay = 1.0 - lr * weight_decay
    K_out = dzs[L - 1].shape[1]
    column_sums(sums[:K_out], dzs[L - 1])
    bias_sgd_update(biases[L - 1], sums[:K_out], lr, decay)
    for l in range(L - 1, -1, -1):
        dout = dzs[l]
        if l > 0:
            # the input gradient, from the weights before their update
            gemm_rows(dzs[l - 1], dout, weights[l], False, rows, ints, flags, scalars)
            gemm_sgd_update(weights[l], dout, acts[l - 1], lr, decay, ints, flags, scalars)
            OC = dzs[l - 1].shape[1]
            activation_backward_bias_sgd(act, dzs[l - 1], zs[l - 1], acts[l - 1], biases[l - 1], lr, decay,
                                         sums[:OC])
        elif fold_first:
            x_saved[:, :] = X
            gemm_sgd_update(weights[0], dout, X, lr, decay, ints, flags, scalars)
        else:
            gemm(dweight0, dout, X, True, False, 1.0, 0.0, ints, flags, scalars)
            weight_sgd_update(weights[0], dweight0, lr, decay)
    return value
