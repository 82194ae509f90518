"""The compiled training loop: every step between two evaluations in one call (a chunk).

A chunk (`run_steps`) draws each batch, gathers it into the workspace, takes the step of the path its Step object
(engine/steps.py) hands it, accumulates the loss and stops at a NaN/Inf loss, with the learning-rate and batch-size
schedules evaluated at every step. It returns to Python only at the step asked for, at the end of the budget, at a
non-finite loss, or when the next batch needs a workspace of another size (a batch-size schedule step, or an epoch's
kept last partial batch). Everything it changes lives in arrays (see loop.Stepper, which rewinds them).

Legend: B = batch size (rows of the batch), n = training examples, C = input features.
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit

from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import kernels_small as KS
from minigrad.engine import passes as P
from minigrad.engine.optim import LR, STEP, WEIGHT_DECAY
from minigrad.engine.sampling import batch_rows, draw, sampler_epoch

# run counters (int64): steps taken, examples seen, rows the next batch needs (when a chunk stops for a workspace)
STEPS, EXAMPLES, NEED_ROWS = range(3)
# sums (float64): loss sum and count since the last evaluation, the last step's loss, the last learning rate
LOSS_SUM, LOSS_COUNT, LAST_LOSS, LAST_LR = range(4)
# why a chunk returned
REACHED, BUDGET_DONE, NONFINITE, NEW_ROWS = range(4)
# budget kinds
BUDGET_STEPS, BUDGET_EXAMPLES, BUDGET_EPOCHS = range(3)
# learning-rate schedule kinds (schedules.LR_SCHEDULES order)
LR_KINDS = {"constant": 0, "step": 1, "cosine": 2}
# a staged batch schedule's rows (float64, (stages, 3)): the step the stage begins at (inf while not yet known: a
# stage keyed on the validation error begins where the training driver sees it reached), its B, its learning rate
STAGE_START, STAGE_B, STAGE_LR = range(3)

# run_steps' arguments after the step's own, in order: the training split X (n,C), y (n,); the workspace's batch
# buffers Xb (B,C), yb (B,); SamplerState.arrays(); (lr params, lr milestones, batch params, batch milestones,
# stages (k,3), k = 0 without stages);
# (budget kind, limit); the step to stop at; the counters (STEPS...) and sums (LOSS_SUM...)
HYPER = K.Update._fields.index("hyper")  # where an update tuple holds the optimizer's hyper-parameters
Chunk = namedtuple("Chunk", "X y Xb yb sampler schedules budget stop_step counters sums")


# ------------------------------------------------------------------------------------------ schedules, budget
@njit(cache=True)
def lr_at(lr_params, milestones, epoch):
    # schedules.LRSchedule.__call__; lr_params = (kind, base, gamma, total_epochs, warmup_epochs)
    return lr_params[1] * lr_factor(lr_params, milestones, epoch)


@njit(cache=True)
def lr_factor(lr_params, milestones, epoch):
    # the schedule's factor on its base rate (warm-up, decay) at `epoch`
    kind, gamma, total, warmup = lr_params[0], lr_params[2], lr_params[3], lr_params[4]
    factor = 1.0
    if kind == 1:
        passed = 0
        for m in milestones:
            if epoch >= m:
                passed += 1
        factor = gamma ** passed
    elif kind == 2:
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch / total, 1.0)))
    if warmup > 0 and epoch < warmup:
        factor *= max(epoch / warmup, 1e-3)
    return factor


@njit(cache=True)
def stage_at(stages, steps):
    # the stage a run is in after `steps` steps: the last whose start has passed (starts rise; stage 0 at 0)
    k = 0
    for i in range(stages.shape[0]):
        if stages[i, STAGE_START] <= steps:
            k = i
    return k


@njit(cache=True)
def batch_at(batch_params, milestones, epoch):
    # schedules.BatchSchedule.__call__; batch_params = (base, factor, cap or 0)
    size = batch_params[0]
    for m in milestones:
        if epoch >= m:
            size *= batch_params[1]
    return min(size, batch_params[2]) if batch_params[2] else size


@njit(cache=True)
def budget_done(kind, limit, steps, examples, epoch):
    if kind == BUDGET_STEPS:
        return steps >= limit
    if kind == BUDGET_EXAMPLES:
        return examples >= limit
    return epoch >= limit - 1e-12


@njit(cache=True)
def gather(Xb, yb, X, y, idx):
    # X (n,C), y (n,), idx (>=B,) -> Xb (B,C), yb (B,): the batch's rows, copied into the workspace
    B, C = Xb.shape
    for b in range(B):
        i = idx[b]
        for c in range(C):
            Xb[b, c] = X[i, c]
        yb[b] = y[i]


# ------------------------------------------------------------------------------------------ the train steps
# One signature for every path, (X, y, lr, linear_forward, linear_backward, args) -> loss, so that run_steps takes
# the path as an argument; args is the tuple the path's Step object (engine/steps.py) hands it.
@njit
def plain_step(X, y, lr, linear_forward, linear_backward, args):
    net, grads, work, sqnorms, update = args
    update[HYPER][LR] = lr
    return P.train_step(linear_forward, linear_backward, net, grads, work, X, y, sqnorms, update)


@njit
def per_example_step(X, y, lr, linear_forward, linear_backward, args):
    net, one, sqnorms, update = args
    update[HYPER][LR] = lr
    return P.train_step_per_example(net, one, X, y, sqnorms, update)


@njit
def fused_serial_step(X, y, lr, linear_forward, linear_backward, args):
    net, work, fused, hyper, T = args
    hyper[LR] = lr
    KS.sgd_step_serial(net, work, fused, X, y, lr, hyper[WEIGHT_DECAY])
    value = fused[KS.VALUE]
    if math.isfinite(value[0]):
        hyper[STEP] += 1
    return value[0]


@njit
def fused_parallel_step(X, y, lr, linear_forward, linear_backward, args):
    net, work, fused, hyper, T = args
    hyper[LR] = lr
    KS.sgd_step_parallel(T, net, work, fused, X, y, lr, hyper[WEIGHT_DECAY])
    if fused[KS.COUNTER][KS.BARRIER_FAILED]:
        return np.nan  # the caller tells a failed barrier from a NaN loss by the counter
    value = fused[KS.VALUE]
    if math.isfinite(value[0]):
        hyper[STEP] += 1
    return value[0]


@njit
def large_sgd_step(X, y, lr, linear_forward, linear_backward, args):
    net, work, large, hyper = args
    hyper[LR] = lr
    value = KG.sgd_step(net, work, large, X, y, lr, hyper[WEIGHT_DECAY])
    if math.isfinite(value):
        hyper[STEP] += 1
    return value


CONTINUE = -1  # prepare_step: the batch is in the workspace, take the step


@njit(cache=True)
def prepare_step(X, y, Xb, yb, sampler, schedules, budget, counters):
    # Before a step: stop at the budget's end or where the next batch needs another workspace (counters[NEED_ROWS]
    # rows); else draw the batch into Xb (B,C), yb (B,). Returns (CONTINUE or why to stop, learning rate).
    # X (n,C), y (n,): the training split; sampler: SamplerState.arrays(); schedules: (lr params, lr milestones,
    # batch params, batch milestones, stages (k,3)); budget: (kind, limit).
    st, rng, order, bounds, qpos, p, taken, idx = sampler
    lr_params, lr_milestones, batch_params, batch_milestones, stages = schedules
    n = X.shape[0]
    epoch = sampler_epoch(st, n)
    if budget_done(budget[0], budget[1], counters[STEPS], counters[EXAMPLES], epoch):
        return BUDGET_DONE, 0.0
    k = stage_at(stages, counters[STEPS]) if stages.shape[0] else -1
    if k < 0:
        B = batch_at(batch_params, batch_milestones, epoch)
    else:
        B = int(stages[k, STAGE_B])
        B = min(B, batch_params[2]) if batch_params[2] else B
    rows = batch_rows(st, n, B)
    if rows != Xb.shape[0]:
        counters[NEED_ROWS] = rows
        return NEW_ROWS, 0.0
    lr = lr_at(lr_params, lr_milestones, epoch) if k < 0 else stages[k, STAGE_LR] * lr_factor(lr_params,
                                                                                              lr_milestones, epoch)
    draw(st, rng, order, bounds, qpos, p, taken, idx, n, B)
    gather(Xb, yb, X, y, idx)
    return CONTINUE, lr


@njit(cache=True)
def finish_step(value, rows, lr, counters, sums):
    # After a step with loss `value` on `rows` examples: count it, or report a NaN/Inf loss (True)
    sums[LAST_LOSS] = value
    sums[LAST_LR] = lr
    if not math.isfinite(value):
        return True
    counters[STEPS] += 1
    counters[EXAMPLES] += rows
    sums[LOSS_SUM] += value
    sums[LOSS_COUNT] += 1
    return False


@njit
def run_steps(step, linear_forward, linear_backward, args, X, y, Xb, yb, sampler, schedules, budget, stop_step,
              counters, sums):
    # Steps until counters[STEPS] == stop_step, the budget is spent, a loss is NaN/Inf, or the next batch has
    # another number of rows than the workspace (then counters[NEED_ROWS] says how many). Returns why it stopped.
    while counters[STEPS] < stop_step:
        why, lr = prepare_step(X, y, Xb, yb, sampler, schedules, budget, counters)
        if why != CONTINUE:
            return why
        if finish_step(step(Xb, yb, lr, linear_forward, linear_backward, args), Xb.shape[0], lr, counters, sums):
            return NONFINITE
    return REACHED


# run_steps written out for the two steps of plain SGD on one thread, without functions among the arguments, so that
# Numba can cache them: a function taking another as an argument (run_steps) is compiled anew in every process
# (seconds, and more on a busy machine). One copy per step, as Numba's cache keeps no function chosen at run time.
@njit(cache=True)
def run_fused_serial(args, X, y, Xb, yb, sampler, schedules, budget, stop_step, counters, sums):
    # kernels_small's one-pass step (forced, or on machines where FUSED_SGD_MAX[1] makes it the small-batch path)
    while counters[STEPS] < stop_step:
        why, lr = prepare_step(X, y, Xb, yb, sampler, schedules, budget, counters)
        if why != CONTINUE:
            return why
        if finish_step(fused_serial_step(Xb, yb, lr, None, None, args), Xb.shape[0], lr, counters, sums):
            return NONFINITE
    return REACHED


@njit(cache=True)
def run_large(args, X, y, Xb, yb, sampler, schedules, budget, stop_step, counters, sums):
    # kernels_large's step: plain SGD on one thread at every B, and past the fused step on more
    while counters[STEPS] < stop_step:
        why, lr = prepare_step(X, y, Xb, yb, sampler, schedules, budget, counters)
        if why != CONTINUE:
            return why
        if finish_step(large_sgd_step(Xb, yb, lr, None, None, args), Xb.shape[0], lr, counters, sums):
            return NONFINITE
    return REACHED


def lr_schedule_arrays(schedule):
    params = np.array([LR_KINDS[schedule.kind], schedule.base_lr, schedule.gamma, schedule.total_epochs,
                       schedule.warmup_epochs], np.float64)
    return params, np.array(sorted(schedule.milestones), np.float64)


def batch_schedule_arrays(schedule):
    """(params, milestones, stages (k,3)): a stage keyed on steps starts at its step, one keyed on the error at inf
    until the driver records where it began (Stepper.begin_stage)."""
    params = np.array([schedule.base, schedule.factor, schedule.max_batch_size or 0], np.int64)
    stages = np.array([[0.0 if i == 0 else (float(s.step) if s.step is not None else math.inf), s.batch_size, s.lr]
                       for i, s in enumerate(schedule.stages)], np.float64).reshape(-1, 3)
    return params, np.array(sorted(schedule.milestones), np.float64), stages


def budget_arrays(budget):
    if budget.steps is not None:
        return BUDGET_STEPS, float(budget.steps)
    if budget.examples is not None:
        return BUDGET_EXAMPLES, float(budget.examples)
    return BUDGET_EPOCHS, float(budget.epochs)
