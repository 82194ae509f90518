"""Small-batch kernels: register-blocked linear layers, and a fused SGD step that splits every layer across cores.

Why a second set of GEMM kernels. At batch size B <= 16 or so a linear layer is a matrix-VECTOR product in disguise:
each weight is used B times, so the time goes into streaming the weights, not into arithmetic. OpenBLAS's sgemm
still packs its panels for a large product (at B = 8 the first layer of a 784-256-256-10 net costs ~50 us in sgemm,
against ~8 us streaming the weights once). The kernels here stream each weight row ONCE and reuse it, from
registers, for every example in the batch (forward), or reuse every example row for 4 weight rows at a time
(backward). The model's "blas" backend dispatches to them below a batch size measured on the target machine
(model.SMALL_BATCH_MAX).

Why fuse SGD. A plain train step writes dweight (as big as the weights) and then the optimizer reads it back:
three passes over ~1 MB of parameters at B = 1, which then no longer fit a core's L2. The fused step applies
W <- W - lr (dout^T inp + wd W) row by row as the weight gradient is formed, so dweight never exists, and the only
parameter traffic is one read (forward) and one read-modify-write (backward). It is valid for plain SGD only (an
optimizer with state needs the gradient itself) and it leaves model.grads untouched.

Why split layers across cores. With T workers, worker w owns a contiguous block of ROWS (output features) of every
layer and is the only one that ever reads or writes them: it computes those outputs in the forward pass and updates
those rows in the backward pass. Its share of the parameters (about 1/T) then stays in its own L2 from one step to
the next. The workers meet at a barrier after each layer's forward pass (the next layer needs every output) and
after each layer's input gradient (a sum over all rows, so every worker contributes a partial sum).

Legend: B = batch size, C = input features, OC = output features, K = classes, T = workers (threads).
"""
import ctypes
import math

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from llvmlite import ir

from minigrad import kernels as K
from minigrad.kernels import FASTMATH


# ------------------------------------------------------------------------------------------------ row helpers
# The innermost loops. Each walks one or four contiguous rows of length C; LLVM turns the loop over c into SIMD
# (16 float32 lanes with AVX-512), and the four-row versions keep four independent accumulators in registers, so
# one load of the shared row feeds four multiply-adds. They take 2-D arrays and row numbers rather than row views:
# a view is a new array object with a reference count to update, which costs more than a short row's arithmetic.

@njit(cache=True, fastmath=FASTMATH)
def dot1(w, i, x, j):
    # sum_c w[i,c] x[j,c]
    s0 = w.dtype.type(0)
    for c in range(w.shape[1]):
        s0 += w[i, c] * x[j, c]
    return s0


@njit(cache=True, fastmath=FASTMATH)
def dot4(w, i, x, j):
    # the four dot products of row w[i] with rows x[j], ..., x[j+3], in one pass over w[i]
    s0 = s1 = s2 = s3 = w.dtype.type(0)
    for c in range(w.shape[1]):
        wc = w[i, c]
        s0 += wc * x[j, c]
        s1 += wc * x[j + 1, c]
        s2 += wc * x[j + 2, c]
        s3 += wc * x[j + 3, c]
    return s0, s1, s2, s3


@njit(cache=True, fastmath=FASTMATH)
def add1(y, i, x, j, a0):
    # y[i] += a0 x[j]
    for c in range(y.shape[1]):
        y[i, c] += a0 * x[j, c]


@njit(cache=True, fastmath=FASTMATH)
def add4(y, i, x, j, a0, a1, a2, a3):
    # y[i] += a0 x[j] + a1 x[j+1] + a2 x[j+2] + a3 x[j+3]: one load and one store of y[i] for four multiply-adds
    for c in range(y.shape[1]):
        y[i, c] += a0 * x[j, c] + a1 * x[j + 1, c] + a2 * x[j + 2, c] + a3 * x[j + 3, c]


# ------------------------------------------------------------------------------------- linear, rows lo..hi-1
# The same math as kernels.linear_forward / linear_backward, restricted to output features o in [lo, hi), so the
# fused step can hand each worker its own rows. With lo = 0, hi = OC they are the whole layer.

@njit(cache=True, fastmath=FASTMATH)
def linear_forward_rows(out, inp, weight, bias, lo, hi):
    # inp (B,C), weight (OC,C), bias (OC,) -> out[:, lo:hi] (B,OC)
    # For each weight row: the dot products with 4 examples at a time, so the row is read once per 4 examples.
    B = inp.shape[0]
    for o in range(lo, hi):
        b = 0
        while b + 4 <= B:
            s0, s1, s2, s3 = dot4(weight, o, inp, b)
            out[b, o] = s0 + bias[o]
            out[b + 1, o] = s1 + bias[o]
            out[b + 2, o] = s2 + bias[o]
            out[b + 3, o] = s3 + bias[o]
            b += 4
        while b < B:
            out[b, o] = dot1(weight, o, inp, b) + bias[o]
            b += 1


