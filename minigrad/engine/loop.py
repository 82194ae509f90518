"""The compiled training loop: every step between two evaluations in one call, and evaluation in one pass.

A chunk of steps (`run_steps`) draws each batch, gathers it into the workspace, runs the model's train step (the
path MLP._train_step would pick: the fused SGD steps, small-batch kernels, BLAS or per-example), accumulates the loss and stops
at a NaN/Inf loss, with the learning-rate and batch-size schedules evaluated at every step. It returns to Python only
at the step asked for, at the end of the budget, at a non-finite loss, or when the next batch needs a workspace of
another size (a batch-size schedule step, or an epoch's kept last partial batch).

Everything the chunk changes lives in arrays (parameters, optimizer state, the sampler's state and its random
generator, the counters), so `Stepper.snapshot()` / `restore()` can rewind a run exactly: the training driver uses it
to locate the step where a target was first met between two sparse evaluations (minigrad.training.train).

Samplers (the contract of minigrad.data's samplers, on a SplitMix64 generator of their own so the state is an array):
    shuffle      every example once per epoch in a new random order; drop_last skips a remainder smaller than B,
                 keep-last (drop_last=False) returns it as one smaller batch; epoch = epochs done + position / n
    replacement  B i.i.d. uniform draws per batch; epoch = examples seen / n
    stratified   class counts by largest remainder against the class shares (data.StratifiedSampler.class_counts),
                 each class a shuffled queue, the batch shuffled; epoch = examples seen / n
Same seed, same thread count: bitwise the same run.

Legend: B = batch size (rows of the batch), n = training examples, C = input features, k = classes.
"""
import math

import numpy as np
from numba import njit

from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import kernels_small as KS
from minigrad.engine import model as M
from minigrad.engine.optim import LR, STEP, WEIGHT_DECAY

SHUFFLE, REPLACEMENT, STRATIFIED = 0, 1, 2
SAMPLER_KINDS = {"shuffle": SHUFFLE, "replacement": REPLACEMENT, "stratified": STRATIFIED}
# sampler state st (int64): kind, position in the epoch (shuffle), epochs done (shuffle), examples seen, drop_last
KIND, POS, EPOCHS, SEEN, DROP_LAST = range(5)
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


