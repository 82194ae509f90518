"""One training run: minibatch steps under a budget, evaluated at geometrically spaced steps, ending in a trace.

The steps between two evaluations run as one compiled call (minigrad.engine.loop); this module decides where to evaluate
and what the evaluations mean. Steps-to-target is the first evaluation at which the validation error is at or below
the target. Evaluations come every `eval_growth` times more steps (4% by default), but never closer than a floor
that keeps their cost near 5% of the training (eval_gap_floor: at small B an evaluation of the validation split
costs hundreds of steps). When the target is first met after a gap wider than 4%, the run is rewound to the
evaluation before and replayed with evaluations 4% apart, so the step where the target was first reached is known
to within 4% whatever the floor, and a run of a million steps is evaluated a few hundred times, not a million.
"""
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from minigrad.engine.loop import BUDGET_DONE, NONFINITE, REACHED, Evaluator, SamplerState, Stepper
from minigrad.engine.model import MLP
from minigrad.engine.optim import make_optimizer
from minigrad.machine.settings import CENSORED, COMPLETE, DIVERGED, INCOMPLETE  # noqa: F401 - the statuses, named once
from minigrad.training.schedules import BatchSchedule, LRSchedule
from minigrad.training.threads import CHUNK_SECONDS, FALLBACK, choose_threads, parse_threads, thread_count

TRACE_COLUMNS = ("step", "examples", "epoch", "train_loss", "val_loss", "val_error", "lr", "batch_size", "compute_s",
                 "eval_s", "grad_norm")


