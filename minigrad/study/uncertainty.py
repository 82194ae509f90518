"""The study's statistics: S(B), the fit S = S_min + E_min/B and its self-check, and a bootstrap that carries the
seeds of every (B, lr) cell and the repeated step-time measurements through best-lr choice, S(B), the fit, B_crit,
T(B) = S(B) t(B) and the choice of batch size. Plain NumPy on plain dicts (no engine, no files): the planner uses it
to decide where extra trials change the answer.

    cells  {(B, lr): [steps to target per seed]}, a seed that missed the target counted as infinitely many steps
    times  {B: [step time per measurement round]} (seconds); a B without times has T(B) = nan

Point estimates use all the data; intervals are percentiles of the resamples (INTERVAL), widened to include the
point estimate if they miss it (said in `note`), and called degenerate when every resample gives the same value.
"""
import math

import numpy as np

REPS = 400               # bootstrap resamples
INTERVAL = (5.0, 95.0)   # percentile interval
NEAR_TIE = 0.05          # a resample's batch sizes within 5% of its fastest time-to-target are near its best
TIE_FRACTION = 0.10      # tied: near the best in at least this fraction of resamples
MISFIT_LIMIT = 1.3       # the fit describes the data when every S(B) is within 1.3x of it (expectation 1 of docs/science.md)


# ---------------------------------------------------------------------------------------------- point estimates
def fit_steps(batch_sizes, steps):
    """Least squares of S = S_min + E_min / B in relative error (each point weighted by 1/S, so small and large
    counts matter alike). Returns (S_min, E_min) or None with fewer than two finite points."""
    B, s = np.asarray(batch_sizes, float), np.asarray(steps, float)
    ok = np.isfinite(s) & (s > 0)  # zero steps (a level met before training) has no relative error
    if ok.sum() < 2:
        return None
    B, s = B[ok], s[ok]
    A = np.stack([np.ones_like(B), 1.0 / B], axis=1) / s[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(A, np.ones_like(s), rcond=None)
    return float(s_min), float(e_min)


def best_steps(cells):
    """{B: (S(B), best lr)}: the fewest median steps over learning rates (the smaller rate on a tie); (inf, None)
    when every rate missed."""
    out = {}
    for (B, lr), v in sorted(cells.items()):
        steps = float(np.median(v))
        if B not in out or steps < out[B][0]:
            out[B] = (steps, lr if math.isfinite(steps) else None)
    return out


def interpolated_lr(cells, batch_size):
    """The tuned rate of one B off the grid: the vertex of a quadratic in log lr through log(median steps) at the
    best rate and its two neighbours, kept between those neighbours; the best rate itself at an edge of the grid,
    next to a missed rate, or where the three points do not curve upwards."""
    medians = sorted((lr, float(np.median(v))) for (B, lr), v in cells.items() if B == batch_size)
    finite = [(lr, s) for lr, s in medians if math.isfinite(s)]
    if not finite:
        return None
    i = min(range(len(medians)), key=lambda k: (medians[k][1], medians[k][0]))
    if i == 0 or i == len(medians) - 1 or not all(math.isfinite(medians[k][1]) for k in (i - 1, i, i + 1)):
        return medians[i][0]
    x = np.log([medians[k][0] for k in (i - 1, i, i + 1)])
    y = np.log([medians[k][1] for k in (i - 1, i, i + 1)])
    a, b, _ = np.polyfit(x, y, 2)
    if a <= 0:
        return medians[i][0]
    return float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))


