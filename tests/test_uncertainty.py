"""The study's statistics and the adaptive phase: the fit's self-check, the bootstrap intervals, the tie set and its
stability, the interpolated learning rate, the adaptive rounds (deterministic, resumable, bounded) and the busy-machine
flag of the step-time measurement. Each check has a negative control that shows it can fail."""
import math

import numpy as np
import pytest

from minigrad.study import plan as S
from minigrad.study import uncertainty as U
from minigrad.study.config import make_config

BS = [1, 4, 16, 64, 256, 1024]


def model_cells(s_min=50.0, e_min=20_000.0, noise=0.1, seeds=5, lrs=(0.05, 0.1, 0.2), seed=0, steps=None):
    """{(B, lr): steps per seed} following S = S_min + E_min/B at the middle rate (the outer rates 30% slower),
    with relative seed noise."""
    rng = np.random.default_rng(seed)
    cells = {}
    for B in BS:
        S_B = steps(B) if steps else s_min + e_min / B
        for lr, slow in zip(lrs, (1.3, 1.0, 1.3)):
            cells[(B, lr)] = list(S_B * slow * np.exp(noise * rng.standard_normal(seeds)))
    return cells


def point(cells):
    best = U.best_steps(cells)
    Bs = sorted(best)
    return Bs, [best[B][0] for B in Bs]


# ---------------------------------------------------------------------------------------------------- fit check
def test_fit_check_passes_data_that_follow_the_model():
    Bs, steps = point(model_cells())
    check = U.check_fit(Bs, steps, U.fit_steps(Bs, steps))
    assert check["ok"], check["reason"]
    assert check["max_misfit"] < 1.3 and set(check["misfit"]) == set(Bs)


def test_fit_check_fires_when_steps_rise_with_batch_size():
    # a target too strict for large batches: S falls, then climbs 20 -> 88 (the digits case of issue #11)
    rising = {1: 8000.0, 4: 2100.0, 16: 560.0, 64: 160.0, 256: 20.0, 1024: 88.0}
    cells = model_cells(noise=0.0, seeds=1, steps=rising.get)
    Bs, steps = point(cells)
    check = U.check_fit(Bs, steps, U.fit_steps(Bs, steps))
    assert not check["ok"]
    assert "does not describe" in check["reason"] and "rises from 20 steps at B = 256 to 88 at B = 1024" in \
        check["reason"]
    assert check["max_misfit"] > 1.3


def test_fit_check_fires_when_large_batches_miss_the_target():
    # the fit over the batch sizes that reached the target is fine, but the larger ones never got there
    steps = [50 + 20_000 / B for B in BS[:4]] + [math.inf, math.inf]
    check = U.check_fit(BS, steps, U.fit_steps(BS, steps))
    assert not check["ok"] and "B = 256, 1024 did not reach the target" in check["reason"]
    # negative control: a small batch size that missed (its budget too short) is no rise with B
    steps = [math.inf] + [50 + 20_000 / B for B in BS[1:]]
    assert U.check_fit(BS, steps, U.fit_steps(BS, steps))["ok"]


def test_fit_check_fires_on_a_large_misfit_alone():
    # S ~ B^-0.5 falls everywhere but is no straight line in 1/B
    cells = model_cells(noise=0.0, seeds=1, steps=lambda B: 4000 / math.sqrt(B))
    Bs, steps = point(cells)
    check = U.check_fit(Bs, steps, U.fit_steps(Bs, steps))
    assert not check["ok"] and "largest misfit" in check["reason"] and "rises" not in check["reason"]


def test_fit_check_needs_three_batch_sizes():
    assert not U.check_fit([1, 2], [10.0, 5.0], (0.0, 10.0))["ok"]


