"""Figures of the experiments (minigrad.experiments.common), PNG beside the HDF5 file, in the style of minigrad.study.figures."""
import math
from pathlib import Path

import numpy as np

from minigrad.machine import plotting as plt


def _path(out_dir, stem, suffix):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{stem}_{suffix}.png"


def noise_figure(saved, out_dir, stem):
    """Left: spread |G_B - G| and step time against B (log-log, twin axes). Right: mean |G_B|^2 against 1/B."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    twin = ax.twinx()
    for i, (run_id, r) in enumerate(saved.runs.items()):
        t, a = r.trace, r.attrs
        B = t["batch_size"].astype(float)
        color = f"C{i}"
        ax.errorbar(B, t["spread_rms"], yerr=t["spread_se"], fmt="o", color=color, ms=4,
                    label=f"epoch {a['at_epochs']:g}: measured rms |G_B - G|")
        ax.loglog(B, t["predicted_rms"], "-", color=color, alpha=0.6,
                  label=f"sqrt(tr(Sigma)/B (n-B)/(n-1)), B_simple={a['b_simple']:.0f}")
        inv = 1.0 / B
        ax2.errorbar(inv, t["mean_sqnorm"], yerr=t["sqnorm_se"], fmt="o", color=color, ms=4,
                     label=f"epoch {a['at_epochs']:g}")
        grid = np.concatenate([[0.0], np.geomspace(inv.min() / 2, inv.max(), 200)])
        n = a["n"]
        ax2.plot(grid, a["g2"] - a["trsigma"] / (n - 1) + a["trsigma"] * n / (n - 1) * grid, "-", color=color,
                 alpha=0.6, label="|G|^2 + tr(Sigma)/B (finite-population form)")
    first = next(iter(saved.runs.values())).trace
    twin.loglog(first["batch_size"], first["step_time_s"] * 1e3, "ks--", ms=4, label="step time (ms)")
    ax.set(xlabel="batch size B", ylabel="gradient error  rms |G_B - G|",
           title="Noise falls like 1/sqrt(B), cost grows")
    twin.set_ylabel("step time (ms)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center")
    ax2.set_xscale("symlog", linthresh=float(inv.min()) / 2)
    ax2.set_yscale("log")
    ax2.set(xlabel="1 / B", ylabel="mean |G_B|^2", title="E|G_B|^2 is linear in 1/B")
    ax2.legend(fontsize=7)
    return plt.save(fig, _path(out_dir, stem, "noise"))


def keskar_figures(saved, summary, config, out_dir, stem):
    paths = []
    # 1. interpolation f((1-a) x_SB + a x_LB): loss on the left axis, error on the right (Keskar et al., fig. 3)
    line = saved.runs["interpolation"].trace
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    ax.semilogy(line["alpha"], line["train_loss"], "b-", label="train loss")
    ax.semilogy(line["alpha"], line["test_loss"], "b--", label="test loss")
    twin = ax.twinx()
    twin.plot(line["alpha"], line["train_error"], "r-", label="train error")
    twin.plot(line["alpha"], line["test_error"], "r--", label="test error")
    for a in (0, 1):
        ax.axvline(a, color="gray", lw=0.6)
    a = saved.runs["interpolation"].attrs
    ax.set(xlabel=f"alpha: (1 - alpha) x[{a['from']}] + alpha x[{a['to']}]", ylabel="cross-entropy loss",
           title="Between the small-batch and the large-batch minimum")
    twin.set_ylabel("error")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center")
    paths.append(plt.save(fig, _path(out_dir, stem, "interpolation")))

    # 2. the three models side by side: errors, gap, sharpness
    eps0 = f"sharpness_{config['eps'][0]:g}"
    models = [("small B", summary["small"]), ("small B,\nmatched loss", summary["small_matched"]),
              ("large B,\nsame lr", summary["large_fixed"]), ("large B,\nre-tuned lr", summary["large_tuned"])]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(models))
    labels = [f"{name}\nB={m['batch_size']}, lr={m['lr']:g}" for name, m in models]
    axes[0].bar(x - 0.2, [m["train_error"] for _, m in models], 0.4, label="train")
    axes[0].bar(x + 0.2, [m["test_error"] for _, m in models], 0.4, label="test")
    axes[0].set(title="error", xticks=x)
    axes[0].legend(fontsize=7)
    axes[1].bar(x, [m["lambda_max"] for _, m in models], color="C2")
    axes[1].set(title="top Hessian eigenvalue", xticks=x)
    axes[2].bar(x, [m[eps0] for _, m in models], color="C3")
    axes[2].set(title=f"eps-sharpness (eps={config['eps'][0]:g})", xticks=x)
    for ax in axes:
        ax.set_xticklabels(labels, fontsize=7)
    paths.append(plt.save(fig, _path(out_dir, stem, "sharpness")))

    # 3. lambda_max against B at the fixed rate and budget
    curve = summary["lambda_curve"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog([r["batch_size"] for r in curve], [r["lambda_max"] for r in curve], "o-")
    ax.set(xlabel="batch size B", ylabel="lambda_max at the end of training",
           title=f"Curvature after {config['epochs']:g} epochs at lr {config['lr']:g}")
    paths.append(plt.save(fig, _path(out_dir, stem, "lambda")))
    return paths


def smith_figure(saved, config, out_dir, stem):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"decay": ("C0", f"lr / {config['factor']} at milestones"),
              "grow": ("C1", f"batch x {config['factor']} at milestones"),
              "constant": ("0.6", "control: constant lr and batch")}
    seen = set()
    for r in saved.runs.values():
        tag = r.attrs["tag"]
        color, label = styles[tag]
        t = r.trace
        lab = label if tag not in seen else None
        seen.add(tag)
        ax.plot(t["examples"], t["val_error"], color=color, alpha=0.8, lw=1, label=lab)
        ax2.plot(t["step"], t["val_error"], color=color, alpha=0.8, lw=1, label=lab)
    n = next(iter(saved.runs.values())).trace["examples"][-1] / config["epochs"]
    for m in config["milestones"]:
        ax.axvline(m * n, color="gray", lw=0.6)
    ax.set(xlabel="examples seen", ylabel="validation error", title="Against examples: the curves match")
    ax2.set(xlabel="parameter updates", ylabel="validation error", title="Against updates: growing B needs fewer")
    for a in (ax, ax2):
        a.set_ylim(top=min(1.0, 2.5 * min(np.min(r.trace["val_error"]) for r in saved.runs.values())))
        a.legend(fontsize=8)
    return plt.save(fig, _path(out_dir, stem, "smith"))


def stratified_figure(summary, config, out_dir, stem):
    """Left: steps-to-target per seed for each sampler and B. Right: the two ratios (stratified / shuffled) with
    their simultaneous intervals, the equivalence margin shaded."""
    rows = summary["batch_sizes"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    rng = np.random.default_rng(0)
    for i, c in enumerate(rows.values()):
        for j, tag in enumerate(("shuffle", "stratified")):
            v = np.asarray(c[tag], float)
            x = i + (j - 0.5) * 0.35 + rng.uniform(-0.05, 0.05, len(v))
            ax.plot(x, v, "o", color=f"C{j}", ms=4, alpha=0.8, label=tag if i == 0 else None)
            ax.plot([i + (j - 0.5) * 0.35 - 0.12, i + (j - 0.5) * 0.35 + 0.12], [np.median(v)] * 2, "-",
                    color=f"C{j}", lw=2)
    ax.set_xticks(range(len(rows)), [f"B={B}\nval err <= {c['target']:g}" for B, c in rows.items()], fontsize=8)
    ax.set_yscale("log")
    ax.set(ylabel="steps to target (one dot per seed, bar = median)",
           title="Shuffled against class-stratified batches")
    ax.legend(fontsize=8)
    for j, (name, label) in enumerate((("steps", "median steps"), ("spread", "std/mean of steps"))):
        x = np.arange(len(rows)) + (j - 0.5) * 0.2
        v = np.array([c[f"{name}_ratio"] for c in rows.values()])
        err = np.array([[c[f"{name}_ratio"] - c[f"{name}_lo"], c[f"{name}_hi"] - c[f"{name}_ratio"]]
                        for c in rows.values()]).T
        ax2.errorbar(x, v, yerr=np.nan_to_num(err), fmt="os"[j], color=f"C{j + 2}", capsize=3, label=label)
    ax2.axhline(1.0, color="gray", lw=0.8)
    ax2.axhspan(1 / config["margin"], config["margin"], color="gray", alpha=0.15, label="no effect worth having")
    ax2.set_xticks(range(len(rows)), [f"B={B}" for B in rows])
    ax2.set(ylabel="stratified / shuffled (below 1: stratified helps)",
            title=f"Ratios, {100 * summary['level']:.4g}% intervals (simultaneous 90%)")
    ax2.legend(fontsize=8)
    return plt.save(fig, _path(out_dir, stem, "stratified"))


def gns_figure(saved, summary, out_dir, stem):
    """Left: B_simple against steps (exact at checkpoints, the two pooled estimates). Right: against the training
    loss, log-log, with the fitted trend."""
    t = saved.runs["gns-run"].trace
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    step = t["step"]
    for key, color, label in (("gns_b_simple", "C0", "per-example estimator, EMA"),
                              ("tb_b_simple", "C1", "two-batch estimator, window mean (McCandlish)")):
        ok = np.isfinite(t[key]) & (t[key] > 0)
        ax.loglog(step[ok], t[key][ok], "-", color=color, lw=1, label=f"B_simple, {label}")
        ax2.loglog(t["train_loss"][ok], t[key][ok], "-", color=color, lw=0.8, alpha=0.6)
    full = np.isfinite(t["full_b_simple"]) & (t["full_b_simple"] > 0)
    ax.loglog(step[full], t["full_b_simple"][full], "ko", ms=4, label="B_simple, exact over the training split")
    ax2.loglog(t["full_loss"][full], t["full_b_simple"][full], "ko", ms=4, label="exact, at checkpoints")
    tr = summary["trend"]
    if math.isfinite(tr["slope"]):
        loss = np.geomspace(tr["loss_last"], tr["loss_first"], 50)
        ax2.loglog(loss, tr["centre"][1] * (loss / tr["centre"][0]) ** tr["slope"], "r--",
                   label=f"fit: slope {tr['slope']:+.2f} [{tr['lo']:+.2f}, {tr['hi']:+.2f}]")
    b = summary["B_crit"]
    if math.isfinite(b) and b > 0:
        ax.axhline(b, color="r", ls="--", label=f"B_crit from the study = {b:.0f}")
        lo, hi = summary.get("B_crit_lo"), summary.get("B_crit_hi")
        if lo and hi and math.isfinite(lo) and math.isfinite(hi):
            ax.axhspan(lo, hi, color="r", alpha=0.1)
    if summary["target_step"] is not None:
        ax.axvline(summary["target_step"], color="gray", lw=0.8,
                   label=f"val error reaches the target {summary['target']:g}")
    ax.set(xlabel="step", ylabel="B_simple = tr(Sigma) / |G|^2",
           title=f"Noise scale during training (B={summary['reference_batch']}, lr={summary['reference_lr']:g})")
    ax2.set(xlabel="training loss (dots: whole split; lines: running mean)", ylabel="B_simple",
            title="B_simple against the loss (item 4)")
    ax2.invert_xaxis()
    ax.legend(fontsize=7, loc="upper left")
    ax2.legend(fontsize=7)
    return plt.save(fig, _path(out_dir, stem, "gns"))


def momentum_figure(summary, config, out_dir, stem):
    """Left: tuned steps-to-target S(B) for SGD and momentum with bootstrap intervals. Right: S_mom/S_sgd."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = summary["per_batch"]
    B = np.array([int(b) for b in rows], float)
    for key, color, label in (("S_sgd", "C0", "SGD"), ("S_mom", "C1", "heavy-ball momentum")):
        v = np.array([r[key] for r in rows.values()])
        err = np.array([[r[key] - r[key + "_lo"], r[key + "_hi"] - r[key]] for r in rows.values()]).T
        ax.errorbar(B, v, yerr=np.nan_to_num(err), fmt="o-", color=color, capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="batch size B", ylabel="steps to target (tuned lr, median over seeds)",
           title=f"Steps to val error <= {summary['target']:g}")
    ax.legend(fontsize=8)
    ratio = np.array([r["ratio"] for r in rows.values()])
    err = np.array([[r["ratio"] - r["ratio_lo"], r["ratio_hi"] - r["ratio"]] for r in rows.values()]).T
    ax2.errorbar(B, ratio, yerr=np.nan_to_num(err), fmt="o-", color="k", capsize=3, label="90% bootstrap over seeds")
    ax2.axhline(1.0, color="gray", lw=0.8)
    ax2.axhspan(1 / config["same_margin"], config["same_margin"], color="gray", alpha=0.1, label="about the same")
    ax2.set_xscale("log")
    ax2.set(xlabel="batch size B", ylabel="S_mom / S_sgd", title="Momentum against SGD (expectation 8)")
    ax2.legend(fontsize=8)
    return plt.save(fig, _path(out_dir, stem, "momentum"))