def check_fit(batch_sizes, steps, params):
    """Whether S = S_min + E_min/B describes the data: {misfit per B, max_misfit, ok, reason}. It does not when
    fewer than three batch sizes reached the target, when S_min or E_min come out <= 0, when a point is more than
    MISFIT_LIMIT off the curve, or when S rises with B by more than MISFIT_LIMIT or to infinity (a larger batch size
    missed the target that a smaller one reached): the model only falls."""
    B = [b for b, s in zip(batch_sizes, steps) if math.isfinite(s)]
    S = [s for s in steps if math.isfinite(s)]
    misfit = {b: math.nan for b in batch_sizes}
    if params is None or len(B) < 3:
        return dict(misfit=misfit, max_misfit=math.nan, ok=False,
                    reason=f"only {len(B)} batch size(s) reached the target: too few to check S = S_min + E_min/B")
    s_min, e_min = params
    missed = [b for b, s in zip(batch_sizes, steps) if not math.isfinite(s) and b > min(B)]
    for b, s in zip(B, S):
        model = s_min + e_min / b
        misfit[b] = max(s / model, model / s) if model > 0 else math.inf
    worst = max(B, key=lambda b: misfit[b])
    rise = max(((S[j] / min(S[:j]), B[S.index(min(S[:j]))], B[j]) for j in range(1, len(S))), default=(1, 0, 0))
    reasons = []
    if missed:
        below = [b for b in B if b < missed[0]]
        reasons.append(f"B = {', '.join(map(str, missed))} did not reach the target within the budget while B = "
                       f"{below[0]}{f' to {below[-1]}' if len(below) > 1 else ''} did, so S rises with B (the target is too strict for large batches within their "
                       "budget)")
    if rise[0] > MISFIT_LIMIT:
        low, high = rise[1], rise[2]
        reasons.append(f"S rises from {S[B.index(low)]:,.0f} steps at B = {low} to {S[B.index(high)]:,.0f} at "
                       f"B = {high}, while the model only falls with B (often the target is too strict for large "
                       "batches within their budget)")
    if misfit[worst] > MISFIT_LIMIT:
        reasons.append(f"the largest misfit is {misfit[worst]:.2f}x at B = {worst} (limit {MISFIT_LIMIT}x)")
    if s_min <= 0 or e_min <= 0:
        reasons.append(f"the fit needs S_min = {s_min:,.1f} and E_min = {e_min:,.0f}, and both must be positive")
    ok = not reasons
    return dict(misfit=misfit, max_misfit=float(misfit[worst]), ok=ok,
                reason="S = S_min + E_min/B fits every batch size within "
                       f"{MISFIT_LIMIT}x" if ok else "S = S_min + E_min/B does not describe these data: "
                       + "; ".join(reasons))


# ------------------------------------------------------------------------------------------ the fit of the rows
def fit_with_check(rows, draws):
    """The fit of S(B), its self-check (misfit per B written into rows), and B_crit with its bootstrap interval."""
    Bs, steps = [r["batch_size"] for r in rows], [r["steps"] for r in rows]
    params = fit_steps(Bs, steps)
    check = check_fit(Bs, steps, params)
    for r in rows:
        r["misfit"] = check["misfit"][r["batch_size"]]
        r["fit_steps"] = params[0] + params[1] / r["batch_size"] if params else math.nan
    fit = dict(ok=check["ok"], reason=check["reason"], max_ratio=check["max_misfit"], determined=False,
               B_crit=math.nan, B_crit_lo=math.nan, B_crit_hi=math.nan, B_crit_note="")
    if params is None:
        return dict(fit, S_min=math.nan, E_min=math.nan, B_crit_note="not determined: " + check["reason"])
    s_min, e_min = params
    fit.update(S_min=s_min, E_min=e_min)
    if s_min > 0 and e_min > 0:
        fit["B_crit"] = e_min / s_min
    a, b = fit_resamples(draws["batch_sizes"], draws["S"])
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = np.where((a > 0) & (b > 0), b / a, np.nan)
    spread = interval(crit, fit["B_crit"])
    fit.update(B_crit_lo=spread["lo"], B_crit_hi=spread["hi"], B_crit_degenerate=spread["degenerate"],
               B_crit_resamples=float(np.isfinite(crit).mean()))
    if not check["ok"]:
        fit["B_crit_note"] = "not determined: the fit does not describe the data"
    elif not math.isfinite(fit["B_crit"]):
        fit["B_crit_note"] = "not determined: the fit has no positive S_min and E_min"
    else:
        fit["determined"] = True
        notes = [spread["note"]] if spread["note"] else []
        if not min(Bs) <= fit["B_crit"] <= max(Bs):
            notes.append(f"outside the measured batch sizes {min(Bs)} to {max(Bs)}: an extrapolation")
        fit["B_crit_note"] = "; ".join(notes)
    return fit


