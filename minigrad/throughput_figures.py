"""The figures of `minigrad bench throughput` (PNG, matplotlib Agg), from the result of throughput.measure alone.

throughput_samples.png   samples/s against B, log-log: one line per path (backend or framework), thread count and
                         dtype. Along a flat line every example costs the same; a line that climbs is batching paying.
throughput_per_example.png  time per example (step time / B) against B, log-log, with the per-example path as the
                         no-vectorisation baseline.
roofline_<dtype>.png     the measured roofs (GEMM ceiling, memory bandwidth x intensity) per thread count, and every
                         GEMM of each --breakdown step at its arithmetic intensity and achieved GFLOP/s.
"""
import math
from pathlib import Path

from minigrad.figures import _plt, _save

_STYLES = {"blas": "o-", "loops": "s-", "loops-parallel": "^-", "per-example": "x-", "torch-eager": "D--",
           "jax-jit": "v--"}


def _lines(result):
    lines = {}
    for row in result["rows"]:
        lines.setdefault((row["backend"], row["threads"], row["dtype"]), []).append(row)
    return lines


def _label(backend, T, dtype):
    return f"{backend}, {T} thread{'s' if T > 1 else ''}, {dtype}"


def throughput_figures(result, out_dir):
    """Write the figures; returns their paths (a roofline per dtype of the breakdowns, if any)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    cfg = result.get("config", {})
    model = f"MLP {'-'.join(map(str, cfg.get('sizes', [])))}, {cfg.get('optimizer', '')}"
    lines = _lines(result)
    paths = []

    for name, y_of, ylabel, title in (
            ("throughput_samples.png", lambda r: r["samples_per_s"], "samples / s",
             f"Throughput of one training step ({model})"),
            ("throughput_per_example.png", lambda r: r["step_time_s"] / r["batch_size"] * 1e6,
             "time per example (us)", f"Time per example ({model})")):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for (backend, T, dtype), rows in lines.items():
            ax.loglog([r["batch_size"] for r in rows], [y_of(r) for r in rows], _STYLES.get(backend, "o-"),
                      label=_label(backend, T, dtype), alpha=0.85, markersize=4,
                      linewidth=1.0 if dtype == "float64" else 1.6)
        ax.set(xlabel="batch size B", ylabel=ylabel, title=title)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, ncol=2)
        paths.append(_save(fig, out_dir / name))

    for dtype in dict.fromkeys(e["dtype"] for e in result.get("breakdowns", [])):
        paths.append(_roofline(result, dtype, out_dir / f"roofline_{dtype}.png", model))
    return paths


SHOWN_SHARE = 0.02


def _shown(row, entry):
    # GEMMs that take a visible share of the step: the tiny ones' times are differences within the timing noise
    return row["gflops"] > 0 and math.isfinite(row["gflops"]) and \
        row["seconds"] >= SHOWN_SHARE * entry["compiled_step_s"]


def _roofline(result, dtype, path, model):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    entries = [e for e in result["breakdowns"] if e["dtype"] == dtype]
    points = [r for e in entries for r in e["roofline"] if _shown(r, e)]
    lo = min([r["intensity"] for r in points] + [0.1]) / 2
    hi = max([r["intensity"] for r in points] + [100.0]) * 2
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    top = max(result["ceilings"], key=int)
    for T in sorted(result["ceilings"], key=int):
        ceiling, bandwidth = result["dtype_ceilings"][T][dtype], result["bandwidths"][T]
        ax.loglog(grid, [min(ceiling, i * bandwidth) for i in grid], "k-" if T == top else "k--", linewidth=1.2,
                  label=f"DRAM roof, {T} thread(s): {ceiling:.0f} GFLOP/s, {bandwidth:.0f} GB/s")
        cache = result.get("cache_bandwidths", {}).get(T)
        if cache:
            ax.loglog(grid, [min(ceiling, i * cache) for i in grid], "-" if T == top else "--", color="grey",
                      linewidth=0.8, label=f"L2 roof, {T} thread(s): {cache:.0f} GB/s")
    sizes = sorted({e["batch_size"] for e in entries})
    colours = plt.get_cmap("viridis")
    markers = {"blas": "o", "loops": "s", "loops-parallel": "^", "per-example": "x"}
    seen = set()
    for e in entries:
        colour = colours(sizes.index(e["batch_size"]) / max(len(sizes) - 1, 1))
        for r in e["roofline"]:
            if not _shown(r, e):
                continue
            key = (e["backend"], e["batch_size"], e["threads"], e["dtype"])
            ax.loglog(r["intensity"], r["gflops"], markers.get(e["backend"], "o"), color=colour, markersize=6,
                      alpha=0.8, markerfacecolor="none" if e["threads"] == 1 else colour,
                      label=None if key in seen else f"{e['backend']}, B={e['batch_size']}, {e['threads']} thread(s), "
                                                     f"{e['dtype']}")
            seen.add(key)
    ax.set(xlabel="arithmetic intensity (flop / byte of least traffic)", ylabel="achieved GFLOP/s",
           title=f"Roofline: the GEMMs of one step ({model}, {dtype})\n(those with at least {SHOWN_SHARE:.0%} of the "
                 "step's time; shorter ones are within timing noise)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return _save(fig, path)
