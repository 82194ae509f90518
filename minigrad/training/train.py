"""One training run: minibatch steps under a budget, evaluated at geometrically spaced steps, ending in a trace.

Steps-to-target is the first evaluation at which the validation error is at or below the target. Evaluations come
at steps 1, 2, ..., then every `eval_growth` times more steps (4% by default), so the step where the target was first
reached is known to within 4%, and a run of a million steps is evaluated a few hundred times, not a million.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from minigrad.data import make_sampler
from minigrad.engine.model import MLP, DivergenceError
from minigrad.engine.optim import make_optimizer
from minigrad.training.schedules import BatchSchedule, LRSchedule

COMPLETE, INCOMPLETE, DIVERGED = "COMPLETE", "INCOMPLETE", "DIVERGED"
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

    def done(self, step, examples, epoch):
        if self.steps is not None:
            return step >= self.steps
        if self.examples is not None:
            return examples >= self.examples
        return epoch >= self.epochs - 1e-12

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


def optimizer_options(optimizer, momentum=0.9, weight_decay=0.0):
    """Keyword arguments for make_optimizer: momentum means beta1 for Adam, nothing for SGD."""
    options = {"weight_decay": weight_decay}
    if optimizer in ("momentum", "nesterov"):
        options["momentum"] = momentum
    elif optimizer == "adam":
        options["beta1"] = momentum
    return options


def next_eval_step(step, growth):
    return max(step + 1, int(math.ceil(step * growth)))


def train(model: MLP, data, batch_size, lr, optimizer="sgd", *, budget: Budget, target=None, stop_at_target=True,
          lr_schedule=None, batch_schedule=None, sampler="shuffle", drop_last=True, patience=None, seed=0,
          optimizer_options=None, eval_growth=1.04, divergence_factor=5.0, eval_hooks=(), progress=None):
    """Train `model` on `data` (a minigrad.data.Dataset) and return a Trace.

    batch_size: B, or the base of `batch_schedule` (a BatchSchedule) when given. lr: base learning rate;
    `lr_schedule` (an LRSchedule) overrides it. target: validation error at which the run has reached its goal
    (steps_to_target, examples_to_target); with stop_at_target the run ends there. patience: stop after this many
    evaluations without a better validation error and restore the best parameters (early stopping).
    divergence: a NaN/Inf loss, or a training loss above `divergence_factor` times the first one, ends the run as
    DIVERGED. eval_hooks: callables (model, data, step) -> dict of extra scalar columns recorded at each evaluation.
    progress: callable(fraction_done) called at each evaluation.
    """
    if batch_size < 1 or batch_size > len(data.y_train):
        raise ValueError(f"batch size {batch_size} must lie between 1 and the training split's {len(data.y_train)} "
                         "examples")
    if target is not None and not 0 <= target <= 1:
        raise ValueError(f"target validation error must lie in [0, 1], got {target}")
    n_train = len(data.y_train)
    X_train, X_val = data.X_train.astype(model.dtype, copy=False), data.X_val.astype(model.dtype, copy=False)
    model.check_batch(X_train, data.y_train)  # once here, so each step can skip the checks
    lr_schedule = lr_schedule or LRSchedule(lr)
    batch_schedule = batch_schedule or BatchSchedule(batch_size)
    batch_schedule.max_batch_size = min(batch_schedule.max_batch_size or n_train, n_train)
    opt = make_optimizer(optimizer, lr_schedule(0.0), **(optimizer_options or {}))
    draw = make_sampler(sampler, data.y_train, batch_schedule(0.0), seed=seed, drop_last=drop_last)

    rows = {name: [] for name in TRACE_COLUMNS}
    step = examples = 0
    compute_s = eval_s = 0.0
    loss_sum, loss_count, first_loss = 0.0, 0, None
    status, reached = None, None
    best_error, best_params, since_best = math.inf, None, 0
    next_eval = 1
    while status is None:
        # -------------------------------------------------------------- steps up to the next evaluation point
        started = time.perf_counter()
        try:
            while step < next_eval and not budget.done(step, examples, draw.epoch):
                B = batch_schedule(draw.epoch)
                opt.lr = lr_schedule(draw.epoch)
                idx = draw.next_batch(B)
                ws = model.workspace(len(idx))
                np.take(X_train, idx, axis=0, out=ws.X)
                np.take(data.y_train, idx, out=ws.y)
                loss = model._train_step(ws.X, ws.y, opt)
                step += 1
                examples += len(idx)
                loss_sum += loss
                loss_count += 1
                if first_loss is None:
                    first_loss = loss
        except DivergenceError:
            status = DIVERGED
        compute_s += time.perf_counter() - started
        # --------------------------------------------------------------------------------------- evaluation
        started = time.perf_counter()
        val_loss, val_error = model.evaluate(X_val, data.y_val)
        train_loss = loss_sum / loss_count if loss_count else math.nan
        for name, value in (("step", step), ("examples", examples), ("epoch", draw.epoch),
                            ("train_loss", train_loss), ("val_loss", val_loss), ("val_error", val_error),
                            ("lr", opt.lr), ("batch_size", batch_schedule(draw.epoch)),
                            ("grad_norm", float(np.linalg.norm(model.grads)))):
            rows[name].append(value)
        for hook in eval_hooks:
            for name, value in hook(model, data, step).items():
                rows.setdefault(name, [math.nan] * (len(rows["step"]) - 1)).append(value)
        loss_sum, loss_count = 0.0, 0
        eval_s += time.perf_counter() - started
        rows["compute_s"].append(compute_s)
        rows["eval_s"].append(eval_s)
        if progress is not None:
            progress(min(1.0, draw.epoch / budget.total_epochs(batch_size, n_train)) if budget.steps is None
                     else step / budget.steps)

        # ----------------------------------------------------------------------------------------- decisions
        if status is None and (not math.isfinite(train_loss) or not math.isfinite(val_loss)
                               or train_loss > divergence_factor * first_loss):
            status = DIVERGED
        if status is not None:
            break
        if target is not None and reached is None and val_error <= target:
            reached = (step, examples)
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
        if status is None and budget.done(step, examples, draw.epoch):
            status = COMPLETE if reached or target is None else INCOMPLETE
        next_eval = next_eval_step(step, eval_growth)

    if best_params is not None and status != DIVERGED:
        model.params[...] = best_params  # early stopping keeps the best parameters seen
    test_loss, test_error = (math.nan, math.nan)
    if status != DIVERGED and len(data.y_test):
        test_loss, test_error = model.evaluate(data.X_test.astype(model.dtype, copy=False), data.y_test)
    attrs = dict(batch_size=int(batch_size), lr=float(lr_schedule.base_lr), optimizer=optimizer, seed=int(seed),
                 sampler=sampler, target=target, status=status,
                 steps_to_target=reached[0] if reached else None,
                 examples_to_target=reached[1] if reached else None,
                 steps=step, examples=examples, best_val_error=float(best_error),
                 final_val_error=float(rows["val_error"][-1]), test_error=float(test_error),
                 test_loss=float(test_loss), compute_s=compute_s, eval_s=eval_s,
                 step_path=model.step_path(batch_schedule(0.0), optimizer))
    columns = {name: np.asarray(values, dtype=np.int64 if name in ("step", "examples", "batch_size") else np.float64)
               for name, values in rows.items()}
    return Trace(columns=columns, status=status, attrs=attrs, params=model.params.copy())
