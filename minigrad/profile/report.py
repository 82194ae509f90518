"""What `minigrad bench throughput` prints and writes: step times side by side per path, peak memory, the per-op
breakdowns and their roofline, the ceilings and environment; and the result as JSON."""
import json
import sys

from minigrad.machine.text import fmt_bytes as _bytes
from minigrad.machine.text import fmt_seconds as _seconds
from minigrad.machine.text import plain


def _paths(result):
    # (threads, dtype) -> {path: {B: row}}, paths in the order measured (backends first, then frameworks)
    out = {}
    for row in result["rows"]:
        out.setdefault((row["threads"], row["dtype"]), {}).setdefault(row["backend"], {})[row["batch_size"]] = row
    return out


def _table(file, title, columns, cells):
    """Print a table: rich on a terminal, aligned plain text otherwise."""
    text_first = not cells[0][0].isdigit()  # op names go left, batch sizes right
    if file.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for i, name in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 and text_first else "right")
        for row in cells:
            table.add_row(*row)
        Console(file=file, width=200).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(title, file=file)
    for line in [columns, *cells]:
        first = line[0].ljust(widths[0]) if text_first else line[0].rjust(widths[0])
        print("  ".join([first] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]), file=file)
    print(file=file)


def _pct(row):
    """% of the GEMM ceiling; a starred value comes from a busy machine (throughput.busy_note)."""
    return f"{row['pct_of_ceiling']:.0f}" + ("*" if row.get("busy") else "")


def print_result(result, file=None):
    """Step times side by side per path (one table per thread count and dtype; one detailed table when a single
    path was timed), peak memory, the per-op breakdowns and their roofline, then the ceilings and environment."""
    file = file or sys.stdout
    cfg = result.get("config", {})
    model = f"MLP {cfg.get('sizes')}, {cfg.get('activation', '')}, {cfg.get('optimizer', '')}"
    paths = _paths(result)
    if len(paths) == 1 and len(next(iter(paths.values()))) == 1:
        (T, dtype), by_path = next(iter(paths.items()))
        (path, by_b), = by_path.items()
        _table(file, f"{model}: one training step [{path}, {T} thread(s), {dtype}]; {_ROOF_NOTE}",
               ["B", "median step", "IQR", "samples/s", "GFLOP/s", "least traffic", "roof", "% ceiling", "% mem",
                "peak memory"],
               [[str(B), _seconds(r["step_time_s"]), _seconds(r["iqr_s"]), f"{r['samples_per_s']:,.0f}",
                 f"{r['gflops']:.1f}", *_roof_cells(r)[:2], _pct(r), _roof_cells(r)[2],
                 _bytes(r.get("mem_measured_bytes", 0))] for B, r in by_b.items()])
    else:
        for (T, dtype), by_path in paths.items():
            sizes = list(dict.fromkeys(B for by_b in by_path.values() for B in by_b))
            columns = (["B", "least traffic", "roof"] + [c for p in by_path for c in (p, "%ceil", "%mem")]
                       + ["best samples/s"])
            cells = []
            for B in sizes:
                ref = next(by_b[B] for by_b in by_path.values() if B in by_b)
                line = [str(B), *_roof_cells(ref)[:2]]
                for by_b in by_path.values():
                    r = by_b.get(B)
                    line += [_seconds(r["step_time_s"]), _pct(r), _roof_cells(r)[2]] if r else ["-", "-", "-"]
                best = max((by_b[B] for by_b in by_path.values() if B in by_b), key=lambda r: r["samples_per_s"])
                cells.append(line + [f"{best['samples_per_s']:,.0f} ({best['backend']})"])
            _table(file, f"{model}: median time of one training step [{T} thread(s), {dtype}]; %ceil = executed "
                   f"GEMM GFLOP/s as % of the {dtype} GEMM ceiling; {_ROOF_NOTE}", columns, cells)
    from minigrad.profile.throughput import busy_note

    timed = {r["timed"].split(" (")[0] for r in result.get("rows", []) if "timed" in r}  # minigrad's rows
    if timed == {"loop"}:
        print("minigrad's steps timed in chunks of the compiled training loop (--in-loop)", file=file)
    note = busy_note(result.get("rows", []))
    if note:
        print(f"* {note}", file=file)
    _print_memory(result, file)
    _print_breakdowns(result, file)
    for name, why in result.get("skipped", {}).items():
        print(f"--compare {name}: {why}", file=file)
    for line in _footer(result):
        print(line, file=file)