@njit(cache=True, fastmath=FASTMATH)
def linear_dinp_rows(dinp, dout, weight, lo, hi):
    # dout (B,OC), weight (OC,C) -> dinp (B,C) += sum over o in [lo,hi) of dout[:,o] weight[o,:]
    # (accumulates: the caller zeroes dinp). Four weight rows at a time, so each dinp row is loaded and stored once
    # per four rows.
    B = dout.shape[0]
    o = lo
    while o + 4 <= hi:
        for b in range(B):
            add4(dinp, b, weight, o, dout[b, o], dout[b, o + 1], dout[b, o + 2], dout[b, o + 3])
        o += 4
    while o < hi:
        for b in range(B):
            add1(dinp, b, weight, o, dout[b, o])
        o += 1


@njit(cache=True, fastmath=FASTMATH)
def _add_examples(y, o, dout, inp, scale):
    # y[o] += scale * sum_b dout[b,o] inp[b], four examples per pass over y[o]
    B = inp.shape[0]
    a = y.dtype.type(scale)  # float32 coefficients keep the loop in float32
    b = 0
    while b + 4 <= B:
        add4(y, o, inp, b, a * dout[b, o], a * dout[b + 1, o], a * dout[b + 2, o], a * dout[b + 3, o])
        b += 4
    while b < B:
        add1(y, o, inp, b, a * dout[b, o])
        b += 1


@njit(cache=True, fastmath=FASTMATH)
def linear_dweight_rows(dweight, dbias, dout, inp, lo, hi):
    # dout (B,OC), inp (B,C) -> dweight[lo:hi] = dout[:,lo:hi]^T inp, dbias[lo:hi] = sum_b dout[b,lo:hi]
    # Row o of dweight is sum_b dout[b,o] inp[b,:]: the row stays in L1 while 4 examples at a time are added in.
    B = dout.shape[0]
    for o in range(lo, hi):
        for c in range(dweight.shape[1]):
            dweight[o, c] = 0.0
        _add_examples(dweight, o, dout, inp, 1.0)
        s = dbias.dtype.type(0)
        for b in range(B):
            s += dout[b, o]
        dbias[o] = s


@njit(cache=True, fastmath=FASTMATH)
def linear_sgd_rows(weight, bias, dout, inp, lo, hi, lr, weight_decay):
    # weight (OC,C), bias (OC,), dout (B,OC), inp (B,C): for o in [lo,hi)
    #   weight[o,:] <- weight[o,:] - lr (sum_b dout[b,o] inp[b,:] + wd weight[o,:])
    #   bias[o]     <- bias[o]     - lr (sum_b dout[b,o]            + wd bias[o])
    # i.e. sgd_update applied to the weight gradient as it is formed, row by row; dweight never exists.
    B = dout.shape[0]
    decay = weight.dtype.type(1.0 - lr * weight_decay)
    for o in range(lo, hi):
        if weight_decay != 0.0:
            for c in range(weight.shape[1]):
                weight[o, c] *= decay
        _add_examples(weight, o, dout, inp, -lr)
        s = bias.dtype.type(0)
        for b in range(B):
            s += dout[b, o]
        bias[o] = bias[o] * decay - weight.dtype.type(lr) * s


@njit(cache=True, fastmath=FASTMATH)
def linear_forward(out, inp, weight, bias):
    # inp (B,C), weight (OC,C), bias (OC,) -> out (B,OC); kernels.linear_forward for small B
    linear_forward_rows(out, inp, weight, bias, 0, weight.shape[0])


@njit(cache=True, fastmath=FASTMATH)
def linear_backward(dinp, dweight, dbias, dout, inp, weight, need_dinp):
    # dout (B,OC), inp (B,C), weight (OC,C) -> dweight (OC,C), dbias (OC,), dinp (B,C) if need_dinp;
    # kernels.linear_backward for small B
    OC = weight.shape[0]
    linear_dweight_rows(dweight, dbias, dout, inp, 0, OC)
    if need_dinp:
        dinp[:] = 0.0
        linear_dinp_rows(dinp, dout, weight, 0, OC)


# ---------------------------------------------------------------------------------------------- the barrier
# Workers wait for each other by counting: each adds 1 to counter[0] when it arrives, then waits until the count
# reaches (barrier number) * T. The count is never reset inside a step, so no worker can confuse one barrier with the
# next. Plain loads could be hoisted out of the waiting loop by the compiler, so the count is read with an atomic
# (acquire) load and incremented with an atomic (sequentially consistent) add, which also orders every write made
# before the barrier ahead of every read made after it. Numba has no atomics, hence the three small intrinsics.

@intrinsic
def _atomic_add(typingctx, arr, i, v):
    # arr[i] += v atomically (int64 array); returns the old value
    sig = types.int64(arr, i, v)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], sig.args[2], types.int64), "seq_cst")

    return sig, codegen


@intrinsic
def _atomic_load(typingctx, arr, i):
    # arr[i], read with acquire ordering (int64 array)
    sig = types.int64(arr, i)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def _cpu_pause(typingctx):
    # x86 PAUSE: tells the core this is a spin-wait (saves power, frees the sibling hyperthread)
    sig = types.void()

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


_sched_yield = ctypes.CDLL(None).sched_yield
_sched_yield.restype, _sched_yield.argtypes = ctypes.c_int, []