# ---------------------------------------------------------------------------------------------------- bootstrap
def _median_resamples(values, reps, rng):
    """(reps,) medians of `values` resampled with replacement (inf allowed: a missed seed)."""
    v = np.asarray(values, float)
    return np.median(v[rng.integers(0, len(v), size=(reps, len(v)))], axis=1)


def resample(cells, times, reps=REPS, seed=0):
    """Bootstrap draws, (reps, n_B) arrays over the sorted batch sizes: S (steps), lr (best rate), t (step time),
    T = S * t. Seeds are resampled within each (B, lr) cell and the best rate re-chosen in every resample."""
    rng = np.random.default_rng(seed)
    Bs = sorted({B for B, _ in cells})
    S = np.full((reps, len(Bs)), np.inf)
    lr = np.full((reps, len(Bs)), np.nan)
    for (B, rate), v in sorted(cells.items()):
        m = _median_resamples(v, reps, rng)
        j = Bs.index(B)
        better = m < S[:, j]  # strict: on a tie the smaller rate (sorted first) stays
        S[better, j], lr[better, j] = m[better], rate
    t = np.full((reps, len(Bs)), np.nan)
    for j, B in enumerate(Bs):
        if len(times.get(B, ())):
            t[:, j] = _median_resamples(times[B], reps, rng)
    return dict(batch_sizes=Bs, S=S, lr=lr, t=t, T=S * t)


def fit_resamples(Bs, S):
    """(S_min, E_min) per resample, (reps,) each: fit_steps vectorised by the 2x2 normal equations of the weighted
    least squares (points that missed left out; nan with fewer than two)."""
    x = 1.0 / np.asarray(Bs, float)
    ok = np.isfinite(S) & (S > 0)
    u = np.where(ok, 1.0 / np.where(ok, S, 1.0), 0.0)  # 1/S: row weights
    v = u * x
    suu, suv, svv = (u * u).sum(1), (u * v).sum(1), (v * v).sum(1)
    det = suu * svv - suv**2
    good = (ok.sum(1) >= 2) & (np.abs(det) > 1e-12 * suu * svv)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_min = np.where(good, (svv * u.sum(1) - suv * v.sum(1)) / det, np.nan)
        e_min = np.where(good, (suu * v.sum(1) - suv * u.sum(1)) / det, np.nan)
    return s_min, e_min


def interval(draws, point):
    """{lo, hi, degenerate, note} of the finite draws' percentile interval, widened to include `point`."""
    draws = np.asarray(draws, float)
    finite = draws[~np.isnan(draws)]
    if not len(finite) or not math.isfinite(point):
        return dict(lo=math.nan, hi=math.nan, degenerate=True, note="no interval: nothing to resample")
    lo, hi = (float(np.percentile(finite, q, method="nearest")) for q in INTERVAL)
    if hi - lo <= 1e-9 * abs(point):  # the same value up to rounding (a vectorised refit of the same numbers)
        lo = hi = point
    note = ""
    if not lo <= point <= hi:
        lo, hi = min(lo, point), max(hi, point)
        note = "widened to include the estimate"
    if lo == hi:
        return dict(lo=lo, hi=hi, degenerate=True, note="degenerate: every resample gives the same value (too few "
                                                             "seeds or measurements to resample)")
    return dict(lo=lo, hi=hi, degenerate=False, note=note)


