"""Step times measured anywhere (`minigrad report STUDY --step-times FILE`): a CSV or JSON file of batch size and
seconds per training step, read into the rows of a step-time table (as /throughput's: batch_size, step_time_s,
rounds_s, iqr_s, threads). Several values for one batch size are its measurement rounds: the answer's intervals
resample them, as they do the study's own rounds.

CSV: a header with `batch_size` and `step_time_s` (optionally `threads`), one row per measurement:

    batch_size,step_time_s
    32,0.00041
    32,0.00043
    256,0.0011

JSON: an object {"source": "...", "threads": 4, "step_times": {"32": [0.00041, 0.00043], "256": 0.0011}}
(source and threads optional), or a list of {"batch_size": B, "step_time_s": s} objects.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np

FORMAT = ("a CSV with columns batch_size,step_time_s or a JSON object {\"step_times\": {\"B\": seconds or "
          "[seconds, ...]}}")


def read(path):
    """(rows, attrs) of a step-times file; ValueError (one line naming the file and what is wrong) for bad input."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--step-times {path}: no such file; give {FORMAT}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--step-times {path}: cannot be read ({exc}); give {FORMAT}") from None
    attrs = {"source": "step times from a file", "file": path.name}
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in "[{":
        pairs, extra = _json(path, text)
        attrs.update(extra)
    else:
        pairs = _csv(path, text)
    if not pairs:
        raise ValueError(f"--step-times {path}: no step times in it; give {FORMAT}")
    values = {}
    for B, t, threads in pairs:
        values.setdefault(B, ([], threads))[0].append(t)
    rows = []
    for B in sorted(values):
        times, threads = values[B]
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        rows.append(dict(batch_size=B, step_time_s=float(median), iqr_s=float(q3 - q1), threads=threads,
                         rounds_s=" ".join(repr(float(t)) for t in times), samples_per_s=B / float(median)))
    return rows, attrs


def _json(path, text):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--step-times {path}: not valid JSON ({exc.msg} at line {exc.lineno}); give {FORMAT}") \
            from None
    extra = {}
    if isinstance(data, dict):
        if "step_times" not in data or not isinstance(data["step_times"], dict):
            raise ValueError(f"--step-times {path}: the JSON object has no \"step_times\" object; give {FORMAT}")
        if data.get("source") is not None:
            extra["source"] = str(data["source"])
        threads = data.get("threads")
        pairs = []
        for B, v in data["step_times"].items():
            for t in (v if isinstance(v, list) else [v]):
                pairs.append((_batch(path, B), _seconds(path, B, t), threads))
        return pairs, extra
    if isinstance(data, list):
        pairs = []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "batch_size" not in item or "step_time_s" not in item:
                raise ValueError(f"--step-times {path}: item {i} is not a {{\"batch_size\", \"step_time_s\"}} object; "
                                 f"give {FORMAT}")
            B = _batch(path, item["batch_size"])
            pairs.append((B, _seconds(path, B, item["step_time_s"]), item.get("threads")))
        return pairs, extra
    raise ValueError(f"--step-times {path}: the JSON is a {type(data).__name__}; give {FORMAT}")


def _csv(path, text):
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "batch_size" not in fields or "step_time_s" not in fields:
        raise ValueError(f"--step-times {path}: the CSV header {','.join(fields) or '(none)'} lacks batch_size and "
                         f"step_time_s; give {FORMAT}")
    pairs = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        B = _batch(path, row["batch_size"], line)
        threads = row.get("threads") or None
        pairs.append((B, _seconds(path, B, row["step_time_s"], line), int(threads) if threads else None))
    return pairs


def _batch(path, value, line=None):
    where = f" line {line}:" if line else ""
    try:
        B = int(str(value).strip())
    except ValueError:
        B = None
    if B is None or B < 1 or str(value).strip() != str(B):
        raise ValueError(f"--step-times {path}:{where} batch size {value!r} is not a positive integer")
    return B


def _seconds(path, B, value, line=None):
    where = f" line {line}:" if line else ""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            value = repr(value)
    if isinstance(value, bool) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"--step-times {path}:{where} the step time {value!r} at batch size {B} is not a positive, "
                         "finite number of seconds")
    return t
