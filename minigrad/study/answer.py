"""The study's answer as one object, which every output renders: the terminal (minigrad.study.report), `report
--json` (Answer.to_dict), the HTML page (minigrad.study.html) and the Python API (Study.answer()).

The numbers come from minigrad.study.analysis; every sentence and the recipe are made here, once, so no output can
say something another does not.
"""
import html
import math
from dataclasses import dataclass, field

import numpy as np

from minigrad.study.analysis import Analysis, _span, time_gaps, timed_threads
from minigrad.study.ladder import trend_sentence
from minigrad.study.uncertainty import INTERVAL


# ------------------------------------------------------------------------------------------------------ numbers
def fmt_time(seconds):
    if seconds is None or not math.isfinite(seconds):
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
    return "-" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def fmt_interval(lo, hi, fmt):
    """A table cell: '1,020-1,480', 'degenerate' (one seed: nothing to resample) or '-' (no interval)."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    if lo == hi:
        return "degenerate"
    return fmt(lo, hi) if fmt is fmt_time_range else f"{fmt(lo)}-{fmt(hi)}"


def _range(lo, hi, fmt, note=""):
    """A sentence's interval: '1,020 to 1,480', or why there is none."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval"
    if lo == hi:
        return "interval degenerate: too few seeds to resample"
    return f"{fmt(lo)} to {fmt(hi)}" + (f", {note}" if note else "")


INTERVAL_NAME = f"{INTERVAL[1] - INTERVAL[0]:.0f}% bootstrap interval"


# ------------------------------------------------------------------------------------------------------ sentences
def fit_sentence(a: Analysis):
    f = a.fit
    if not f or not math.isfinite(f.get("S_min", math.nan)):
        return f"{f.get('reason', 'no fit')}: B_crit is not determined." if f else ""
    if not f["ok"]:
        return f"{f['reason']}. B_crit is not determined."
    if not f["determined"]:
        return f"B_crit is {f['B_crit_note']}."
    crit = (f"The fitted critical batch size is B_crit = E_min/S_min = {f['E_min']:,.0f}/{f['S_min']:,.1f} = "
            f"{f['B_crit']:.0f} ({INTERVAL_NAME} {_range(f['B_crit_lo'], f['B_crit_hi'], lambda x: f'{x:.0f}')}")
    crit += f"; {f['B_crit_note']})" if f["B_crit_note"] and "widened" not in f["B_crit_note"] else ")"
    return crit + ": below it doubling B nearly halves the steps, above it extra examples buy few steps."


def fit_line(a: Analysis):
    """The fit's parameters and self-check in one line, or '' when there is no fit."""
    f = a.fit
    if not f or not math.isfinite(f.get("S_min", math.nan)):
        return ""
    return (f"fit S(B) = S_min + E_min/B: S_min = {f['S_min']:,.1f} steps, E_min = {f['E_min']:,.0f} examples, "
            f"largest misfit {f['max_ratio']:.2f}x: " + ("describes the data" if f["ok"] else
                                                          "DOES NOT describe the data"))


def gns_line(a: Analysis):
    if not (a.gns and a.fit.get("determined")):
        return ""
    return (f"gradient noise scale near the target: B_simple = {a.gns['b_simple']:,.0f} (best-lr trials, "
            f"{a.gns['trials']} of them) next to B_crit = {a.fit['B_crit']:,.0f}: B_simple / B_crit = "
            f"{a.gns['b_simple'] / a.fit['B_crit']:.2f} (McCandlish et al.: about 1 to 10)")


def gap_line(a: Analysis):
    gaps = time_gaps(a.rows)
    if not gaps:
        return ""
    return ("trial steps differ from t(B) by more than 20% at " + ", ".join(f"B = {B} ({ratio:.2f}x)" for B, ratio in
            gaps) + ": time to target uses t(B); the trials ran with the cores shared and their own thread count")


