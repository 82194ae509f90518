"""An experiment's verdict is a test: a statistic, its noise, a threshold, the number of seeds, three outcomes.

    reproduced      the statistic's interval lies on the expected side of the threshold
    not reproduced  it lies on the other side (or, for an agreement, the estimate is more than 3 SE off; or, for
                    a claim of an effect worth having, it lies within an equivalence margin around the threshold)
    inconclusive    the interval straddles the threshold: the effect is within its noise

Intervals are 90% two-sided (so each side is a 5% one-sided test): percentiles of a bootstrap over seeds, or
+-1.645 standard errors of a fit; an experiment judging k intervals together widens each to 1 - 0.10/k
(simultaneous_level). Every verdict line prints the numbers it rests on.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "NOT reproduced", "inconclusive"
LEVEL = 0.90
Z90 = 1.6448536269514722  # two-sided 90%: the 95th percentile of the standard normal


@dataclass
class Verdict:
    claim: str        # what the literature expects, e.g. "item 8: momentum needs fewer steps at large B"
    statistic: str    # what was measured, e.g. "S_mom/S_sgd at B=1024"
    value: float
    lo: float         # its interval
    hi: float
    noise: str        # where the interval comes from, e.g. "90% bootstrap over seeds"
    rule: str         # the threshold, e.g. "reproduced if lo > 1; not if hi < 1"
    seeds: int
    outcome: str

    def line(self):
        if not any(isinstance(x, (int, float)) and math.isfinite(x) for x in (self.value, self.lo, self.hi)):
            return f"{self.claim}: {self.outcome} -- {self.statistic}: not defined, {self.rule}."  # not "nan [nan, nan]"
        return (f"{self.claim}: {self.outcome} -- {self.statistic} = {_num(self.value)} "
                f"[{_num(self.lo)}, {_num(self.hi)}] ({self.noise}, {self.seeds} seed{'s' * (self.seeds != 1)}); "
                f"{self.rule}.")

    def as_dict(self):
        return asdict(self)


def _num(x):
    return f"{x:.3g}" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def above(claim, statistic, value, lo, hi, threshold, noise, seeds):
    """The claim is that the statistic exceeds `threshold`."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        outcome = INCONCLUSIVE
    else:
        outcome = REPRODUCED if lo > threshold else NOT_REPRODUCED if hi < threshold else INCONCLUSIVE
    return Verdict(claim, statistic, value, lo, hi, noise,
                   f"reproduced if the interval lies above {threshold:g}, not if below", seeds, outcome)


def below(claim, statistic, value, lo, hi, threshold, noise, seeds, equivalent=None):
    """The claim is that the statistic is smaller than `threshold`. With `equivalent` = (low, high), a margin
    around the threshold, the claim is of an effect worth having: an interval entirely within the margin is not
    reproduced (no effect worth having), even if it also lies below the threshold."""
    rule = f"reproduced if the interval lies below {threshold:g}, not if above"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        outcome = INCONCLUSIVE
    elif equivalent is not None and equivalent[0] <= lo and hi <= equivalent[1]:
        outcome = NOT_REPRODUCED
    else:
        outcome = REPRODUCED if hi < threshold else NOT_REPRODUCED if lo > threshold else INCONCLUSIVE
    if equivalent is not None:
        rule += f" or within [{equivalent[0]:.3g}, {equivalent[1]:.3g}] (no effect worth having)"
    return Verdict(claim, statistic, value, lo, hi, noise, rule, seeds, outcome)


def within(claim, statistic, value, lo, hi, low, high, noise, seeds):
    """The claim is that the statistic lies between `low` and `high` (an equivalence margin)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        outcome = INCONCLUSIVE
    elif low <= lo and hi <= high:
        outcome = REPRODUCED
    elif hi < low or lo > high:
        outcome = NOT_REPRODUCED
    else:
        outcome = INCONCLUSIVE
    return Verdict(claim, statistic, value, lo, hi, noise,
                   f"reproduced if the interval lies within [{low:g}, {high:g}], not if outside", seeds, outcome)


def agrees(claim, statistic, estimate, se, expected, resolution, seeds,
           noise="90% interval from the fit's standard error"):
    """The claim is that `estimate` equals `expected` up to `resolution`, the smallest deviation that would matter
    (an equivalence test, as stratified's margin): with the 90% interval estimate +- 1.645 se, reproduced if it lies
    within expected +- resolution; not reproduced if it lies wholly outside (a resolved deviation larger than the
    resolution); inconclusive otherwise. A deviation many SEs away but smaller than the resolution is reproduced: a
    precise fit of -0.505 for an exponent of -0.5 at resolution 0.05 agrees. z is printed for reference."""
    finite = se > 0 and math.isfinite(se)
    z = (estimate - expected) / se if finite else math.nan
    lo, hi = (estimate - Z90 * se, estimate + Z90 * se) if finite else (math.nan, math.nan)
    if not finite:
        outcome = INCONCLUSIVE
    elif expected - resolution <= lo and hi <= expected + resolution:
        outcome = REPRODUCED
    elif hi < expected - resolution or lo > expected + resolution:
        outcome = NOT_REPRODUCED
    else:
        outcome = INCONCLUSIVE
    return Verdict(claim, f"{statistic} (expected {_num(expected)}, z = {z:+.2f})", estimate, lo, hi, noise,
                   f"reproduced if the interval lies within {_num(expected)} +- {_num(resolution)}, not if wholly "
                   "outside", seeds, outcome)


def combine(claim, verdicts):
    """One outcome from several tests that must all hold: not reproduced if any is not, reproduced if all are."""
    outcomes = [v.outcome for v in verdicts]
    if NOT_REPRODUCED in outcomes:
        return NOT_REPRODUCED
    return REPRODUCED if outcomes and all(o == REPRODUCED for o in outcomes) else INCONCLUSIVE


def any_of(verdicts):
    """One outcome from several tests of which one suffices: reproduced if any is, not reproduced if all are not.
    Sound when the intervals are simultaneous (see simultaneous_level), else one of many would pass by chance."""
    outcomes = [v.outcome for v in verdicts]
    if REPRODUCED in outcomes:
        return REPRODUCED
    return NOT_REPRODUCED if outcomes and all(o == NOT_REPRODUCED for o in outcomes) else INCONCLUSIVE


def simultaneous_level(k, level=LEVEL):
    """The level of each of k intervals that cover together with probability `level` (Bonferroni)."""
    return 1 - (1 - level) / max(1, k)


# -------------------------------------------------------------------------------------------------- noise
def bootstrap(groups, statistic, resamples=2000, level=LEVEL, seed=0):
    """Percentile interval of statistic(*groups) when each group (an array whose first axis is the seed) is
    resampled with replacement on its own. Resamples whose statistic is not finite are dropped; if more than
    a tenth are, the interval is (nan, nan): the statistic is not defined often enough to bound."""
    rng = np.random.default_rng([seed, 0xB007])
    groups = [np.asarray(g) for g in groups]
    values = []
    for _ in range(resamples):
        values.append(statistic(*[g[rng.integers(0, len(g), len(g))] for g in groups]))
    values = np.asarray(values, float)
    ok = values[np.isfinite(values)]
    if len(ok) < 0.9 * resamples:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return float(lo), float(hi)


def linear_fit(x, y, level=LEVEL):
    """Ordinary least squares y = a + b x: (b, its standard error, lo, hi) with a Student-t interval."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(((x - x.mean()) ** 2).sum()))
    t = float(stats.t.ppf(0.5 + level / 2, n - 2))
    return float(b), se, float(b - t * se), float(b + t * se)
