"""Small batch against large batch (10% of the data) at a fixed epoch budget and learning rate: errors,
generalisation gap, top Hessian eigenvalue, eps-sharpness, interpolation; then the large batch with its learning
rate re-tuned (Keskar et al. 2016; Hoffer et al. 2017)."""
import math

import numpy as np

from minigrad.experiments.common import finish, median, run_jobs, stem
from minigrad.training.trial import load_data


def keskar_batches(config, n_train):
    large = max(1, int(round(config["large_fraction"] * n_train)))
    small = config["small_batch"]
    if not small < large:
        raise ValueError(f"the small batch ({small}) must be smaller than the large one ({large} = "
                         f"{config['large_fraction']:g} of {n_train})")
    return small, sorted({small, large, *[B for B in config["between"] if small < B < large]}), large


def run(config, out, writer, executor, echo):
    from minigrad import store

    dataset = load_data(config)
    small, batch_sizes, large = keskar_batches(config, len(dataset.y_train))
    curv = {"examples": config["curvature_examples"], "eps": config["eps"],
            "sharpness_iters": config["sharpness_iters"],
            "power_tol": config["power_tol"], "power_iters": config["power_iters"],
            "hutchinson_samples": config["hutchinson_samples"]}
    specs = []
    for seed in range(config["seeds"]):
        for B in batch_sizes:
            role = "small" if B == small else ("large" if B == large else "between")
            specs.append(dict(run_id=f"fixed-B{B:05d}-s{seed}", role=role, tag="fixed", batch_size=B, lr=config["lr"],
                              seed=seed, epochs=config["epochs"], curvature=curv, keep_params=B in (small, large),
                              lr_factor=1.0))
        for f in config["retune_factors"]:
            specs.append(dict(run_id=f"retune-B{large:05d}-x{f:g}-s{seed}", role="large", tag="retune",
                              batch_size=large, lr=config["lr"] * f, lr_factor=float(f), seed=seed,
                              epochs=config["epochs"], curvature=curv, keep_params=True))
    run_jobs(config, specs, writer, executor, label=f"{len(specs)} runs")
    saved = store.open(out)
    # a control for under-training: the small batch stopped where it first reaches the large batch's final
    # validation error, so that both are compared at about the same loss
    matched = median([r.attrs["final_val_error"] for r in saved.runs.values()
                       if r.attrs.get("tag") == "fixed" and r.attrs.get("batch_size") == large])
    if math.isfinite(matched):
        run_jobs(config, [dict(run_id=f"matched-B{small:05d}-s{seed}", role="small", tag="matched", batch_size=small,
                               lr=config["lr"], seed=seed, epochs=config["epochs"], target=matched,
                               stop_at_target=True, curvature=curv, lr_factor=1.0)
                          for seed in range(config["seeds"])], writer, executor, label="small batch at matched error")
        saved = store.open(out)

    def cell(tag, B, factor=1.0):
        runs = [r.attrs for r in saved.runs.values() if r.attrs.get("tag") == tag
                and r.attrs.get("batch_size") == B and r.attrs.get("lr_factor", 1.0) == factor]
        keys = ("test_error", "train_error", "generalisation_gap", "final_val_error", "lambda_max", "test_loss",
                "train_loss_final", "hvp_check", "param_norm", *[f"sharpness_{e:g}" for e in config["eps"]])
        row = {k: median([a.get(k) for a in runs]) for k in keys}
        row.update(batch_size=B, lr=config["lr"] * factor, lr_factor=factor, n=len(runs),
                   diverged=sum(a["status"] == "DIVERGED" for a in runs))
        return row

    sb, lb, sb_matched = cell("fixed", small), cell("fixed", large), cell("matched", small)
    candidates = [cell("retune", large, float(f)) for f in config["retune_factors"]] + [lb]
    tuned = min(candidates, key=lambda r: (r["final_val_error"] if math.isfinite(r["final_val_error"]) else math.inf))
    curve = [cell("fixed", B) for B in batch_sizes]

    if "interpolation" not in saved.runs:
        from minigrad.instruments import hessian as H
        from minigrad.training.train import build_model

        pa = saved.runs[f"fixed-B{small:05d}-s0"].arrays["params"]
        pb = saved.runs[f"fixed-B{large:05d}-s0"].arrays["params"]
        model = build_model(dataset, config["hidden"], activation=config["activation"], loss=config["loss"],
                            dtype=config["dtype"])
        line = H.interpolate(model, pa, pb, {"train": (dataset.X_train, dataset.y_train),
                                             "test": (dataset.X_test, dataset.y_test)},
                             np.linspace(-1.0, 2.0, config["interpolation_points"]))
        writer.write_run("interpolation", {"from": f"B={small}", "to": f"B={large}", "seed": 0}, line)
        writer.flush()
        saved = store.open(out)

    gap_fixed = lb["test_error"] - sb["test_error"]
    gap_tuned = tuned["test_error"] - sb["test_error"]
    closed = (gap_fixed - gap_tuned) / gap_fixed if gap_fixed > 0 else math.nan
    eps0 = f"sharpness_{config['eps'][0]:g}"
    lam = [r["lambda_max"] for r in curve]
    rho = _spearman([r["batch_size"] for r in curve], lam) if len(curve) > 2 else math.nan
    summary = dict(small=sb, large_fixed=lb, large_tuned=tuned, small_matched=sb_matched, lambda_curve=curve,
                   gap_fixed=gap_fixed,
                   gap_tuned=gap_tuned, gap_closed=closed, spearman_lambda_B=rho)
    verdict = [
        f"fixed lr {config['lr']:g}, {config['epochs']:g} epochs ({config['optimizer']}): test error "
        f"{sb['test_error']:.4f} at B={small} vs {lb['test_error']:.4f} at B={large}: the large batch is "
        f"{100 * gap_fixed:+.1f} points worse; train error {sb['train_error']:.4f} vs {lb['train_error']:.4f}, "
        f"generalisation gap (test - train) {sb['generalisation_gap']:.4f} vs {lb['generalisation_gap']:.4f}.",
        f"sharpness: lambda_max {sb['lambda_max']:.3g} vs {lb['lambda_max']:.3g} "
        f"({lb['lambda_max'] / sb['lambda_max']:.1f}x); "
        f"eps-sharpness (eps={config['eps'][0]:g}) {sb[eps0]:.3g} vs {lb[eps0]:.3g} "
        f"({lb[eps0] / sb[eps0]:.1f}x); exact vs finite-difference HVP agree to "
        f"{max(sb['hvp_check'], lb['hvp_check']):.1e}.",
        f"re-tuned: lr {tuned['lr']:g} ({tuned['lr_factor']:g}x) at B={large} gives test error "
        f"{tuned['test_error']:.4f}: "
        + (f"{100 * closed:.0f}% of the gap closes " if math.isfinite(closed) else "there was no gap to close ")
        + f"(lambda_max {tuned['lambda_max']:.3g}, eps-sharpness {tuned[eps0]:.3g}).",
    ]
    if sb_matched["n"]:
        verdict.append(
            f"at matched error (B={small} stopped at val error <= {lb['final_val_error']:.4f}, train error "
            f"{sb_matched['train_error']:.4f}): lambda_max {sb_matched['lambda_max']:.3g} vs {lb['lambda_max']:.3g} "
            f"at B={large} ({lb['lambda_max'] / sb_matched['lambda_max']:.1f}x), eps-sharpness "
            f"{sb_matched[eps0]:.3g} vs {lb[eps0]:.3g} ({lb[eps0] / sb_matched[eps0]:.1f}x).")
    if len(curve) > 2:
        verdict.append("lambda_max at the end against B (fixed lr and epochs): " + ", ".join(
            f"B={r['batch_size']}: {r['lambda_max']:.3g}" for r in curve) + f" (Spearman rho {rho:+.2f}).")
    hurt = gap_fixed > 0
    sharper = lb["lambda_max"] > sb["lambda_max"] and lb[eps0] > sb[eps0]
    verdict.append(
        f"SCIENCE item 9: fixed budget hurts the large batch: {'yes' if hurt else 'no'}; its minimum is sharper: "
        f"{'yes' if sharper else ('by lambda_max only' if lb['lambda_max'] > sb['lambda_max'] else 'no')}; "
        f"re-tuning closes most of the gap: {'yes' if closed > 0.5 else 'no'}. Item 10 (lambda_max rises with B): "
        f"{'yes' if (rho > 0 if math.isfinite(rho) else lb['lambda_max'] > sb['lambda_max']) else 'no'}.")
    if hurt and lb["train_error"] - sb["train_error"] > 0.5 * gap_fixed:
        verdict.append(f"most of the test-error gap is under-training, not generalisation: the train error differs "
                       f"by {100 * (lb['train_error'] - sb['train_error']):.1f} points of the "
                       f"{100 * gap_fixed:.1f}.")
    from minigrad.experiments.figures import keskar_figures

    figures = keskar_figures(saved, summary, config, *stem(out))
    return finish("keskar", out, summary, verdict, figures, writer)


def _spearman(x, y):
    from scipy.stats import spearmanr

    ok = [(a, b) for a, b in zip(x, y) if math.isfinite(b)]
    if len(ok) < 3:
        return math.nan
    return float(spearmanr(*zip(*ok)).statistic)