def recommendation_sentence(a: Analysis):
    """What to do, why, how sure: everything of the answer in words but the recipe."""
    rec, r = a.recommendation, a.recommended
    if not rec:
        return ("No batch size reached the target: raise the budget (budget_factor), widen the learning-rate grid "
                "or loosen the target.")
    steps = f"{fmt_count(r['steps'])} steps ({_range(r['steps_lo'], r['steps_hi'], fmt_count)})"
    time = (f", {fmt_time(r['time_s'])} of compute on this machine ({_range(r['time_lo'], r['time_hi'], fmt_time)})"
            if math.isfinite(r["time_s"]) else "")
    # what following the pick can cost; whether the tie set's edges repeat across resamples (stable_fraction, in
    # --json) is left out: on a flat optimum they never settle, and the regret bound already says what is at stake
    stable = regret_sentence(rec)
    adaptive = f" Adaptive phase: {a.adaptive['state']}." if a.adaptive.get("state") else ""
    return (f"Use batch size {r['batch_size']} with learning rate {r['best_lr']:g}: {rec['reason']}. It reaches "
            f"validation error {a.target:g} in {steps} of {fmt_time(r['step_time_s'])}{_on_threads(r)}{time}. "
            f"{stable}{adaptive} "
            f"{fit_sentence(a)}").rstrip()


def regret_sentence(rec):
    """What following the pick can cost, and how flat the optimum is, in words."""
    from minigrad.study.uncertainty import FLAT_TOLERANCE, REGRET_QUANTILE

    if "regret" not in rec or not math.isfinite(rec["regret"]):
        return ""
    what = "time" if rec.get("measure", "").startswith("time") else "steps"
    text = (f"It is the fastest batch size in at least {REGRET_QUANTILE:.0%} of resamples." if rec["regret"] < 0.005
            else f"Following it costs at most {rec['regret']:.0%} more {what} than the fastest batch size in "
                 f"{REGRET_QUANTILE:.0%} of resamples.")
    flat = rec.get("flat") or []
    if len(flat) > 1:
        text += (f" T(B) is flat here: anything from B = {flat[0]} to {flat[-1]} is within {FLAT_TOLERANCE:.0%} of "
                 "the fastest in the median resample, so any of them is as good an answer.")
    return text


def _on_threads(row):
    t = timed_threads(row)
    return f" on {t} thread{'s' if t != 1 else ''}" if t and math.isfinite(row["step_time_s"]) else ""


def recipe_intro(a: Analysis):
    r = a.recommended
    if not r:
        return ""
    return (f"To train it (single seeds took {fmt_count(r['seed_steps'][0])} to {fmt_count(r['seed_steps'][1])} "
            "steps):")


def adaptive_sentence(a: Analysis):
    """What the adaptive phase did: its own account when it left one, else the count of its trials."""
    ad = a.adaptive
    if ad.get("state"):
        return ad["state"][0].upper() + ad["state"][1:] + "."
    if not ad.get("trials"):
        return ""
    rounds = ad.get("rounds", 0)
    return f"{ad['trials']} adaptive trials in {rounds} round{'s' if rounds != 1 else ''}."


def ladder_cells(r):
    """One level of the ladder as table cells: level, S_min, E_min, B_crit and interval, CBS-20% and interval,
    B_simple, whether the fit describes the data."""
    crit = fmt_count(r["B_crit"]) if r["determined"] else "-"
    span = fmt_interval(r["B_crit_lo"], r["B_crit_hi"], fmt_count) if r["determined"] else "not determined"
    cbs = fmt_interval(r["cbs_lo"], r["cbs_hi"], fmt_count) if r["determined"] else "-"
    return [f"{r['level']:g}" + (" (target)" if r["is_target"] else ""), f"{r['S_min']:,.0f}"
            if math.isfinite(r["S_min"]) else "-", fmt_count(r["E_min"]), crit, span,
            fmt_count(r["cbs"]) if r["determined"] else "-", cbs, fmt_count(r["b_simple"]),
            "yes" if r["ok"] else "no"]


