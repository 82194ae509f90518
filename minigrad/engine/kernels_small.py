"""Small-batch kernels: register-blocked linear layers, and a fused SGD step that splits every layer across cores.

Why a second set of GEMM kernels. At batch size B <= 16 or so a linear layer is a matrix-VECTOR product in disguise:
each weight is used B times, so the time goes into streaming the weights, not into arithmetic. OpenBLAS's sgemm
still packs its panels for a large product (at B = 8 the first layer of a 784-256-256-10 net costs ~50 us in sgemm,
against ~8 us streaming the weights once). The kernels here stream each weight row ONCE and reuse it, from
registers, for 4 examples at a time (forward), or add 4 examples' outer products into 2 weight rows per pass
(backward). The model's "blas" backend dispatches to them up to a batch size measured on a 2-core Zen 5
(steps.SMALL_BATCH_MAX, steps.fused_sgd_max).

Why fuse SGD. A plain train step writes dweight (as big as the weights) and then the optimizer reads it back:
three passes over ~1 MB of parameters at B = 1, which then no longer fit a core's L2. The fused step applies
W <- W - lr (dout^T inp + wd W) row by row as the weight gradient is formed, so dweight never exists, and the only
parameter traffic is one read (forward) and one read-modify-write (backward). It is valid for plain SGD only (an
optimizer with state needs the gradient itself). It keeps what the gradient is made of (the batch, activations and
output gradients), so the model can still give the gradient when asked (MLP.grads, computed on first read).

Why split layers across cores. With T workers, worker w owns a contiguous block of ROWS (output features) of every
layer and is the only one that ever reads or writes them: it computes those outputs in the forward pass and updates
those rows in the backward pass. Its share of the parameters (about 1/T) then stays in its own L2 from one step to
the next. The workers meet at a barrier after each layer's forward pass (the next layer needs every output) and
after each layer's input gradient (a sum over all rows, so every worker contributes a partial sum).

Legend: B = batch size, C = input features, OC = output features, K = classes, T = workers (threads).
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic
from llvmlite import ir

from minigrad.engine import kernels as K
from minigrad.engine.kernels import FASTMATH


# ------------------------------------------------------------------------------------------------ row helpers
# The innermost loops: register blocks of a GEMM, written as loops over the columns c0..c1-1 of a few rows. LLVM
# turns each loop into SIMD (16 float32 lanes with AVX-512) and keeps the block's accumulators in registers, so one
# load feeds several multiply-adds: in dot4x2, 6 loads (2 weight rows, 4 examples) feed 8; in add4x2, 4 loads and 2
# load-stores feed 8. (One row against four, as in dot4 / add4, runs ~1.6x slower: 5 loads for 4; four rows
# against four, 16 multiply-adds per pass, measured no faster in the step.) The 1-row versions handle what is left
# over when a count is not a multiple of the block.
# They take 2-D arrays and row numbers rather than row views: a view is a new array object with a reference count
# to update, which costs more than a short row's arithmetic. The column loops run over unsigned integers: Numba then
# drops its test for negative indices (Python's wraparound), which LLVM cannot prove away for a loop that does not
# start at 0, and which would stop it from vectorising.

@njit(cache=True, fastmath=FASTMATH)
def dot1(w, i, x, j, c0, c1):
    # sum_c w[i,c] x[j,c]
    s = w.dtype.type(0)
    for c in range(uint64(c0), uint64(c1)):
        s += w[i, c] * x[j, c]
    return s


@njit(cache=True, fastmath=FASTMATH)
def dot4(w, i, x, j, c0, c1):
    # the dot products of row w[i] with rows x[j], ..., x[j+3]
    s0 = s1 = s2 = s3 = w.dtype.type(0)
    for c in range(uint64(c0), uint64(c1)):
        wc = w[i, c]
        s0 += wc * x[j, c]
        s1 += wc * x[j + 1, c]
        s2 += wc * x[j + 2, c]
        s3 += wc * x[j + 3, c]
    return s0, s1, s2, s3


@njit(cache=True, fastmath=FASTMATH)
def dot4x2(w, i, x, j, c0, c1):
    # the dot products of rows w[i], w[i+1] with rows x[j], ..., x[j+3]: (s0..s3 for w[i], t0..t3 for w[i+1])
    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = w.dtype.type(0)
    for c in range(uint64(c0), uint64(c1)):
        v, u = w[i, c], w[i + 1, c]
        x0, x1, x2, x3 = x[j, c], x[j + 1, c], x[j + 2, c], x[j + 3, c]
        s0 += v * x0
        s1 += v * x1
        s2 += v * x2
        s3 += v * x3
        t0 += u * x0
        t1 += u * x1
        t2 += u * x2
        t3 += u * x3
    return s0, s1, s2, s3, t0, t1, t2, t3


@njit(cache=True, fastmath=FASTMATH)
def add1(y, i, x, j, a, c0, c1):
    # y[i] += a x[j]
    for c in range(uint64(c0), uint64(c1)):
        y[i, c] += a * x[j, c]


@njit(cache=True, fastmath=FASTMATH)
def add4(y, i, x, j, a0, a1, a2, a3, c0, c1):
    # y[i] += a0 x[j] + a1 x[j+1] + a2 x[j+2] + a3 x[j+3]
    for c in range(uint64(c0), uint64(c1)):
        y[i, c] += a0 * x[j, c] + a1 * x[j + 1, c] + a2 * x[j + 2, c] + a3 * x[j + 3, c]


@njit(cache=True, fastmath=FASTMATH)
def add4x2(y, i, x, j, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1):
    # y[i] += a0 x[j] + ... + a3 x[j+3];  y[i+1] += b0 x[j] + ... + b3 x[j+3]
    for c in range(uint64(c0), uint64(c1)):
        x0, x1, x2, x3 = x[j, c], x[j + 1, c], x[j + 2, c], x[j + 3, c]
        y[i, c] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
        y[i + 1, c] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3


L1_FLOATS = 16384  # 64 KiB: the operand that is re-read stays in L1 and the nearest part of L2 (measured best for B <= 40)


@njit(cache=True)
def column_block(B, C):
    # Columns per block so that B rows of that width (the operand every weight row meets again) stay in L1: the whole
    # row while B * C fits, else C cut into equal blocks (a multiple of 16 floats, 64 bytes; at least 64 floats).
    blocks = (B * C + L1_FLOATS - 1) // L1_FLOATS
    return max(64, ((C + blocks - 1) // blocks + 15) // 16 * 16)


# ------------------------------------------------------------------------------------- linear, rows lo..hi-1
# The same math as kernels.linear_forward / linear_backward, restricted to output features o in [lo, hi), so the
# fused step can hand each worker its own rows. With lo = 0, hi = OC they are the whole layer.

@njit(cache=True, fastmath=FASTMATH)
def linear_forward_rows(out, inp, weight, bias, lo, hi):
    # inp (B,C), weight (OC,C), bias (OC,) -> out[:, lo:hi] (B,OC)
    # Four examples at a time (they stay in L1) against two weight rows at a time (streamed from L2): each weight
    # row is read once per 4 examples.
    B, C = inp.shape
    b = 0
    while b + 4 <= B:
        o = lo
        while o + 2 <= hi:
            s0, s1, s2, s3, t0, t1, t2, t3 = dot4x2(weight, o, inp, b, 0, C)
            out[b, o], out[b + 1, o], out[b + 2, o], out[b + 3, o] = s0 + bias[o], s1 + bias[o], s2 + bias[o], \
                s3 + bias[o]
            p = o + 1
            out[b, p], out[b + 1, p], out[b + 2, p], out[b + 3, p] = t0 + bias[p], t1 + bias[p], t2 + bias[p], \
                t3 + bias[p]
            o += 2
        if o < hi:
            s0, s1, s2, s3 = dot4(weight, o, inp, b, 0, C)
            out[b, o], out[b + 1, o], out[b + 2, o], out[b + 3, o] = s0 + bias[o], s1 + bias[o], s2 + bias[o], \
                s3 + bias[o]
        b += 4
    while b < B:
        for o in range(lo, hi):
            out[b, o] = dot1(weight, o, inp, b, 0, C) + bias[o]
        b += 1


@njit(cache=True, fastmath=FASTMATH)
def _dinp_block(dinp, dout, weight, o, o_end, c0, c1):
    # dinp[:, c0:c1] += sum over o..o_end-1 of dout[:, o] weight[o, c0:c1]: four weight rows into two dinp rows
    # per pass, so each dinp row is loaded and stored once per four weight rows
    B = dout.shape[0]
    while o + 4 <= o_end:
        b = 0
        while b + 2 <= B:
            add4x2(dinp, b, weight, o, dout[b, o], dout[b, o + 1], dout[b, o + 2], dout[b, o + 3],
                   dout[b + 1, o], dout[b + 1, o + 1], dout[b + 1, o + 2], dout[b + 1, o + 3], c0, c1)
            b += 2
        if b < B:
            add4(dinp, b, weight, o, dout[b, o], dout[b, o + 1], dout[b, o + 2], dout[b, o + 3], c0, c1)
        o += 4
    while o < o_end:
        for b in range(B):
            add1(dinp, b, weight, o, dout[b, o], c0, c1)
        o += 1


@njit(cache=True, fastmath=FASTMATH)
def _outer_block(y, o, o_end, dout, inp, scale, c0, c1):
    # y[r, c0:c1] += scale * sum_b dout[b,r] inp[b, c0:c1] for rows r in [o, o_end): two rows and four examples per
    # pass over the two rows, then what is left of the examples and of the rows one at a time
    B = inp.shape[0]
    a = y.dtype.type(scale)  # float32 coefficients keep the loop in float32
    while o + 2 <= o_end:
        p = o + 1
        b = 0
        while b + 4 <= B:
            add4x2(y, o, inp, b, a * dout[b, o], a * dout[b + 1, o], a * dout[b + 2, o], a * dout[b + 3, o],
                   a * dout[b, p], a * dout[b + 1, p], a * dout[b + 2, p], a * dout[b + 3, p], c0, c1)
            b += 4
        for b in range(b, B):
            add1(y, o, inp, b, a * dout[b, o], c0, c1)
            add1(y, p, inp, b, a * dout[b, p], c0, c1)
        o += 2
    if o < o_end:
        b = 0
        while b + 4 <= B:
            add4(y, o, inp, b, a * dout[b, o], a * dout[b + 1, o], a * dout[b + 2, o], a * dout[b + 3, o], c0, c1)
            b += 4
        for b in range(b, B):
            add1(y, o, inp, b, a * dout[b, o], c0, c1)


@njit(cache=True, fastmath=FASTMATH)
def linear_dinp_rows(dinp, dout, weight, lo, hi):
    # dout (B,OC), weight (OC,C) -> dinp (B,C) += sum over o in [lo,hi) of dout[:,o] weight[o,:]
    # (accumulates: the caller zeroes dinp), a block of columns at a time so that dinp's block stays in L1.
    B, C = dinp.shape
    KC = column_block(B, C)
    for c0 in range(0, C, KC):
        _dinp_block(dinp, dout, weight, lo, hi, c0, min(c0 + KC, C))


@njit(cache=True, fastmath=FASTMATH)
def linear_dweight_rows(dweight, dbias, dout, inp, lo, hi):
    # dout (B,OC), inp (B,C) -> dweight[lo:hi] = dout[:,lo:hi]^T inp, dbias[lo:hi] = sum_b dout[b,lo:hi]
    # Row o of dweight is sum_b dout[b,o] inp[b,:]: a block of the row stays in L1 while the examples are added in,
    # and the examples' block of columns stays in L1 for every row.
    B, C = inp.shape
    KC = column_block(B, C)
    for c0 in range(0, C, KC):
        c1 = min(c0 + KC, C)
        for o in range(lo, hi):
            for c in range(uint64(c0), uint64(c1)):
                dweight[o, c] = 0.0
        _outer_block(dweight, lo, hi, dout, inp, 1.0, c0, c1)
    for o in range(lo, hi):
        s = dbias.dtype.type(0)
        for b in range(B):
            s += dout[b, o]
        dbias[o] = s


@njit(cache=True, fastmath=FASTMATH)
def linear_sgd_rows(dinp, weight, bias, dout, inp, lo, hi, lr, weight_decay, need_dinp):
    # dout (B,OC), inp (B,C), weight (OC,C), bias (OC,): for each row o in [lo,hi)
    #   dinp[:, :]  += dout[:,o] weight[o,:]            (if need_dinp; old weights; the caller zeroes dinp)
    #   weight[o,:] <- weight[o,:] - lr (sum_b dout[b,o] inp[b,:] + wd weight[o,:])
    #   bias[o]     <- bias[o]     - lr (sum_b dout[b,o]            + wd bias[o])
    # i.e. linear_backward followed by sgd_update, with the weight gradient applied as it is formed: dweight never
    # exists. Blocks of 4 rows x KC columns: the input gradient reads the block just before the update rewrites it,
    # while it is in L1.
    B, C = inp.shape
    KC = column_block(B, C)
    decay = weight.dtype.type(1.0 - lr * weight_decay)
    for c0 in range(0, C, KC):
        c1 = min(c0 + KC, C)
        for o in range(lo, hi, 4):
            o_end = min(o + 4, hi)
            if need_dinp:
                _dinp_block(dinp, dout, weight, o, o_end, c0, c1)
            if weight_decay != 0.0:
                for r in range(o, o_end):
                    for c in range(uint64(c0), uint64(c1)):
                        weight[r, c] *= decay
            _outer_block(weight, o, o_end, dout, inp, -lr, c0, c1)
    for o in range(lo, hi):
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


@intrinsic
def _sched_yield(typingctx):
    # the C library's sched_yield(): give this core to another runnable thread (resolved from libc when loaded)
    sig = types.int32()

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])

    return sig, codegen


SPINS_BEFORE_YIELD = 4000      # ~0.1 ms of PAUSE: far longer than a barrier takes on an idle machine
YIELDS_BEFORE_GIVING_UP = 2_000_000   # seconds: only a worker that never started gets here (see fused_sgd_step)
BARRIER_COUNT, BARRIER_FAILED = 0, 8  # counter[8] sits in another cache line than counter[0]


@njit(cache=True)
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
@njit(cache=True)
def worker_rows(n, T, w):
    # Worker w's rows [lo, hi) of a layer with n rows: contiguous blocks, cut at multiples of 16 rows so two workers
    # never write the same 64-byte line of an activation row (16 float32).
    lo = min(n, (n * w // T + 15) // 16 * 16)
    hi = min(n, (n * (w + 1) // T + 15) // 16 * 16)
    return lo, hi


@njit(cache=True, fastmath=FASTMATH)
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
        part = parts[l][w]
        if l > 0:
            part[:] = 0.0
        linear_sgd_rows(part, weight, biases[l], dout, inp, lo, hi, lr, weight_decay, l > 0)
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


@njit(cache=True)
def _start_step(counter, x_saved, X):
    # before the workers start: reset the barrier, and keep a copy of the batch (for MLP.grads, computed later)
    counter[BARRIER_COUNT] = 0
    counter[BARRIER_FAILED] = 0
    B, C = X.shape
    for b in range(B):
        for c in range(C):
            x_saved[b, c] = X[b, c]


# What the fused step needs besides the workspace, for T workers: parts[l] (T,B,C_l) each worker's partial input
# gradient of layer l, dlogits (T,B,K) each worker's copy of the loss gradient, counter (16,) int64 the barrier,
# value (1,) float64 the loss, X (B,C_0) a copy of the batch (for MLP.grads)
Fused = namedtuple("Fused", "parts dlogits counter value X")
COUNTER, VALUE = Fused._fields.index("counter"), Fused._fields.index("value")


def fused_buffers(sizes, B, T, dtype):
    return Fused(tuple(np.zeros((T, B, n), dtype) for n in sizes[:-1]), np.zeros((T, B, sizes[-1]), dtype),
                 np.zeros(16, np.int64), np.zeros(1, np.float64), np.zeros((B, sizes[0]), dtype))


@njit(cache=True)
def sgd_step_serial(net, work, fused, X, y, lr, weight_decay):
    # the fused step on one core: the same body with T = 1 (its barriers return at once). net, work, fused: laid
    # out as kernels.Net, kernels.Work and Fused; X (B,C_0), y (B,); the loss lands in value[0]
    act, loss, weights, biases = net
    zs, acts, dzs = work
    parts, dlogits, counter, value, x_saved = fused
    _start_step(counter, x_saved, X)
    sgd_step_worker(0, 1, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay, counter,
                    value)


@njit(parallel=True)
def sgd_step_parallel(T, net, work, fused, X, y, lr, weight_decay):
    # T workers, one per thread. prange(T) with T = numba.get_num_threads() gives each thread one worker under the
    # OpenMP threading layer (static schedule); the caller checks the layer (a work-stealing layer such as TBB may run
    # two workers on one thread, and the first barrier would then wait forever: it gives up and reports failure).
    # Everything else lives in cached functions: this one is compiled in each process, and a short body compiles
    # in well under a second.
    act, loss, weights, biases = net
    zs, acts, dzs = work
    parts, dlogits, counter, value, x_saved = fused
    _start_step(counter, x_saved, X)
    for w in prange(T):
        sgd_step_worker(w, T, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, weight_decay,
                        counter, value)


@njit(parallel=True)
def probe_threading(x):
    # a trivial parallel loop: running it once makes Numba pick its threading layer, so the model can ask which
    for i in prange(x.shape[0]):
        x[i] = i