_ROOF_NOTE = ("least traffic = the bytes a step must move at least; %mem = that traffic at the measured bandwidth "
              "(L2 while the step's data fits the cores' L2, else DRAM) as % of the step's time; roof = the larger "
              "of the two floors (memory or GEMM), the one that applies")


def _roof_cells(r):
    # least traffic, which roof applies (memory: at which bandwidth), the step's % of the memory floor
    if "traffic_bytes" not in r:
        return ["-", "-", "-"]
    roof = f"memory ({r['memory_level']})" if r["roof"] == "memory" else "GEMM"
    return [_bytes(r["traffic_bytes"]), roof, f"{r['pct_of_memory_floor']:.0f}"]


def _print_memory(result, file):
    rows = [r for r in result["rows"] if "mem_counted_bytes" in r]
    if not rows:
        return
    T, dtype = max(r["threads"] for r in rows), rows[0]["dtype"]
    rows = [r for r in rows if r["threads"] == T and r["dtype"] == dtype]
    by_path = {}
    for r in rows:
        by_path.setdefault(r["backend"], {})[r["batch_size"]] = r
    first = rows[0]
    columns = ["B", "activations", "workspace"] + [c for p in by_path for c in (f"{p} counted", "measured")]
    cells = []
    for B in dict.fromkeys(r["batch_size"] for r in rows):
        ref = next(by_b[B] for by_b in by_path.values() if B in by_b)
        line = [str(B), _bytes(ref["mem_activations_bytes"]), _bytes(ref["mem_workspace_bytes"])]
        for by_b in by_path.values():
            r = by_b.get(B)
            line += [_bytes(r["mem_counted_bytes"]), _bytes(r["mem_measured_bytes"])] if r else ["-", "-"]
        cells.append(line)
    _table(file, f"Peak memory of training [{T} thread(s), {dtype}]: parameters "
           f"{_bytes(first['mem_parameters_bytes'])}, "
           f"gradients {_bytes(first['mem_gradients_bytes'])}, optimizer state "
           f"{_bytes(first['mem_optimizer_state_bytes'])} at every B; counted = MLP.memory_count, measured = "
           "tracemalloc peak (workspace columns: the first path's)", columns, cells)


def _print_breakdowns(result, file):
    groups = {}
    for entry in result.get("breakdowns", []):
        groups.setdefault((entry["batch_size"], entry["threads"], entry["dtype"]), []).append(entry)
    for (B, T, dtype), entries in groups.items():
        names = [op["name"] for op in entries[0]["ops"]]
        for e in entries[1:]:
            names += [op["name"] for op in e["ops"] if op["name"] not in names]
        columns = ["op"] + [c for e in entries for c in (e["backend"], "%")]
        cells, below_noise = [], False
        for name in names:
            line = [name]
            for e in entries:
                op = next((op for op in e["ops"] if op["name"] == name), None)
                if op and op["seconds"] < 0:  # shorter than the timing noise: never printed as a negative time
                    below_noise = True
                    line += ["~0*", "0"]
                else:
                    line += ([_seconds(op["seconds"]), f"{100 * op['seconds'] / e['compiled_step_s']:.0f}"] if op
                             else ["-", "-"])
            cells.append(line)
        cells.append(["compiled step (sum of the ops)"] + [c for e in entries for c in
                                                           (_seconds(e["compiled_step_s"]), "100")])
        cells.append(["the step called once from Python"] + [c for e in entries for c in (
            _seconds(e["python_call_s"]), f"{100 * e['python_call_s'] / e['compiled_step_s']:.0f}")])
        cells.append(["MLP.train_step_trusted (training loop)"] + [c for e in entries for c in (
            _seconds(e["train_step_s"]) + (" fused" if e["fused"] else ""),
            f"{100 * e['train_step_s'] / e['compiled_step_s']:.0f}")])
        cells.append(["  share outside compiled code"] + [c for e in entries for c in (
            f"{100 * max(e['python_call_s'] - e['compiled_step_s'], 0) / e['python_call_s']:.0f}%", "")])
        _table(file, f"Where the time of one step goes: B={B}, {T} thread(s), {dtype} (each op timed in place; "
               "per-example: B x the ops of a single-example pass)", columns, cells)
        if below_noise:
            print("~0*: shorter than the timing noise (its prefix difference came out negative); a busy machine "
                  "makes this likelier", file=file)
        for line in _loops_against_blas(entries):
            print(line, file=file)
        gemms = [r["op"] for r in entries[0]["roofline"]]
        columns = ["GEMM", "M x N x K", "flop/byte"] + [c for e in entries for c in (f"{e['backend']} GF/s",
                                                                                        "% roof")]
        cells = []
        for name in gemms:
            ref = next(r for r in entries[0]["roofline"] if r["op"] == name)
            line = [name, ref["shape"], f"{ref['intensity']:.1f}"]
            for e in entries:
                r = next((r for r in e["roofline"] if r["op"] == name), None)
                line += [f"{r['gflops']:.1f}", f"{r['pct_of_attainable']:.0f}"] if r else ["-", "-"]
            cells.append(line)
        ceiling, bandwidth = result["dtype_ceilings"][T][dtype], result["bandwidths"][T]
        _table(file, f"Roofline: B={B}, {T} thread(s), {dtype}; GEMM ceiling {ceiling:.1f} GFLOP/s, memory "
               f"bandwidth {bandwidth:.1f} GB/s, ridge at {ceiling / bandwidth:.1f} flop/byte; % roof = achieved / "
               "min(ceiling, intensity x bandwidth); shape and intensity of the batched GEMM"
               + ("; per-example runs each as B products of one row (1 x N x K, intensity < 0.5 in float32, "
                  "its own roof)" if any(e["backend"] == "per-example" for e in entries) else ""), columns, cells)


