"""A study as one self-contained HTML page for a reader: the answer and its recipe, the table with intervals and win
fractions, the fit in words and numbers, the notes, the equal-budget comparison, the adaptive phase, every figure
inline (base64 PNG), the configuration and the machine. No scripts, no external files: it opens anywhere and can be
mailed. Everything on it comes from one minigrad.study.answer.Answer (what the terminal and `--json` render too).
"""
import base64
import datetime
import html
import math
from pathlib import Path

from minigrad.study.answer import (INTERVAL_NAME, LADDER_HEADINGS, SCHEDULE_HEADINGS, Answer, fmt_count,
                                   fmt_interval, fmt_time, fmt_time_range, answer_card, ladder_cells, schedule_cells)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2327;
       background: #f6f7f9; }
header { background: #23395d; color: white; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; overflow-wrap: anywhere; }
header p { margin: 4px 0 0; opacity: 0.85; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: white; border: 1px solid #dde1e6; border-radius: 6px; padding: 14px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 10px; color: #23395d; }
p { line-height: 1.5; }
.answer { border-left: 5px solid #2e8540; font-size: 15px; }
.recipe { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f0f3f6; padding: 8px 12px;
          border-radius: 4px; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e6e8eb; text-align: right; white-space: nowrap; }
th { background: #f0f3f6; white-space: normal; vertical-align: bottom; } td.l, th.l { text-align: left; white-space: normal; overflow-wrap: anywhere; }
tr.pick td { background: #e7f4ea; font-weight: 600; } tr.tied td { background: #f3faf4; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(520px, 100%), 1fr)); gap: 14px; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e6e8eb; }
figcaption { font-size: 12px; color: #555; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.note { font-size: 12px; color: #555; }
@media (max-width: 700px) {
  header { padding: 12px 14px; } main { padding: 8px 10px 32px; } section { padding: 10px 12px; }
  .cols { grid-template-columns: 1fr; }
}
"""


def _e(x):
    return html.escape(str(x))


def _g(x):
    return "-" if x is None else f"{x:g}"


def _error(x, diverged=0):
    if x is None:
        return "-"
    return "diverged" if not math.isfinite(x) and diverged else ("-" if not math.isfinite(x) else f"{x:.4f}")


# (heading, cell) of the per-B table: every column the terminal can show, intervals and win fractions included
ROW_COLUMNS = [
    ("B", lambda r: str(r["batch_size"])),
    ("step time t(B)", lambda r: fmt_time(r["step_time_s"]) + (" (busy)" if r["busy"] else "")),
    ("IQR", lambda r: fmt_time(r["step_time_iqr_s"])),
    ("threads", lambda r: _g(r["threads"])),
    ("trial step", lambda r: fmt_time(r.get("trial_step_s", math.nan))),
    ("+ eval", lambda r: fmt_time(r.get("trial_eval_s", math.nan))),
    ("best lr", lambda r: _g(r["best_lr"])),
    ("lr (interp.)", lambda r: "-" if r["lr_interpolated"] is None else f"{r['lr_interpolated']:.3g}"),
    ("steps to target", lambda r: fmt_count(r["steps"])),
    ("interval", lambda r: fmt_interval(r["steps_lo"], r["steps_hi"], fmt_count)),
    ("time to target", lambda r: fmt_time(r["time_s"])),
    ("interval ", lambda r: fmt_interval(r["time_lo"], r["time_hi"], fmt_time_range)),
    ("fit S(B)", lambda r: fmt_count(r.get("fit_steps", math.nan))),
    ("misfit", lambda r: "-" if not math.isfinite(r.get("misfit", math.nan)) else f"{r['misfit']:.2f}x"),
    ("wins", lambda r: f"{r.get('win_fraction', 0):.0%}" + (" tied" if r.get("tied") else "")),
    ("status", lambda r: r["status"]),
]


def _table(headings, rows, classes=None):
    """headings: [str]; rows: [[cell text]]; classes: a CSS class per row (or None)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    body = "".join(f"<tr{f' class={chr(39)}{c}{chr(39)}' if c else ''}>" + "".join(f"<td>{_e(x)}</td>" for x in row)
                   + "</tr>" for row, c in zip(rows, classes or [None] * len(rows)))
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def _pairs(pairs):
    """A two-column table of (label, text) pairs."""
    rows = "".join(f"<tr><td class='l'>{_e(k)}</td><td class='l'>{_e(v)}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def _setting(v):
    """A configuration value as a reader writes it: lists as '1, 2, 4', tables as 'key = value', none as '-'."""
    if v is None:
        return "- (chosen by the study)"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(_setting(x) for x in v) if v else "-"
    if isinstance(v, dict):
        return "; ".join(f"{k} = {_setting(x)}" for k, x in v.items()) if v else "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _rows_section(ans):
    classes = ["pick" if r["batch_size"] == ans.pick else "tied" if r.get("tied") else None for r in ans.rows]
    notes = "".join(f"<p class='note'>{_e(line)}</p>" for line in ans.notes)
    return ("<section><h2>Batch size: compute speed &times; convergence speed</h2>"
            + _table([h for h, _ in ROW_COLUMNS], [[cell(r) for _, cell in ROW_COLUMNS] for r in ans.rows], classes)
            + f"<p class='note'>Intervals: {INTERVAL_NAME}s over seeds and step-time rounds; 'degenerate' where one "
              "seed leaves nothing to resample. Step time: t(B) measured alone in the compiled training loop; trial "
              "step and + eval: what the tuning trials took per step, side by side. Wins: how often B is the fastest "
              "across resamples; tied: within noise of the fastest. The recommended batch size is in bold.</p>"
            + notes + "</section>")


def _fit_section(ans):
    f = ans.fit
    if not f:
        return ""
    pairs = []
    if math.isfinite(f.get("S_min", math.nan)):
        pairs += [("S_min (fewest steps, at any B)", f"{f['S_min']:,.1f}"),
                  ("E_min (fewest examples, at any B)", f"{f['E_min']:,.0f}")]
    if f.get("determined"):
        pairs.append(("B_crit = E_min / S_min", f"{f['B_crit']:.0f} ({INTERVAL_NAME} "
                      + (f"{f['B_crit_lo']:.0f} to {f['B_crit_hi']:.0f})" if math.isfinite(f["B_crit_lo"])
                         else "not available)")))
    else:
        pairs.append(("B_crit", "not determined"))
    if math.isfinite(f.get("max_ratio", math.nan)):
        pairs.append(("largest misfit at a measured B", f"{f['max_ratio']:.2f}x"))
    pairs.append(("the fit describes the data", "yes" if f.get("ok") else f"no: {f.get('reason', '')}"))
    text = "".join(f"<p>{_e(line)}</p>" for line in (ans.fit_sentence, ans.gns_line) if line)
    return "<section><h2>Fit S(B) = S_min + E_min / B</h2>" + text + _pairs(pairs) + "</section>"


def _ladder_section(ans):
    if not ans.ladder:
        return ""
    rows = [ladder_cells(r) for r in ans.ladder]
    return ("<section><h2>The critical batch size along training</h2>"
            "<p>The same trials read at easier validation-error levels on their way to the target: at each level the "
            "best rate per batch size, S(B), the fit and its check. B_crit = E_min / S_min (McCandlish et al.: twice "
            "the fewest steps and examples); CBS-20% = 0.2 B_crit, where a run needs 20% more examples than the fewest "
            "(Zhang et al.'s critical batch size, under the fit); B_simple: the gradient noise scale the same trials "
            "measured at that level.</p>"
            + (f"<p>{_e(ans.ladder_sentence)}</p>" if ans.ladder_sentence else "")
            + _table(LADDER_HEADINGS, rows, ["pick" if r["is_target"] else None for r in ans.ladder]) + "</section>")


def _schedule_section(ans):
    if not ans.schedule:
        return ""
    recipe = ans.schedule.get("recipe")
    return ("<section id='schedule'><h2>A batch-size schedule</h2>"
            "<p>The training is cut at the ladder's levels into stages, each at one batch size (never smaller than "
            "the stage before's) and that batch size's best rate at the stage's last level. A stage's steps are read "
            "off the tuning traces at that batch size and rate, seed by seed, as the steps between crossing the level "
            "where it begins and the level where it ends; its time is those steps times the step time t(B), and the "
            "stages are those of the least predicted time. The last row: the fixed pick, predicted the same way.</p>"
            + _table(SCHEDULE_HEADINGS, schedule_cells(ans.schedule), [None] * len(ans.schedule["stages"]) + ["pick"])
            + f"<p>{_e(ans.schedule_sentence)}</p>"
            + (f"<div class='recipe' id='schedule-recipe'>{_e(recipe)}</div>" if recipe else "") + "</section>")


def _equal_section(ans):
    if not ans.equal:
        return ""
    rows = [[str(r["batch_size"]), _g(r.get("tuned_lr")), _error(r.get("tuned_val")), _error(r.get("tuned_test")),
             _g(r.get("fixed_lr")), _error(r.get("fixed_val"), r.get("fixed_diverged")),
             _error(r.get("fixed_test"), r.get("fixed_diverged"))] for r in ans.equal]
    return (f"<section><h2>Equal budget: {ans.equal_epochs:g} epochs at every B</h2>"
            "<p>Every batch size trained on the same number of examples, at its tuned rate and at the reference rate "
            "held fixed; median final errors over seeds.</p>"
            + _table(["B", "tuned lr", "val error", "test error", "fixed lr", "val error", "test error"], rows)
            + "</section>")


def _others_section(ans):
    """The answers side by side, one per step-time table, each saying where its times come from."""
    cost = f"<p class='study-cost'>{_e(ans.cost_sentence)}</p>" if ans.cost_sentence else ""
    if not ans.others:
        return f"<section id='study-cost'>{cost}</section>" if cost else ""
    Bs = [r["batch_size"] for r in ans.others[0]["rows"]]
    heads = ["step times", "where from", "pick", "tied"] + [f"T({B})" for B in Bs]
    rows = []
    for o in ans.others:
        by_B = {r["batch_size"]: r for r in o["rows"]}
        rows.append([o["name"], o["source"], str(o["pick"] or "-"), o["tie_range"] or "-"]
                    + [fmt_time(by_B[B]["time_to_target_s"]) + " (" + fmt_interval(*by_B[B]["time_interval_s"],
                       fmt_time_range) + ")" if B in by_B else "-" for B in Bs])
    return ("<section id='other-answers'><h2>The answer for each step-time table</h2>"
            "<p>The same stored convergence (steps to target per batch size) with the step times of each table: the "
            "study's own, re-timed on another machine (<code>minigrad report STUDY --retime</code>) or given "
            f"(<code>--step-times FILE</code>). Time to target with its {INTERVAL_NAME}.</p>"
            + _table(heads, rows) + cost + "</section>")


def _figure(path):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = Path(path).stem.rsplit("_", 1)[-1]
    return (f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(Path(path).name)}</figcaption></figure>")


def render(ans: Answer, study_file, figures):
    """The page as a string. ans: minigrad.study.answer.Answer; figures: PNG paths to embed."""
    attrs = study_file.attrs
    name = Path(study_file.path).name
    sections = [answer_card(ans), _rows_section(ans), _others_section(ans), _fit_section(ans), _ladder_section(ans),
                _schedule_section(ans), _equal_section(ans)]
    if ans.adaptive_sentence:
        sections.append(f"<section><h2>Adaptive phase</h2><p>{_e(ans.adaptive_sentence)}</p></section>")
    if figures:
        sections.append("<section><h2>Figures</h2><div class='figs'>" + "".join(_figure(p) for p in figures)
                        + "</div></section>")
    sections.append("<section class='cols'><div><h2>Configuration</h2>"
                    + _pairs((k.replace("_", " "), _setting(v)) for k, v in ans.config.items())
                    + "</div><div><h2>Machine</h2>"
                    + (_pairs(ans.machine.items()) if ans.machine else "<p class='note'>not recorded in the file</p>")
                    + "</div></section>")
    made = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>minigrad study: {_e(name)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>Which batch size? {_e(name)}</h1>"
            f"<p>{len(study_file.runs)} runs on {_e(attrs.get('host', '?'))} ({_e(attrs.get('cpu', '?'))}), "
            f"study created {_e(attrs.get('created', '?'))}; page written {made} by minigrad "
            f"{_e(attrs.get('minigrad_version', ''))}</p></header><main>{''.join(s for s in sections if s)}</main>"
            "</body></html>")


def write(ans: Answer, study_file, figures, path):
    """Write the page to `path`, whole or not at all, never over a link or the study (machine/outputs.py)."""
    from minigrad.machine.outputs import write_text

    return Path(write_text(path, render(ans, study_file, figures), protect=[study_file.path]))