def choice(T, Bs, near=NEAR_TIE):
    """From (reps, n_B) times-to-target: win fraction per B (fastest in a resample), near fraction (within `near`
    of that resample's fastest), and the tie set {B: near in >= TIE_FRACTION of resamples}."""
    T = np.where(np.isnan(T), np.inf, T)
    fastest = T.min(axis=1)
    counted = np.isfinite(fastest)
    reps = max(int(counted.sum()), 1)
    winner = np.argmin(T[counted], axis=1)
    wins = {B: float((winner == j).sum() / reps) for j, B in enumerate(Bs)}
    near_hits = T[counted] <= (1 + near) * fastest[counted, None]
    near_frac = {B: float(near_hits[:, j].sum() / reps) for j, B in enumerate(Bs)}
    tied = [B for B in Bs if near_frac[B] >= TIE_FRACTION]
    return wins, near_frac, tied


REGRET_QUANTILE = 0.9   # the pick's regret is stated for this fraction of resamples
FLAT_TOLERANCE = 0.10   # batch sizes within this of the fastest (median over resamples) are "as good"


def regret(T, Bs, pick, quantile=REGRET_QUANTILE):
    """How much slower following `pick` is than each resample's fastest batch size: the `quantile` of
    T(pick)/min_B T - 1 over resamples (nan without resamples that have a finite fastest)."""
    T = np.where(np.isnan(T), np.inf, T)
    fastest = T.min(axis=1)
    ok = np.isfinite(fastest) & (fastest > 0)
    if not ok.any():
        return math.nan
    ratio = T[ok, Bs.index(pick)] / fastest[ok]
    return float(np.quantile(ratio, quantile) - 1) if np.isfinite(ratio).all() else math.inf


MEDIAN_SD = math.sqrt(math.pi / 2)  # the median of n normal draws spreads about this times sigma / sqrt(n)


def pooled_sigma(cells):
    """The seeds' spread in log steps, pooled over each batch size's best cell (the one whose median is S(B)) with
    two or more seeds that reached the target, each cell's own mean removed, divided by the degrees of freedom
    left: nan when no such cell has two. The best cells only: their spread is S(B)'s noise, and censoring (which
    cuts slow seeds of other rates) leaves them as they were."""
    ss, dof = 0.0, 0
    for B, (_, lr) in best_steps(cells).items():
        if lr is None:
            continue
        logs = np.log([x for x in cells[(B, lr)] if math.isfinite(x) and x > 0])
        if len(logs) >= 2:
            ss += float(((logs - logs.mean()) ** 2).sum())
            dof += len(logs) - 1
    return math.sqrt(ss / dof) if dof else math.nan


def pooled_regret(cells, times, pick, reps=REPS, seed=0, quantile=REGRET_QUANTILE):
    """The pick's regret with every batch size's S(B) drawn around its point estimate with the spread the seeds of
    the best cells share (pooled_sigma, times MEDIAN_SD / sqrt(seeds of its best cell)), its step time resampled as
    in `resample`. With two or three seeds a cell's own bootstrap can barely vary (its median takes two or three
    values), so alone it states a regret near 0 for batch sizes 15% apart; the pooled spread is estimated from
    every batch size's seeds at once. nan without a pooled spread."""
    sigma = pooled_sigma(cells)
    best = best_steps(cells)
    Bs = sorted(best)
    if not math.isfinite(sigma) or pick not in best:
        return math.nan
    rng = np.random.default_rng(seed)
    logS = np.full((reps, len(Bs)), np.inf)
    for j, B in enumerate(Bs):
        steps, lr = best[B]
        if math.isfinite(steps) and steps > 0:
            n = sum(math.isfinite(x) for x in cells[(B, lr)])
            logS[:, j] = math.log(steps) + sigma * MEDIAN_SD / math.sqrt(max(n, 1)) * rng.standard_normal(reps)
    t = np.ones((reps, len(Bs)))
    for j, B in enumerate(Bs):
        if len(times.get(B, ())):
            t[:, j] = _median_resamples(times[B], reps, rng)
    return regret(np.exp(logS) * t, Bs, pick, quantile)