# ---------------------------------------------------------------------------------------------------- intervals
def test_intervals_contain_the_point_estimate_and_bcrit_is_bracketed():
    cells = model_cells(noise=0.25, seeds=3, seed=3)
    draws = U.resample(cells, {B: [1e-3 * (1 + B / 64)] * 3 for B in BS})
    Bs, steps = point(cells)
    for j, s in enumerate(steps):
        box = U.interval(draws["S"][:, j], s)
        assert box["lo"] <= s <= box["hi"] and not box["degenerate"]
    s_min, e_min = U.fit_steps(Bs, steps)
    a, b = U.fit_resamples(Bs, draws["S"])
    crit = np.where((a > 0) & (b > 0), b / a, np.nan)
    box = U.interval(crit, e_min / s_min)
    assert box["lo"] <= e_min / s_min <= box["hi"] and box["lo"] < box["hi"]
    # the vectorised fit is the least-squares fit, resample by resample
    for k in range(5):
        assert (a[k], b[k]) == pytest.approx(U.fit_steps(Bs, draws["S"][k]), rel=1e-9)


def test_interval_is_called_degenerate_with_one_seed_and_widened_when_it_misses():
    cells = model_cells(noise=0.2, seeds=1)
    draws = U.resample(cells, {})
    box = U.interval(draws["S"][:, 0], point(cells)[1][0])
    assert box["degenerate"] and "degenerate" in box["note"]
    # negative control: a point outside the draws is not silently left outside
    box = U.interval([1.0, 2.0, 3.0, 2.5], 10.0)
    assert box["hi"] == 10.0 and "widened" in box["note"]
    assert not U.interval([1.0, 2.0, 3.0], 2.0)["note"]


# ---------------------------------------------------------------------------------------------------- tie set
def tie_cells(gap, noise=0.05, seeds=6):
    """Steps at B = 16 and B = 64 such that T(64) = (1 + gap) T(16), and B = 256 clearly worse (2x)."""
    times = {16: [1e-3] * 3, 64: [2e-3] * 3, 256: [8e-3] * 3}
    target_T = {16: 1.0, 64: 1.0 + gap, 256: 2.0}
    rng = np.random.default_rng(7)
    cells = {(B, 0.1): list(target_T[B] / times[B][0] * np.exp(noise * rng.standard_normal(seeds))) for B in times}
    return cells, times


def test_tie_set_holds_a_planted_near_equal_batch_size_and_not_a_clearly_worse_one():
    cells, times = tie_cells(gap=0.02)
    tied = U.tie_set(cells, times)
    assert tied == [16, 64]
    # negative control: the same batch size made 40% slower drops out
    cells, times = tie_cells(gap=0.4)
    assert U.tie_set(cells, times) == [16]


def test_win_fractions_add_up_and_follow_the_data():
    cells, times = tie_cells(gap=0.0, noise=0.1)
    cells[(64, 0.1)] = [v / 2 for v in cells[(16, 0.1)]]  # the same seeds' spread, the same time-to-target
    draws = U.resample(cells, times)
    wins, near, tied = U.choice(draws["T"], draws["batch_sizes"])
    assert sum(wins.values()) == pytest.approx(1.0)
    assert 0.2 < wins[16] < 0.8 and 0.2 < wins[64] < 0.8 and wins[256] == 0


def test_stability_is_high_for_clear_data_and_low_for_a_coin_flip():
    cells, times = tie_cells(gap=0.4, noise=0.02)
    assert U.stability(cells, times, [16]) == 1.0
    cells, times = tie_cells(gap=0.25, noise=0.15, seeds=3)  # B = 64 on the edge of the tie set
    tied = U.tie_set(cells, times)
    assert U.stability(cells, times, tied) < 0.8


# ------------------------------------------------------------------------------------------- interpolated rate
def test_interpolated_lr_finds_the_vertex_of_a_parabola_in_log_lr():
    lrs = [0.025, 0.05, 0.1, 0.2, 0.4]
    vertex = 0.13
    cells = {(8, lr): [100 * math.exp((math.log(lr) - math.log(vertex)) ** 2)] for lr in lrs}
    assert U.interpolated_lr(cells, 8) == pytest.approx(vertex, rel=1e-6)
    # negative controls: the best at the grid's edge, or a missed neighbour, keep the measured rate
    edge = {(8, lr): [1000 / lr] for lr in lrs}
    assert U.interpolated_lr(edge, 8) == 0.4
    cells[(8, 0.2)] = [math.inf]
    assert U.interpolated_lr(cells, 8) == 0.1


