"""The study's figures: matplotlib Figure objects (make_figures, no pyplot state touched), or PNG files beside the
HDF5 file (study_figures)."""
import math
from pathlib import Path

import numpy as np

from minigrad.machine import plotting as plt


def _bars(rows, key, lo, hi):
    """(2, n) error-bar lengths below and above each point (0 where there is no interval)."""
    val = np.array([r[key] for r in rows], float)
    low = np.array([r[lo] for r in rows], float)
    high = np.array([r[hi] for r in rows], float)
    return np.nan_to_num(np.clip([val - low, high - val], 0, None), nan=0.0, posinf=0.0)


def study_figures(analysis, study_file, out_dir, stem="study"):
    """Write the study's figures as <stem>_<name>.png in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [plt.save(fig, out_dir / f"{stem}_{name}.png", protect=[study_file.path])
            for name, fig in make_figures(analysis, study_file).items()]


def make_figures(analysis, study_file):
    """The figures of a study, {name: matplotlib Figure}: steps, throughput, time, lr, curves, heatmap, and ladder
    (B_crit along training) where the ladder has more than one level."""
    a = analysis
    rows = [r for r in a.rows if math.isfinite(r["steps"])]
    figures = {}

    # 1. steps to target against B with its interval, perfect scaling, the fit and B_crit (or why there is none)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    B = np.array([r["batch_size"] for r in rows], float)
    steps = np.array([r["steps"] for r in rows], float)
    if len(rows):
        ax.errorbar(B, steps, yerr=_bars(rows, "steps", "steps_lo", "steps_hi"), fmt="o-", capsize=3,
                    label="measured (best lr, median over seeds; 90% bootstrap interval)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.plot(B, steps[0] * B[0] / B, "k:", label="perfect scaling (S ~ 1/B)")
        missed = [r["batch_size"] for r in a.rows if not math.isfinite(r["steps"])]
        if missed:  # at the top edge: these never reached the target within their budget
            ax.plot(missed, [steps.max() * 1.5] * len(missed), "rv", label="missed the target (budget spent)")
    f = a.fit
    if f and math.isfinite(f.get("S_min", math.nan)):
        grid = np.geomspace(min(r["batch_size"] for r in a.rows), max(r["batch_size"] for r in a.rows), 100)
        model = f["S_min"] + f["E_min"] / grid
        keep = model > 0
        if f["ok"]:
            ax.plot(grid[keep], model[keep], "r--", label=f"fit S_min + E_min/B (largest misfit {f['max_ratio']:.2f}x)")
        else:
            ax.plot(grid[keep], model[keep], color="gray", ls="--",
                    label=f"fit S_min + E_min/B (largest misfit {f['max_ratio']:.2f}x): does NOT describe the data")
        if f["determined"]:
            lo, hi = f["B_crit_lo"], f["B_crit_hi"]
            label = f"B_crit = {f['B_crit']:.0f}" + (f" (90%: {lo:.0f}-{hi:.0f})" if lo < hi else " (degenerate interval)")
            ax.axvline(f["B_crit"], color="r", alpha=0.6, label=label)
            ax.text(f["B_crit"], 0.97, f" B_crit = {f['B_crit']:.0f}", color="r", fontsize=8, va="top",
                    transform=ax.get_xaxis_transform())
            if lo < hi:
                ax.axvspan(lo, hi, color="r", alpha=0.1)
    title = "Steps to target" if not f or f["ok"] else "Steps to target: the fit fails, B_crit not determined"
    ax.set(xlabel="batch size B", ylabel=f"steps to val error {a.target:g}", title=title)
    ax.legend(fontsize=7, loc="lower left")
    figures["steps"] = fig

    # 2. samples/s against B
    fig, ax = plt.subplots(figsize=(6, 4.2))
    tp = [r for r in a.rows if math.isfinite(r["samples_per_s"])]
    ax.loglog([r["batch_size"] for r in tp], [r["samples_per_s"] for r in tp], "o-")
    ax.set(xlabel="batch size B", ylabel="samples / s")
    ax.set_title("Compute speed: one training step\n(the faster of 1 thread and all cores at each B)", fontsize=10)
    figures["throughput"] = fig

    # 3. time to target with its interval, the tie set shaded, the pick marked
    fig, ax = plt.subplots(figsize=(6, 4.2))
    timed = [r for r in rows if math.isfinite(r["time_s"])]
    if timed:
        ax.errorbar([r["batch_size"] for r in timed], [r["time_s"] for r in timed],
                    yerr=_bars(timed, "time_s", "time_lo", "time_hi"), fmt="o-", capsize=3,
                    label="steps x step time (90% bootstrap interval)")
        ax.set_xscale("log")
        ax.set_yscale("log")
    rec = a.recommendation
    if rec and a.recommended and math.isfinite(a.recommended["time_s"]):
        tied = rec["tied"]
        ax.axvspan(min(tied) / 1.3, max(tied) * 1.3, color="g", alpha=0.15,
                   label="tied within noise: " + ", ".join(f"{B} ({rec['win_fraction'][B]:.0%})" for B in tied))
        ax.plot([a.recommended["batch_size"]], [a.recommended["time_s"]], "r*", markersize=16,
                label=f"pick B = {a.recommended['batch_size']}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set(xlabel="batch size B", ylabel="time to target (s) = steps x step time", title="Time to target")
    figures["time"] = fig

    # 4. tuned learning rate against B with the linear and square-root rules
    fig, ax = plt.subplots(figsize=(6, 4.2))
    tuned = [r for r in rows if r["best_lr"] is not None]
    if tuned:
        Bt = np.array([r["batch_size"] for r in tuned], float)
        ax.loglog(Bt, [r["best_lr"] for r in tuned], "o-", label="tuned (fewest steps to target)")
        ax.loglog(Bt, [r["lr_interpolated"] for r in tuned], "s--", mfc="none",
                  label="interpolated (quadratic in log lr)")
        ref_B = a.config["reference_batch_size"]
        ref_lr = a.reference_lr or tuned[0]["best_lr"]
        grid = np.geomspace(Bt.min(), Bt.max(), 50)
        ax.loglog(grid, ref_lr * grid / ref_B, "k:", label=f"linear rule from B={ref_B}")
        ax.loglog(grid, ref_lr * np.sqrt(grid / ref_B), "k--", label=f"square-root rule from B={ref_B}")
    ax.set(xlabel="batch size B", ylabel="learning rate", title="Tuned learning rate")
    ax.legend(fontsize=8)
    figures["lr"] = fig

    # 5. validation error against examples seen, per B at its tuned rate: median and spread over seeds
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(tuned):
        curves = [run.trace for run in study_file.runs.values()
                  if run.attrs.get("phase") == "tune" and int(run.attrs["batch_size"]) == r["batch_size"]
                  and float(run.attrs["lr"]) == r["best_lr"] and len(run.trace.get("examples", [])) > 1]
        if not curves:
            continue
        hi = min(c["examples"][-1] for c in curves)
        lo = max(c["examples"][0] for c in curves)
        if hi <= lo:
            continue
        grid = np.geomspace(lo, hi, 60)
        errs = np.array([np.interp(grid, c["examples"], c["val_error"]) for c in curves])
        color = cmap(i / max(1, len(tuned) - 1))
        ax.semilogx(grid, np.median(errs, axis=0), color=color, label=f"B={r['batch_size']}")
        ax.fill_between(grid, errs.min(axis=0), errs.max(axis=0), color=color, alpha=0.2)
    ax.axhline(a.target, color="r", ls="--", lw=0.8, label="target")
    ax.set(xlabel="examples seen", ylabel="validation error", title="Validation error against examples seen")
    ax.legend(fontsize=7, ncol=2)
    figures["curves"] = fig

    # 6. learning rate x batch size map of steps-to-target. Each B has its own learning-rate grid (centred on a
    # scaling rule), so cells are drawn at their real rates on a log axis: a band that climbs with B, not rows of a
    # shared grid, which would read as a checkerboard. Blank: not tried; grey hatched: missed; red x: diverged.
    figures["heatmap"] = _heatmap(a)
    if len(a.ladder) > 1:
        figures["ladder"] = _ladder(a.ladder)
    return figures


def _ladder(ladder):
    """7. B_crit (and CBS-20%) against the validation-error level, with intervals, and B_simple on the same axes;
    the error axis runs from early training (left) to the target (right)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    known = [r for r in ladder if r["determined"]]
    if known:
        x = np.array([r["level"] for r in known])
        ax.errorbar(x, [r["B_crit"] for r in known], yerr=_bars(known, "B_crit", "B_crit_lo", "B_crit_hi"), fmt="o-",
                    capsize=3, color="C3", label="B_crit = E_min/S_min (90% bootstrap interval)")
        ax.errorbar(x, [r["cbs"] for r in known], yerr=_bars(known, "cbs", "cbs_lo", "cbs_hi"), fmt="s--",
                    capsize=3, color="C1", alpha=0.8, label="CBS-20% = 0.2 B_crit (examples 1.2x the fewest)")
    gns = [r for r in ladder if math.isfinite(r["b_simple"])]
    if gns:
        ax.plot([r["level"] for r in gns], [r["b_simple"] for r in gns], "^:", color="C0",
                label="B_simple, the gradient noise scale of the same trials")
    undetermined = [r["level"] for r in ladder if not r["determined"]]
    for level in undetermined:
        ax.axvline(level, color="gray", ls=":", lw=0.8)
    ax.set_yscale("log")
    levels = [r["level"] for r in ladder]
    ax.set_xticks(levels, [f"{v:.3g}" for v in levels], fontsize=8, rotation=30)
    ax.invert_xaxis()  # training moves right: to lower error
    ax.set(xlabel="validation error level (training moves right)", ylabel="batch size",
           title="The critical batch size along training"
           + (" (grey: fit does not describe the data)" if undetermined else ""))
    if known or gns:  # a legend only for what is drawn (matplotlib warns about an empty one)
        ax.legend(fontsize=7)
    return fig