def panels_figure(panels, out_dir, stem, suffix):
    """Side-by-side panels of series against B with their intervals (the newer experiments' figures).
    panels: [dict(title, xlabel, ylabel, series=[(label, x, y, lo, hi)], logy=True, hlines=[(y, label)],
    vlines=[(x, label)])]."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    for ax, panel in zip(np.atleast_1d(axes), panels):
        for i, (label, x, y, lo, hi) in enumerate(panel["series"]):
            x, y, lo, hi = (np.asarray(v, float) for v in (x, y, lo, hi))
            err = np.nan_to_num(np.abs(np.stack([y - lo, hi - y])), posinf=0.0)
            ok = np.isfinite(y)
            ax.errorbar(x[ok], y[ok], yerr=err[:, ok], fmt="o-", color=f"C{i}", capsize=3, label=label)
        for y, label in panel.get("hlines", []):
            ax.axhline(y, color="gray", lw=0.8, ls="--", label=label)
        for x, label in panel.get("vlines", []):
            if math.isfinite(x):
                ax.axvline(x, color="gray", lw=0.8, ls=":", label=label)
        ax.set_xscale("log")
        if panel.get("logy", True):
            ax.set_yscale("log")
        ax.set(xlabel=panel["xlabel"], ylabel=panel["ylabel"], title=panel["title"])
        ax.legend(fontsize=7)
    return plt.save(fig, _path(out_dir, stem, suffix))