def schedule_sentence(sch):
    """What the schedule predicts and, after the verify phase, what training it showed and which to use."""
    if not sch:
        return ""
    f = sch["fixed"]
    fixed = f"B = {f['batch_size']} at learning rate {f['lr']:g}"
    predicted = (f"predicted {fmt_count(sch['steps'])} steps, {fmt_time(sch['time_s'])} of compute, against "
                 f"{fmt_count(f['steps'])} steps and {fmt_time(f['time_s'])} for {fixed} "
                 f"(ratio {sch['predicted_ratio']:.2f})")
    if not sch["saves"]:
        return (f"Batch-size schedule: the ladder's curves predict no saving over the fixed {fixed} ({predicted}): "
                "use the fixed batch size.")
    stages = " then ".join(f"B = {s['batch_size']}" + (f" from error {s['from_level']:g}" if s["from_level"]
                                                       is not None else "") for s in sch["stages"])
    text = f"Batch-size schedule from the ladder's curves: {stages}; {predicted}."
    v = sch.get("verification") or {}
    if not v:
        return text + (" Not verified: the verify phase is off (verify_seeds = 0); it would train both with fresh "
                       "seeds." if sch.get("verify_seeds") == 0 else " Not verified yet: the verify phase has not run "
                       "(`minigrad bench` on this file runs it).")
    if not v["same"]:
        text += (f" The verify phase in this file trained another schedule, {v['text']} (an older choice); what "
                 "follows is its result.")
    span = _range(v["time_ratio_lo"], v["time_ratio_hi"], lambda x: f"{x:.2f}")
    steps = _range(v["steps_ratio_lo"], v["steps_ratio_hi"], lambda x: f"{x:.2f}")
    text += (f" Verified with {v['seeds']} fresh seeds each: time to target schedule / fixed = {v['time_ratio']:.2f} "
             f"({INTERVAL_NAME} {span}), steps {v['steps_ratio']:.2f} ({steps}); \"the schedule saves time\": "
             f"{v['outcome']}. ")
    if v["use"] == "schedule":
        return text + (f"Use the schedule: it reaches the target in {1 - v['time_ratio']:.0%} less time "
                       f"({1 - v['time_ratio_hi']:.0%} to {1 - v['time_ratio_lo']:.0%}).")
    why = ("the saving is within noise" if v["outcome"] == "inconclusive" else "it saves no time worth having")
    return text + f"Use the fixed {fixed}: {why}."


def schedule_cells(sch):
    """The schedule's stages, then the fixed batch size, as table rows."""
    rows = [[f"#{i + 1}", str(s["batch_size"]), f"{s['lr']:g}", "start" if s["from_level"] is None else
             f"{s['from_level']:g}", f"{s['to_level']:g}", fmt_count(s["steps"]), fmt_count(s["examples"]),
             fmt_time(s["step_time_s"]), fmt_time(s["time_s"])] for i, s in enumerate(sch["stages"])]
    f = sch["fixed"]
    rows.append(["fixed", str(f["batch_size"]), f"{f['lr']:g}", "start", f"{sch['levels'][-1]:g}",
                 fmt_count(f["steps"]), fmt_count(f["examples"]), "-", fmt_time(f["time_s"])])
    return rows


SCHEDULE_HEADINGS = ["stage", "B", "lr", "from error", "to error", "steps", "examples", "step time", "time"]


LADDER_HEADINGS = ["val error", "S_min", "E_min", "B_crit", "interval", "CBS-20%", "interval ", "B_simple", "fit ok"]


