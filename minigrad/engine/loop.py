"""The training loop's Python side: one run's state between compiled chunks (Stepper).

The chunks themselves are step_loops.py's (every step between two evaluations in one call); which step they take is
the Step object of the path MLP.step_for picks (steps.py); the samplers are sampling.py's and the evaluation
evaluation.py's. This module keeps their names too (minigrad.engine.loop was all of them once).

Everything a chunk changes lives in arrays (parameters, optimizer state, the sampler's state and its random
generator, the counters), so `Stepper.snapshot()` / `restore()` can rewind a run exactly: the training driver uses it
to locate the step where a target was first met between two sparse evaluations (minigrad.training.train).
Same seed, same thread count: bitwise the same run.
"""
import math

import numpy as np

from minigrad.engine.evaluation import EVAL_ROWS, Evaluator, evaluate_pass, evaluation_runner  # noqa: F401
from minigrad.engine.sampling import (DROP_LAST, EPOCHS, KIND, POS, REPLACEMENT, SAMPLER_KINDS, SEEN,  # noqa: F401
                                      SHUFFLE, STRATIFIED, SamplerState, class_counts, draw, next_u64,
                                      random_below, sampler_epoch, shuffle)
from minigrad.engine.step_loops import (BUDGET_DONE, BUDGET_EPOCHS, BUDGET_EXAMPLES, BUDGET_STEPS,  # noqa: F401
                                        EXAMPLES, LAST_LOSS, LAST_LR, LOSS_COUNT, LOSS_SUM, LR_KINDS, NEED_ROWS,
                                        NEW_ROWS, NONFINITE, REACHED, STAGE_START, STEPS, Chunk, batch_at,
                                        batch_schedule_arrays, budget_arrays, budget_done, lr_at,
                                        lr_schedule_arrays, run_steps, stage_at)


class Stepper:
    """One run's state between chunks: model, optimizer, sampler, schedules, budget and counters.

    `run(stop_step)` steps until stop_step (or the budget's end, or a NaN/Inf loss) in compiled chunks, switching
    workspaces where the batch's row count changes; it returns REACHED, BUDGET_DONE or NONFINITE."""

    def __init__(self, model, X, y, optimizer, sampler, lr_schedule, batch_schedule, budget):
        self.model, self.X, self.y, self.opt, self.sampler = model, X, y, optimizer, sampler
        self.lr_params, self.lr_milestones = lr_schedule_arrays(lr_schedule)
        self.batch_params, self.batch_milestones, self.stages = batch_schedule_arrays(batch_schedule)
        self.budget_kind, self.budget_limit = budget_arrays(budget)
        self.counters = np.zeros(3, np.int64)
        self.sums = np.zeros(4, np.float64)
        self.sums[LAST_LR] = lr_schedule(0.0) if not len(self.stages) else batch_schedule.stages[0].lr * (
            lr_schedule(0.0) / lr_schedule.base_lr)
        self.rows = int(batch_schedule(0.0))
        self.steps = {}  # rows -> the Step object of that batch size (MLP.step_for)

    @property
    def step(self):
        return int(self.counters[STEPS])

    @property
    def examples(self):
        return int(self.counters[EXAMPLES])

    @property
    def epoch(self):
        return self.sampler.epoch

    def step_for(self, rows):
        step = self.steps.get(rows)
        if step is None:
            step = self.steps[rows] = self.model.step_for(rows, self.opt.bind(self.model))
        return step

    @property
    def stage(self):
        """The stage of a staged batch schedule the run is in (0 without stages)."""
        return int(stage_at(self.stages, self.step)) if len(self.stages) else 0

    def begin_stage(self, k):
        """Stage k (and any before it not yet begun) begins at the next step: the driver saw its level reached."""
        for i in range(1, k + 1):
            self.stages[i, STAGE_START] = min(self.stages[i, STAGE_START], self.step)

    def stage_starts(self):
        """The step each stage began at (None: not reached)."""
        return [int(s) if math.isfinite(s) else None for s in self.stages[:, STAGE_START]]

    def replan(self):
        """Ask MLP.step_for again at the next chunk (the thread count changed: the fused step's workers with it)."""
        self.steps.clear()

    def run(self, stop_step):
        schedules = (self.lr_params, self.lr_milestones, self.batch_params, self.batch_milestones, self.stages)
        budget = (self.budget_kind, self.budget_limit)
        while True:
            step = self.step_for(self.rows)
            self.model.defer_grads(None)
            chunk = Chunk(self.X, self.y, step.ws.X, step.ws.y, self.sampler.arrays(), schedules, budget, stop_step,
                          self.counters, self.sums)
            why = step.run(self.opt, chunk)
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
                self.sums.copy(), self.rows, self.stages.copy())

    def restore(self, snap):
        params, state, hyper, sampler, counters, sums, rows, stages = snap
        self.stages[...] = stages
        self.model.params[...] = params
        if state is not None:
            self.opt.state[...] = state
        self.opt.hyper[...] = hyper
        for k, v in zip(self.sampler.MUTABLE, sampler):
            getattr(self.sampler, k)[...] = v
        self.counters[...] = counters
        self.sums[...] = sums
        self.rows = rows
        self.model.defer_grads(None)

