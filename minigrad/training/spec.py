"""One trial's specification: a frozen, typed record that the study, every experiment and `minigrad train` build, the
executors ship to their workers, and minigrad.training.trial runs.

The configuration (model, data, optimizer defaults) is shared by all of a study's trials and stays a dict; the spec
says what is particular to one trial. A field left at None takes the configuration's value. A misspelt field is a
TypeError when the spec is made, not a setting silently ignored on a worker.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from minigrad.machine import settings


@dataclass(frozen=True)
class TrialSpec:
    # identity and the update rule
    run_id: str
    batch_size: int
    lr: float
    seed: int
    # the budget: one of steps, examples or epochs (minigrad.training.train.Budget)
    steps: Optional[int] = None
    examples: Optional[int] = None
    epochs: Optional[float] = None
    # when to stop
    target: Optional[float] = None  # validation error to reach
    stop_at_target: bool = False
    patience: Optional[int] = None  # evaluations without improvement before stopping
    censor_steps: Optional[int] = None  # stop a run short of its target by then: CENSORED (study.plan.censor_bound)
    # bookkeeping kept in the run's attrs (RECORDED)
    phase: Optional[str] = None
    role: Optional[str] = None
    tag: Optional[str] = None
    lr_factor: Optional[float] = None
    # overrides of the configuration for this trial (None: the configuration's)
    optimizer: Optional[str] = None
    momentum: Optional[float] = None
    beta2: Optional[float] = None  # Adam's, overriding the configuration's beta2 rule
    beta2_rule: Optional[str] = None
    sampler: Optional[str] = None
    drop_last: bool = True
    eval_growth: Optional[float] = None
    threads: Union[int, str, None] = None  # None: the process's settings; a count or "auto" (training.threads)
    # schedules: keyword arguments of LRSchedule / BatchSchedule (minigrad.training.schedules)
    lr_schedule: Optional[Mapping[str, Any]] = None
    batch_schedule: Optional[Mapping[str, Any]] = None
    # instruments
    gns: Optional[Mapping[str, Any]] = None  # GNSHook settings
    two_batch_gns: Optional[Mapping[str, Any]] = None  # TwoBatchHook settings
    full_gns: Optional[tuple] = None  # FullNoiseHook checkpoints, with total_steps
    total_steps: Optional[int] = None
    evaluate_train: bool = False  # training-set loss and error at the end
    curvature: Optional[Mapping[str, Any]] = None  # Keskar's measurements at the end
    keep_params: bool = False  # store the final parameters

    def __post_init__(self):
        # every field that is a setting of the table is held to the table's type and range (so a number from numpy
        # arithmetic or TOML is stored as a plain Python number); ValueError naming the trial and the field
        for name in CHECKED:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, settings.check(name, value, label=f"trial {self.run_id!r}: {name}"))

    def replace(self, **changes):
        """A copy with `changes` applied (dataclasses.replace, so the checks run again)."""
        return dataclasses.replace(self, **changes)

    def setting(self, name, config):
        """This trial's value of a setting it may override: its own, else the configuration's."""
        value = getattr(self, name)
        return config[name] if value is None else value


# the fields checked against the settings table: all that are rows of it, but for the bookkeeping ones, which share a
# name and not a meaning (lr_factor here is the grid's offset 2^k, not the experiments' step between rates)
CHECKED = tuple(f.name for f in dataclasses.fields(TrialSpec)
                if f.name in settings.SETTINGS and f.name not in ("phase", "role", "tag", "lr_factor"))
