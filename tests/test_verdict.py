"""Verdicts as tests: each of the three outcomes is reachable, and planted effects are judged as they were planted
(an effect within its noise is inconclusive, a clear one is reproduced, an opposite one is not)."""
import math

import numpy as np
import pytest

from minigrad.experiments import verdict as V
from minigrad.experiments.gns import _trend
from minigrad.experiments.momentum import tuned_steps
from minigrad.experiments.smith import _between
from minigrad.experiments.stratified import judge


def mean_interval(samples):
    samples = np.asarray(samples, float)
    return (float(samples.mean()), *V.bootstrap([samples], lambda s: float(s.mean()), resamples=500))


@pytest.mark.parametrize("effect, expected", [(5.0, V.REPRODUCED), (0.0, V.INCONCLUSIVE), (-5.0, V.NOT_REPRODUCED)])
def test_above_judges_a_planted_effect_against_its_bootstrap_noise(effect, expected):
    rng = np.random.default_rng(1)
    v = V.above("planted", "mean", *mean_interval(effect + rng.normal(0, 1, 8)), 0.0, "bootstrap", 8)
    assert v.outcome == expected
    assert v.statistic in v.line() and "8 seeds" in v.line() and "above 0" in v.line()


@pytest.mark.parametrize("effect, expected", [(-5.0, V.REPRODUCED), (0.0, V.INCONCLUSIVE), (5.0, V.NOT_REPRODUCED)])
def test_below_mirrors_above(effect, expected):
    rng = np.random.default_rng(2)
    assert V.below("p", "mean", *mean_interval(effect + rng.normal(0, 1, 8)), 0.0, "b", 8).outcome == expected


def test_within_needs_the_whole_interval_inside_the_margin():
    assert V.within("c", "r", 1.0, 0.9, 1.1, 0.8, 1.25, "b", 5).outcome == V.REPRODUCED
    assert V.within("c", "r", 1.0, 0.7, 1.1, 0.8, 1.25, "b", 5).outcome == V.INCONCLUSIVE  # noise too wide
    assert V.within("c", "r", 0.5, 0.4, 0.6, 0.8, 1.25, "b", 5).outcome == V.NOT_REPRODUCED
    assert V.within("c", "r", 1.0, math.nan, math.nan, 0.8, 1.25, "b", 5).outcome == V.INCONCLUSIVE


def test_agrees_is_an_equivalence_test_at_the_resolution():
    ok = V.agrees("c", "slope", 10.1, 0.1, 10.0, 1.0, 1)
    assert ok.outcome == V.REPRODUCED and "z = +1.00" in ok.line()
    assert V.agrees("c", "slope", 12.0, 0.1, 10.0, 1.0, 1).outcome == V.NOT_REPRODUCED  # [11.84, 12.16] outside
    assert V.agrees("c", "slope", 10.9, 0.1, 10.0, 1.0, 1).outcome == V.INCONCLUSIVE  # [10.74, 11.06] straddles 11
    # many SEs off but by less than the resolution: agrees (noise's exponent, -0.505 [-0.508, -0.503] against -0.5)
    assert V.agrees("c", "exponent", -0.505, 0.0015, -0.5, 0.05, 1).outcome == V.REPRODUCED
    # negative control: the same precision with a deviation beyond the resolution
    assert V.agrees("c", "exponent", -0.6, 0.0015, -0.5, 0.05, 1).outcome == V.NOT_REPRODUCED
    # consistent, but the noise could hide a deviation of the resolution's size: inconclusive, not reproduced
    assert V.agrees("c", "slope", 10.1, 5.0, 10.0, 1.0, 1).outcome == V.INCONCLUSIVE
    # a value near zero: judged by its interval, not by a relative tolerance (MNIST: -2.2e-5 against -1.65e-5)
    assert V.agrees("c", "intercept", -2.2e-5, 6.5e-6, -1.65e-5, 1e-4, 1).outcome == V.REPRODUCED
    assert V.agrees("c", "x", 1.0, 0.0, 1.0, 1.0, 1).outcome == V.INCONCLUSIVE  # no noise estimate: no test


