"""Where the time of one training step goes: each kernel of model.train_step, timed in place.

`step_prefix` runs the ops of model.train_step in the same order on the same buffers, and stops after the first
`stop` of them. Every prefix is timed as a compiled loop of `reps` steps (no Python between the steps), the prefixes
round-robin so that a noisy neighbour slows them all alike; an op's time is the median of its prefix minus the median
of the one before. So each op is timed where it really runs, with the caches as the step before it left them, and
the ops add up to the whole compiled step. Ops too short to resolve against the noise can come out slightly
negative; they are reported as measured.

The linear backward is one kernel (weight gradient, bias and input gradient); a prefix can end after its weight
gradient (the kernel called with need_dinp false), which splits it into the two GEMMs.

Outside compiled code: the same step called once from Python (argument unboxing and dispatch of the compiled
function), and MLP.train_step_trusted as the training loop calls it (adding the method's bookkeeping; for the blas
backend with plain SGD that is a fused step, kernels_small's or kernels_large's, which runs these ops fused).

The per-example backend runs B single-example passes: its ops are those of a B = 1 step on the kernels it uses,
times B, and "gradient accumulation" (copying each example in and adding its gradient) is what remains of its
compiled step.
"""
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import kernels_small as KS
from minigrad.engine import passes as P
from minigrad.engine import steps as S
from minigrad.engine.optim import STEP, WEIGHT_DECAY, optimizer_update


@dataclass(frozen=True)
class Op:
    name: str
    kind: str            # gemm, activation, loss, optimizer, accumulation
    shape: tuple = ()    # GEMMs: (M, N, K), out (M,N) = a (M,K) @ b (K,N)
    repeat: int = 1      # times per step (the per-example backend runs each pass B times)

    @property
    def flops(self):
        """Per step: 2 M N K per GEMM."""
        return self.repeat * 2 * math.prod(self.shape) if self.shape else 0

    def bytes(self, itemsize):
        """Per step, the least traffic a GEMM needs: read both operands and write the result once."""
        if not self.shape:
            return 0
        m, n, k = self.shape
        return self.repeat * (m * k + k * n + m * n) * itemsize


def step_ops(sizes, B, activation, optimizer, loss="cross_entropy", repeat=1):
    """The ops of one train step in step_prefix's order; `repeat` for the passes, the update runs once."""
    L = len(sizes) - 1
    ops = []
    for l in range(L):
        ops.append(Op(f"layer {l + 1} forward GEMM (+bias)", "gemm", (B, sizes[l + 1], sizes[l]), repeat))
        if l < L - 1:
            ops.append(Op(f"layer {l + 1} {activation} forward", "activation", (), repeat))
    ops.append(Op("softmax cross-entropy" if loss == "cross_entropy" else loss, "loss", (), repeat))
    for l in range(L - 1, -1, -1):
        ops.append(Op(f"layer {l + 1} weight-gradient GEMM (+bias)", "gemm", (sizes[l + 1], sizes[l], B), repeat))
        if l > 0:
            ops.append(Op(f"layer {l + 1} input-gradient GEMM", "gemm", (B, sizes[l], sizes[l + 1]), repeat))
            ops.append(Op(f"layer {l} {activation} backward", "activation", (), repeat))
    ops.append(Op(f"{optimizer} update", "optimizer"))
    return ops


@njit
def step_prefix(stop, linear_forward, linear_backward, net, grads, work, X, y, update):
    # passes.train_step's ops in step_ops' order, stopping after the first `stop`; returns how many ran
    act, loss, weights, biases = net
    dweights, dbiases = grads
    zs, acts, dzs = work
    L = len(weights)
    k = 0
    for l in range(L):
        if k == stop:
            return k
        inp = X if l == 0 else acts[l - 1]
        linear_forward(zs[l], inp, weights[l], biases[l])
        k += 1
        if l < L - 1:
            if k == stop:
                return k
            K.activation_forward(act, acts[l], zs[l])
            k += 1
    if k == stop:
        return k
    K.loss_forward_backward(loss, dzs[L - 1], acts[L - 1], y)
    k += 1
    for l in range(L - 1, -1, -1):
        if k == stop:
            return k
        inp = X if l == 0 else acts[l - 1]
        dinp = dzs[l - 1] if l > 0 else dzs[0]
        if l == 0 or stop == k + 1:  # the weight gradient alone
            linear_backward(dinp, dweights[l], dbiases[l], dzs[l], inp, weights[l], False)
            k += 1
            continue
        linear_backward(dinp, dweights[l], dbiases[l], dzs[l], inp, weights[l], True)
        k += 2
        if k == stop:
            return k
        K.activation_backward(act, dzs[l - 1], dzs[l - 1], zs[l - 1], acts[l - 1])
        k += 1
    if k == stop:
        return k
    kind, params, flat_grads, state, hyper = update
    hyper[STEP] += 1
    optimizer_update(kind, params, flat_grads, state, hyper)
    return k + 1


