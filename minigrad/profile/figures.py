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

from minigrad.machine import plotting as plt


_COLOURS = {"blas": "C0", "blas-unfused": "C6", "loops": "C1", "loops-parallel": "C2", "per-example": "C3", "torch-eager": "C4",
            "jax-jit": "C5"}
_MARKERS = {"blas": "o", "blas-unfused": "P", "loops": "s", "loops-parallel": "^", "per-example": "x", "torch-eager": "D", "jax-jit": "v"}


def throughput_figures(result, out_dir):
    """Write the figures; returns their paths (a roofline per dtype of the breakdowns, if any)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = result.get("config", {})
    model = f"MLP {'-'.join(map(str, cfg.get('sizes', [])))}, {cfg.get('optimizer', '')}"
    paths = [
        _against_b(result, out_dir / "throughput_samples.png", lambda r: r["samples_per_s"], "samples / s",
                   f"Throughput of one training step ({model})"),
        _against_b(result, out_dir / "throughput_per_example.png",
                   lambda r: r["step_time_s"] / r["batch_size"] * 1e6, "time per example (us)",
                   f"Time per example ({model}); per-example = no vectorisation")]
    for dtype in dict.fromkeys(e["dtype"] for e in result.get("breakdowns", [])):
        paths.append(_roofline(result, dtype, out_dir / f"roofline_{dtype}.png", model))
    return paths


def _against_b(result, path, y_of, ylabel, title):
    # one panel per thread count; colour = path, solid = float32, dashed = float64
    lines = {}
    for row in result["rows"]:
        lines.setdefault(row["threads"], {}).setdefault((row["backend"], row["dtype"]), []).append(row)
    fig, axes = plt.subplots(1, len(lines), figsize=(6 * len(lines), 4.8), sharey=True, squeeze=False)
    for ax, (T, by_path) in zip(axes[0], sorted(lines.items())):
        for (backend, dtype), rows in by_path.items():
            ax.loglog([r["batch_size"] for r in rows], [y_of(r) for r in rows], "-" if dtype == "float32" else "--",
                      marker=_MARKERS.get(backend, "o"), color=_COLOURS.get(backend), markersize=4, alpha=0.85,
                      label=f"{backend}, {dtype}")
        ax.set(xlabel="batch size B", title=f"{T} thread{'s' if T > 1 else ''}")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, ncol=2)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return plt.save(fig, path)


SHOWN_SHARE = 0.02


def _shown(row, entry):
    # GEMMs that take a visible share of the step: the tiny ones' times are differences within the timing noise
    gflops = row["gflops"]  # None where JSON stored a NaN
    return gflops is not None and math.isfinite(gflops) and gflops > 0 and \
        row["seconds"] >= SHOWN_SHARE * entry["compiled_step_s"]


def _roofline(result, dtype, path, model):
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
    # marker = path, colour = batch size, hollow = 1 thread, filled = more
    from matplotlib.lines import Line2D

    sizes = sorted({e["batch_size"] for e in entries})
    colour_of = {B: plt.get_cmap("viridis")(i / max(len(sizes) - 1, 1)) for i, B in enumerate(sizes)}
    for e in entries:
        colour = colour_of[e["batch_size"]]
        shown = [r for r in e["roofline"] if _shown(r, e)]
        ax.loglog([r["intensity"] for r in shown], [r["gflops"] for r in shown], _MARKERS.get(e["backend"], "o"),
                  color=colour, markersize=6, alpha=0.8, markerfacecolor="none" if e["threads"] == 1 else colour)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker=_MARKERS.get(b, "o"), color="k", linestyle="", label=b)
                for b in dict.fromkeys(e["backend"] for e in entries)]
    handles += [Line2D([], [], marker="o", color=colour_of[B], linestyle="", label=f"B = {B}") for B in sizes]
    handles += [Line2D([], [], marker="o", color="k", markerfacecolor="none", linestyle="", label="1 thread"),
                Line2D([], [], marker="o", color="k", linestyle="", label="more threads")]
    ax.set(xlabel="arithmetic intensity (flop / byte of least traffic)", ylabel="achieved GFLOP/s",
           title=f"Roofline: the GEMMs of one step ({model}, {dtype})\n(those with at least {SHOWN_SHARE:.0%} of the "
                 "step's time; shorter ones are within timing noise)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(handles=handles, fontsize=6.5, ncol=2, loc="lower right")
    return plt.save(fig, path)