def test_combine():
    r, n, i = (V.Verdict("c", "s", 1, 0, 2, "n", "r", 1, o) for o in (V.REPRODUCED, V.NOT_REPRODUCED,
                                                                     V.INCONCLUSIVE))
    assert V.combine("x", [r, r]) == V.REPRODUCED
    assert V.combine("x", [r, i]) == V.INCONCLUSIVE
    assert V.combine("x", [r, i, n]) == V.NOT_REPRODUCED
    assert V.combine("x", []) == V.INCONCLUSIVE


def test_bootstrap_refuses_a_statistic_that_is_mostly_undefined():
    assert all(math.isnan(x) for x in V.bootstrap([np.arange(2)], lambda s: math.nan if s[0] == s[1] else 1.0))
    lo, hi = V.bootstrap([np.arange(10.0)], lambda s: float(s.mean()))
    assert 2.5 < lo < 4.5 < 5.5 < hi < 6.5


def test_linear_fit_interval_covers_the_planted_slope():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 30)
    slope, se, lo, hi = V.linear_fit(x, 2.0 * x + rng.normal(0, 0.1, 30))
    assert lo < 2.0 < hi and se > 0 and abs(slope - 2) < 4 * se
    assert all(math.isnan(v) for v in V.linear_fit([1, 2], [1, 2]))


@pytest.mark.parametrize("power, expected", [(-1.0, V.REPRODUCED), (0.0, V.INCONCLUSIVE), (1.0, V.NOT_REPRODUCED)])
def test_gns_trend_of_a_planted_power_law(power, expected):
    rng = np.random.default_rng(4)
    loss = np.geomspace(2.0, 0.02, 20)
    b = 50 * loss ** power * np.exp(rng.normal(0, 0.3, 20))
    tr = _trend(b, loss)
    assert tr["n"] == 20 and tr["lo"] < tr["slope"] < tr["hi"]
    outcome = V.below("rises", "slope", tr["slope"], tr["lo"], tr["hi"], 0.0, "t", 1).outcome
    if power == 0.0:  # flat: the interval should straddle 0 (seeded, so this is not flaky)
        assert tr["lo"] < 0 < tr["hi"]
    assert outcome == expected
    if power == -1.0:  # a 100x fall in loss with slope -1 is a ~100x rise
        assert 30 < tr["rise"] < 300 and tr["rise_lo"] < tr["rise"] < tr["rise_hi"]


def smith_outcome(grow_shift, constant_shift, seeds=8):
    """The smith ratio test on planted curves: seed noise 0.01 per point (0.002 per seed), grow and the control
    offset from decay."""
    rng = np.random.default_rng(5)
    decay = 0.2 + rng.normal(0, 0.002, (seeds, 1)) + rng.normal(0, 0.01, (seeds, 50))
    grow = 0.2 + grow_shift + rng.normal(0, 0.002, (seeds, 1)) + rng.normal(0, 0.01, (seeds, 50))
    constant = 0.2 + constant_shift + rng.normal(0, 0.002, (seeds, 1)) + rng.normal(0, 0.01, (seeds, 50))
    idx = np.arange(seeds)
    ratio = lambda i: _between(decay, grow, i)  # noqa: E731
    control = lambda i: _between(decay, constant, i)  # noqa: E731
    same = V.below("same", "ratio", ratio(idx), *V.bootstrap([idx], ratio, resamples=400), 1.5, "b", seeds)
    power = V.above("power", "ratio", control(idx), *V.bootstrap([idx], control, resamples=400), 1.5, "b", seeds)
    return same.outcome, power.outcome


def test_smith_ratio_on_planted_curves():
    assert smith_outcome(0.0, 0.1) == (V.REPRODUCED, V.REPRODUCED)  # equivalent, and the control is resolved
    assert smith_outcome(0.1, 0.1)[0] == V.NOT_REPRODUCED  # grow differs by 10 seed-to-seed spreads
    assert smith_outcome(0.0, 0.0)[1] != V.REPRODUCED  # the control within noise: the test has no power


