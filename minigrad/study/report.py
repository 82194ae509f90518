"""The study's answer as text: the table (with intervals, misfit per batch size, win fractions and the tie set),
the fit's verdict, B_crit or why it is not determined, and the recommendation sentence with its recipe. The numbers
come from minigrad.study.analysis (the statistics from minigrad.study.uncertainty)."""
import math
import sys

from minigrad.study.analysis import Analysis, analyse, answer, time_gaps  # noqa: F401 - the report's public names
from minigrad.study.uncertainty import INTERVAL, fit_steps  # noqa: F401

# ------------------------------------------------------------------------------------------------------ text
def fmt_time(seconds):
    if not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_time_range(lo, hi):
    """'344-538 ms': both ends in the unit of the upper one."""
    scale, unit = ((1e6, "us") if hi < 1e-3 else (1e3, "ms") if hi < 1 else (1, "s"))
    digits = 1 if hi * scale < 100 else 0
    return f"{lo * scale:.{digits}f}-{hi * scale:.{digits}f} {unit}"


def fmt_count(x):
    return "-" if not math.isfinite(x) else f"{x:,.0f}"


def _range(lo, hi, fmt, note=""):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval"
    if lo == hi:
        return "interval degenerate: too few seeds to resample"
    return f"{fmt(lo)} to {fmt(hi)}" + (f", {note}" if note else "")


def _pct_interval():
    return f"{INTERVAL[1] - INTERVAL[0]:.0f}% bootstrap interval"


def fit_sentence(a: Analysis):
    f = a.fit
    if not f or not math.isfinite(f.get("S_min", math.nan)):
        return f"{f.get('reason', 'no fit')}: B_crit is not determined." if f else ""
    if not f["ok"]:
        return f"{f['reason']}. B_crit is not determined."
    if not f["determined"]:
        return f"B_crit is {f['B_crit_note']}."
    crit = (f"The fitted critical batch size is B_crit = E_min/S_min = {f['E_min']:,.0f}/{f['S_min']:,.1f} = "
            f"{f['B_crit']:.0f} ({_pct_interval()} {_range(f['B_crit_lo'], f['B_crit_hi'], lambda x: f'{x:.0f}')}")
    crit += f"; {f['B_crit_note']})" if f["B_crit_note"] and "widened" not in f["B_crit_note"] else ")"
    return crit + (": below it doubling B nearly halves the steps, above it extra examples buy few steps.")


def recommendation_sentence(a: Analysis):
    rec, r = a.recommendation, a.recommended
    if not rec:
        return ("No batch size reached the target: raise the budget (budget_factor), widen the learning-rate grid "
                "or loosen the target.")
    steps = f"{fmt_count(r['steps'])} steps ({_range(r['steps_lo'], r['steps_hi'], fmt_count)})"
    time = (f", {fmt_time(r['time_s'])} of compute on this machine ({_range(r['time_lo'], r['time_hi'], fmt_time)})"
            if math.isfinite(r["time_s"]) else "")
    stable = (f"The tie set is the same in {rec['stable_fraction']:.0%} of resampled data sets"
              + ("." if rec["stable"] else ": not yet stable, more seeds would sharpen it."))
    adaptive = f" Adaptive phase: {a.adaptive['state']}." if a.adaptive.get("state") else ""
    return (f"Use batch size {r['batch_size']} with learning rate {r['best_lr']:g}: {rec['reason']}. It reaches "
            f"validation error {a.target:g} in {steps} of {fmt_time(r['step_time_s'])}{time}. {stable}{adaptive} "
            f"{fit_sentence(a)}\nTo train it (single seeds took {fmt_count(r['seed_steps'][0])} to "
            f"{fmt_count(r['seed_steps'][1])} steps): {rec['recipe']}")


