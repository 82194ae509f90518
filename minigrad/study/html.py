"""A study as one self-contained HTML page: the answer and its recipe, the table, the fit, every figure inline (base64
PNG), the configuration and the machine. No scripts, no external files: it opens anywhere and can be mailed.

The page is built from the analysis object's fields (minigrad.study.report.Analysis): the ones it knows get their own
section, and any other field is shown as a generic table under "More results", so a field added to the analysis later
appears without a change here.
"""
import base64
import dataclasses
import datetime
import html
import json
import math
from pathlib import Path

_KNOWN = {"config", "target", "target_reason", "rows", "fit", "recommended", "equal", "heat", "reference_lr"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2327;
       background: #f6f7f9; }
header { background: #23395d; color: white; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; } header p { margin: 4px 0 0; opacity: 0.85; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: white; border: 1px solid #dde1e6; border-radius: 6px; padding: 14px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 10px; color: #23395d; }
.answer { border-left: 5px solid #2e8540; font-size: 15px; line-height: 1.5; }
.recipe { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f0f3f6; padding: 8px 12px;
          border-radius: 4px; white-space: pre-wrap; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e8eb; text-align: right; }
th { background: #f0f3f6; } td.l, th.l { text-align: left; }
tr.pick td { background: #e7f4ea; font-weight: 600; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #e6e8eb; }
figcaption { font-size: 12px; color: #555; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.note { font-size: 12px; color: #555; }
"""

_ROW_COLUMNS = [("batch_size", "B"), ("step_time_s", "step time"), ("threads", "threads"),
                ("samples_per_s", "samples/s"), ("best_lr", "best lr"), ("steps", "steps to target"),
                ("examples", "examples to target"), ("time_s", "time to target"), ("fit_steps", "fit S(B)"),
                ("status", "status"), ("n_trials", "trials"), ("n_diverged", "diverged")]


def _e(x):
    return html.escape(str(x))


def _value(key, v):
    """A cell: times with units, counts with separators, other numbers to 4 significant digits."""
    from minigrad.study.report import fmt_count, fmt_time

    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "-"
        if key in ("steps", "examples", "samples_per_s", "fit_steps", "E_min"):
            return fmt_count(float(v))
        if key.endswith("_s"):  # step_time_s, time_s: seconds
            return fmt_time(float(v))
        return f"{v:.4g}" if isinstance(v, float) else f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, (dict, list, tuple, set)):
        return _e(json.dumps(v, default=str, sort_keys=True) if not isinstance(v, set) else sorted(map(str, v)))
    return _e(v)


def _table(rows, columns=None, pick=None):
    """rows: list of dicts; columns: [(key, heading)] (default: every key, in order)."""
    if not rows:
        return "<p class='note'>none</p>"
    columns = columns or [(k, k) for k in dict.fromkeys(k for r in rows for k in r)]
    columns = [(k, h) for k, h in columns if any(k in r for r in rows)]
    head = "".join(f"<th>{_e(h)}</th>" for _, h in columns)
    body = []
    for r in rows:
        cls = " class='pick'" if pick is not None and r.get("batch_size") == pick else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_value(k, r.get(k))}</td>" for k, _ in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pairs(d, title=None):
    """A two-column table of a dict (nested values as JSON)."""
    rows = "".join(f"<tr><td class='l'>{_e(k)}</td><td class='l'>{_value(k, v)}</td></tr>" for k, v in d.items())
    return (f"<h3>{_e(title)}</h3>" if title else "") + f"<table>{rows}</table>"


def _recipe(a, attrs):
    """The recommended setting as a `minigrad train` command that reproduces one run of it."""
    r, c = a.recommended, a.config
    if r is None:
        return None
    steps = r["steps"] if math.isfinite(r["steps"]) else None
    options = c.get("data_options") or {}
    parts = ["minigrad train", f"--data {c['data']}"]
    parts += [f"--data-dir {options['data_dir']}"] if options.get("data_dir") else []
    parts += [f"--n-val {options['n_val']}"] if options.get("n_val") else []
    parts += [f"--hidden {','.join(map(str, c['hidden']))}",
             f"--activation {c['activation']}", f"--optimizer {c['optimizer']}"]
    if c["optimizer"] != "sgd":
        parts.append(f"--momentum {c['momentum']:g}")
    parts += [f"--batch-size {r['batch_size']}", f"--lr {r['best_lr']:g}", f"--sampler {c['sampler']}",
              f"--dtype {c['dtype']}"]
    if steps is not None:
        parts.append(f"--steps {int(steps)}")
    parts.append(f"--target {a.target:g}")
    return " \\\n    ".join(parts)


def _figure(path):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = Path(path).stem.rsplit("_", 1)[-1]
    return (f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(Path(path).name)}</figcaption></figure>")


def _machine(attrs):
    keys = ("host", "cpu", "created", "minigrad_version", "numpy_version", "numba_version", "h5py_version",
            "hdf5_version", "throughput_host", "ceiling_gflops")
    out = {k: attrs[k] for k in keys if attrs.get(k) is not None}
    threads = attrs.get("threads") or {}
    out.update({f"threads: {k}": v for k, v in threads.items() if v is not None})
    for i, lib in enumerate(attrs.get("blas") or []):
        out[f"BLAS {i + 1}"] = ", ".join(f"{k} {v}" for k, v in lib.items() if v is not None)
    return out


def render(analysis, study_file, figures):
    """The page as a string. analysis: minigrad.study.report.Analysis; figures: PNG paths to embed."""
    from minigrad.study.report import recommendation_sentence

    a, attrs = analysis, study_file.attrs
    pick = a.recommended["batch_size"] if a.recommended else None
    recipe = _recipe(a, attrs)
    sections = [
        f"<section class='answer'><h2>The answer</h2><p>{_e(recommendation_sentence(a))}</p>"
        f"<p class='note'>Target: validation error &le; {a.target:g} ({_e(a.target_reason)}).</p>"
        + (f"<p>Recipe (one run of the recommendation):</p><div class='recipe'>{_e(recipe)}</div>" if recipe else "")
        + "</section>",
        "<section><h2>Batch size: compute speed &times; convergence speed</h2>"
        + _table(a.rows, _ROW_COLUMNS, pick) + "</section>",
    ]
    if a.fit:
        fit = dict(a.fit)
        sections.append("<section><h2>Fit S(B) = S_min + E_min / B</h2>" + _pairs(fit)
                        + "<p class='note'>B_crit = E_min/S_min; B_crit_lo/hi: 90% bootstrap interval over seeds and step times; "
                          "max_ratio: largest misfit of the fit at a measured B.</p></section>")
    if a.equal:
        sections.append(f"<section><h2>Equal budget: {a.config['equal_epochs']:g} epochs at every B</h2>"
                        + _table(a.equal) + "</section>")
    extra = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name not in _KNOWN}
    extra = {k: v for k, v in extra.items() if v not in (None, {}, [])}
    if extra:
        parts = []
        for k, v in extra.items():
            if isinstance(v, dict):
                parts.append(_pairs(v, k))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                parts.append(f"<h3>{_e(k)}</h3>" + _table(v))
            else:
                parts.append(_pairs({k: v}))
        sections.append("<section><h2>More results</h2>" + "".join(parts) + "</section>")
    if figures:
        sections.append("<section><h2>Figures</h2><div class='figs'>" + "".join(_figure(p) for p in figures)
                        + "</div></section>")
    sections.append("<section class='cols'><div><h2>Configuration</h2>" + _pairs(a.config)
                    + "</div><div><h2>Machine</h2>" + _pairs(_machine(attrs)) + "</div></section>")
    made = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>minigrad study: {_e(Path(study_file.path).name)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>Which batch size? {_e(Path(study_file.path).name)}</h1>"
            f"<p>{len(study_file.runs)} runs on {_e(attrs.get('host', '?'))} ({_e(attrs.get('cpu', '?'))}), "
            f"study created {_e(attrs.get('created', '?'))}; page written {made} by minigrad "
            f"{_e(attrs.get('minigrad_version', ''))}</p></header><main>{''.join(sections)}</main></body></html>")


def write(analysis, study_file, figures, path):
    """Write the page to `path`, whole or not at all, never over a link or the study (machine/outputs.py)."""
    from minigrad.machine.outputs import write_text

    return Path(write_text(path, render(analysis, study_file, figures), protect=[study_file.path]))