# ----------------------------------------------------------------------------------------------- adaptive phase
def results_from(cells, phase="tune"):
    out = []
    for (B, lr), steps in cells.items():
        for seed, s in enumerate(steps):
            out.append(dict(run_id=S.trial(phase, B, lr, seed, 0.1).run_id, phase=phase, batch_size=B, lr=lr,
                            seed=seed, status="COMPLETE", steps_to_target=int(s), best_val_error=0.05))
    return out


def run_round(specs, truth, rng):
    """Results of adaptive trials drawn from `truth` {B: mean steps at the middle rate} with 15% noise."""
    rows = []
    for t in specs:
        s = truth[t.batch_size] * (1 + 3 * abs(math.log(t.lr / 0.1))) * math.exp(0.15 * rng.standard_normal())
        rows.append(dict(S.result_row(t.run_id, dict(vars(t), status="COMPLETE", steps_to_target=int(s),
                                                       best_val_error=0.05), {})))
    return rows


def test_adaptive_rounds_add_trials_near_the_tie_set_and_stop_within_budget():
    config = make_config(batch_sizes=[16, 64, 256], seeds=3, adaptive_budget=30)
    cells, times = tie_cells(gap=0.1, noise=0.15, seeds=3)  # the pick's stated regret 7%: above the goal
    for (B, lr) in list(cells):
        cells[(B, 0.05)] = [v * 1.5 for v in cells[(B, lr)]]
        cells[(B, 0.2)] = [v * 1.5 for v in cells[(B, lr)]]
    results = results_from(cells)
    truth = {B: np.median(v) for (B, lr), v in cells.items() if lr == 0.1}
    rng = np.random.default_rng(0)
    specs, state = S.adaptive_trials(config, results, 0.1, (100, 3200), times)
    assert specs and state.startswith("round 1")
    assert all(t.phase == "adapt" and t.run_id.endswith("-r1") for t in specs)
    assert {t.batch_size for t in specs} <= {16, 64, 256}
    assert {round(t.lr, 4) for t in specs} >= {0.0707, 0.1414}  # halfway to the neighbours in log lr
    # deterministic: the same results plan the same round; a partial round resumes the same trials
    assert [t.run_id for t in S.adaptive_trials(config, results, 0.1, (100, 3200), times)[0]] == \
        [t.run_id for t in specs]
    partial = results + run_round(specs[:3], truth, rng)
    assert [t.run_id for t in S.adaptive_trials(config, partial, 0.1, (100, 3200), times)[0]] == \
        [t.run_id for t in specs]
    # run rounds until it stops: never beyond the budget, and it says why it stopped
    spent = 0
    for _ in range(40):
        specs, state = S.adaptive_trials(config, results, 0.1, (100, 3200), times)
        if not specs:
            break
        new = [t for t in specs if t.run_id not in {r["run_id"] for r in results}]
        results += run_round(new, truth, rng)
        spent += len(new)
    assert not specs and spent <= 30
    assert "stopped" in state and ("within the goal" in state or "budget" in state)
    assert len({r["run_id"] for r in results}) == len(results)


def test_adaptive_plan_does_not_depend_on_the_order_results_arrived_in():
    # a resumed study reads its results in file order, a running one in completion order: the same numbers either way
    config = make_config(batch_sizes=[16, 64, 256], seeds=3, adaptive_budget=30)
    cells, times = tie_cells(gap=0.15, noise=0.15, seeds=3)  # a stated regret of 11%: a round to plan
    results = results_from(cells)
    orders = (results, results[::-1], results[1::2] + results[::2])
    stabilities = {U.stability(S.steps_per_cell(order, S.TUNED), times, [16, 64]) for order in orders}
    assert len(stabilities) == 1
    plans = {tuple(t.run_id for t in S.adaptive_trials(config, order, 0.1, (100, 3200), times)[0])
             for order in orders}
    assert len(plans) == 1 and next(iter(plans))