def large_sgd_ops(sizes, B, activation, fold_first):
    """The ops of kernels_large.sgd_step (the blas-fused-sgd path) in large_sgd_prefix's order."""
    L = len(sizes) - 1
    ops = []
    for l in range(L):
        last = l == L - 1
        ops.append(Op(f"layer {l + 1} forward GEMM" + (" (+bias)" if last else ""), "gemm", (B, sizes[l + 1], sizes[l])))
        if not last:
            ops.append(Op(f"layer {l + 1} bias + {activation} forward", "activation"))
    ops.append(Op("softmax cross-entropy", "loss"))
    ops.append(Op(f"layer {L} bias update", "optimizer"))
    for l in range(L - 1, 0, -1):
        ops.append(Op(f"layer {l + 1} input-gradient GEMM", "gemm", (B, sizes[l], sizes[l + 1])))
        ops.append(Op(f"layer {l + 1} weight-gradient GEMM + SGD update", "gemm", (sizes[l + 1], sizes[l], B)))
        ops.append(Op(f"layer {l} {activation} backward + bias update", "activation"))
    if fold_first:
        ops.append(Op("copy of the batch (for grads)", "accumulation"))
        ops.append(Op("layer 1 weight-gradient GEMM + SGD update", "gemm", (sizes[1], sizes[0], B)))
    else:
        ops.append(Op("layer 1 weight-gradient GEMM", "gemm", (sizes[1], sizes[0], B)))
        ops.append(Op("layer 1 SGD update", "optimizer"))
    return ops


@njit
def large_sgd_prefix(stop, net, work, large, X, y, lr):
    # kernels_large.sgd_step's ops (weight decay 0) in large_sgd_ops' order, stopping after the first `stop`
    act, loss, weights, biases = net
    zs, acts, dzs = work
    dweight0, fold_first, x_saved, sums, ints, flags, scalars, rows = large
    L = len(weights)
    k = 0
    for l in range(L):
        inp = X if l == 0 else acts[l - 1]
        if k == stop:
            return k
        if l < L - 1:
            KG.gemm_rows(zs[l], inp, weights[l], True, rows, ints, flags, scalars)
            k += 1
            if k == stop:
                return k
            KG.bias_activation_forward(act, acts[l], zs[l], biases[l])
        else:
            KG.gemm_rows(zs[l], inp, weights[l], True, rows, ints, flags, scalars)
            KG.add_bias(zs[l], biases[l])
        k += 1
    if k == stop:
        return k
    K.loss_forward_backward(loss, dzs[L - 1], acts[L - 1], y)
    k += 1
    if k == stop:
        return k
    n = dzs[L - 1].shape[1]
    KG.column_sums(sums[:n], dzs[L - 1])
    KG.bias_sgd_update(biases[L - 1], sums[:n], lr, 1.0)
    k += 1
    for l in range(L - 1, 0, -1):
        if k == stop:
            return k
        KG.gemm_rows(dzs[l - 1], dzs[l], weights[l], False, rows, ints, flags, scalars)
        k += 1
        if k == stop:
            return k
        KG.gemm_sgd_update(weights[l], dzs[l], acts[l - 1], lr, 1.0, ints, flags, scalars)
        k += 1
        if k == stop:
            return k
        n = dzs[l - 1].shape[1]
        KG.activation_backward_bias_sgd(act, dzs[l - 1], zs[l - 1], acts[l - 1], biases[l - 1], lr, 1.0, sums[:n])
        k += 1
    if k == stop:
        return k
    if fold_first:
        x_saved[:, :] = X
        k += 1
        if k == stop:
            return k
        KG.gemm_sgd_update(weights[0], dzs[0], X, lr, 1.0, ints, flags, scalars)
    else:
        KG.gemm(dweight0, dzs[0], X, True, False, 1.0, 0.0, ints, flags, scalars)
        k += 1
        if k == stop:
            return k
        KG.weight_sgd_update(weights[0], dweight0, lr, 1.0)
    return k + 1


@njit
def _run_large_prefix(reps, stop, net, work, large, X, y, lr):
    for _ in range(reps):
        large_sgd_prefix(stop, net, work, large, X, y, lr)


@njit
def _run_prefix(reps, stop, linear_forward, linear_backward, net, grads, work, X, y, update):
    for _ in range(reps):
        step_prefix(stop, linear_forward, linear_backward, net, grads, work, X, y, update)


@njit
def _run_per_example(reps, net, one, X, y, sqnorms, update):
    for _ in range(reps):
        P.train_step_per_example(net, one, X, y, sqnorms, update)


def _medians(calls, samples):
    # round-robin over the calls, `samples` times; the median seconds of each
    import time

    times = [[] for _ in calls]
    for _ in range(samples):
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def _reps(call_once, target):
    # steps per timed sample so that a sample lasts about `target` seconds
    import time

    t0 = time.perf_counter()
    call_once()
    return max(1, int(target / max(time.perf_counter() - t0, 1e-7)))


def breakdown(model, optimizer, X, y, samples=21, target=2e-3):
    """Time every op of one train step of `model` (its backend, current thread settings) on the batch X, y with
    `optimizer` (an Optimizer; its state is bound here). Returns a dict: ops [Op], op_s [seconds per op, in order],
    compiled_step_s, python_call_s, train_step_s, fused (whether MLP.train_step_trusted ran a fused SGD step).
    The step's path says how: its own ops for kernels_large's step and per-example, else the unfused step's."""
    step = model.step_for(X.shape[0], optimizer.bind(model))
    return _BREAKDOWNS.get(type(step), _plain_breakdown)(model, step, optimizer, X, y, samples, target)


