"""Learning-rate schedules, per-batch-size rules for the learning rate and Adam's beta2, and batch-size schedules.

Schedules are functions of training progress measured in epochs (examples seen / training examples), so a
learning-rate decay and a batch-size increase at the same milestones happen at the same point of the data stream
(Smith, Kindermans, Ying, Le 2017) whatever the batch size.
"""
import math
import re
from dataclasses import dataclass, field

LR_SCHEDULES = ("constant", "step", "cosine")
SCALING_RULES = ("none", "linear", "sqrt")
BETA2_RULES = ("fixed", "halflife")


def scaled_lr(base_lr, batch_size, reference_batch_size, rule):
    """Learning rate for `batch_size` from one tuned at `reference_batch_size`:
    linear (Goyal et al. 2017) lr = base * B/B0; sqrt (Hoffer et al. 2017) lr = base * sqrt(B/B0)."""
    if rule not in SCALING_RULES:
        raise ValueError(f"unknown scaling rule {rule!r}; choose one of {', '.join(SCALING_RULES)}")
    ratio = batch_size / reference_batch_size
    return base_lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def beta2_halflife(beta2, batch_size):
    """Samples over which Adam's second-moment average, decaying by beta2 per step of `batch_size` samples, halves:
    t_half = B ln(1/2) / ln(beta2) (beta2 = 0.999 at B = 128: about 88,700 samples)."""
    if not 0 < beta2 < 1:
        raise ValueError(f"beta2 must lie in (0, 1), got {beta2}")
    return batch_size * math.log(0.5) / math.log(beta2)


def scaled_beta2(beta2, batch_size, rule="fixed", halflife=None, reference_batch_size=None):
    """Adam's beta2 at `batch_size`. fixed: `beta2` at every B. halflife (Marek et al. 2025): the average keeps its
    half-life in samples, not in steps, beta2(B) = 0.5^(B / t_half), with t_half = `halflife` samples or, if None,
    the half-life `beta2` has at `reference_batch_size` (so beta2(B_ref) = beta2)."""
    if rule not in BETA2_RULES:
        raise ValueError(f"unknown beta2 rule {rule!r}; choose one of {', '.join(BETA2_RULES)}")
    if rule == "fixed":
        return float(beta2)
    if halflife is None:
        if reference_batch_size is None:
            raise ValueError("the halflife rule needs a half-life in samples or a reference batch size")
        halflife = beta2_halflife(beta2, reference_batch_size)
    if not halflife > 0:
        raise ValueError(f"the beta2 half-life must be > 0 samples, got {halflife}")
    return 0.5 ** (batch_size / halflife)


@dataclass
class LRSchedule:
    """lr(epoch) = base_lr * warm-up factor * decay factor.

    kind "constant"; "step": multiply by `gamma` at each epoch in `milestones`; "cosine": from 1 down to 0 at
    `total_epochs`. `warmup_epochs` > 0 first ramps the rate linearly from near 0 up to the schedule's value
    (Goyal et al. use 5 epochs)."""

    base_lr: float
    kind: str = "constant"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    total_epochs: float = 0.0
    warmup_epochs: float = 0.0

    def __post_init__(self):
        if not self.base_lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.base_lr}")
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if self.kind == "cosine" and not self.total_epochs > 0:
            raise ValueError("the cosine schedule needs the training budget (total_epochs > 0)")
        if self.kind == "step" and not 0 < self.gamma:
            raise ValueError(f"step decay factor gamma must be > 0, got {self.gamma}")

    def __call__(self, epoch):
        factor = 1.0
        if self.kind == "step":
            factor = self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        elif self.kind == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch / self.total_epochs, 1.0)))
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            factor *= max(epoch / self.warmup_epochs, 1e-3)
        return self.base_lr * factor


@dataclass(frozen=True)
class Stage:
    """One stage of a staged batch schedule: its batch size and learning rate, and when it begins: at step `step`,
    or at the first evaluation whose validation error is at or below `error` (the first stage: at step 0)."""

    batch_size: int
    lr: float
    error: float = None
    step: int = None

    def __str__(self):
        when = "" if self.error is None and not self.step else (
            f"@err={self.error:g}" if self.error is not None else f"@step={self.step}")
        return f"{self.batch_size}:{self.lr:g}{when}"


_STAGE = re.compile(r"^\s*(?P<B>[^:@]+):(?P<lr>[^@]+?)\s*(?:@\s*(?P<key>err|step)\s*=\s*(?P<at>.+?))?\s*$")
STAGES_SYNTAX = "B:LR,B:LR@err=E,... or B:LR,B:LR@step=N,... (e.g. 32:0.1,128:0.2@err=0.2,512:0.3@err=0.15)"