def stated_regret(T, Bs, pick, cells, times):
    """The regret the answer states and the adaptive phase stops on: the larger of the seed bootstrap's (`regret`
    over the draws T) and the pooled spread's (pooled_regret), so that a study of few seeds is not overconfident
    (bench/calibration.py measures both against many-seed references)."""
    boot = regret(T, Bs, pick)
    pooled = pooled_regret(cells, times, pick)
    return boot if not math.isfinite(pooled) else max(boot, pooled)


def flat_range(T, Bs, pick, tolerance=FLAT_TOLERANCE):
    """The run of neighbouring batch sizes around `pick` whose time-to-target is within `tolerance` of the
    fastest in the median resample: where T(B) is flat, any of them is as good an answer."""
    T = np.where(np.isnan(T), np.inf, T)
    fastest = T.min(axis=1)
    ok = np.isfinite(fastest) & (fastest > 0)
    if not ok.any():
        return [pick]
    good = [bool(np.median(T[ok, j] / fastest[ok]) <= 1 + tolerance) for j in range(len(Bs))]
    i = Bs.index(pick)
    lo, hi = i, i
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < len(Bs) - 1 and good[hi + 1]:
        hi += 1
    return Bs[lo:hi + 1]


def tie_range(tied, Bs, anchor):
    """The run of neighbouring batch sizes of `tied` around `anchor` (always in it): where T(B) is flat within
    noise. A batch size tied alone, away from the run (a step-time bump, a lucky cell), is left out: judged one B
    at a time such holes appear by chance, and a range is what a user can act on."""
    good = set(tied) | {anchor}
    i = Bs.index(anchor)
    lo, hi = i, i
    while lo > 0 and Bs[lo - 1] in good:
        lo -= 1
    while hi < len(Bs) - 1 and Bs[hi + 1] in good:
        hi += 1
    return Bs[lo:hi + 1]


def pick_of(tied, wins, steps):
    """The member of the tie set that wins the most resamples (fewer steps on an equal count)."""
    return max(tied, key=lambda B: (wins[B], -steps[B]))


def tie_set(cells, times, reps=REPS, seed=0):
    """The batch sizes tied with the fastest within noise, judged as the answer judges them (judged): a range
    around the fastest (tie_range)."""
    draws, point, measure = judged(cells, times, reps, seed)
    _, _, tied = choice(draws[measure], draws["batch_sizes"])
    best = fastest_of(point, times, measure)
    return tie_range(tied, draws["batch_sizes"], best) if best is not None else tied


def answer_regret(cells, times, reps=REPS, seed=0):
    """(pick, tie range, regret) as the answer states them (minigrad.study.analysis.recommend), from cells alone:
    what the adaptive phase stops on. (None, [], nan) when no batch size reached the target."""
    draws, point, measure = judged(cells, times, reps, seed)
    best = fastest_of(point, times, measure)
    if best is None:
        return None, [], math.nan
    Bs = draws["batch_sizes"]
    wins, _, tied = choice(draws[measure], Bs)
    tied = tie_range(tied, Bs, best)
    pick = pick_of(tied, wins, point)
    return pick, tied, stated_regret(draws[measure], Bs, pick, cells, times if measure == "T" else {})


def stability(cells, times, tied, outer=40, reps=150, seed=1):
    """Fraction of resampled data sets (seeds resampled within each cell) whose own tie set equals `tied`."""
    rng = np.random.default_rng(seed)
    same = 0
    for k in range(outer):
        data = {key: np.asarray(v, float)[rng.integers(0, len(v), len(v))] for key, v in sorted(cells.items())}
        t = {B: np.asarray(v, float)[rng.integers(0, len(v), len(v))] for B, v in sorted(times.items()) if len(v)}
        same += tie_set(data, t, reps, seed=1000 + k) == list(tied)
    return same / outer