def test_adaptive_phase_runs_nothing_when_the_regret_is_already_within_the_goal():
    config = make_config(batch_sizes=[16, 64, 256], seeds=3)
    cells, times = tie_cells(gap=0.5, noise=0.01, seeds=3)
    specs, state = S.adaptive_trials(config, results_from(cells), 0.1, (100, 3200), times)
    assert specs == [] and "0 extra trials" in state and "within the goal of 5%" in state
    # negative control: a budget of zero stops a noisy study (stated regret 11%) and says so
    cells, times = tie_cells(gap=0.15, noise=0.15, seeds=3)
    specs, state = S.adaptive_trials(make_config(batch_sizes=[16, 64, 256], seeds=3, adaptive_budget=0),
                                     results_from(cells), 0.1, (100, 3200), times)
    assert specs == [] and "budget" in state


# -------------------------------------------------------------------------------------------- busy machine flag
class FakeModel:
    def check_batch(self, X, y):
        pass

    def train_step_trusted(self, X, y, opt):
        pass


def fake_timer(round_medians):
    """A stand-in for timing.time_calls returning the given per-round samples in turn (warm-up first)."""
    calls = iter([[1.0]] + [[m] * 4 for m in round_medians])
    return lambda *a, **k: next(calls)


def test_busy_rows_are_remeasured_and_flagged(monkeypatch):
    from minigrad.profile import throughput

    monkeypatch.setattr(throughput, "time_calls", fake_timer([1e-3, 1e-3, 1.02e-3]))
    row = throughput._time_step(FakeModel(), None, None, None, None, 0.3, 5)
    assert row["busy"] == 0 and row["remeasured"] == 0 and len(row["rounds_s"].split()) == 3
    # rounds 60% apart: remeasured; still bad -> flagged, with a one-line note
    monkeypatch.setattr(throughput, "time_calls", fake_timer([1e-3, 1.6e-3, 1e-3, 1e-3, 1.7e-3, 1e-3]))
    row = throughput._time_step(FakeModel(), None, None, None, None, 0.3, 5)
    assert row["busy"] == 1 and row["remeasured"] == 1 and "apart" in row["busy_reason"]
    assert "machine was busy" in throughput.busy_note([dict(row, batch_size=8)])
    # bad once, fine the second time: kept, not flagged
    monkeypatch.setattr(throughput, "time_calls", fake_timer([1e-3, 1.6e-3, 1e-3, 1e-3, 1e-3, 1e-3]))
    row = throughput._time_step(FakeModel(), None, None, None, None, 0.3, 5)
    assert row["busy"] == 0 and row["remeasured"] == 1 and row["step_time_s"] == 1e-3
    # faster than the GEMM ceiling allows (1 GFLOP in 1 ms = 1000 GFLOP/s against a 100 GFLOP/s ceiling)
    monkeypatch.setattr(throughput, "time_calls", fake_timer([1e-3] * 6))
    row = throughput._time_step(FakeModel(), None, None, None, None, 0.3, 5, ceiling=100.0, flops=1e9)
    assert row["busy"] == 1 and "ceiling" in row["busy_reason"]
    assert throughput.busy_note([dict(row, busy=0)]) is None


def test_fixed_repeats_are_split_over_the_rounds_exactly():
    from minigrad.profile import throughput

    assert throughput._rounds(None) == [None] * throughput.ROUNDS
    for n in (1, 2, 3, 7, 100):
        assert sum(throughput._rounds(n)) == n


