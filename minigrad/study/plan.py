"""The batch-size study behind `minigrad bench`: the configuration, the grid of trials, and its phases.

Phases, each a set of independent trials whose ids are fixed by the configuration and the results before it, so a
rerun on the same file recomputes the same ids and runs only the missing ones:

  reference  a few learning rates at the reference batch size with a long budget and no target: its best validation
             error sets the target (unless --target is given), its best learning rate centres the grids, and the
             steps S_ref and examples E_ref it took to first reach the target size the tuning budgets;
  tune       for each batch size B, learning rates log-spaced around the reference rate scaled by B/B_ref below B_ref and
             sqrt(B/B_ref) above (Adam: sqrt on both sides; its beta2 per B from beta2_rule, see training.trial),
             several seeds each, stopping at the target, with a budget of budget_factor * max(S_ref, E_ref/B) steps
             (S(B) can be no larger than S_ref above B_ref, nor E(B) much larger than E_ref below it); a grid whose
             best rate lies on its edge is widened on that side (up to `max_widen` times). With censor on, each
             B's centre rate runs first, and its seeds bound the other rates: a trial past censor_bound steps
             without the target stops, CENSORED, as it can no longer be B's best in any resample;
  adapt      rounds of extra trials where they change the answer (adaptive_trials): more seeds at the best rate of
             the batch sizes in or next to the tie set, and rates between the best grid rate and its neighbours; a
             round is planned from the tuning trials and the earlier rounds only, so its ids are fixed and a killed
             study resumes the same round; it stops when the pick's stated regret (uncertainty.stated_regret:
             its time-to-target over each resample's fastest, in 90% of resamples) is within regret_goal, or the
             budget is spent;
  equal      the equal-budget question: every B trained for the same number of examples, at its tuned rate and at
             the reference rate held fixed, final validation and test error recorded.

Compute speed is measured first, alone on the machine (workers start after it), by minigrad.profile.throughput.
"""
import math
import re

import numpy as np

from minigrad.study import uncertainty as U
from minigrad.study.config import COMPLETE
from minigrad.training.spec import TrialSpec

# -------------------------------------------------------------------------------------------------- trial ids
def lr_key(lr):
    return f"{lr:.4g}"


def trial(phase, batch_size, lr, seed, target, *, epochs=None, steps=None, stop_at_target=True, tag="",
          censor_steps=None, eval_growth=None):
    """One trial's settings; its budget is `epochs` or `steps`; censor_steps: see censor_bound; eval_growth: None
    for the configuration's."""
    run_id = f"{phase}-B{batch_size:05d}-lr{lr_key(lr)}-s{seed}{tag}"
    # tuning trials record the gradient noise scale at each evaluation (gns_* columns): 2 x 256 examples, about 4%
    # of a trial's time, its own random stream, so the trajectory is the one without it (minigrad.instruments.noise)
    return TrialSpec(run_id=run_id, phase=phase, batch_size=batch_size, lr=lr, seed=seed,
                     epochs=None if epochs is None else float(epochs), steps=None if steps is None else int(steps),
                     target=target, stop_at_target=stop_at_target,
                     censor_steps=None if censor_steps is None else int(censor_steps), eval_growth=eval_growth,
                     gns=dict(batch_size=256, batches=2) if phase == "tune" else None)


def timed_batch_sizes(config):
    """The batch sizes the compute-speed phase times: the study's, and the reference run's, so that the study's
    cost (steps run x t(B)) counts every trial."""
    return sorted(set(config["batch_sizes"]) | {config["reference_batch_size"]})


def reference_trials(config):
    B = config["reference_batch_size"]
    return [trial("reference", B, lr, seed, None, epochs=config["reference_epochs"], stop_at_target=False)
            for lr in config["reference_lrs"] for seed in range(min(config["seeds"], 2))]


def best_reference(results):
    """(best validation error, learning rate that reached it, averaged over the reference seeds)."""
    by_lr = {}
    for r in results:
        if r["phase"] == "reference" and r["status"] != "DIVERGED":
            by_lr.setdefault(r["lr"], []).append(r["best_val_error"])
    if not by_lr:
        raise ValueError("every reference run diverged: lower the reference learning rates (--lrs)")
    lr, errors = min(by_lr.items(), key=lambda item: (np.mean(item[1]), item[0]))
    return float(np.mean(errors)), lr