def test_momentum_ratio_interval_on_planted_steps():
    rng = np.random.default_rng(6)

    def cells(scale):  # three learning rates, the middle one best, 5 seeds of steps
        return [scale * f * np.exp(rng.normal(0, 0.1, 5)) for f in (1.5, 1.0, 1.3)]

    for mom_scale, expected in ((0.6, V.REPRODUCED), (1.0, V.INCONCLUSIVE), (1.6, V.NOT_REPRODUCED)):
        sgd, mom = cells(1000.0), cells(1000.0 * mom_scale)
        stat = lambda *g: tuned_steps(g[3:]) / tuned_steps(g[:3])  # noqa: E731
        lo, hi = V.bootstrap(sgd + mom, stat, resamples=400)
        assert V.below("fewer", "ratio", stat(*sgd, *mom), lo, hi, 1.0, "b", 5).outcome == expected
    assert tuned_steps([np.array([math.inf, math.inf, 5.0])]) != tuned_steps([np.array([5.0])])
    assert math.isnan(tuned_steps([np.array([math.inf, math.inf])]))


def test_below_with_an_equivalence_margin():
    margin = (1 / 1.1, 1.1)
    assert V.below("c", "r", 0.7, 0.6, 0.8, 1.0, "b", 5, equivalent=margin).outcome == V.REPRODUCED
    assert V.below("c", "r", 0.9, 0.85, 0.98, 1.0, "b", 5, equivalent=margin).outcome == V.REPRODUCED  # not all in
    # a real but small effect, or none, resolved within the margin: no effect worth having
    assert V.below("c", "r", 0.95, 0.92, 0.98, 1.0, "b", 5, equivalent=margin).outcome == V.NOT_REPRODUCED
    assert V.below("c", "r", 1.0, 0.95, 1.05, 1.0, "b", 5, equivalent=margin).outcome == V.NOT_REPRODUCED
    assert V.below("c", "r", 1.5, 1.2, 1.8, 1.0, "b", 5, equivalent=margin).outcome == V.NOT_REPRODUCED
    assert V.below("c", "r", 1.0, 0.8, 1.2, 1.0, "b", 5, equivalent=margin).outcome == V.INCONCLUSIVE
    # negative control: without the margin the same interval [0.95, 1.05] only straddles 1
    assert V.below("c", "r", 1.0, 0.95, 1.05, 1.0, "b", 5).outcome == V.INCONCLUSIVE
    assert "within [0.909, 1.1] (no effect worth having)" in V.below("c", "r", 1, 0, 2, 1.0, "b", 5,
                                                                     equivalent=margin).line()
    assert V.below("c", "r", 1.0, math.nan, math.nan, 1.0, "b", 5, equivalent=margin).outcome == V.INCONCLUSIVE


def test_any_of_and_simultaneous_level():
    r, n, i = (V.Verdict("c", "s", 1, 0, 2, "n", "r", 1, o) for o in (V.REPRODUCED, V.NOT_REPRODUCED,
                                                                     V.INCONCLUSIVE))
    assert V.any_of([n, i, r]) == V.REPRODUCED
    assert V.any_of([n, n]) == V.NOT_REPRODUCED
    assert V.any_of([n, i]) == V.INCONCLUSIVE
    assert V.any_of([]) == V.INCONCLUSIVE
    assert V.simultaneous_level(1) == pytest.approx(0.90) and V.simultaneous_level(4) == pytest.approx(0.975)
    # the widened interval is wider than the single one, from the same resamples
    x = np.random.default_rng(7).normal(0, 1, 12)
    lo90, hi90 = V.bootstrap([x], np.mean)
    lo, hi = V.bootstrap([x], np.mean, level=V.simultaneous_level(4))
    assert lo < lo90 < hi90 < hi


def planted_steps(median, spread, seeds):
    """Steps-to-target over seeds, log-normal with exactly the planted median and spread: the distribution's
    quantiles, so that the verdict judges the planted effect and not one unlucky draw."""
    from scipy import stats

    return median * np.exp(spread * stats.norm.ppf((np.arange(seeds) + 0.5) / seeds))