def parse_stages(text):
    """'32:0.1,128:0.2@err=0.2,512:0.3@err=0.15' -> [Stage, ...], checked: each stage B:LR, every stage after the
    first with its start, all keyed the same way (on validation error, falling; or on steps, rising). ValueError
    naming the stage that is wrong otherwise."""
    def bad(part, why):
        return ValueError(f"--batch-stages stage {part.strip()!r}: {why}; write {STAGES_SYNTAX}")

    parts = [p for p in str(text).split(",")]
    if not any(p.strip() for p in parts):
        raise ValueError(f"--batch-stages is empty; write {STAGES_SYNTAX}")
    stages = []
    for i, part in enumerate(parts):
        m = _STAGE.match(part)
        if not m:
            raise bad(part, "not B:LR with an optional @err=E or @step=N")
        try:
            B, lr = int(m["B"]), float(m["lr"])
            at = None if m["at"] is None else (float(m["at"]) if m["key"] == "err" else int(m["at"]))
        except ValueError:
            raise bad(part, "B must be a whole number, LR and E numbers, N a whole number") from None
        if B < 1:
            raise bad(part, "the batch size must be >= 1")
        if not (math.isfinite(lr) and 0 < lr <= 1e6):
            raise bad(part, "the learning rate must lie in (0, 1e6]")
        if i == 0 and at is not None:
            raise bad(part, "the first stage starts at step 0: give it no @err or @step")
        if i > 0 and at is None:
            raise bad(part, "every stage after the first needs its start, @err=E or @step=N")
        if m["key"] == "err" and not (math.isfinite(at) and 0 < at < 1):
            raise bad(part, "the error level must lie in (0, 1)")
        if m["key"] == "step" and at < 1:
            raise bad(part, "the start step must be >= 1")
        stages.append(Stage(B, lr, **({m["key"].replace("err", "error"): at} if at is not None else {})))
    later = stages[1:]
    if later and len({s.error is None for s in later}) > 1:
        raise ValueError("--batch-stages: key every stage on the error (@err=E) or every stage on steps (@step=N), "
                         "not both")
    starts = [s.error if s.error is not None else s.step for s in later]
    falling = later and later[0].error is not None
    if any((b >= a) if falling else (b <= a) for a, b in zip(starts, starts[1:])):
        raise ValueError("--batch-stages: the stages' starts must " + (
            "fall (each error level below the one before)" if falling else "rise (each step after the one before)"))
    return stages


def format_stages(stages):
    """The stages as --batch-stages writes them (parse_stages' inverse)."""
    return ",".join(str(s) for s in stages)


@dataclass
class BatchSchedule:
    """batch_size(epoch) = base * factor^(milestones passed): grow the batch where a step decay would cut the
    learning rate by the same factor (Smith et al. 2017).

    Or, with `stages` (a list of Stage, or their --batch-stages text), the batch size and learning rate of the
    stage the run is in: a stage keyed on steps begins at that step, one keyed on the validation error at the first
    evaluation at or below its level (minigrad.training.train decides, the compiled loop takes the step it records).
    The learning-rate schedule's factor (warm-up, decay) multiplies the stage's rate."""

    base: int
    milestones: list = field(default_factory=list)
    factor: int = 1
    max_batch_size: int = 0  # 0: no cap; the training loop caps at the training-set size
    stages: list = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.stages, str):
            self.stages = parse_stages(self.stages)
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]
        if self.stages:
            if self.factor != 1 or self.milestones:
                raise ValueError("a staged batch schedule sets B per stage: give no growth factor or milestones too")
            self.base = self.stages[0].batch_size
        if self.base < 1:
            raise ValueError(f"batch size must be >= 1, got {self.base}")
        if self.factor < 1:
            raise ValueError(f"batch-size growth factor must be >= 1, got {self.factor}")

    def __call__(self, epoch, stage=0):
        """B at `epoch`; with stages, B of stage number `stage` (where the run is: the training loop knows)."""
        size = (self.stages[stage].batch_size if self.stages else
                self.base * self.factor ** sum(1 for m in self.milestones if epoch >= m))
        return min(size, self.max_batch_size) if self.max_batch_size else size

    @property
    def largest(self):
        """The largest B the schedule can ask for (before the cap): what the workspaces must hold."""
        if self.stages:
            return max(s.batch_size for s in self.stages)
        return self.base * self.factor ** len(self.milestones)