# ------------------------------------------------------------------------------------------------------ the object
@dataclass(frozen=True)
class Answer:
    """Everything a reader of the study is told, numbers and words. rows: one dict per batch size (the analysis's
    columns, with win_fraction and tied); fit: the analysis's fit dict; recommendation: {} when no B reached the
    target; config and machine: plain settings and the study file's machine attributes."""

    target: float
    target_reason: str
    rows: list
    fit: dict
    recommendation: dict
    sentence: str                    # the recommendation in words
    recipe: str                      # the `minigrad train` line of the pick ('' without a pick)
    recipe_intro: str
    fit_line: str
    fit_sentence: str
    notes: list                      # lines under the table: trial steps far from t(B), a busy machine
    gns_line: str                    # the gradient noise scale next to B_crit ('' when either is missing)
    equal: list
    equal_epochs: float
    adaptive: dict
    adaptive_sentence: str
    gns: dict
    busy: str
    config: dict
    machine: dict = field(default_factory=dict)
    ladder: list = field(default_factory=list)   # per error level: S_min, E_min, B_crit, CBS-20%, B_simple, rows
    ladder_sentence: str = ""
    schedule: dict = field(default_factory=dict)  # the batch-size schedule, its prediction and verification
    schedule_sentence: str = ""
    others: list = field(default_factory=list)  # the answers for further step-time tables (other_answer)
    costs: list = field(default_factory=list)   # the trials' compute on each step-time table (study_costs)
    cost_sentence: str = ""

    @property
    def pick(self):
        return self.recommendation.get("batch_size") if self.recommendation else None

    def text(self):
        """The answer as the terminal ends with it: the sentence, then the recipe."""
        return self.sentence + (f"\n{self.recipe_intro} {self.recipe}" if self.recipe else "")

    def __str__(self):
        return self.text()

    def _repr_html_(self):  # a notebook cell shows the answer card
        return answer_card(self)

    def to_dict(self):
        """The machine-readable answer (`minigrad report STUDY --json`): plain JSON types, NaN as null."""
        f, rec = self.fit, self.recommendation
        rows = [dict(batch_size=r["batch_size"], step_time_s=r["step_time_s"], step_time_iqr_s=r["step_time_iqr_s"],
                     threads=r["threads"], busy=bool(r["busy"]), trial_step_s=r.get("trial_step_s"),
                     trial_eval_s=r.get("trial_eval_s"), lr=r["best_lr"], lr_interpolated=r["lr_interpolated"],
                     steps_to_target=r["steps"], steps_interval=[r["steps_lo"], r["steps_hi"]],
                     examples_to_target=r["examples"], seeds=r["seeds"], seed_steps=list(r["seed_steps"]),
                     time_to_target_s=r["time_s"], time_interval_s=[r["time_lo"], r["time_hi"]],
                     fit_steps=r.get("fit_steps"), misfit=r["misfit"], win_fraction=r.get("win_fraction"),
                     tied=r.get("tied"), status=r["counts"], trials=r["n_trials"]) for r in self.rows]
        out = dict(
            target=self.target, target_reason=self.target_reason, rows=rows,
            fit=dict(s_min=f.get("S_min"), e_min=f.get("E_min"), max_misfit=f.get("max_ratio"), ok=f.get("ok"),
                     reason=f.get("reason"), line=self.fit_line),
            b_crit=dict(estimate=f.get("B_crit"), interval=[f.get("B_crit_lo"), f.get("B_crit_hi")],
                        determined=f.get("determined"), note=f.get("B_crit_note"), sentence=self.fit_sentence),
            recommendation=None if not rec else dict(
                batch_size=rec["batch_size"], lr=rec["lr"], lr_interpolated=rec["lr_interpolated"], tied=rec["tied"],
                win_fraction={str(B): w for B, w in rec["win_fraction"].items()}, stable=rec["stable"],
                stable_fraction=rec["stable_fraction"], reason=rec["reason"], regret=rec.get("regret"),
                flat_range=rec.get("flat"), recipe=self.recipe),
            sentence=self.sentence, notes=self.notes, gradient_noise_scale=self.gns or None,
            equal_budget=dict(epochs=self.equal_epochs, rows=self.equal) if self.equal else None,
            adaptive=dict(self.adaptive, sentence=self.adaptive_sentence), busy=self.busy, config=self.config,
            machine=self.machine,
            ladder=dict(sentence=self.ladder_sentence, levels=[dict(
                level=r["level"], is_target=r["is_target"], s_min=r["S_min"], e_min=r["E_min"], fit_ok=r["ok"],
                fit_reason=r["reason"], b_crit=dict(estimate=r["B_crit"], interval=[r["B_crit_lo"], r["B_crit_hi"]],
                                                    determined=r["determined"], note=r["note"]),
                cbs_20=dict(estimate=r["cbs"], interval=[r["cbs_lo"], r["cbs_hi"]]), b_simple=r["b_simple"],
                b_simple_trials=r["gns_trials"], unresolved_fraction=r["unresolved"],
                rows=[dict(batch_size=x["batch_size"], steps=x["steps"], steps_interval=[x["steps_lo"], x["steps_hi"]],
                           lr=x["lr"], misfit=x["misfit"]) for x in r["rows"]]) for r in self.ladder]),
            schedule=None if not self.schedule else dict(self.schedule, sentence=self.schedule_sentence),
            other_answers=self.others, study_cost=dict(sentence=self.cost_sentence, tables=self.costs))
        return _plain(out)