# ------------------------------------------------------------------------------------------ random numbers
@njit(cache=True)
def next_u64(rng):
    # SplitMix64 (Steele, Lea, Flood 2014): rng (1,) uint64 is the whole state
    s = rng[0] + np.uint64(0x9E3779B97F4A7C15)
    rng[0] = s
    z = (s ^ (s >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def random_below(rng, n):
    # an integer in [0, n) from the top 53 bits (bias below 2^-53 * n: immaterial for n up to millions)
    u = (next_u64(rng) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return min(np.int64(u * n), n - 1)


@njit(cache=True)
def shuffle(rng, a, lo, hi):
    # Fisher-Yates on a[lo:hi] in place
    for i in range(hi - lo - 1, 0, -1):
        j = random_below(rng, i + 1)
        a[lo + i], a[lo + j] = a[lo + j], a[lo + i]


# ------------------------------------------------------------------------------------------------ samplers
@njit(cache=True)
def sampler_epoch(st, n):
    if st[KIND] == SHUFFLE:
        return st[EPOCHS] + st[POS] / n
    return st[SEEN] / n


@njit(cache=True)
def batch_rows(st, n, B):
    # rows of the next batch of nominal size B: B, or the kept remainder of a shuffle epoch
    if st[KIND] != SHUFFLE:
        return B
    left = n - st[POS]
    if left == 0 or (left < B and st[DROP_LAST]):
        return B
    return min(B, left)


@njit(cache=True)
def class_counts(p, taken, seen, B):
    # p (k,) class shares, taken (k,) examples drawn per class -> counts (k,): floor(B p_c), the spare slots to the
    # classes furthest behind their share (largest remainder, ties to the lower class: a stable sort)
    counts = np.floor(p * B)
    owed = p * (seen + B) - taken - counts
    order = np.argsort(-owed, kind="mergesort")
    spare = B - np.int64(counts.sum())
    for i in range(spare):
        counts[order[i]] += 1
    return counts.astype(np.int64)


@njit(cache=True)
def draw(st, rng, order, bounds, qpos, p, taken, idx, n, B):
    # the next batch of nominal size B: its row numbers in idx[:rows]; returns rows
    kind = st[KIND]
    if kind == SHUFFLE:
        left = n - st[POS]
        if left == 0 or (left < B and st[DROP_LAST]):
            shuffle(rng, order, 0, n)
            st[POS] = 0
            st[EPOCHS] += 1
        start = st[POS]
        stop = min(n, start + B)
        for i in range(stop - start):
            idx[i] = order[start + i]
        st[POS] = stop
        rows = stop - start
    elif kind == REPLACEMENT:
        for i in range(B):
            idx[i] = random_below(rng, n)
        rows = B
    else:
        counts = class_counts(p, taken, st[SEEN], B)
        out = 0
        for c in range(counts.shape[0]):
            taken[c] += counts[c]
            lo, hi = bounds[c], bounds[c + 1]
            for _ in range(counts[c]):
                if qpos[c] == hi - lo:
                    shuffle(rng, order, lo, hi)
                    qpos[c] = 0
                idx[out] = order[lo + qpos[c]]
                qpos[c] += 1
                out += 1
        shuffle(rng, idx, 0, B)  # so that any prefix of a batch is a random sample too
        rows = B
    st[SEEN] += rows
    return rows


# ------------------------------------------------------------------------------------------ schedules, budget
@njit(cache=True)
def lr_at(lr_params, milestones, epoch):
    # schedules.LRSchedule.__call__; lr_params = (kind, base, gamma, total_epochs, warmup_epochs)
    kind, base, gamma, total, warmup = lr_params[0], lr_params[1], lr_params[2], lr_params[3], lr_params[4]
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
    return base * factor


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
# the path as an argument; args is the tuple of buffers that path needs.
@njit
def plain_step(X, y, lr, linear_forward, linear_backward, args):
    act, loss, weights, biases, dweights, dbiases, zs, acts, dzs, sqnorms, kind, params, grads, state, hyper = args
    hyper[LR] = lr
    return M.train_step(linear_forward, linear_backward, act, loss, weights, biases, dweights, dbiases, zs, acts, dzs,
                        X, y, sqnorms, kind, params, grads, state, hyper)


@njit
def per_example_step(X, y, lr, linear_forward, linear_backward, args):
    (act, loss, weights, biases, dweights, dbiases, example_grads, zs, acts, dzs, x1, y1, sqnorms, kind, params,
     grads, state, hyper) = args
    hyper[LR] = lr
    return M.train_step_per_example(act, loss, weights, biases, dweights, dbiases, example_grads, zs, acts, dzs, x1,
                                    y1, X, y, sqnorms, kind, params, grads, state, hyper)


@njit
def fused_serial_step(X, y, lr, linear_forward, linear_backward, args):
    act, loss, weights, biases, zs, acts, dzs, parts, dlogits, counter, value, x_saved, hyper, T = args
    hyper[LR] = lr
    KS.sgd_step_serial(act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, hyper[WEIGHT_DECAY],
                       counter, value, x_saved)
    if math.isfinite(value[0]):
        hyper[STEP] += 1
    return value[0]


@njit
def fused_parallel_step(X, y, lr, linear_forward, linear_backward, args):
    act, loss, weights, biases, zs, acts, dzs, parts, dlogits, counter, value, x_saved, hyper, T = args
    hyper[LR] = lr
    KS.sgd_step_parallel(T, act, loss, weights, biases, zs, acts, dzs, parts, dlogits, X, y, lr, hyper[WEIGHT_DECAY],
                         counter, value, x_saved)
    if counter[KS.BARRIER_FAILED]:
        return np.nan  # the caller tells a failed barrier from a NaN loss by the counter
    if math.isfinite(value[0]):
        hyper[STEP] += 1
    return value[0]


@njit
def large_sgd_step(X, y, lr, linear_forward, linear_backward, args):
    act, loss, weights, biases, dweight0, zs, acts, dzs, fold_first, x_saved, sums, ints, flags, scalars, hyper = args
    hyper[LR] = lr
    value = KG.sgd_step(act, loss, weights, biases, dweight0, zs, acts, dzs, X, y, lr, hyper[WEIGHT_DECAY],
                        fold_first, x_saved, sums, ints, flags, scalars)
    if math.isfinite(value):
        hyper[STEP] += 1
    return value


CONTINUE = -1  # prepare_step: the batch is in the workspace, take the step


@njit(cache=True)
def prepare_step(X, y, Xb, yb, sampler, schedules, budget, counters):
    # Before a step: stop at the budget's end or where the next batch needs another workspace (counters[NEED_ROWS]
    # rows); else draw the batch into Xb (B,C), yb (B,). Returns (CONTINUE or why to stop, learning rate).
    # X (n,C), y (n,): the training split; sampler: SamplerState.arrays(); schedules: (lr params, lr milestones,
    # batch params, batch milestones); budget: (kind, limit).
    st, rng, order, bounds, qpos, p, taken, idx = sampler
    lr_params, lr_milestones, batch_params, batch_milestones = schedules
    n = X.shape[0]
    epoch = sampler_epoch(st, n)
    if budget_done(budget[0], budget[1], counters[STEPS], counters[EXAMPLES], epoch):
        return BUDGET_DONE, 0.0
    B = batch_at(batch_params, batch_milestones, epoch)
    rows = batch_rows(st, n, B)
    if rows != Xb.shape[0]:
        counters[NEED_ROWS] = rows
        return NEW_ROWS, 0.0
    lr = lr_at(lr_params, lr_milestones, epoch)
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


# ---------------------------------------------------------------------------------------------- evaluation
@njit
def evaluate_block(linear_forward, act, loss, weights, biases, ws, X, y, start):
    # the rows X[start:start+R] through an R-row workspace ws = (zs, acts, dzs) -> (summed loss, errors)
    zs, acts, dzs = ws
    rows = zs[0].shape[0]
    xb, yb = X[start:start + rows], y[start:start + rows]
    M.forward(linear_forward, act, weights, biases, zs, acts, xb)
    L = len(weights)
    return K.loss_forward_backward(loss, dzs[L - 1], acts[L - 1], yb) * rows, K.errors_count(acts[L - 1], yb)


@njit
def evaluate_pass(forward_full, forward_rest, act, loss, weights, biases, full, rest, X, y):
    # X (N,C), y (N,) -> (mean loss, error rate), in blocks of R rows (full = (zs, acts, dzs) of an R-row
    # workspace) and one block of N mod R rows (rest). Sums as MLP.evaluate does them, block by block.
    N = X.shape[0]
    R = full[0][0].shape[0]
    total, wrong = 0.0, 0
    start = 0
    while start + R <= N:
        block_loss, block_wrong = evaluate_block(forward_full, act, loss, weights, biases, full, X, y, start)
        total += block_loss
        wrong += block_wrong
        start += R
    if start < N:
        block_loss, block_wrong = evaluate_block(forward_rest, act, loss, weights, biases, rest, X, y, start)
        total += block_loss
        wrong += block_wrong
    return total / N, wrong / N


# evaluate_pass for the blas backend's kernel pairs, with no function among their arguments, so that Numba caches
# them on disk (a function taking another as an argument is compiled anew in every process). (The same wrappers
# around run_steps are refused by Numba's cache: it reports dynamic globals somewhere in the train steps.)
@njit(cache=True)
def evaluate_blas(act, loss, weights, biases, full, rest, X, y):
    return evaluate_pass(K.linear_forward, K.linear_forward, act, loss, weights, biases, full, rest, X, y)


@njit(cache=True)
def evaluate_blas_small(act, loss, weights, biases, full, rest, X, y):
    return evaluate_pass(K.linear_forward, KS.linear_forward, act, loss, weights, biases, full, rest, X, y)


@njit(cache=True)
def evaluate_small(act, loss, weights, biases, full, rest, X, y):
    return evaluate_pass(KS.linear_forward, KS.linear_forward, act, loss, weights, biases, full, rest, X, y)


def evaluation_runner(forward_full, forward_rest):
    cached = {(K.linear_forward, K.linear_forward): evaluate_blas,
              (K.linear_forward, KS.linear_forward): evaluate_blas_small,
              (KS.linear_forward, KS.linear_forward): evaluate_small}
    return cached.get((forward_full, forward_rest)) or (lambda *a: evaluate_pass(forward_full, forward_rest, *a))


EVAL_ROWS = 512  # rows per evaluation block: large enough for BLAS, small enough to stay in L2


class Evaluator:
    """Mean loss and error of `model` over one split (X, y) in one compiled call, on buffers of its own (the
    training workspaces keep the batch, which MLP.grads may still need)."""

    def __init__(self, model, X, y, rows=EVAL_ROWS):
        self.model, self.X, self.y = model, X, y
        N = X.shape[0]
        R = min(rows, N)
        self._full = M._Workspace(model.sizes, R, model.dtype)
        self._rest = M._Workspace(model.sizes, max(N % R, 1), model.dtype)

        self._run = evaluation_runner(model._linear_for(R)[0], model._linear_for(self._rest.X.shape[0])[0])

    def __call__(self):
        m = self.model
        return self._run(m._act, m._loss, m.weights, m.biases, (self._full.zs, self._full.acts, self._full.dzs),
                         (self._rest.zs, self._rest.acts, self._rest.dzs), self.X, self.y)


# ------------------------------------------------------------------------------------------ the Python side
def step_plan(model, B, optimizer):
    """(step function, linear_forward, linear_backward, args, a fused step's buffers or None) for batch size B: the path
    MLP._train_step takes, in run_steps' form."""
    ws = model.workspace(B)
    optimizer.bind(model)
    lf, lb = model._linear_for(B)
    path = model.step_path(B, optimizer)  # the one place that decides the path
    if path.startswith("fused-sgd"):
        T = M.fused_workers()
        fb = ws.fused.get(T)
        if fb is None:
            fb = ws.fused[T] = M._FusedBuffers(model.sizes, B, T, model.dtype)
        args = (model._act, model._loss, model.weights, model.biases, ws.zs, ws.acts, ws.dzs, fb.parts, fb.dlogits,
                fb.counter, fb.value, fb.X, optimizer.hyper, T)
        return (fused_serial_step if T == 1 else fused_parallel_step), lf, lb, args, fb
    if path == "blas-fused-sgd":
        lg = ws.large
        if lg is None:
            lg = ws.large = M._LargeBuffers(model.sizes, B, model.dtype)
        args = (model._act, model._loss, model.weights, model.biases, model._dweights[0], ws.zs, ws.acts, ws.dzs,
                lg.fold_first, lg.X, lg.sums, *lg.gemm, optimizer.hyper)
        return large_sgd_step, lf, lb, args, lg
    if path == "per-example":
        dweights, dbiases, example_grads, zs, acts, dzs, x1, y1 = model._per_example_buffers()
        args = (model._act, model._loss, model.weights, model.biases, dweights, dbiases, example_grads, zs, acts, dzs,
                x1, y1, ws.no_sqnorms, optimizer.kind, model.params, model._grads, optimizer.state, optimizer.hyper)
        return per_example_step, lf, lb, args, None
    args = (model._act, model._loss, model.weights, model.biases, model._dweights, model._dbiases, ws.zs, ws.acts,
            ws.dzs, ws.no_sqnorms, optimizer.kind, model.params, model._grads, optimizer.state, optimizer.hyper)
    return plain_step, lf, lb, args, None


def lr_schedule_arrays(schedule):
    params = np.array([LR_KINDS[schedule.kind], schedule.base_lr, schedule.gamma, schedule.total_epochs,
                       schedule.warmup_epochs], np.float64)
    return params, np.array(sorted(schedule.milestones), np.float64)


def batch_schedule_arrays(schedule):
    params = np.array([schedule.base, schedule.factor, schedule.max_batch_size or 0], np.int64)
    return params, np.array(sorted(schedule.milestones), np.float64)


def budget_arrays(budget):
    if budget.steps is not None:
        return BUDGET_STEPS, float(budget.steps)
    if budget.examples is not None:
        return BUDGET_EXAMPLES, float(budget.examples)
    return BUDGET_EPOCHS, float(budget.epochs)


class SamplerState:
    """A sampler as arrays (see the module docstring): what run_steps draws from, and what a snapshot copies."""

    MUTABLE = ("st", "rng", "order", "qpos", "taken")

    def __init__(self, kind, y, *, seed, drop_last):
        if kind not in SAMPLER_KINDS:
            raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLER_KINDS)}")
        y = np.asarray(y)
        self.n = n = len(y)
        if n == 0:
            raise ValueError("cannot sample from an empty training split")
        self.st = np.zeros(5, np.int64)
        self.st[KIND], self.st[DROP_LAST] = SAMPLER_KINDS[kind], bool(drop_last)
        self.rng = np.random.SeedSequence(seed).generate_state(1, np.uint64)
        self.idx = np.zeros(n, np.int64)
        if self.st[KIND] == STRATIFIED:
            classes = np.unique(y)
            self.order = np.concatenate([np.flatnonzero(y == c) for c in classes]).astype(np.int64)
            sizes = np.array([np.count_nonzero(y == c) for c in classes], np.int64)
            self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            for c in range(len(classes)):
                shuffle(self.rng, self.order, self.bounds[c], self.bounds[c + 1])
            self.p = sizes / n
        else:
            self.order = np.arange(n, dtype=np.int64)
            self.bounds = np.array([0, n], np.int64)
            self.p = np.ones(1)
            if self.st[KIND] == SHUFFLE:
                shuffle(self.rng, self.order, 0, n)
        self.qpos = np.zeros(len(self.p), np.int64)
        self.taken = np.zeros(len(self.p))

    @property
    def epoch(self):
        return float(sampler_epoch(self.st, self.n))

    def arrays(self):
        return self.st, self.rng, self.order, self.bounds, self.qpos, self.p, self.taken, self.idx

    def next_batch(self, B):
        """Row numbers of the next batch of nominal size B (a copy): the sampler on its own, for tests and tools."""
        rows = draw(*self.arrays(), self.n, B)
        return self.idx[:rows].copy()


class Stepper:
    """One run's state between chunks: model, optimizer, sampler, schedules, budget and counters.

    `run(stop_step)` steps until stop_step (or the budget's end, or a NaN/Inf loss) in compiled chunks, switching
    workspaces where the batch's row count changes; it returns REACHED, BUDGET_DONE or NONFINITE."""

    def __init__(self, model, X, y, optimizer, sampler, lr_schedule, batch_schedule, budget):
        self.model, self.X, self.y, self.opt, self.sampler = model, X, y, optimizer, sampler
        self.lr_params, self.lr_milestones = lr_schedule_arrays(lr_schedule)
        self.batch_params, self.batch_milestones = batch_schedule_arrays(batch_schedule)
        self.budget_kind, self.budget_limit = budget_arrays(budget)
        self.counters = np.zeros(3, np.int64)
        self.sums = np.zeros(4, np.float64)
        self.sums[LAST_LR] = lr_schedule(0.0)
        self.rows = int(batch_schedule(0.0))
        self._plans = {}

    @property
    def step(self):
        return int(self.counters[STEPS])

    @property
    def examples(self):
        return int(self.counters[EXAMPLES])

    @property
    def epoch(self):
        return self.sampler.epoch

    def _plan(self, rows):
        plan = self._plans.get(rows)
        if plan is None:
            plan = self._plans[rows] = step_plan(self.model, rows, self.opt)
        return plan

    def run(self, stop_step):
        schedules = (self.lr_params, self.lr_milestones, self.batch_params, self.batch_milestones)
        budget = (self.budget_kind, self.budget_limit)
        while True:
            step, lf, lb, args, fused = self._plan(self.rows)
            ws = self.model.workspace(self.rows)
            self.model._pending = None
            done = self.step
            chunk = (self.X, self.y, ws.X, ws.y, self.sampler.arrays(), schedules, budget, stop_step, self.counters,
                     self.sums)
            why = (run_fused_serial(args, *chunk) if step is fused_serial_step else
                   run_large(args, *chunk) if step is large_sgd_step else run_steps(step, lf, lb, args, *chunk))
            if step is large_sgd_step and why == NONFINITE:
                # the large step met the NaN/Inf before its backward pass: the gradient comes from the plain path
                m = self.model
                M.forward_backward(lf, lb, m._act, m._loss, m.weights, m.biases, m._dweights, m._dbiases, ws.zs,
                                   ws.acts, ws.dzs, ws.X, ws.y, ws.no_sqnorms)
            elif fused is not None:
                if step is not large_sgd_step and fused.counter[KS.BARRIER_FAILED]:
                    raise RuntimeError(f"the fused SGD step's {args[-1]} workers did not all run at once (threading "
                                       "layer problem); run with one thread (--threads 1)")
                if self.step > done or why == NONFINITE:
                    # MLP.grads is formed from the last batch on first read (the fused steps never write it)
                    self.model._pending = (ws, fused)
            if why != NEW_ROWS:
                return why
            self.rows = int(self.counters[NEED_ROWS])

    def take_loss(self):
        """Mean training loss since the last call (NaN if no step was taken), and reset the sum."""
        count = self.sums[LOSS_COUNT]
        mean = self.sums[LOSS_SUM] / count if count else math.nan
        self.sums[LOSS_SUM] = self.sums[LOSS_COUNT] = 0.0
        return float(mean)

    @property
    def lr(self):
        return float(self.sums[LAST_LR])

    @property
    def last_loss(self):
        return float(self.sums[LAST_LOSS])

    def snapshot(self):
        """Copies of everything a chunk changes, for restore()."""
        s = self.sampler
        return (self.model.params.copy(), None if self.opt.state is None else self.opt.state.copy(),
                self.opt.hyper.copy(), tuple(getattr(s, k).copy() for k in s.MUTABLE), self.counters.copy(),
                self.sums.copy(), self.rows)

    def restore(self, snap):
        params, state, hyper, sampler, counters, sums, rows = snap
        self.model.params[...] = params
        if state is not None:
            self.opt.state[...] = state
        self.opt.hyper[...] = hyper
        for k, v in zip(self.sampler.MUTABLE, sampler):
            getattr(self.sampler, k)[...] = v
        self.counters[...] = counters
        self.sums[...] = sums
        self.rows = rows
        self.model._pending = None