def print_report(a: Analysis, console=None):
    from rich.console import Console
    from rich.table import Table

    # a pipe or a log file gets the full-width table rather than rich's 80-column default
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"target: validation error <= {a.target:g} ({a.target_reason})")
    table = Table(title=f"batch size: compute speed x convergence speed ({_pct_interval()}s over seeds and step "
                        "times; * busy machine)")
    for name in ("B", "step time", "IQR", "thr", "trial step", "+ eval", "best lr", "lr (interp.)", "steps to target",
                 "interval",
                 "time to target", "interval ", "misfit", "wins", "status"):
        table.add_column(name, justify="right")
    pick = a.recommended["batch_size"] if a.recommended else None
    for r in a.rows:
        table.add_row(str(r["batch_size"]), fmt_time(r["step_time_s"]) + ("*" if r["busy"] else ""),
                      fmt_time(r["step_time_iqr_s"]), _g(r["threads"]),
                      fmt_time(r.get("trial_step_s", math.nan)), fmt_time(r.get("trial_eval_s", math.nan)),
                      "-" if r["best_lr"] is None else f"{r['best_lr']:g}",
                      "-" if r["lr_interpolated"] is None else f"{r['lr_interpolated']:.3g}", fmt_count(r["steps"]),
                      _interval(r["steps_lo"], r["steps_hi"], fmt_count), fmt_time(r["time_s"]),
                      _interval(r["time_lo"], r["time_hi"], fmt_time_range),
                      "-" if not math.isfinite(r.get("misfit", math.nan)) else f"{r['misfit']:.2f}x",
                      f"{r.get('win_fraction', 0):.0%}" + (" tied" if r.get("tied") else ""), r["status"],
                      style="bold green" if r["batch_size"] == pick else ("green" if r.get("tied") else None))
    console.print(table)
    console.print("step time: t(B) measured alone, steps in the compiled loop (throughput phase); trial step: the "
                  "compute time per step the tuning trials took (trials side by side, their own thread count), "
                  "+ eval: their evaluation time per step")
    gaps = time_gaps(a.rows)
    if gaps:
        console.print("trial steps differ from t(B) by more than 20% at " + ", ".join(
            f"B = {B} ({ratio:.2f}x)" for B, ratio in gaps) + ": time to target uses t(B); the trials ran with the "
            "cores shared and their own thread count")
    if a.busy:
        console.print(a.busy)
    f = a.fit
    if f and math.isfinite(f.get("S_min", math.nan)):
        console.print(f"fit S(B) = S_min + E_min/B: S_min = {f['S_min']:,.1f} steps, E_min = {f['E_min']:,.0f} "
                      f"examples, largest misfit {f['max_ratio']:.2f}x: "
                      + ("describes the data" if f["ok"] else "DOES NOT describe the data"))
    if a.gns and f.get("determined"):
        console.print(f"gradient noise scale near the target: B_simple = {a.gns['b_simple']:,.0f} (best-lr trials, "
                      f"{a.gns['trials']} of them) next to B_crit = {f['B_crit']:,.0f}: B_simple / B_crit = "
                      f"{a.gns['b_simple'] / f['B_crit']:.2f} (McCandlish et al.: about 1 to 10)")
    if a.equal:
        eq = Table(title=f"equal budget: {a.config['equal_epochs']:g} epochs at every B (median over seeds)")
        for name in ("B", "tuned lr", "val error", "test error", "fixed lr", "val error ", "test error "):
            eq.add_column(name, justify="right")
        for r in a.equal:
            eq.add_row(str(r["batch_size"]), _g(r.get("tuned_lr")), _e(r.get("tuned_val")), _e(r.get("tuned_test")),
                       _g(r.get("fixed_lr")), _e(r.get("fixed_val"), r.get("fixed_diverged")),
                       _e(r.get("fixed_test"), r.get("fixed_diverged")))
        console.print(eq)
    console.print(recommendation_sentence(a), soft_wrap=True)


def _interval(lo, hi, fmt):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    if lo == hi:
        return "degenerate"
    return fmt(lo, hi) if fmt is fmt_time_range else f"{fmt(lo)}-{fmt(hi)}"


def _g(x):
    return "-" if x is None else f"{x:g}"


def _e(x, diverged=0):
    if x is None:
        return "-"
    return "diverged" if not math.isfinite(x) and diverged else ("-" if not math.isfinite(x) else f"{x:.4f}")