# --------------------------------------------------------------------------- what following the pick can cost
def test_regret_is_the_picks_quantile_of_its_ratio_to_each_resamples_fastest():
    rng = np.random.default_rng(0)
    # B = 16 is fastest; B = 32 is 3% slower on average with noise; B = 64 is 30% slower
    base = 1.0 + 0.02 * rng.standard_normal((400, 1))
    T = np.hstack([base * 1.0, base * (1.03 + 0.02 * rng.standard_normal((400, 1))), base * 1.3])
    r16, r32 = U.regret(T, [16, 32, 64], 16), U.regret(T, [16, 32, 64], 32)
    assert 0 <= r16 < 0.02 and 0.03 < r32 < 0.08 and U.regret(T, [16, 32, 64], 64) > 0.25
    assert U.flat_range(T, [16, 32, 64], 16) == [16, 32]  # 64 is 30% off: outside the 10% band


def test_negative_control_a_sharp_optimum_has_no_flat_range():
    T = np.tile([2.0, 1.0, 2.0], (100, 1))
    assert U.flat_range(T, [8, 16, 32], 16) == [16] and U.regret(T, [8, 16, 32], 8) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- the regret, calibrated
def test_the_stated_regret_holds_the_true_one_in_90_percent_of_small_studies():
    """Many studies of a known flat T(B) (16: 1.0, 32: 1.05, 64: 1.1, 128: 1.3), 15% seed noise: the true regret
    of each study's pick is within the regret it states in about 90% of them. Negative control: the seed bootstrap
    alone, at two seeds, holds it in fewer (its medians of two seeds can take three values only)."""
    truth = {16: 1.0, 32: 1.05, 64: 1.1, 128: 1.3}
    times = {B: np.array([1e-3 * B**0.5] * 3) for B in truth}
    held = {}
    for n in (2, 3, 5):
        rng = np.random.default_rng(n)
        stated = boot = 0
        for _ in range(150):
            cells = {(B, 0.1): list(truth[B] / times[B][0] * np.exp(0.15 * rng.standard_normal(n))) for B in truth}
            pick, tied, regret = U.answer_regret(cells, times)
            draws, _, _ = U.judged(cells, times)  # the draws the answer is chosen on
            true = truth[pick] / min(truth.values()) - 1
            stated += true <= regret + 1e-12
            boot += true <= U.regret(draws["T"], draws["batch_sizes"], pick) + 1e-12
            assert regret >= U.regret(draws["T"], draws["batch_sizes"], pick)  # never less than the bootstrap's
        held[n] = (boot / 150, stated / 150)
    assert all(stated >= 0.87 for _, stated in held.values()), held
    assert held[2][0] < 0.82 < held[2][1], held


CURVE_BS = (4, 8, 16, 32, 64, 128)


def curve_study(rng, seeds, noise=0.15, off=None):
    """Cells whose true S(B) = 200 + 40,000/B, one rate, seeds spread by `noise` in log steps; off: {B: factor} moves
    a batch size off the curve. With the step times T(B) is fastest at 64, 7% slower at 128 and 12% at 32."""
    truth = {B: (200 + 40_000 / B) * (off or {}).get(B, 1.0) for B in CURVE_BS}
    times = {B: np.array([1e-4 * (1 + B / 24)] * 3) for B in CURVE_BS}
    cells = {(B, 0.1): list(truth[B] * np.exp(noise * rng.standard_normal(seeds))) for B in CURVE_BS}
    T = {B: truth[B] * times[B][0] for B in CURVE_BS}
    return cells, times, {B: v / min(T.values()) - 1 for B, v in T.items()}