def answer_card(ans):
    """The answer in words, the target and the recipe as HTML: the page's first section, and a notebook's view."""
    e = html.escape
    recipe = (f"<p>{e(ans.recipe_intro)}</p><div class='recipe' id='recipe'>{e(ans.recipe)}</div>"
              if ans.recipe else "")
    return (f"<section class='answer'><h2>The answer</h2><p>{e(ans.sentence)}</p>"
            f"<p class='note'>Target: validation error &le; {ans.target:g} ({e(ans.target_reason)}).</p>"
            f"{recipe}</section>")


def of(analysis: Analysis, attrs=None, others=()):
    """The Answer of an analysis; attrs: the study file's attributes (for the machine), if at hand; others:
    [(name, table attrs, Analysis)] of further step-time tables (minigrad.study.retime.other_analyses)."""
    a = analysis
    rec = a.recommendation or {}
    notes = [line for line in (gap_line(a), a.busy or "") if line]
    costs = study_costs(a, others)
    return Answer(
        target=a.target, target_reason=a.target_reason, rows=a.rows, fit=a.fit or {}, recommendation=rec,
        sentence=recommendation_sentence(a), recipe=rec.get("recipe", ""), recipe_intro=recipe_intro(a),
        fit_line=fit_line(a), fit_sentence=fit_sentence(a), notes=notes, gns_line=gns_line(a), equal=a.equal,
        equal_epochs=a.config.get("equal_epochs", math.nan), adaptive=a.adaptive,
        adaptive_sentence=adaptive_sentence(a), gns=a.gns, busy=a.busy or "", config=a.config,
        machine=machine(attrs or {}), ladder=a.ladder, ladder_sentence=trend_sentence(a.ladder),
        schedule=a.schedule, schedule_sentence=schedule_sentence(a.schedule),
        others=[own_answer(a, attrs or {})] + [other_answer(*o) for o in others] if others else [],
        costs=costs, cost_sentence=cost_sentence(costs))


def study_costs(a: Analysis, others=()):
    """What the study's trials cost on each step-time table: sum over trials of steps run x t(B), the study's own
    table first, then `others` ([(name, table attrs, Analysis)]), over the same trials for every table: those at the
    batch sizes every table times (the rest are named in left_out). [{name, library, seconds, trials, left_out}]."""
    tables = [("study", {"source": "minigrad"}, a), *others]
    if not a.trial_cost or not a.trial_cost["steps"]:
        return []
    steps, runs = a.trial_cost["steps"], a.trial_cost["runs"]
    common = sorted(set(steps).intersection(*(an.trial_cost["t"] for _, _, an in tables)))
    left_out = sorted(set(steps) - set(common))
    return [dict(name=name, library=library_name(attrs), trials=sum(runs[B] for B in common), left_out=left_out,
                 left_out_trials=sum(runs[B] for B in left_out),
                 seconds=sum(steps[B] * an.trial_cost["t"][B] for B in common)) for name, attrs, an in tables]


def library_name(attrs):
    """What a step-time table times, in a few words: 'minigrad', 'PyTorch eager', 'JAX jit', 'minigrad on host h
    (BLAS b)' for a re-timing, 'file gpu.csv' (its source when it gives one)."""
    source = str(attrs.get("source") or "")
    for prefix, name in (("torch-eager", "PyTorch eager"), ("torch-compile", "PyTorch compile"),
                         ("jax-jit", "JAX jit")):
        if source.startswith(prefix):
            return name
    if source.startswith("minigrad (re-timed)"):
        return f"minigrad on {attrs.get('host', '?')} ({attrs.get('blas', '?')}, threads {attrs.get('threads', '?')})"
    if attrs.get("file"):
        return source if source != "step times from a file" else f"file {attrs['file']}"
    return source or "minigrad"