def choose_target(config, results):
    if config["target"] is not None:
        return config["target"], "given with --target"
    best, lr = best_reference(results)
    target = round(best + config["target_margin"], 4)
    if target >= 1:
        raise ValueError(f"the reference runs reached validation error {best:.3f} at best: they learned nothing to "
                         "aim for; check the data and labels, or give --target")
    return target, (f"best reference validation error {best:.4f} (B={config['reference_batch_size']}, "
                    f"lr={lr:g}) + margin {config['target_margin']:g}")


def reference_cost(config, results, target):
    """(S_ref, E_ref): median over seeds of the steps and examples the best reference rate took to first reach the
    target, read off its trace."""
    _, lr = best_reference(results)
    hits = []
    for r in results:
        if r["phase"] == "reference" and r["lr"] == lr:
            curve = r["curve"]
            reached = np.flatnonzero(curve["val_error"] <= target)
            if len(reached):
                hits.append((curve["step"][reached[0]], curve["examples"][reached[0]]))
    if len(hits) * 2 <= sum(1 for r in results if r["phase"] == "reference" and r["lr"] == lr):
        raise ValueError(f"the reference run (B={config['reference_batch_size']}, lr={lr:g}) did not reach validation "
                         f"error {target:g} in {config['reference_epochs']:g} epochs: loosen --target or raise "
                         "reference_epochs")
    steps, examples = np.median(np.array(hits, float), axis=0)
    return float(steps), float(examples)


def tune_budget(config, reference, batch_size):
    """Steps a tuning trial at batch size B may take: budget_factor * max(S_ref, E_ref / B)."""
    s_ref, e_ref = reference
    return int(math.ceil(config["budget_factor"] * max(s_ref, e_ref / batch_size)))


def centre_lr(config, reference_lr, batch_size):
    """Where a batch size's grid is centred: the reference rate scaled linearly below B_ref (Goyal et al.; the
    optimal rate grows about in proportion to B at small B) and by sqrt(B/B_ref) above it (Hoffer et al.; it
    saturates at large B). Adam's by sqrt(B/B_ref) on both sides (the square-root rule, Malladi et al. 2022). The grid
    is wide and is widened where needed, so the rule is only a starting guess."""
    ratio = batch_size / config["reference_batch_size"]
    return reference_lr * (ratio if ratio < 1 and config["optimizer"] != "adam" else math.sqrt(ratio))


def grid_for(config, reference_lr, batch_size):
    centre, f, n = centre_lr(config, reference_lr, batch_size), config["lr_factor"], config["lr_points"]
    return [float(f"{centre * f ** (k - (n - 1) / 2):.4g}") for k in range(n)]


def steps_per_cell(results, phase="tune"):
    """{(B, lr): [steps-to-target per seed]} of a phase's trials (phase: a name or a tuple of names); a seed that
    missed the target counts as infinitely many steps."""
    phases = (phase,) if isinstance(phase, str) else tuple(phase)
    cells = {}
    # in run-id order, not arrival order: a resumed study resamples the same seeds the same way
    for r in sorted(results, key=lambda r: r["run_id"]):
        if r["phase"] in phases:
            steps = r["steps_to_target"] if r["status"] == COMPLETE and r["steps_to_target"] is not None else math.inf
            cells.setdefault((r["batch_size"], r["lr"]), []).append(steps)
    return cells


def best_of(medians):
    """(lr, steps) of the fewest median steps in {lr: median steps} (the smaller rate on a tie); (None, inf) if every
    rate missed."""
    finite = {lr: s for lr, s in medians.items() if math.isfinite(s)}
    if not finite:
        return None, math.inf
    lr = min(finite, key=lambda k: (finite[k], k))
    return lr, finite[lr]


def steps_by_lr(results, batch_size, phase="tune"):
    """{lr: median over seeds of steps-to-target} for one batch size (an lr whose median missed is infinite)."""
    return {lr: float(np.median(v)) for (B, lr), v in sorted(steps_per_cell(results, phase).items())
            if B == batch_size}


def best_lr(results, batch_size, phase="tune"):
    return best_of(steps_by_lr(results, batch_size, phase))


