"""The study's answer on the terminal: the table per batch size (the columns that fit the terminal's width, all of
them with --wide), the lines under it, the equal-budget table, and the answer in words with its recipe. Everything
shown comes from one minigrad.study.answer.Answer, which `--json`, the HTML page and the Python API render too."""
import math
import os
import sys

from minigrad.study.analysis import Analysis, analyse, time_gaps  # noqa: F401 - the report's public names
from minigrad.study.answer import (INTERVAL_NAME, LADDER_HEADINGS, SCHEDULE_HEADINGS, Answer, fmt_count,  # noqa: F401
                                   fmt_interval, fmt_time, fmt_time_range, ladder_cells, of, schedule_cells)
from minigrad.study.uncertainty import INTERVAL, fit_steps  # noqa: F401


def _g(x):
    return "-" if x is None else f"{x:g}"


def _e(x, diverged=0):
    if x is None:
        return "-"
    return "diverged" if not math.isfinite(x) and diverged else ("-" if not math.isfinite(x) else f"{x:.4f}")


# (heading, priority, cell): the table keeps the columns of highest priority that fit the terminal; None is
# essential (always shown, never cut)
COLUMNS = [
    ("B", None, lambda r: str(r["batch_size"])),
    ("step time", None, lambda r: fmt_time(r["step_time_s"]) + ("*" if r["busy"] else "")),
    ("IQR", 4, lambda r: fmt_time(r["step_time_iqr_s"])),
    ("thr", 3, lambda r: _g(r["threads"])),
    ("trial step", 1, lambda r: fmt_time(r.get("trial_step_s", math.nan))),
    ("+ eval", 0, lambda r: fmt_time(r.get("trial_eval_s", math.nan))),
    ("best lr", None, lambda r: _g(r["best_lr"])),
    ("lr (interp.)", 2, lambda r: "-" if r["lr_interpolated"] is None else f"{r['lr_interpolated']:.3g}"),
    ("steps to target", None, lambda r: fmt_count(r["steps"])),
    ("interval", 6, lambda r: fmt_interval(r["steps_lo"], r["steps_hi"], fmt_count)),
    ("time to target", None, lambda r: fmt_time(r["time_s"])),
    ("interval ", 8, lambda r: fmt_interval(r["time_lo"], r["time_hi"], fmt_time_range)),
    ("misfit", 3, lambda r: "-" if not math.isfinite(r.get("misfit", math.nan)) else f"{r['misfit']:.2f}x"),
    ("wins", 7, lambda r: f"{r.get('win_fraction', 0):.0%}" + (" tied" if r.get("tied") else "")),
    ("status", 5, lambda r: r["status"]),
]

LONG_NAMES = {"interval": "steps interval", "interval ": "time interval", "thr": "threads"}


def rows_table(ans: Answer, console, wide=False):
    """(table, names of the columns left out, its width): as many columns as fit console.width, or every column
    at its natural width with wide=True."""
    from rich import box
    from rich.table import Table

    def build(columns):
        title = f"batch size: compute speed x convergence speed ({INTERVAL_NAME}s over seeds and step times"
        title += "; * busy machine)" if any(r["busy"] for r in ans.rows) else ")"
        table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
        for name, _, _ in columns:
            table.add_column(name, justify="right", no_wrap=True)
        for r in ans.rows:
            table.add_row(*(cell(r) for _, _, cell in columns),
                          style="bold green" if r["batch_size"] == ans.pick else ("green" if r.get("tied") else None))
        return table

    def width(table):  # the unwrapped width: rich's own measure is capped at the console's width
        return table.__rich_measure__(console, console.options.update_width(100_000)).maximum

    if wide:
        table = build(COLUMNS)
        return table, [], width(table)
    # the essential columns, then each other column by priority where it still fits
    columns = [c for c in COLUMNS if c[1] is None]
    for candidate in sorted((c for c in COLUMNS if c[1] is not None), key=lambda c: -c[1]):
        trial = [c for c in COLUMNS if c in columns or c is candidate]
        if width(build(trial)) <= console.width:
            columns = trial
    table = build(columns)
    shown = {name for name, _, _ in columns}
    left_out = [LONG_NAMES.get(name, name) for name, _, _ in COLUMNS if name not in shown]
    return table, left_out, console.width