SPINS_BEFORE_YIELD = 4000      # ~0.1 ms of PAUSE: far longer than a barrier takes on an idle machine
YIELDS_BEFORE_GIVING_UP = 2_000_000   # seconds: only a worker that never started gets here (see fused_sgd_step)
BARRIER_COUNT, BARRIER_FAILED = 0, 8  # counter[8] sits in another cache line than counter[0]


@njit
def barrier(counter, T, number):
    # Wait until all T workers have arrived at barrier `number` (1, 2, ...); False if they never do.
    _atomic_add(counter, BARRIER_COUNT, 1)
    spins = 0
    while _atomic_load(counter, BARRIER_COUNT) < number * T:
        if _atomic_load(counter, BARRIER_FAILED) != 0:
            return False
        spins += 1
        if spins < SPINS_BEFORE_YIELD:
            _cpu_pause()
        else:
            # the other worker is not running (a busy machine took its core): give the core away
            _sched_yield()
            if spins > SPINS_BEFORE_YIELD + YIELDS_BEFORE_GIVING_UP:
                _atomic_add(counter, BARRIER_FAILED, 1)
                return False
    return True


# ------------------------------------------------------------------------------------------ fused SGD step
@njit
def worker_rows(n, T, w):
    # Worker w's rows [lo, hi) of a layer with n rows: contiguous blocks, cut at multiples of 16 rows so two workers
    # never write the same 64-byte line of an activation row (16 float32).
    lo = min(n, (n * w // T + 15) // 16 * 16)
    hi = min(n, (n * (w + 1) // T + 15) // 16 * 16)
    return lo, hi


@njit(fastmath=FASTMATH)
def sgd_step_worker(w, T, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay,
                    counter, value):
    # Worker w of T: forward, loss, backward and SGD update of its own rows of every layer (module docstring).
    # parts[l] (T,B,C_l): each worker's partial input gradient of layer l; dlogits (T,B,K): each worker's copy of
    # the loss gradient. value (1,) receives the mean loss (from worker 0).
    L = len(weights)
    n_barrier = 0
    for l in range(L):
        inp = X if l == 0 else acts[l - 1]
        lo, hi = worker_rows(weights[l].shape[0], T, w)
        linear_forward_rows(zs[l], inp, weights[l], biases[l], lo, hi)
        if l < L - 1:
            K.activation_forward(act, acts[l][:, lo:hi], zs[l][:, lo:hi])
        n_barrier += 1
        if not barrier(counter, T, n_barrier):
            return
    # every worker computes the (small) loss over all logits into its own buffer: no write is shared
    mine = dlogits[w]
    loss_value = K.loss_forward_backward(loss, mine, acts[L - 1], y)
    if w == 0:
        value[0] = loss_value
    if not math.isfinite(loss_value):
        return  # every worker sees the same loss: all skip the update, the parameters stay as they were
    for l in range(L - 1, -1, -1):
        dout = mine if l == L - 1 else dzs[l]
        inp = X if l == 0 else acts[l - 1]
        weight = weights[l]
        lo, hi = worker_rows(weight.shape[0], T, w)
        if l > 0:
            part = parts[l][w]
            part[:] = 0.0
        # blocks of 4 rows: the partial input gradient reads them (old values) just before the update rewrites them,
        # while they are still in L1
        for o in range(lo, hi, 4):
            end = min(o + 4, hi)
            if l > 0:
                linear_dinp_rows(part, dout, weight, o, end)
            linear_sgd_rows(weight, biases[l], dout, inp, o, end, lr, weight_decay)
        if l > 0:
            n_barrier += 1
            if not barrier(counter, T, n_barrier):
                return
            # dL/da_{l-1} for my rows of layer l-1 = sum of every worker's partial; then through the activation
            lo, hi = worker_rows(weights[l - 1].shape[0], T, w)
            dz = dzs[l - 1]
            allparts = parts[l]
            for b in range(dz.shape[0]):
                for c in range(lo, hi):
                    s = allparts[0, b, c]
                    for t in range(1, T):
                        s += allparts[t, b, c]
                    dz[b, c] = s
            K.activation_backward(act, dz[:, lo:hi], dz[:, lo:hi], zs[l - 1][:, lo:hi], acts[l - 1][:, lo:hi])


@njit
def sgd_step_serial(act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay, counter,
                    value):
    # the fused step on one core: the same body with T = 1 (its barriers return at once)
    counter[BARRIER_COUNT] = 0
    counter[BARRIER_FAILED] = 0
    sgd_step_worker(0, 1, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay,
                    counter, value)


@njit(parallel=True)
def sgd_step_parallel(T, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay, counter,
                      value):
    # T workers, one per thread. prange(T) with T = numba.get_num_threads() gives each thread one worker under the
    # OpenMP threading layer (static schedule); the caller checks the layer (a work-stealing layer such as TBB may run
    # two workers on one thread, and the first barrier would then wait forever: it gives up and reports failure).
    counter[BARRIER_COUNT] = 0
    counter[BARRIER_FAILED] = 0
    for w in prange(T):
        sgd_step_worker(w, T, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay,
                        counter, value)