def test_neighbours_share_strength_where_the_curve_holds():
    """Many 5-seed studies of S(B) on the curve S_min + E_min/B: the pick judged with the fit (toward_fit) is
    within 5% of the fastest far more often than each batch size judged alone (the negative control), and the
    weights left on the points' own values are small."""
    rng = np.random.default_rng(11)
    shared = alone = 0
    for _ in range(60):
        cells, times, regret = curve_study(rng, seeds=5)
        pick, _, _ = U.answer_regret(cells, times)
        draws = U.resample(cells, times)
        wins, _, tied = U.choice(draws["T"], draws["batch_sizes"])
        raw = {B: s * times[B][0] for B, (s, _) in U.best_steps(cells).items()}
        own_pick = U.pick_of(U.tie_range(tied, draws["batch_sizes"], min(raw, key=raw.get)), wins, raw)
        shared += regret[pick] <= 0.05
        alone += regret[own_pick] <= 0.05
    assert shared >= 48 and shared >= alone + 10, (shared, alone)  # 52 and 36 of 60 here
    _, _, own = U.toward_fit(U.resample(cells, times), cells)
    assert max(own.values()) < 0.5, own


def test_a_batch_size_truly_off_the_curve_keeps_its_own_value():
    """A real dip (B = 16 needs 0.6x the curve's steps, seeds 3% apart) is a fact, not noise: its weight stays near
    1 and the pick finds it. Negative control: the same dip at 15% seed noise among 2 seeds would be noise-sized."""
    rng = np.random.default_rng(5)
    cells, times, regret = curve_study(rng, seeds=5, noise=0.03, off={16: 0.6})
    _, _, own = U.toward_fit(U.resample(cells, times), cells)
    assert own[16] > 0.9, own
    assert U.answer_regret(cells, times)[0] == 16 == min(regret, key=regret.get)
    cells, times, _ = curve_study(rng, seeds=5, noise=0.03)
    _, _, own = U.toward_fit(U.resample(cells, times), cells)
    assert max(own.values()) < 0.5, own  # on the curve, the same precision shares


def test_sharing_needs_three_batch_sizes_and_a_pooled_spread():
    cells = {(16, 0.1): [100.0, 110.0], (32, 0.1): [60.0, 66.0]}
    draws = U.resample(cells, {})
    same, _, own = U.toward_fit(draws, cells)
    assert same is draws and set(own.values()) == {1.0}
    cells = {(B, 0.1): [1000.0 / B] for B in (8, 16, 32, 64)}  # one seed each: no spread to pool
    draws = U.resample(cells, {})
    assert U.toward_fit(draws, cells)[0] is draws


def test_pooled_sigma_is_the_seeds_spread_shared_by_the_best_cells():
    rng = np.random.default_rng(3)
    cells = {(B, 0.1): list(1000 / B * np.exp(0.2 * rng.standard_normal(5))) for B in (4, 8, 16, 32, 64, 128, 256)}
    cells.update({(B, 0.4): list(3000 / B * np.exp(1.0 * rng.standard_normal(5))) for B in (4, 16, 64)})
    assert 0.15 < U.pooled_sigma(cells) < 0.25  # 28 degrees of freedom; the wide worse cells left out
    cells[(4, 0.1)] = [250.0, 260.0, math.inf, 240.0, 250.0]  # a missed seed leaves four
    assert math.isfinite(U.pooled_sigma(cells))
    assert math.isnan(U.pooled_sigma({(4, 0.1): [5.0], (8, 0.1): [3.0, math.inf, math.inf]}))
    # negative control: pooled over every cell, the worse cells' wide spread would count
    everything = math.sqrt(sum(((np.log(v) - np.log(v).mean()) ** 2).sum() for k, v in cells.items()
                               if all(map(math.isfinite, v))) / sum(len(v) - 1 for v in cells.values()
                                                                    if all(map(math.isfinite, v))))
    assert everything > 0.3


def test_the_tie_set_is_a_range_around_the_fastest():
    Bs = [4, 8, 16, 32, 64, 128]
    assert U.tie_range([4, 16, 32, 128], Bs, 32) == [16, 32]
    assert U.tie_range([], Bs, 8) == [8]
    assert U.tie_range(Bs, Bs, 128) == Bs
    # negative control: without the range a lone tied B away from the fastest stays in the set
    assert [B for B in Bs if B in {4, 16, 32, 128}] != U.tie_range([4, 16, 32, 128], Bs, 32)