def side_table(title, headings):
    """A table of the report's further sections: title on the left, right-aligned columns that never wrap."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
    for name in headings:
        table.add_column(name, justify="right", no_wrap=True)
    return table


def print_report(a, console=None, wide=False):
    """Print the answer (an Answer, or an Analysis made into one) as `minigrad report` does."""
    from rich.console import Console
    from rich.table import Table

    ans = a if isinstance(a, Answer) else of(a)
    # a pipe or a log file gets the full-width table rather than rich's 80-column default, unless COLUMNS says
    console = console or Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
    soft = not console.is_terminal  # a pipe or a file: one line per message; a terminal: wrapped between words
    console.print(f"target: validation error <= {ans.target:g} ({ans.target_reason})", soft_wrap=soft)
    table, left_out, natural = rows_table(ans, console, wide)
    if natural > console.width:  # --wide: whole lines, however long
        Console(file=console.file, width=natural, force_terminal=console.is_terminal,
                color_system=console.color_system).print(table)
    else:
        console.print(table)
    if left_out:
        console.print(f"({len(left_out)} columns left out to fit {console.width} columns: {', '.join(left_out)}; "
                      "--wide shows them, as do --html and --json)", soft_wrap=soft)
    console.print("step time: t(B) measured alone, steps in the compiled loop (throughput phase); trial step: the "
                  "compute time per step the tuning trials took (trials side by side, their own thread count), "
                  "+ eval: their evaluation time per step", soft_wrap=soft)
    for line in (*ans.notes, ans.fit_line, ans.gns_line):
        if line:
            console.print(line, soft_wrap=soft)
    if ans.ladder:
        lad = side_table("the critical batch size along training: the same trials at easier error levels (B_crit = "
                         "E_min/S_min; CBS-20% = 0.2 B_crit, where examples are 20% above the fewest)", LADDER_HEADINGS)
        for r in ans.ladder:
            lad.add_row(*ladder_cells(r), style="bold" if r["is_target"] else None)
        console.print(lad)
        if ans.ladder_sentence:
            console.print(ans.ladder_sentence, soft_wrap=soft)
    if ans.schedule:
        sch = side_table("a batch-size schedule from the ladder: per stage the B and rate with the least predicted "
                         "time (steps in the stage from the same traces, times t(B)); then the fixed pick",
                         SCHEDULE_HEADINGS)
        for row in schedule_cells(ans.schedule):
            sch.add_row(*row, style="dim" if row[0] == "fixed" else None)
        console.print(sch)
        console.print(ans.schedule_sentence, soft_wrap=soft)
        if ans.schedule.get("recipe"):
            console.print(f"To train the schedule: {ans.schedule['recipe']}", soft_wrap=soft, markup=False)
    if ans.equal:
        eq = Table(title=f"equal budget: {ans.equal_epochs:g} epochs at every B (median over seeds)")
        for name in ("B", "tuned lr", "val error", "test error", "fixed lr", "val error ", "test error "):
            eq.add_column(name, justify="right")
        for r in ans.equal:
            eq.add_row(str(r["batch_size"]), _g(r.get("tuned_lr")), _e(r.get("tuned_val")), _e(r.get("tuned_test")),
                       _g(r.get("fixed_lr")), _e(r.get("fixed_val"), r.get("fixed_diverged")),
                       _e(r.get("fixed_test"), r.get("fixed_diverged")))
        console.print(eq)
    console.print(ans.text(), soft_wrap=soft)
    if ans.cost_sentence:
        console.print(ans.cost_sentence, soft_wrap=soft, markup=False)
    if ans.others:
        console.print(others_table(ans))
        for i, o in enumerate(ans.others):
            console.print(f"[{i}] {o['name']}: {o['source']}", soft_wrap=soft, markup=False)


def others_table(ans: Answer):
    """The answers side by side, one column per step-time table: T(B) with its interval per B, then the pick and
    the tie set; [i] names the table (listed under it)."""
    from rich import box
    from rich.table import Table

    table = Table(title="the answer for each step-time table (same convergence; time to target and its "
                        f"{INTERVAL_NAME}; > pick, ~ tied)", box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
    table.add_column("B", justify="right")
    for i, o in enumerate(ans.others):
        table.add_column(f"[{i}] {o['name'][:24]}", justify="right", no_wrap=True)
    by_B = [{r["batch_size"]: r for r in o["rows"]} for o in ans.others]
    for B in [r["batch_size"] for r in ans.others[0]["rows"]]:
        cells = []
        for o, rows in zip(ans.others, by_B):
            r = rows.get(B)
            mark = ">" if B == o["pick"] else "~" if r and r.get("tied") else " "
            cells.append("-" if r is None else f"{mark} {fmt_time(r['time_to_target_s'])} "
                         f"({fmt_interval(*r['time_interval_s'], fmt_time_range)})")
        table.add_row(str(B), *cells)
    table.add_row("pick", *(f"{o['pick']} (tie {o['tie_range']})" if o["pick"] else "-" for o in ans.others))
    return table