def toward_fit(draws, cells):
    """Neighbours share strength: each resample's S(B) pulled toward that resample's fit S_min + E_min/B, in log
    steps, keeping the weight w(B) = tau^2 / (tau^2 + se(B)^2) on its own value (empirical Bayes). se(B)^2 is the
    noise of its median (pooled_sigma * MEDIAN_SD / sqrt(seeds)), tau^2 how far the points lie off the curve beyond
    that noise (the point residuals' variance on len - 2 degrees of freedom, less the mean se^2). Where the fit
    describes S(B) within noise (tau = 0) the curve decides, so one lucky cell cannot pick a batch size alone;
    where a batch size is truly off the curve, tau is large and each S(B) keeps its own value. Step times are kept
    as measured: a bump in t(B) is real. Returns (draws with S and T replaced, point S per B, {B: w}); unchanged,
    w = 1, without a pooled spread, with fewer than three batch sizes that reached the target, or where the fit
    does not describe the data (check_fit), since then there is no curve to share."""
    Bs = draws["batch_sizes"]
    best = best_steps(cells)
    point = np.array([best[B][0] for B in Bs])
    keep = {B: 1.0 for B in Bs}
    sigma = pooled_sigma(cells)
    finite = np.isfinite(point) & (point > 0)
    params = fit_steps(Bs, point)
    if not math.isfinite(sigma) or finite.sum() < 3 or params is None or not check_fit(Bs, point, params)["ok"]:
        return draws, dict(zip(Bs, point)), keep  # no curve to share: each S(B) is judged alone
    x = 1.0 / np.asarray(Bs, float)
    seeds = np.array([sum(math.isfinite(v) for v in cells[(B, best[B][1])]) if best[B][1] is not None else 1
                      for B in Bs])
    se2 = (sigma * MEDIAN_SD) ** 2 / np.maximum(seeds, 1)
    curve = params[0] + params[1] * x
    on = finite & (curve > 0)
    if on.sum() < 3:
        return draws, dict(zip(Bs, point)), keep
    resid = np.log(point[on]) - np.log(curve[on])
    tau2 = max(float((resid**2).sum() / (on.sum() - 2) - se2[on].mean()), 0.0)
    w = tau2 / (tau2 + se2)

    def pull(S, fitted):
        ok = np.isfinite(S) & (S > 0) & np.isfinite(fitted) & (fitted > 0)
        return np.where(ok, np.exp(w * np.log(np.where(ok, S, 1.0)) + (1 - w) * np.log(np.where(ok, fitted, 1.0))), S)

    s_min, e_min = fit_resamples(Bs, draws["S"])
    S = pull(draws["S"], s_min[:, None] + e_min[:, None] * x[None, :])
    shared = dict(draws, S=S, T=S * draws["t"])
    return shared, dict(zip(Bs, pull(point, curve))), {B: float(w[j]) for j, B in enumerate(Bs)}


def judged(cells, times, reps=REPS, seed=0):
    """The draws the choice of batch size is made on (toward_fit of resample), its point S per B, and the measure:
    "T" with step times for every batch size, else "S"."""
    draws = resample(cells, times, reps, seed)
    shared, point, _ = toward_fit(draws, cells)
    measure = "T" if times and all(len(times.get(B, ())) for B in draws["batch_sizes"]) else "S"
    return shared, point, measure


def fastest_of(point, times, measure):
    """The batch size with the smallest point estimate of `measure` ("T": S x median step time; "S": steps)."""
    score = {B: s * (float(np.median(times[B])) if measure == "T" else 1.0) for B, s in point.items()}
    score = {B: v for B, v in score.items() if math.isfinite(v)}
    return min(score, key=lambda B: (score[B], B)) if score else None