def _loops_against_blas(entries):
    # where the loops paths lose to BLAS: GEMMs or the rest, and why
    blas = next((e for e in entries if e["backend"] == "blas"), None)
    if blas is None:
        return []

    def split(e):
        gemm = sum(op["seconds"] for op in e["ops"] if op["kind"] == "gemm")
        return gemm, e["compiled_step_s"] - gemm

    blas_gemm, blas_rest = split(blas)
    lines = []  # absolute times: the other ops are a few percent, where a ratio would be mostly noise
    for e in entries:
        if e["backend"].startswith("loops") and blas_gemm > 0:
            gemm, rest = split(e)
            lines.append(f"{e['backend']} against blas: GEMMs {_seconds(gemm)} against {_seconds(blas_gemm)} "
                         f"({gemm / blas_gemm:.1f}x), other ops {_seconds(rest)} against {_seconds(blas_rest)} (the "
                         "loops have no register tiling and no packing: see the README, 'Why the loops path is "
                         "slower')")
    return lines + ([""] if lines else [])


def _footer(result):
    cfg, env = result.get("config", {}), result.get("env", {})
    lines = []
    for T, g in sorted(result.get("ceilings", {}).items(), key=lambda kv: int(kv[0])):
        bandwidth = result.get("bandwidths", {}).get(T)
        settings = result.get("thread_settings", {}).get(T)
        if settings:
            lines.append(f"{T} thread(s) in effect: Numba {settings['numba']}; " +
                         ", ".join(f"{lib} {n}" for lib, n in settings["blas"].items()))
        cache = result.get("cache_bandwidths", {}).get(T)
        f64 = result.get("dtype_ceilings", {}).get(T, {}).get("float64")
        memory = f", memory bandwidth {bandwidth:.1f} GB/s DRAM, {cache:.0f} GB/s L2 (STREAM triad)" \
            if bandwidth and cache else ""
        lines.append(f"{T} thread(s): GEMM ceiling {g:.1f} GFLOP/s float32" + (f", {f64:.1f} float64" if f64 else "")
                     + f" ({cfg.get('ceiling_n', 2048)}^3 GEMMs through the large step's BLAS, "
                       f"{env.get('step_blas', 'openblas')}){memory}")
    if result.get("compile_s"):
        lines.append("compile (first calls, minus a step): " +
                     ", ".join(f"{k} {v:.1f} s" for k, v in result["compile_s"].items()))
    blas = [f"{b['vendor']} {b['version']} ({b['architecture']}, {b['library']})" for b in env.get("blas", [])]
    if blas:
        lines.append("BLAS: " + "; ".join(blas) + (f"; the large-batch SGD step's GEMMs on {env['step_blas']}"
                                                   if env.get("step_blas") else ""))
    if env:
        lines.append(f"Numba {env.get('numba')} ({env.get('numba_threading_layer')} threading layer, "
                     f"NUMBA_NUM_THREADS={env.get('numba_num_threads')}, target {env.get('numba_cpu')}); "
                     f"CPU: {env.get('cpu')}")
    return lines


def write_json(result, path):
    """Write the result as JSON ({"rows": [...], "ceiling_gflops": ..., "env": ...}), whole or not at all and never
    through a link (machine/outputs.py)."""
    from minigrad.machine.outputs import output_file

    with output_file(path) as fh:
        json.dump(plain(result), fh, indent=1)
        fh.write("\n")