@pytest.mark.parametrize("factor, noise, seeds, expected", [
    (0.6, 0.1, 12, V.REPRODUCED),        # stratified 40% faster, seed noise 10%
    (1.0, 0.3, 6, V.INCONCLUSIVE),       # no effect, too few seeds to say "none worth having"
    (1.0, 0.03, 40, V.NOT_REPRODUCED),   # no effect, resolved within [0.91, 1.1]
    (1.6, 0.1, 12, V.NOT_REPRODUCED),    # stratified slower
])
def test_stratified_steps_ratio_on_planted_steps(factor, noise, seeds, expected):
    shuffled, stratified = planted_steps(1000, noise, seeds), planted_steps(1000 * factor, noise, seeds)[::-1]
    tests = judge(8, shuffled, stratified, {"margin": 1.1, "resamples": 1000}, k=4)
    assert tests["steps"].outcome == expected
    assert tests["steps"].value == pytest.approx(np.median(stratified) / np.median(shuffled))
    assert "97.5% bootstrap" in tests["steps"].line() and f"{seeds} seeds" in tests["steps"].line()


@pytest.mark.parametrize("spread, expected", [(0.1, V.REPRODUCED), (1.2, V.NOT_REPRODUCED),
                                              (0.4, V.INCONCLUSIVE)])  # the same spread: 12 seeds cannot tell
def test_stratified_spread_ratio_on_planted_spread(spread, expected):
    shuffled, stratified = planted_steps(1000, 0.4, 12), planted_steps(1000, spread, 12)
    assert judge(8, shuffled, stratified, {"margin": 1.1, "resamples": 1000}, k=4)["spread"].outcome == expected


def test_keskar_holds_the_retuning_verdict_while_its_gap_is_not_shown_and_says_why():
    from minigrad.experiments.keskar import closing_needs_a_gap

    def retune():
        return V.above("item 9: re-tuning closes most of the gap", "fraction closed", 1.85, 0.9, 2.6, 0.5, "n", 8)

    unresolved = V.above("item 9: a fixed budget hurts", "gap", 0.012, -0.018, 0.042, 0.0, "n", 8)
    held = closing_needs_a_gap(unresolved, retune())
    assert held.outcome == V.INCONCLUSIVE and "the gap it closes is inconclusive" in held.line()
    # negative control: with the gap shown, the interval above 0.5 stands, and the line adds nothing
    shown = V.above("item 9: a fixed budget hurts", "gap", 0.1, 0.09, 0.12, 0.0, "n", 8)
    kept = closing_needs_a_gap(shown, retune())
    assert kept.outcome == V.REPRODUCED and "held" not in kept.line()


def test_keskar_says_in_words_that_there_is_no_gap_to_close():
    from minigrad.experiments.keskar import closing_needs_a_gap

    no_gap = V.above("a fixed budget hurts", "gap", -0.004, -0.01, 0.002, 0.0, "n", 8)
    undefined = closing_needs_a_gap(no_gap, V.above("re-tuning closes most of the gap", "fraction of the gap closed",
                                                    math.nan, math.nan, math.nan, 0.5, "n", 8))
    line = undefined.line()
    assert undefined.outcome == V.INCONCLUSIVE and "nan" not in line and "no test-error gap to close" in line
    # negative control: a defined fraction keeps its numbers on the line
    defined = closing_needs_a_gap(no_gap, V.above("re-tuning", "fraction", 0.7, 0.6, 0.8, 0.5, "n", 8))
    assert "0.7 [0.6, 0.8]" in defined.line()


def test_smith_ratio_is_undefined_not_an_error_when_seeds_coincide():
    """Curves that coincide between seeds (a small validation set's discrete errors) leave no yardstick: the ratio
    is NaN, which the bootstrap drops, where it was a ZeroDivisionError shown as an internal error."""
    from minigrad.experiments.smith import _between

    same = np.tile(np.linspace(0.5, 0.1, 20), (3, 1))  # three seeds, one curve
    assert math.isnan(_between(same, same + 0.01, np.array([0, 1, 2])))
    lo, hi = V.bootstrap([np.arange(3)], lambda idx: _between(same, same + 0.01, idx), resamples=200)
    assert math.isnan(lo) and math.isnan(hi)  # undefined in every resample: no interval, said as such
    # negative control: seeds that differ give a finite ratio near 1 for one schedule against itself
    noisy = same + np.random.default_rng(0).normal(0, 0.01, same.shape)
    assert 0.5 < _between(noisy, noisy, np.array([0, 1, 2])) < 2