def _heatmap(a):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch, Rectangle

    cells, diverged = a.heat["cells"], a.heat["diverged"]
    censored = a.heat.get("censored", set())  # stopped as hopeless: more steps than its B's best, not a miss
    Bs = sorted({b for b, _ in cells})
    fig, ax = plt.subplots(figsize=(2.2 + 0.6 * max(len(Bs), 4), 4.8))
    finite = [math.log10(v) for v in cells.values() if math.isfinite(v) and v > 0]
    norm = Normalize(min(finite, default=0), max(finite, default=1) + 1e-9)
    cmap = plt.get_cmap("viridis_r")
    lo_all, hi_all = math.inf, 0.0
    for B in Bs:
        rates = sorted(lr for b, lr in cells if b == B)
        x = Bs.index(B)
        best = next((r["best_lr"] for r in a.rows if r["batch_size"] == B), None)
        for k, lr in enumerate(rates):
            # a cell reaches halfway (in log lr) to its neighbours; the grid's factor at the ends
            below = rates[k - 1] if k else lr / (rates[1] / lr if len(rates) > 1 else 2.0)
            above = rates[k + 1] if k + 1 < len(rates) else lr * (lr / rates[k - 1] if k else 2.0)
            lo, hi = math.sqrt(below * lr), math.sqrt(lr * above)
            lo_all, hi_all = min(lo_all, lo), max(hi_all, hi)
            v = cells[(B, lr)]
            if math.isfinite(v) and v > 0:
                face, hatch = cmap(norm(math.log10(v))), None
            elif (B, lr) in diverged:
                face, hatch = "#f6d5d5", None
            elif (B, lr) in censored:
                face, hatch = "#dce6f0", None
            else:
                face, hatch = "0.85", "///"
            ax.add_patch(Rectangle((x - 0.45, lo), 0.9, hi - lo, facecolor=face, hatch=hatch, edgecolor="white",
                                   lw=0.8))
            if lr == best:
                ax.add_patch(Rectangle((x - 0.45, lo), 0.9, hi - lo, facecolor="none", edgecolor="black", lw=2.0))
            if (B, lr) in diverged and not math.isfinite(v):
                ax.text(x, lr, "x", ha="center", va="center", color="red", fontsize=13, fontweight="bold")
            elif (B, lr) in censored and not math.isfinite(v):
                ax.text(x, lr, "stop", ha="center", va="center", color="0.3", fontsize=6)
            elif math.isfinite(v):
                ax.text(x, lr, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if norm(math.log10(v)) > 0.5 else "black")
    ax.set_yscale("log")
    ax.set_xlim(-0.6, len(Bs) - 0.4)
    if hi_all > lo_all:
        ax.set_ylim(lo_all, hi_all)
    ax.set_xticks(range(len(Bs)), [str(b) for b in Bs], rotation=45)
    ax.set(xlabel="batch size B", ylabel="learning rate (each B has its own grid)")
    ax.set_title("Steps to target (median over seeds) at each rate tried", fontsize=10)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="log10 steps to target")
    ax.legend(handles=[Patch(facecolor="0.85", hatch="///", edgecolor="white", label="target missed"),
                       Patch(facecolor="white", edgecolor="0.6", label="not tried"),
                       Patch(facecolor="#f6d5d5", edgecolor="white", label="x: diverged"),
                       Patch(facecolor="#dce6f0", edgecolor="white",
                             label="stop: stopped early, slower than its B's best"),
                       Patch(facecolor="none", edgecolor="black", lw=2.0, label="best rate of its B")],
              fontsize=7, loc="upper left", framealpha=0.9)
    return fig
