"""Learning-rate schedules, per-batch-size rules for the learning rate and Adam's beta2, and batch-size schedules.

Schedules are functions of training progress measured in epochs (examples seen / training examples), so a
learning-rate decay and a batch-size increase at the same milestones happen at the same point of the data stream
(Smith, Kindermans, Ying, Le 2017) whatever the batch size.
"""
import math
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


@dataclass
class BatchSchedule:
    """batch_size(epoch) = base * factor^(milestones passed): grow the batch where a step decay would cut the
    learning rate by the same factor (Smith et al. 2017)."""

    base: int
    milestones: list = field(default_factory=list)
    factor: int = 1
    max_batch_size: int = 0  # 0: no cap; the training loop caps at the training-set size

    def __post_init__(self):
        if self.base < 1:
            raise ValueError(f"batch size must be >= 1, got {self.base}")
        if self.factor < 1:
            raise ValueError(f"batch-size growth factor must be >= 1, got {self.factor}")

    def __call__(self, epoch):
        size = self.base * self.factor ** sum(1 for m in self.milestones if epoch >= m)
        return min(size, self.max_batch_size) if self.max_batch_size else size