@dataclass
class Budget:
    """How long to train: exactly one of steps, examples or epochs."""

    steps: int = None
    examples: int = None
    epochs: float = None

    def __post_init__(self):
        given = [v for v in (self.steps, self.examples, self.epochs) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one budget: steps, examples or epochs")
        if not given[0] > 0:
            raise ValueError(f"the budget must be > 0, got {given[0]}")

    def total_epochs(self, batch_size, n_train):
        if self.epochs is not None:
            return self.epochs
        examples = self.examples if self.examples is not None else self.steps * batch_size
        return examples / n_train


@dataclass
class Trace:
    """What one run left: the columns at each evaluation point, its status, and its settings and results."""

    columns: dict
    status: str
    attrs: dict = field(default_factory=dict)
    params: np.ndarray = None  # the parameters the run ended with (the best ones under early stopping)

    @property
    def steps_to_target(self):
        return self.attrs.get("steps_to_target")

    @property
    def examples_to_target(self):
        return self.attrs.get("examples_to_target")


def build_model(data, hidden, *, activation="relu", loss="cross_entropy", dtype="float32", backend="blas", seed=0):
    """An MLP sized for `data`: [features, *hidden, classes]."""
    return MLP([data.n_features, *hidden, data.n_classes], activation=activation, loss=loss, dtype=np.dtype(dtype),
               backend=backend, seed=seed)


def step_chunk(model, optimizer, X, y, seconds=5e-4):
    """(run, steps): run() takes `steps` steps of the compiled training loop on the rows (X, y), drawn as one shuffled
    batch of all of them per epoch: a training step as a run pays for it (the batch drawn and gathered, no Python
    call per step). `steps` makes run() last about `seconds`. For timing (the study's throughput phase)."""
    sampler = SamplerState("shuffle", y, seed=0, drop_last=True)
    stepper = Stepper(model, X, y, optimizer, sampler, LRSchedule(optimizer.lr), BatchSchedule(len(y)),
                      Budget(steps=2**62))

    def take(steps):
        if stepper.run(stepper.step + steps) != REACHED:
            raise FloatingPointError("the loss became NaN or infinite while timing the step")

    take(2)  # compiles
    started = time.perf_counter()
    take(8)
    steps = max(1, int(seconds / max((time.perf_counter() - started) / 8, 1e-9)))
    return (lambda: take(steps)), steps


def optimizer_options(optimizer, momentum=0.9, weight_decay=0.0, beta2=None):
    """Keyword arguments for make_optimizer: momentum means beta1 for Adam, nothing for SGD; beta2 is Adam's
    (None: its default)."""
    options = {"weight_decay": weight_decay}
    if optimizer in ("momentum", "nesterov"):
        options["momentum"] = momentum
    elif optimizer == "adam":
        options["beta1"] = momentum
        if beta2 is not None:
            options["beta2"] = beta2
    return options


def next_eval_step(step, growth):
    return max(step + 1, int(math.ceil(step * growth)))


def censor_step(bound, floor, growth, budget_steps):
    """The step at which a run given censor_steps=`bound` stops if it has not reached its target by then: the first
    of its regular evaluation points (every `growth`, at least `floor` apart, as train places them before any
    crossing) at or past `bound`; None when that lies at or past the budget (the run ends INCOMPLETE there).
    A function of the settings only, so that a stored run that was not censored says where it would have been."""
    step = max(1, floor)
    while step < bound:
        step = max(next_eval_step(step, growth), step + floor)
    return step if step < budget_steps else None


# The cost model behind the floor on steps between evaluations (eval_gap_floor), in units of one example's forward
# pass at evaluation speed: a train step costs about 3 B of them (forward, two backward products) plus a fixed cost
# that dominates at small B (the kernel calls and the sampler). Measured on 2 Zen 5 cores for 32-64-64-10 and
# 784-128-128-10 (bench/loop_bench.py --eval): a step at B = 1 costs as much as evaluating about 40 examples.
STEP_FIXED_EXAMPLES = 40
EVAL_SHARE = 0.05  # evaluations may cost this share of the steps between them (the replay of a crossing adds ~5%)


MIN_EVALUATIONS = 32  # the floor never leaves a run fewer evaluation points than this over its budget


def eval_gap_floor(batch_size, n_val, share=EVAL_SHARE, budget_steps=None):
    """Fewest steps between two evaluations so that evaluating `n_val` examples costs at most `share` of the steps
    between them, from the cost model above, but at most budget_steps / MIN_EVALUATIONS (a short run still gets
    a curve). A function of the settings only, so that the evaluation points (and with them steps-to-target) are
    the same run to run."""
    if not share:
        return 1
    floor = int(math.ceil(n_val / (share * (3 * batch_size + STEP_FIXED_EXAMPLES))))
    if budget_steps is not None:
        floor = min(floor, int(budget_steps // MIN_EVALUATIONS))
    return max(1, floor)


def train(model: MLP, data, batch_size, lr, optimizer="sgd", *, budget: Budget, target=None, stop_at_target=True,
          lr_schedule=None, batch_schedule=None, sampler="shuffle", drop_last=True, patience=None, seed=0,
          optimizer_options=None, eval_growth=1.04, eval_share=EVAL_SHARE, divergence_factor=5.0, eval_hooks=(),
          progress=None, threads=None, censor_steps=None):
    """Train `model` on `data` (a minigrad.data.Dataset) and return a Trace.

    batch_size: B, or the base of `batch_schedule` (a BatchSchedule) when given. lr: base learning rate;
    `lr_schedule` (an LRSchedule) overrides it. target: validation error at which the run has reached its goal
    (steps_to_target, examples_to_target); with stop_at_target the run ends there. patience: stop after this many
    evaluations without a better validation error and restore the best parameters (early stopping).
    Evaluations: at steps growing by `eval_growth` (4%), at least eval_gap_floor(B, n_val, eval_share) steps apart;
    when the target is first met after a gap wider than eval_growth, the run is rewound to the evaluation before
    and replayed (bitwise the same steps) with evaluations eval_growth apart, so steps-to-target is resolved to 4%
    either way. The replay's time is counted as evaluation time (eval_s); compiling, and the evaluation before
    the first step, as compile_s.
    divergence: a NaN/Inf training loss (the run stops at that step), or a validation loss above
    `divergence_factor` times its value before the first step, ends the run as DIVERGED.
    eval_hooks: callables (model, data, step) -> dict of extra scalar columns recorded at each evaluation.
    progress: callable(fraction_done) called at each evaluation.
    threads: None (the caller's BLAS and Numba settings), a count, or "auto" (see minigrad.training.threads).
    censor_steps: with a target, stop at the first regular evaluation at or past this step that has not reached it
    (censor_step), status CENSORED: "more than `steps` steps". It only ends runs early, so a run it does not stop
    is bit for bit the run without it.
    """
    threads = parse_threads(threads)
    with ExitStack() as stack:
        return _train(stack, threads, model, data, batch_size, lr, optimizer, budget=budget, target=target,
                      stop_at_target=stop_at_target, lr_schedule=lr_schedule, batch_schedule=batch_schedule,
                      sampler=sampler, drop_last=drop_last, patience=patience, seed=seed,
                      optimizer_options=optimizer_options, eval_growth=eval_growth, eval_share=eval_share,
                      divergence_factor=divergence_factor, eval_hooks=eval_hooks, progress=progress,
                      censor_steps=censor_steps)


class _Threads:
    """The run's thread count, and under "auto" on two threads the watch that drops to one on a busy machine."""

    def __init__(self, stack, threads, model, X, y, optimizer):
        self.stack, self.times, self.fallback_step = stack, {}, None
        if threads == "auto":
            threads, self.times = choose_threads(model, X, y, optimizer)
        self.count, self.watch = threads, threads == 2 and bool(self.times)
        self._context = None
        if threads is not None:
            self._context = stack.enter_context(ExitStack())
            self._context.enter_context(thread_count(threads))

    def chunk(self):
        # steps per chunk: unlimited, or about CHUNK_SECONDS while watching
        return max(1, int(CHUNK_SECONDS / self.times[2])) if self.watch else None

    def check(self, seconds, steps, stepper):
        if not self.watch or steps < 1 or seconds / steps <= FALLBACK * self.times[1]:
            return
        self._context.close()
        self._context.enter_context(thread_count(1))
        self.count, self.watch, self.fallback_step = 1, False, stepper.step
        stepper.replan()  # the fused step's worker count is read when its Step is made


def _train(stack, threads, model, data, batch_size, lr, optimizer, *, budget, target, stop_at_target, lr_schedule,
           batch_schedule, sampler, drop_last, patience, seed, optimizer_options, eval_growth, eval_share,
           divergence_factor, eval_hooks, progress, censor_steps):
    if batch_size < 1 or batch_size > len(data.y_train):
        raise ValueError(f"batch size {batch_size} must lie between 1 and the training split's {len(data.y_train)} "
                         "examples")
    if target is not None and not 0 <= target <= 1:
        raise ValueError(f"target validation error must lie in [0, 1], got {target}")
    n_train = len(data.y_train)
    X_train, X_val = data.X_train.astype(model.dtype, copy=False), data.X_val.astype(model.dtype, copy=False)
    model.check_batch(X_train, data.y_train)  # once here: the compiled loop trusts its inputs
    model.check_batch(X_val, data.y_val)
    lr_schedule = lr_schedule or LRSchedule(lr)
    batch_schedule = batch_schedule or BatchSchedule(batch_size)
    batch_schedule.max_batch_size = min(batch_schedule.max_batch_size or n_train, n_train)
    opt = make_optimizer(optimizer, lr_schedule(0.0), **(optimizer_options or {}))
    draws = SamplerState(sampler, data.y_train, seed=seed, drop_last=drop_last)
    stepper = Stepper(model, X_train, data.y_train, opt, draws, lr_schedule, batch_schedule, budget)
    evaluate = Evaluator(model, X_val, data.y_val)
    planned = budget.steps or budget.total_epochs(batch_size, n_train) * n_train / batch_size
    floor = eval_gap_floor(batch_size, len(data.y_val), eval_share, planned)
    pool = _Threads(stack, threads, model, X_train[:batch_size], data.y_train[:batch_size], opt)
    timing = {"compute": 0.0, "replay": 0.0}

    def run_to(stop_step, replay_until):
        # chunks of steps up to stop_step; their time goes to compute, or to replay while locating a crossing
        while True:
            chunk = pool.chunk()
            done, started = stepper.step, time.perf_counter()
            why = stepper.run(stop_step if chunk is None else min(stop_step, done + chunk))
            elapsed = time.perf_counter() - started
            timing["replay" if stepper.step <= replay_until else "compute"] += elapsed
            pool.check(elapsed, stepper.step - done, stepper)
            if why != REACHED or stepper.step >= stop_step:
                return why

    rows = {name: [] for name in TRACE_COLUMNS}
    started = time.perf_counter()
    stepper.run(0)  # compiles the chunk of the first path (it stops before any step): kept out of compute_s
    initial_val_loss, _ = evaluate()  # the reference of the divergence rule (its first call compiles too)
    for hook in eval_hooks:  # and what the hooks' first calls would compile, kept out of eval_s
        if hasattr(hook, "warm_up"):
            hook.warm_up(model, data)
    compile_s, eval_s = time.perf_counter() - started, 0.0
    status, reached = None, None
    best_error, best_params, since_best = math.inf, None, 0
    last = (0, stepper.snapshot() if target is not None else None)  # the last evaluation's step and state
    replay_until = 0  # while locating a crossing: evaluate eval_growth apart up to this step
    next_eval = max(1, floor)
    while status is None:
        # ------------------------------------------------------------- steps up to the next evaluation point
        replay_before = timing["replay"]
        why = run_to(next_eval, replay_until)
        eval_s += timing["replay"] - replay_before
        compute_s = timing["compute"]
        if why == NONFINITE:
            status = DIVERGED
        # --------------------------------------------------------------------------------------- evaluation
        started = time.perf_counter()
        step = stepper.step
        val_loss, val_error = evaluate()
        if (status is None and target is not None and reached is None and val_error <= target
                and step > next_eval_step(last[0], eval_growth) and last[1] is not None):
            # met after a gap wider than eval_growth: rewind to the last evaluation and replay it finely
            replay_until = step
            stepper.restore(last[1])
            next_eval = min(next_eval_step(last[0], eval_growth), replay_until)
            eval_s += time.perf_counter() - started
            continue
        train_loss = stepper.take_loss()
        epoch = stepper.epoch
        for name, value in (("step", step), ("examples", stepper.examples), ("epoch", epoch),
                            ("train_loss", train_loss), ("val_loss", val_loss), ("val_error", val_error),
                            ("lr", stepper.lr), ("batch_size", batch_schedule(epoch)),
                            ("grad_norm", float(np.linalg.norm(model.grads)))):
            rows[name].append(value)
        for hook in eval_hooks:
            for name, value in hook(model, data, step).items():
                rows.setdefault(name, [math.nan] * (len(rows["step"]) - 1)).append(value)
        eval_s += time.perf_counter() - started
        rows["compute_s"].append(compute_s)
        rows["eval_s"].append(eval_s)
        if progress is not None:
            progress(min(1.0, epoch / budget.total_epochs(batch_size, n_train)) if budget.steps is None
                     else step / budget.steps)

        # ----------------------------------------------------------------------------------------- decisions
        if status is None and (not math.isfinite(val_loss) or val_loss > divergence_factor * initial_val_loss):
            status = DIVERGED
        if status is not None:
            break
        if target is not None and reached is None and val_error <= target:
            reached = (step, stepper.examples)
            if stop_at_target:
                status = COMPLETE
        if val_error < best_error:
            best_error, since_best = val_error, 0
            if patience is not None:
                best_params = model.params.copy()
        else:
            since_best += 1
        if status is None and patience is not None and since_best >= patience:
            status = COMPLETE if reached or target is None else INCOMPLETE
        if status is None and why == BUDGET_DONE:
            status = COMPLETE if reached or target is None else INCOMPLETE
        if (status is None and censor_steps is not None and target is not None and reached is None
                and step >= max(censor_steps, replay_until)):
            status = CENSORED  # never inside a replay: that one is locating a crossing already seen
        if status is None and target is not None and reached is None:
            last = (step, stepper.snapshot())
        next_eval = next_eval_step(step, eval_growth)
        if step < replay_until:
            next_eval = min(next_eval, replay_until)
        else:
            next_eval = max(next_eval, step + floor)

    if best_params is not None and status != DIVERGED:
        model.params[...] = best_params  # early stopping keeps the best parameters seen
    test_loss, test_error = (math.nan, math.nan)
    if status != DIVERGED and len(data.y_test):
        test_loss, test_error = model.evaluate(data.X_test.astype(model.dtype, copy=False), data.y_test)
    step = stepper.step
    attrs = dict(batch_size=int(batch_size), lr=float(lr_schedule.base_lr), optimizer=optimizer, seed=int(seed),
                 sampler=sampler, target=target, status=status,
                 steps_to_target=reached[0] if reached else None,
                 examples_to_target=reached[1] if reached else None,
                 steps=step, examples=stepper.examples, best_val_error=float(best_error),
                 final_val_error=float(rows["val_error"][-1]), test_error=float(test_error),
                 test_loss=float(test_loss), compute_s=compute_s, eval_s=eval_s, replay_s=timing["replay"],
                 initial_val_loss=float(initial_val_loss), eval_gap_floor=floor, compile_s=compile_s,
                 step_path=model.step_path(batch_schedule(0.0), optimizer))
    if pool.count is not None:
        attrs["threads"] = pool.count
    if pool.times:
        attrs.update({f"step_s_threads_{T}": t for T, t in pool.times.items()})
    if pool.fallback_step is not None:
        attrs["threads_fallback_step"] = pool.fallback_step
    if status == CENSORED:
        attrs["censor_steps"] = int(censor_steps)
    if status == DIVERGED:
        attrs["diverged_at_step"] = step + (1 if why == NONFINITE else 0)
    columns = {name: np.asarray(values, dtype=np.int64 if name in ("step", "examples", "batch_size") else np.float64)
               for name, values in rows.items()}
    return Trace(columns=columns, status=status, attrs=attrs, params=model.params.copy())