def fmt_minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def cost_sentence(costs):
    """"This study's trials: 2.1 min of compute on minigrad, 9.8 min on PyTorch eager, ..." ('' without costs)."""
    if not costs:
        return ""
    parts = [f"{fmt_minutes(c['seconds'])} {'of compute ' if i == 0 else ''}on {c['library']}"
             for i, c in enumerate(costs)]
    left = costs[0]["left_out"]
    why = "the step-time table has no time for it" if len(costs) == 1 else "not every table times it"
    return (f"This study's trials: {', '.join(parts)} (steps run x t(B), summed over its {costs[0]['trials']} "
            "trials" + (f"; the {costs[0]['left_out_trials']} at B = {', '.join(map(str, left))} are left out: {why}"
                        if left else "") + ").")


def other_answer(name, table_attrs, a: Analysis):
    """One step-time table's answer in brief: where its times come from, the pick, the tie set, T(B) with
    intervals per B."""
    rec = a.recommendation or {}
    return dict(name=name, source=source_line(table_attrs), attrs={k: _scalar(v) for k, v in table_attrs.items()},
                pick=rec.get("batch_size"), lr=rec.get("lr"), tied=list(rec.get("tied", [])),
                tie_range=_span(rec["tied"], [r["batch_size"] for r in a.rows]) if rec else "",
                recipe=rec.get("recipe", ""),
                rows=[dict(batch_size=r["batch_size"], step_time_s=r["step_time_s"], threads=r["threads"],
                           steps_to_target=r["steps"], time_to_target_s=r["time_s"],
                           time_interval_s=[r["time_lo"], r["time_hi"]], tied=r.get("tied"),
                           win_fraction=r.get("win_fraction")) for r in a.rows])


def source_line(attrs):
    """'host h, CPU c, BLAS b, threads 1,2, measured 2026-12-03T14:00' from a table's attrs (what is known)."""
    keys = (("source", ""), ("file", "file "), ("host", "host "), ("cpu", "CPU "), ("blas", "BLAS "),
            ("threads", "threads "), ("measured", "measured "))
    return ", ".join(f"{label}{attrs[k]}" for k, label in keys if attrs.get(k) not in (None, ""))


def own_answer(a: Analysis, attrs):
    """The study's own step times as the first of the answers side by side."""
    blas = attrs.get("step_blas") or "openblas"
    own = {"source": "the study's own", "host": attrs.get("throughput_host") or attrs.get("host"),
           "cpu": attrs.get("cpu"), "blas": blas, "measured": attrs.get("created")}
    return other_answer("study", own, a)



def machine(attrs):
    """The machine the study ran on, from the study file's attributes: {label: text}."""
    keys = (("host", "host"), ("cpu", "CPU"), ("throughput_host", "step times measured on"),
            ("ceiling_gflops", "GEMM ceiling (GFLOP/s)"), ("created", "study created"),
            ("minigrad_version", "minigrad"), ("numpy_version", "NumPy"), ("numba_version", "Numba"),
            ("h5py_version", "h5py"), ("hdf5_version", "HDF5"))
    out = {label: _scalar(attrs[k]) for k, label in keys if attrs.get(k) is not None}
    threads = attrs.get("threads") or {}
    out.update({f"threads ({k})": _scalar(v) for k, v in threads.items() if v is not None})
    for i, lib in enumerate(attrs.get("blas") or []):
        out[f"BLAS {i + 1}"] = ", ".join(f"{k} {v}" for k, v in lib.items() if v is not None)
    return out


def _scalar(v):
    if isinstance(v, (np.floating, float)):
        return f"{float(v):.4g}"
    if isinstance(v, np.integer):
        return int(v)
    return v.decode() if isinstance(v, bytes) else v


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_plain(v) for v in (sorted(x) if isinstance(x, set) else x)]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x