def censor_bound(centre_steps, budget, margin=None):
    """Steps after which a tuning trial at a B still short of the target stops (CENSORED), from the steps-to-target
    of every seed of the B's centre cell: margin * the slowest of them, margin 1 for an odd count of seeds and 2 for
    an even one; None (no bound) when one of them missed or the bound reaches the budget.

    Why it changes no statistic: in any resample the centre cell's median is at most its slowest seed, s_max, so
    S(B) <= s_max. A censored seed truly needs more than margin * s_max steps; read as infinitely many, a cell's
    resampled median changes only where it would take such a seed, and then it truly exceeds s_max (an odd count:
    the median is one of the seeds) or (s + 2 s_max) / 2 > s_max (an even count: the mean of the middle two). So
    S(B), its best rate, T(B), the fit, B_crit and the pick come out the same in every resample as without
    censoring, and so do the steps to every easier error level (tests/test_censor.py simulates it)."""
    steps = [float(s) for s in centre_steps]
    if not steps or not all(math.isfinite(s) for s in steps):
        return None
    margin = (1.0 if len(steps) % 2 else 2.0) if margin is None else margin
    bound = int(math.ceil(margin * max(steps)))
    return bound if bound < budget else None


def tune_trials(config, reference_lr, target, batch_sizes, results, reference=None, censor=None):
    """The tuning trials needed now: the initial grid for every B, then one more rate beyond each edge where the
    best rate sits on it (or where no rate reached the target: towards larger rates first, then smaller).

    A grid is widened only once every seed of every rate tried at its B is stored: the choice then depends on the
    trials alone, never on which of them a killed study had finished, so a resume widens as an uninterrupted
    study does. censor (default: the config's setting): a B's centre rate first, then the other rates with the
    bound its seeds set (censor_bound), which likewise depends on those stored trials alone."""
    censor = config.get("censor", "on") == "on" if censor is None else censor
    wanted = []
    for B in batch_sizes:
        grid = grid_for(config, reference_lr, B)
        seeds = {}
        for r in results:
            if r["phase"] == "tune" and r["batch_size"] == B:
                seeds.setdefault(r["lr"], set()).add(r["seed"])
        budget, bound = tune_budget(config, reference, B), None
        if censor:
            centre = grid[len(grid) // 2]
            if not seeds.get(centre, set()) >= set(range(config["seeds"])):
                wanted += [trial("tune", B, centre, seed, target, steps=budget) for seed in range(config["seeds"])]
                continue
            bound = censor_bound(steps_per_cell(results).get((B, centre), []), budget)
        lrs = sorted(set(grid) | set(seeds))
        if all(seeds.get(lr, set()) >= set(range(config["seeds"])) for lr in lrs):
            lr, _ = best_lr(results, B)
            widened = len(lrs) - len(grid)
            if widened < config["max_widen"]:
                f = config["lr_factor"]
                medians = steps_by_lr(results, B)
                diverged_top = all(r["status"] == "DIVERGED" for r in results if r["phase"] == "tune"
                                   and r["batch_size"] == B and r["lr"] == lrs[-1])
                if lr is None:
                    # nothing reached the target: try larger rates unless the largest diverged, then smaller
                    extra = lrs[0] / f if diverged_top else lrs[-1] * f
                    lrs.append(float(f"{extra:.4g}"))
                elif lr == lrs[-1] and not diverged_top:
                    lrs.append(float(f"{lr * f:.4g}"))
                elif lr == lrs[0] and len(medians) > 1:
                    lrs.append(float(f"{lr / f:.4g}"))
        for lr in lrs:
            for seed in range(config["seeds"]):
                wanted.append(trial("tune", B, lr, seed, target, steps=budget,
                                    censor_steps=None if censor and lr == centre else bound))
    return wanted


TUNED = ("tune", "adapt")  # the phases whose trials decide each B's rate and S(B)


def adaptive_trials(config, results, target, reference, times):
    """(the current round's trials, [] once the phase has stopped; a sentence on its state). Round k is planned from
    the tuning trials and rounds < k alone (its ids end in -r<k>); times: {B: step time per measurement round}."""
    done = {r["run_id"] for r in results}
    spent = 0
    for k in range(1, config["adaptive_budget"] + 2):
        before = [r for r in results if r["phase"] == "tune" or (r["phase"] == "adapt" and r["round"] < k)]
        specs, state = _adaptive_round(config, before, target, reference, times, k, config["adaptive_budget"] - spent)
        if not specs:
            return [], f"{spent} extra trials in {k - 1} round(s); stopped: {state}"
        if not all(t.run_id in done for t in specs):
            return specs, f"round {k}: {state}"
        spent += len(specs)
    raise AssertionError("every adaptive round adds at least one trial, so the budget ends the loop")


def _adaptive_round(config, results, target, reference, times, k, budget_left):
    cells = steps_per_cell(results, TUNED)
    pick, tied, regret = U.answer_regret(cells, times)
    if pick is None:
        return [], "no batch size reached the target"
    where = (f"the pick B = {pick} is at most {regret:.0%} slower than the fastest in "
             f"{U.REGRET_QUANTILE:.0%} of resamples; tied: {tied}")
    if regret <= config["regret_goal"]:
        return [], f"{where}, within the goal of {config['regret_goal']:.0%}"
    if budget_left <= 0:
        return [], f"the budget of {config['adaptive_budget']} extra trials is spent ({where})"
    best = U.best_steps(cells)
    Bs = sorted(best)
    near = {Bs[j] for B in tied for j in (Bs.index(B) - 1, Bs.index(B) + 1) if 0 <= j < len(Bs)} - set(tied)
    wanted = []
    for B in list(tied) + sorted(near):  # the tie set first: a truncated round spends its trials there
        steps, lr = best[B]
        if lr is None:
            continue
        budget = tune_budget(config, reference, B)
        n = len(cells[(B, lr)])
        wanted += [trial("adapt", B, lr, seed, target, steps=budget, tag=f"-r{k}")
                   for seed in range(n, n + config["adaptive_seeds"])]
        rates = sorted(lr_ for b, lr_ in cells if b == B)
        i = rates.index(lr)
        for j in (i - 1, i + 1):
            # a rate halfway (in log lr) to each neighbour, while neighbours are more than ~sqrt(sqrt(2)) apart
            if 0 <= j < len(rates) and max(rates[j], lr) / min(rates[j], lr) > 1.2:
                mid = float(f"{math.sqrt(lr * rates[j]):.4g}")
                wanted += [trial("adapt", B, mid, seed, target, steps=budget, tag=f"-r{k}")
                           for seed in range(config["seeds"])]
    return wanted[:budget_left], where


# The equal-budget table reads each run's last evaluation only (and DIVERGED, which a NaN loss keeps to the end), so
# its runs evaluate every EQUAL_EVAL_GROWTH times more steps: about 9 evaluations instead of 32 over 5 epochs, the
# same final errors (checked on the default task at B = 2 to 1024, diverging rates included), 70% less evaluation.
EQUAL_EVAL_GROWTH = 1.5


def equal_budget_trials(config, reference_lr, target, batch_sizes, results):
    """Every B for the same number of examples (equal_epochs), at its tuned rate and at the reference rate."""
    wanted = []
    for B in batch_sizes:
        tuned, _ = best_lr(results, B, TUNED)
        for tag, lr in (("tuned", tuned), ("fixed", reference_lr)):
            if lr is None:
                continue
            for seed in range(config["seeds"]):
                wanted.append(trial("equal", B, lr, seed, target, epochs=config["equal_epochs"], stop_at_target=False,
                                    tag=f"-{tag}", eval_growth=max(EQUAL_EVAL_GROWTH, config["eval_growth"])))
    return wanted


def result_row(run_id, attrs, columns):
    """The fields the phases decide on, from a run's stored attrs (and, for reference runs, its curve)."""
    row = dict(run_id=run_id, phase=attrs["phase"], batch_size=int(attrs["batch_size"]), lr=float(attrs["lr"]),
               seed=int(attrs["seed"]), status=attrs["status"], steps_to_target=attrs.get("steps_to_target"),
               best_val_error=float(attrs["best_val_error"]))
    if row["phase"] == "adapt":
        row["round"] = int(re.search(r"-r(\d+)$", run_id).group(1))
    if row["phase"] == "reference":
        row["curve"] = {k: np.asarray(columns[k]) for k in ("step", "examples", "val_error")}
    return row