def _plain_breakdown(model, step, optimizer, X, y, samples, target):
    # the ops of passes.train_step on the step's linear kernels (for a fused step: what it fuses)
    B, ws = X.shape[0], step.ws
    ops = step_ops(model.sizes, B, model.activation, optimizer.name, model.loss)
    update = step.update(optimizer)
    args = (*step.linear, step.net, step.grads, step.work, X, y, update)
    _run_prefix(1, len(ops), *args)  # compile
    reps = _reps(lambda: _run_prefix(1, len(ops), *args), target)
    calls = [lambda k=k: _run_prefix(reps, k, *args) for k in range(len(ops) + 1)]
    compiled = lambda: P.train_step(*args[:7], ws.no_sqnorms, update)  # noqa: E731
    medians = _medians(calls + _from_python(reps, compiled, model, optimizer, X, y), samples)
    return _result(ops, medians, reps, model)


def _large_sgd_breakdown(model, step, optimizer, X, y, samples, target):
    # the blas-fused-sgd step's own ops (kernels_large.sgd_step), timed as prefixes like the unfused step's; its
    # prefixes leave out weight decay, so a step with decay is timed as the unfused step's ops
    if optimizer.hyper[WEIGHT_DECAY] != 0:
        return _plain_breakdown(model, step, optimizer, X, y, samples, target)
    args = (step.net, step.work, step.kept, X, y, optimizer.lr)
    ops = large_sgd_ops(model.sizes, X.shape[0], model.activation, step.buffers.fold_first)
    _run_large_prefix(1, len(ops), *args)  # compile
    reps = _reps(lambda: _run_large_prefix(1, len(ops), *args), target)
    calls = [lambda k=k: _run_large_prefix(reps, k, *args) for k in range(len(ops) + 1)]
    compiled = lambda: KG.sgd_step(*args, 0.0)  # noqa: E731  (weight decay 0)
    medians = _medians(calls + _from_python(reps, compiled, model, optimizer, X, y), samples)
    return _result(ops, medians, reps, model)


def _from_python(reps, compiled_step, model, optimizer, X, y):
    # reps calls of the compiled step from Python, and of MLP.train_step_trusted as the training loop calls it
    def calls(step):
        def run():
            for _ in range(reps):
                step()
        return run

    return [calls(compiled_step), calls(lambda: model.train_step_trusted(X, y, optimizer))]


def _result(ops, medians, reps, model):
    per_step = [m / reps for m in medians[:-2]]
    return dict(ops=ops, op_s=[per_step[k + 1] - per_step[k] for k in range(len(ops))],
                compiled_step_s=per_step[-1] - per_step[0], python_call_s=medians[-2] / reps,
                train_step_s=medians[-1] / reps, fused=model.grads_deferred)


def _per_example_breakdown(model, step, optimizer, X, y, samples, target):
    # the B = 1 step's ops on the per-example passes' kernels, times B; accumulation is the rest of the compiled step
    B, one, update = X.shape[0], model.one_example, step.update(optimizer)
    one.X[...], one.y[...] = X[:1], y[:1]
    single = (KS.linear_forward, KS.linear_backward, step.net, *K.plain((one.dgrads, one.work)), one.X, one.y, update)
    ops = step_ops(model.sizes, 1, model.activation, optimizer.name, model.loss, repeat=B)
    ops[-1] = Op(ops[-1].name, ops[-1].kind)
    full = (step.net, step.one, X, y, step.ws.no_sqnorms, update)
    _run_prefix(1, len(ops), *single)
    _run_per_example(1, *full)
    reps1 = _reps(lambda: _run_prefix(1, len(ops), *single), 4 * target)  # its noise is multiplied by B
    reps = _reps(lambda: _run_per_example(1, *full), target)
    calls = [lambda k=k: _run_prefix(reps1, k, *single) for k in range(len(ops) + 1)]
    calls += [lambda: _run_per_example(reps, *full)]
    calls += _from_python(reps, lambda: P.train_step_per_example(*full), model, optimizer, X, y)
    medians = _medians(calls, samples)
    per_step1 = [m / reps1 for m in medians[:-3]]
    op_s = [B * (per_step1[k + 1] - per_step1[k]) for k in range(len(ops) - 1)]
    op_s.append(per_step1[-1] - per_step1[-2])  # one update per step, not per example
    compiled = medians[-3] / reps
    ops.append(Op("gradient accumulation (copy in, add, per example)", "accumulation"))
    op_s.append(compiled - sum(op_s))
    return dict(ops=ops, op_s=op_s, compiled_step_s=compiled, python_call_s=medians[-2] / reps,
                train_step_s=medians[-1] / reps, fused=False)


_BREAKDOWNS = {S.LargeStep: _large_sgd_breakdown, S.PerExampleStep: _per_example_breakdown}
