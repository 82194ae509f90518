"""The classic experiments, one function each: configuration, runs, HDF5 (through minigrad.store), verdict, figures.

    noise       spread of minibatch gradients around the full gradient for B = 1..4096, next to the step time
    keskar      small batch against large batch (10% of the data) at a fixed epoch budget and learning rate:
                errors, generalisation gap, top Hessian eigenvalue, eps-sharpness, interpolation; then the large
                batch with its learning rate re-tuned (Keskar et al. 2016; Hoffer et al. 2017)
    smith       learning-rate step decay against growing the batch by the same factor (Smith et al. 2017)
    gns         the gradient noise scale B_simple over training next to B_crit from a `minigrad bench` study
    stratified  shuffled against class-stratified batches: steps-to-target and its spread over seeds

Every experiment is `run(name, config, out)`: its configuration (DEFAULTS[name], QUICK[name] with quick=True) goes
to the file's root attrs, every training run to /runs/<id> with its trace (as `minigrad bench` stores them), the
measurements to further runs, and the verdict and summary numbers to the root attrs. A rerun with the same
configuration resumes: finished runs are read back, not run again. Everything after the runs (summary, verdict,
figures) is computed from the HDF5 file alone.
"""
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minigrad import study as S

EXPERIMENTS = ("noise", "keskar", "smith", "gns", "stratified")

_BASE = {"data": "teacher", "data_options": {}, "hidden": [64, 64], "activation": "relu", "loss": "cross_entropy",
         "dtype": "float32", "optimizer": "sgd", "momentum": 0.9, "eval_growth": 1.04}

DEFAULTS = {
    "noise": dict(_BASE, batch_size=32, lr=0.1, at_epochs=[1.0, 10.0], seed=0,
                  batch_sizes=[2 ** k for k in range(13)], draws=32, min_examples=8192, threads=1),
    # Keskar et al. trained with Adam at its default rate; the large batch is 10% of the training split
    "keskar": dict(_BASE, hidden=[128, 128], optimizer="adam", lr=1e-3, epochs=20.0, small_batch=64,
                   large_fraction=0.1, between=[256, 1024], retune_factors=[2, 4, 8, 16, 32], seeds=2,
                   curvature_examples=4000, eps=[1e-3, 5e-4], sharpness_iters=10, power_tol=1e-3, power_iters=100,
                   hutchinson_samples=0, interpolation_points=25),
    "smith": dict(_BASE, batch_size=32, lr=0.2, epochs=30.0, milestones=[10.0, 20.0, 25.0], factor=5, seeds=3,
                  eval_growth=1.01),
    "gns": dict(study=None, gns_batch_size=512, gns_batches=4, smoothing=0.25, checkpoints=16, seed=0,
                study_quick=False),
    "stratified": dict(_BASE, batch_sizes=[8, 64], lr_per_example=0.1 / 32, epochs=8.0, seeds=12,
                       target_margin=0.01, loose_margin=0.05, eval_growth=1.01),
}

QUICK = {
    "noise": dict(at_epochs=[2.0], draws=8, min_examples=2048),
    "keskar": dict(epochs=4.0, between=[], retune_factors=[4, 16], seeds=1, curvature_examples=2000,
                   eps=[1e-3], power_tol=1e-2, power_iters=30, interpolation_points=13),
    "smith": dict(epochs=6.0, milestones=[2.0, 4.0, 5.0], seeds=1),
    "gns": dict(gns_batches=2, checkpoints=8, study_quick=True),
    "stratified": dict(epochs=3.0, seeds=5, batch_sizes=[8]),
}

# The small study the gns experiment runs when it is given none: `minigrad bench --quick` (default), or smaller
# still for --quick, so that the whole experiment stays under a minute.
MINI_STUDY = {"batch_sizes": [4, 16, 64, 256, 1024], "seeds": 1, "reference_lrs": [0.1, 0.3],
              "reference_epochs": 8.0, "lr_points": 3, "max_widen": 1, "budget_factor": 2.0, "equal_epochs": 0.25}


def make_config(name, quick=False, **overrides):
    """The experiment's configuration: defaults, --quick's on top, then `overrides` (None = keep)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    config = copy.deepcopy(DEFAULTS[name])
    if quick:
        config.update(copy.deepcopy(QUICK[name]))
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown {name} setting(s): {', '.join(sorted(unknown))}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    config["experiment"], config["quick"] = name, bool(quick)
    for key in ("seeds", "draws", "checkpoints"):
        if key in config and config[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]}")
    return config


@dataclass
class Outcome:
    """What an experiment leaves: the file, the verdict lines, the numbers behind them, the figures."""

    name: str
    path: Path
    verdict: list
    summary: dict
    figures: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------ running trials
def train_job(config, spec):
    """One training run of an experiment (in a worker or in this process): returns a plain dict of its trace, attrs
    and arrays. spec: run_id, batch_size, lr, seed, epochs, and optionally lr_schedule / batch_schedule (dicts for
    LRSchedule / BatchSchedule), sampler, target, gns (GNSHook settings), full_gns (checkpoint count), curvature
    (Keskar's measurements at the end), keep_params."""
    from minigrad.schedules import BatchSchedule, LRSchedule
    from minigrad.train import Budget, build_model, optimizer_options, train

    dataset = S.load_data(config)
    model = build_model(dataset, config["hidden"], activation=config["activation"], loss=config["loss"],
                        dtype=config["dtype"], seed=spec["seed"])
    hooks = []
    if spec.get("gns"):
        from minigrad.noise import GNSHook

        hooks.append(GNSHook(seed=spec["seed"], **spec["gns"]))
    if spec.get("full_gns"):
        from minigrad.noise import FullNoiseHook

        hooks.append(FullNoiseHook(spec["full_gns"], spec["total_steps"], spec.get("target")))
    lr_schedule = LRSchedule(spec["lr"], **spec["lr_schedule"]) if spec.get("lr_schedule") else None
    batch_schedule = BatchSchedule(spec["batch_size"], **spec["batch_schedule"]) if spec.get("batch_schedule") else None
    trace = train(model, dataset, spec["batch_size"], spec["lr"], spec.get("optimizer", config["optimizer"]),
                  budget=Budget(epochs=spec["epochs"]), target=spec.get("target"),
                  stop_at_target=spec.get("stop_at_target", False),
                  lr_schedule=lr_schedule, batch_schedule=batch_schedule, sampler=spec.get("sampler", "shuffle"),
                  seed=spec["seed"], eval_growth=spec.get("eval_growth", config["eval_growth"]), eval_hooks=hooks,
                  optimizer_options=optimizer_options(spec.get("optimizer", config["optimizer"]), config["momentum"]))
    attrs = dict(trace.attrs, **{k: v for k, v in spec.items() if k in ("role", "tag", "epochs", "lr_factor")})
    arrays = {}
    if trace.status != "DIVERGED":
        attrs["train_loss_final"], attrs["train_error"] = model.evaluate(
            dataset.X_train.astype(model.dtype, copy=False), dataset.y_train)
        attrs["generalisation_gap"] = attrs["test_error"] - attrs["train_error"]
        if spec.get("curvature"):
            attrs.update(curvature(model, dataset, spec["curvature"], spec["seed"]))
    if spec.get("keep_params"):
        arrays["params"] = trace.params
    return dict(run_id=spec["run_id"], attrs=attrs, columns=trace.columns, arrays=arrays)


def curvature(model, dataset, cfg, seed):
    """Keskar's measurements on the first `examples` training rows (the split is random), in float64:
    the top Hessian eigenvalue (power iteration, exact HVPs), eps-sharpness for each eps, optionally Hutchinson's
    trace, and how far the exact HVP and central differences of gradients agree there (hvp_check)."""
    from minigrad import hessian as H

    n = min(cfg["examples"], len(dataset.y_train))
    objective = H.Objective(model, dataset.X_train[:n], dataset.y_train[:n])
    lam, _, its = H.top_eigenvalues(objective.hvp, objective.n_params, k=1, tol=cfg["power_tol"],
                                    max_iter=cfg["power_iters"], seed=seed)
    out = {"lambda_max": float(lam[0]), "power_iterations": int(its[0]), "hvp_check": objective.hvp_check(seed=seed),
           "curvature_examples": n, "train_loss_subset": objective.loss(),
           "param_norm": float(np.linalg.norm(objective.x0))}
    for eps in cfg["eps"]:
        out[f"sharpness_{eps:g}"] = H.eps_sharpness(objective, eps, maxiter=cfg["sharpness_iters"], seed=seed)["phi"]
    if cfg.get("hutchinson_samples"):
        out["hessian_trace"], out["hessian_trace_se"] = H.hutchinson_trace(objective.hvp, objective.n_params,
                                                                           cfg["hutchinson_samples"], seed=seed)
    return out


def run_jobs(config, specs, writer, workers=None, label="runs"):
    """Run the specs not yet stored in `writer`'s file (on worker processes when there are several), storing each
    as it finishes."""
    from minigrad.progress import progress_bar

    todo = [s for s in specs if s["run_id"] not in writer.completed_run_ids()]
    if not todo:
        return
    workers = max(1, min(workers or 2, len(todo)))
    with progress_bar(f"{config['experiment']}: {label}", total=len(todo)) as advance:
        if workers == 1:
            for spec in todo:
                result = train_job(config, spec)
                writer.write_run(result["run_id"], result["attrs"], result["columns"], result["arrays"])
                advance(advance=1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=S.worker_setup) as pool:
                futures = [pool.submit(train_job, config, spec) for spec in todo]
                for future in as_completed(futures):
                    result = future.result()
                    writer.write_run(result["run_id"], result["attrs"], result["columns"], result["arrays"])
                    advance(advance=1)
    writer.flush()


def _median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def _runs(study_file, **match):
    return [r for r in study_file.runs.values() if all(r.attrs.get(k) == v for k, v in match.items())]


def _finish(name, out, summary, verdict, figures, writer):
    writer.set_attrs({"summary": summary, "verdict": verdict})
    return Outcome(name, Path(out), verdict, summary, figures)


def run(name, config, out, *, overwrite=False, workers=None, echo=print):
    """Run (or resume) experiment `name` with `config` (from make_config) into the HDF5 file `out`."""
    from minigrad import store

    runner = {"noise": _noise, "keskar": _keskar, "smith": _smith, "gns": _gns, "stratified": _stratified}[name]
    with store.Store.create(out, config, kind=f"experiment/{name}", overwrite=overwrite) as writer:
        if writer.resumed:
            echo(f"resuming {out}: {len(writer.completed_run_ids())} runs already stored")
        if name == "gns":
            return runner(config, Path(out), writer, workers, echo, overwrite=overwrite)
        return runner(config, Path(out), writer, workers, echo)


class _threads:
    """BLAS and Numba threads limited to `count` for a measurement (None: leave them), restored afterwards."""

    def __init__(self, count):
        self.count = count

    def __enter__(self):
        if self.count:
            import numba

            from minigrad.throughput import limit_threads

            self._numba = numba.get_num_threads()
            self._limits = limit_threads(self.count)
            numba.set_num_threads(min(self.count, numba.config.NUMBA_NUM_THREADS))
        return self

    def __exit__(self, *exc):
        if self.count:
            import numba

            self._limits.restore_original_limits()
            numba.set_num_threads(self._numba)


def _stem(out):
    return Path(out).parent, Path(out).stem


# -------------------------------------------------------------------------------------------------- noise
def _noise(config, out, writer, workers, echo):
    from minigrad import store
    from minigrad.noise import fit_inverse_b, noise_vs_batch
    from minigrad.progress import progress_bar
    from minigrad.train import Budget, build_model, train

    dataset = S.load_data(config)
    n = len(dataset.y_train)
    sizes = [B for B in config["batch_sizes"] if B <= n]
    for epochs in config["at_epochs"]:
        run_id = f"noise-e{epochs:g}"
        if run_id in writer.completed_run_ids():
            continue
        model = build_model(dataset, config["hidden"], activation=config["activation"], loss=config["loss"],
                            dtype=config["dtype"], seed=config["seed"])
        attrs = {"at_epochs": epochs, "batch_size": config["batch_size"], "lr": config["lr"]}
        if epochs > 0:
            trace = train(model, dataset, config["batch_size"], config["lr"], config["optimizer"],
                          budget=Budget(epochs=epochs), seed=config["seed"], eval_growth=config["eval_growth"])
            attrs.update(status=trace.attrs["status"], val_error=trace.attrs["final_val_error"],
                         steps=trace.attrs["steps"])
        with progress_bar(f"noise: {len(sizes)} batch sizes at epoch {epochs:g}", total=1.0) as advance, \
                _threads(config["threads"]):
            result = noise_vs_batch(model, dataset.X_train, dataset.y_train, sizes, draws=config["draws"],
                                    min_examples=config["min_examples"], seed=config["seed"],
                                    progress=lambda f: advance(completed=f))
        columns = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
        attrs.update({k: v for k, v in result.items() if not isinstance(v, np.ndarray)})
        writer.write_run(run_id, attrs, columns)
    writer.flush()

    saved = store.open(out)
    summary, verdict = {}, []
    for run_id, r in saved.runs.items():
        t, a = r.trace, r.attrs
        B, n = t["batch_size"].astype(float), a["n"]
        small = B <= n / 20  # where the finite-population factor (n-B)/(n-1) is within 5% of 1
        slope = float(np.polyfit(np.log(B[small]), np.log(t["spread_rms"][small]), 1)[0])
        vs_pred = t["spread_rms"] / t["predicted_rms"]
        intercept, inv_slope, resid = fit_inverse_b(B, t["mean_sqnorm"], t["sqnorm_se"])
        # without replacement: E|G_B|^2 = |G|^2 - tr/(n-1) + tr n/((n-1) B), exactly linear in 1/B
        pred_slope = a["trsigma"] * n / (n - 1)
        pred_intercept = a["g2"] - a["trsigma"] / (n - 1)
        st = t["step_time_s"]
        c, t0 = np.polyfit(B, st, 1)
        exact = a["g2"] - a["trsigma"] / (n - 1) + a["trsigma"] * n / ((n - 1) * B)
        z = float(np.max(np.abs(t["mean_sqnorm"] - exact) / t["sqnorm_se"]))
        summary[run_id] = dict(at_epochs=a["at_epochs"], spread_slope=slope, spread_vs_predicted_max=float(
            np.max(np.abs(vs_pred - 1))), b_simple=a["b_simple"], g2=a["g2"], trsigma=a["trsigma"],
            fit_intercept=intercept, fit_slope=inv_slope, pred_intercept=pred_intercept, pred_slope=pred_slope,
            fit_max_residual=resid, max_z=z, step_time_1=float(st[0]), step_time_max=float(st[-1]), B_max=int(B[-1]),
            t0=float(t0), c=float(c))
        s = summary[run_id]
        verdict.append(
            f"epoch {a['at_epochs']:g}: spread |G_B - G| falls like B^{slope:.2f} (expected -0.5; within "
            f"{100 * s['spread_vs_predicted_max']:.0f}% of sqrt(tr(Sigma)/B (n-B)/(n-1)) at every B); "
            f"mean |G_B|^2 = {intercept:.4g} + {inv_slope:.4g}/B (largest deviation from the exact "
            f"line {z:.1f} standard errors), slope / "
            f"tr(Sigma) = {inv_slope / pred_slope:.3f}, intercept / (|G|^2 - tr(Sigma)/(n-1)) = "
            f"{intercept / pred_intercept:.3f}; B_simple = {a['b_simple']:.0f}.")
    first = next(iter(summary.values()))
    verdict.append(f"step time ({config['threads'] or 'all'} thread(s)): {first['step_time_1'] * 1e6:.0f} us at B=1, "
                   f"{first['step_time_max'] * 1e3:.2f} ms at "
                   f"B={first['B_max']} ({first['step_time_max'] / first['step_time_1']:.0f}x the cost for "
                   f"{first['B_max']}x the examples and {math.sqrt(first['B_max']):.0f}x less noise).")
    # judged on the fit (slope tr(Sigma) within 10%, intercept |G|^2 within 20%) and the 1/sqrt(B) exponent; the
    # per-point z-scores are shown but not judged: |G_B|^2 is heavy-tailed, so 32 draws understate its error
    ok5 = all(abs(s["fit_slope"] / s["pred_slope"] - 1) < 0.1 and abs(s["fit_intercept"] / s["pred_intercept"] - 1)
              < 0.2 and abs(s["spread_slope"] + 0.5) < 0.05 for s in summary.values())
    verdict.append(f"SCIENCE: noise ~ 1/sqrt(B) (Two speeds) and item 5 (|G_B|^2 linear in 1/B): "
                   f"{'match' if ok5 else 'DO NOT match'}.")
    if len(summary) > 1:
        bs = [s["b_simple"] for s in summary.values()]
        verdict.append(f"B_simple from epoch {first['at_epochs']:g} to {list(summary.values())[-1]['at_epochs']:g}: "
                       f"{bs[0]:.0f} -> {bs[-1]:.0f} (item 4: rises as the loss falls: "
                       f"{'yes' if bs[-1] > bs[0] else 'no'}).")
    from minigrad.experiment_figures import noise_figure

    figures = [noise_figure(saved, *_stem(out))]
    return _finish("noise", out, summary, verdict, figures, writer)


# ------------------------------------------------------------------------------------------------- keskar
def keskar_batches(config, n_train):
    large = max(1, int(round(config["large_fraction"] * n_train)))
    small = config["small_batch"]
    if not small < large:
        raise ValueError(f"the small batch ({small}) must be smaller than the large one ({large} = "
                         f"{config['large_fraction']:g} of {n_train})")
    return small, sorted({small, large, *[B for B in config["between"] if small < B < large]}), large


def _keskar(config, out, writer, workers, echo):
    from minigrad import store

    dataset = S.load_data(config)
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
    run_jobs(config, specs, writer, workers, label=f"{len(specs)} runs")
    saved = store.open(out)
    # a control for under-training: the small batch stopped where it first reaches the large batch's final
    # validation error, so that both are compared at about the same loss
    matched = _median([r.attrs["final_val_error"] for r in saved.runs.values()
                       if r.attrs.get("tag") == "fixed" and r.attrs.get("batch_size") == large])
    if math.isfinite(matched):
        run_jobs(config, [dict(run_id=f"matched-B{small:05d}-s{seed}", role="small", tag="matched", batch_size=small,
                               lr=config["lr"], seed=seed, epochs=config["epochs"], target=matched,
                               stop_at_target=True, curvature=curv, lr_factor=1.0)
                          for seed in range(config["seeds"])], writer, workers, label="small batch at matched error")
        saved = store.open(out)

    def cell(tag, B, factor=1.0):
        runs = [r.attrs for r in saved.runs.values() if r.attrs.get("tag") == tag
                and r.attrs.get("batch_size") == B and r.attrs.get("lr_factor", 1.0) == factor]
        keys = ("test_error", "train_error", "generalisation_gap", "final_val_error", "lambda_max", "test_loss",
                "train_loss_final", "hvp_check", "param_norm", *[f"sharpness_{e:g}" for e in config["eps"]])
        row = {k: _median([a.get(k) for a in runs]) for k in keys}
        row.update(batch_size=B, lr=config["lr"] * factor, lr_factor=factor, n=len(runs),
                   diverged=sum(a["status"] == "DIVERGED" for a in runs))
        return row

    sb, lb, sb_matched = cell("fixed", small), cell("fixed", large), cell("matched", small)
    candidates = [cell("retune", large, float(f)) for f in config["retune_factors"]] + [lb]
    tuned = min(candidates, key=lambda r: (r["final_val_error"] if math.isfinite(r["final_val_error"]) else math.inf))
    curve = [cell("fixed", B) for B in batch_sizes]

    if "interpolation" not in saved.runs:
        from minigrad import hessian as H
        from minigrad.train import build_model

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
    from minigrad.experiment_figures import keskar_figures

    figures = keskar_figures(saved, summary, config, *_stem(out))
    return _finish("keskar", out, summary, verdict, figures, writer)


def _spearman(x, y):
    from scipy.stats import spearmanr

    ok = [(a, b) for a, b in zip(x, y) if math.isfinite(b)]
    if len(ok) < 3:
        return math.nan
    return float(spearmanr(*zip(*ok)).statistic)


# -------------------------------------------------------------------------------------------------- smith
def _smith(config, out, writer, workers, echo):
    from minigrad import store

    f, milestones = config["factor"], config["milestones"]
    specs = []
    for seed in range(config["seeds"]):
        specs.append(dict(run_id=f"decay-s{seed}", tag="decay", batch_size=config["batch_size"], lr=config["lr"],
                          seed=seed, epochs=config["epochs"],
                          lr_schedule=dict(kind="step", milestones=milestones, gamma=1.0 / f)))
        specs.append(dict(run_id=f"grow-s{seed}", tag="grow", batch_size=config["batch_size"], lr=config["lr"],
                          seed=seed, epochs=config["epochs"], batch_schedule=dict(milestones=milestones, factor=f)))
        # negative control: neither decays nor grows; if it matched the decay as well as growing B does, the
        # comparison could not tell schedules apart
        specs.append(dict(run_id=f"constant-s{seed}", tag="constant", batch_size=config["batch_size"],
                          lr=config["lr"], seed=seed, epochs=config["epochs"]))
    run_jobs(config, specs, writer, workers, label=f"{len(specs)} runs")
    saved = store.open(out)
    n = len(S.load_data(config).y_train)
    grid = np.linspace(milestones[0], config["epochs"], 200) * n  # examples after the first milestone
    curves = {}
    for r in saved.runs.values():
        t = r.trace
        curves.setdefault(r.attrs["tag"], []).append(np.interp(grid, t["examples"], t["val_error"]))
    decay, grow, constant = (np.array(curves[k]) for k in ("decay", "grow", "constant"))
    diff = np.abs(decay - grow)  # same seed: same initialisation, same batches until the first milestone
    control = np.abs(decay - constant)
    between = [np.abs(decay[i] - decay[j]).mean() for i in range(len(decay)) for j in range(i + 1, len(decay))]
    runs = {tag: [r.attrs for r in saved.runs.values() if r.attrs["tag"] == tag]
            for tag in ("decay", "grow", "constant")}
    med = {tag: {k: _median([a[k] for a in rs]) for k in ("test_error", "final_val_error", "steps", "train_error")}
           for tag, rs in runs.items()}
    summary = dict(decay=med["decay"], grow=med["grow"], constant=med["constant"], mean_abs_diff=float(diff.mean()),
                   max_abs_diff=float(diff.max()), control_diff=float(control.mean()),
                   seed_to_seed=float(np.mean(between)) if between else math.nan,
                   update_ratio=med["decay"]["steps"] / med["grow"]["steps"])
    same = summary["mean_abs_diff"] < 0.5 * summary["control_diff"] and (
        not between or summary["mean_abs_diff"] <= 2 * summary["seed_to_seed"] + 0.002)
    verdict = [
        f"lr / {f} at epochs {', '.join(f'{m:g}' for m in milestones)} (B={config['batch_size']}) against B x {f} "
        f"there (lr {config['lr']:g}): final test error {med['decay']['test_error']:.4f} vs "
        f"{med['grow']['test_error']:.4f}.",
        f"validation error against examples seen, after the first milestone: mean |difference| "
        f"{summary['mean_abs_diff']:.4f} (largest {summary['max_abs_diff']:.4f})"
        + (f"; between seeds of the same schedule {summary['seed_to_seed']:.4f}" if between else "")
        + f"; control without any schedule {summary['control_diff']:.4f} (final test error "
        f"{med['constant']['test_error']:.4f}).",
        f"parameter updates: {med['decay']['steps']:.0f} vs {med['grow']['steps']:.0f} "
        f"({summary['update_ratio']:.2f}x fewer when the batch grows).",
        f"Smith et al.'s equivalence (same curves, fewer updates): {'holds' if same else 'does NOT hold'} here.",
    ]
    from minigrad.experiment_figures import smith_figure

    figures = [smith_figure(saved, config, *_stem(out))]
    return _finish("smith", out, summary, verdict, figures, writer)


# ---------------------------------------------------------------------------------------------- stratified
def steps_to(trace, target):
    hit = np.flatnonzero(np.asarray(trace["val_error"]) <= target)
    return float(trace["step"][hit[0]]) if len(hit) else math.inf


def _stratified(config, out, writer, workers, echo):
    from scipy import stats

    from minigrad import store

    specs = []
    for B in config["batch_sizes"]:
        for sampler in ("shuffle", "stratified"):
            for seed in range(config["seeds"]):
                specs.append(dict(run_id=f"{sampler}-B{B:05d}-s{seed}", tag=sampler, sampler=sampler, batch_size=B,
                                  lr=config["lr_per_example"] * B, seed=seed, epochs=config["epochs"]))
    run_jobs(config, specs, writer, workers, label=f"{len(specs)} runs")
    saved = store.open(out)
    rng = np.random.default_rng(0)
    summary, verdict = {"batch_sizes": {}}, []
    for B in config["batch_sizes"]:
        runs = {tag: [r for r in saved.runs.values() if r.attrs["batch_size"] == B and r.attrs["sampler"] == tag]
                for tag in ("shuffle", "stratified")}
        # a target every run reaches: the worst run's best validation error, plus a margin; and a looser one
        strict = round(max(r.attrs["best_val_error"] for rs in runs.values() for r in rs) + config["target_margin"], 4)
        per_b = {}
        for name, target in (("strict", strict), ("loose", round(strict + config["loose_margin"], 4))):
            steps = {tag: np.array([steps_to(r.trace, target) for r in rs]) for tag, rs in runs.items()}
            a, b = steps["shuffle"], steps["stratified"]
            p_median = float(stats.mannwhitneyu(a, b).pvalue) if len(a) > 1 else math.nan
            p_spread = float(stats.levene(a, b, center="median").pvalue) if len(a) > 2 else math.nan
            boot = [np.median(rng.choice(b, len(b))) / np.median(rng.choice(a, len(a))) for _ in range(2000)]
            lo, hi = np.percentile(boot, [5, 95])
            per_b[name] = dict(target=target, shuffle=a.tolist(), stratified=b.tolist(),
                               median_shuffle=float(np.median(a)), median_stratified=float(np.median(b)),
                               cv_shuffle=float(a.std(ddof=1) / a.mean()) if len(a) > 1 else math.nan,
                               cv_stratified=float(b.std(ddof=1) / b.mean()) if len(b) > 1 else math.nan,
                               ratio=float(np.median(b) / np.median(a)), ratio_lo=float(lo), ratio_hi=float(hi),
                               p_median=p_median, p_spread=p_spread)
            s = per_b[name]
            verdict.append(
                f"B={B}, val error <= {target:g}: steps median {s['median_shuffle']:.0f} shuffled vs "
                f"{s['median_stratified']:.0f} stratified (ratio {s['ratio']:.2f}, 90% CI {lo:.2f}-{hi:.2f}, "
                f"Mann-Whitney p={p_median:.2f}); spread over {len(a)} seeds (std/mean) {s['cv_shuffle']:.3f} vs "
                f"{s['cv_stratified']:.3f} (Levene p={p_spread:.2f}).")
        summary["batch_sizes"][str(B)] = per_b
    # Bonferroni over every test made (median and spread, each batch size and target)
    tests = [(B, c, kind, c[f"p_{kind}"]) for B, per_b in summary["batch_sizes"].items() for c in per_b.values()
             for kind in ("median", "spread") if math.isfinite(c[f"p_{kind}"])]
    alpha = 0.05 / max(1, len(tests))
    differs = [f"the {kind} at B={B}, target {c['target']:g} (p={p:.3f})" for B, c, kind, p in tests if p < alpha]
    nominal = [f"B={B} target {c['target']:g} {kind} p={p:.2f}" for B, c, kind, p in tests if alpha <= p < 0.05]
    summary["alpha"], summary["tests"] = alpha, len(tests)
    verdict.append(
        (f"equal class composition changes {', '.join(differs)}" if differs else
         "equal class composition changes neither steps-to-target nor its spread detectably") +
        f" (Bonferroni: p < {alpha:.3g} over {len(tests)} tests" +
        (f"; nominally p < 0.05 but not after correction: {', '.join(nominal)})." if nominal else ")."))
    from minigrad.experiment_figures import stratified_figure

    figures = [stratified_figure(summary, *_stem(out))]
    return _finish("stratified", out, summary, verdict, figures, writer)


# ----------------------------------------------------------------------------------------------------- gns
def study_config(quick):
    return S.make_config(quick=True, **(MINI_STUDY if quick else {}))


def ensure_study(config, out, echo, overwrite=False):
    """The study file to compare against: config['study'], or one run now beside `out` (resumed if it is there;
    replaced with `overwrite`, which also covers a file left by an older study configuration)."""
    if config["study"]:
        path = Path(config["study"])
        if not path.exists():
            raise ValueError(f"study file {path} not found; run `minigrad bench --out {path}` first")
        return path
    from minigrad.sweep import run_study

    path = Path(out).with_name(Path(out).stem + "-study.h5")
    echo(f"no --study given: running {'a small' if config['study_quick'] else 'the --quick'} batch-size study into "
         f"{path} (resumes if present)")
    run_study(study_config(config["study_quick"]), path, echo=echo, measure_throughput=False, overwrite=overwrite)
    return path


def _gns(config, out, writer, workers, echo, overwrite=False):
    from minigrad import report, store

    study_path = ensure_study(config, out, echo, overwrite)
    study_file = store.open(study_path)
    analysis = report.analyse(study_file)
    sconf = study_file.config
    results = [S.result_row(rid, r.attrs, r.trace) for rid, r in study_file.runs.items()]
    _, ref_lr = S.best_reference(results)
    B_ref = sconf["reference_batch_size"]
    job_config = dict(sconf, experiment="gns")
    n_train = len(S.load_data(job_config).y_train)
    epochs = sconf["reference_epochs"]
    spec = dict(run_id="gns-run", batch_size=B_ref, lr=ref_lr, seed=config["seed"], epochs=epochs,
                target=analysis.target, total_steps=int(epochs * n_train / B_ref),
                gns=dict(batch_size=config["gns_batch_size"], batches=config["gns_batches"],
                         smoothing=config["smoothing"]), full_gns=config["checkpoints"])
    run_jobs(job_config, [spec], writer, workers=1, label="training with the noise scale recorded")
    saved = store.open(out)
    t = saved.runs["gns-run"].trace
    full = np.isfinite(t["full_b_simple"])
    steps_full, b_full = t["step"][full], t["full_b_simple"][full]
    at = np.flatnonzero(t["at_target"] > 0)
    b_target_full = float(t["full_b_simple"][at[0]]) if len(at) else math.nan
    b_target_run = float(t["gns_b_simple"][at[0]]) if len(at) else math.nan
    fit = analysis.fit or {}
    b_crit = fit.get("B_crit", math.nan)
    positive = b_full[b_full > 0]
    rise = float(positive[-1] / positive[0]) if len(positive) > 1 else math.nan
    bench = analysis.gns  # B_simple near the target from the study's own tuning trials (if they recorded it)
    lrs = [(r["batch_size"], r["best_lr"]) for r in analysis.rows if r["best_lr"] is not None]
    below = [(B, lr) for B, lr in lrs if B < b_crit] if math.isfinite(b_crit) else lrs
    above = [(B, lr) for B, lr in lrs if B >= b_crit] if math.isfinite(b_crit) else []
    lr_slope_below = _loglog_slope(below)
    # from the last batch size below B_crit on, so that one point above it still gives a slope
    lr_slope_above = _loglog_slope(below[-1:] + above)
    g2_full, tr_full = t["full_g2"][full][b_full > 0], t["full_trsigma"][full][b_full > 0]
    running = t["gns_b_simple"][full]
    agree = running[b_full > 0] / b_full[b_full > 0]
    agree = agree[np.isfinite(agree)]
    summary = dict(study=str(study_path), target=analysis.target, B_crit=b_crit, B_crit_lo=fit.get("B_crit_lo"),
                   B_crit_hi=fit.get("B_crit_hi"), reference_batch=B_ref, reference_lr=ref_lr,
                   b_simple_full=b_full.tolist(), steps_full=steps_full.tolist(), rise=rise,
                   b_simple_target_full=b_target_full, b_simple_target_running=b_target_run,
                   b_simple_bench=bench.get("b_simple", math.nan), bench_trials=bench.get("trials", 0),
                   ratio=b_target_full / b_crit if math.isfinite(b_crit) and b_crit > 0 else math.nan,
                   lr_slope_below=lr_slope_below, lr_slope_above=lr_slope_above, tuned_lrs=lrs,
                   g2_first=float(g2_full[0]) if len(g2_full) else math.nan,
                   g2_last=float(g2_full[-1]) if len(g2_full) else math.nan,
                   trsigma_first=float(tr_full[0]) if len(tr_full) else math.nan,
                   trsigma_last=float(tr_full[-1]) if len(tr_full) else math.nan,
                   running_vs_exact=float(np.median(agree)) if len(agree) else math.nan,
                   running_vs_exact_lo=float(agree.min()) if len(agree) else math.nan,
                   running_vs_exact_hi=float(agree.max()) if len(agree) else math.nan)
    ratio = summary["ratio"]
    verdict = [
        f"B_simple (exact, whole training split, B={B_ref}, lr={ref_lr:g}) rose from {positive[0]:.3g} at step "
        f"{steps_full[b_full > 0][0]} to {positive[-1]:.3g} at step {steps_full[b_full > 0][-1]}: "
        f"{rise:.0f}x ({math.log10(rise):.1f} orders of magnitude): |G|^2 {summary['g2_first']:.3g} -> "
        f"{summary['g2_last']:.3g}, tr(Sigma) {summary['trsigma_first']:.3g} -> {summary['trsigma_last']:.3g}."
        if len(positive) > 1 else
        "B_simple: fewer than two positive checkpoint values.",
        f"at the study's target (val error {analysis.target:g}): B_simple = {b_target_full:.0f} exact, "
        f"{b_target_run:.0f} running estimate; across the study's best-lr tuning trials "
        f"{summary['b_simple_bench']:.0f} "
        f"({summary['bench_trials']} trials). The running estimate (GNSHook, {config['gns_batches']} x "
        f"{config['gns_batch_size']} examples per evaluation, smoothed) is {summary['running_vs_exact']:.2f}x the "
        f"exact value at the median checkpoint ({summary['running_vs_exact_lo']:.2f}x to "
        f"{summary['running_vs_exact_hi']:.2f}x).",
        f"measured B_crit = {b_crit:.0f} (16-84% {fit.get('B_crit_lo', math.nan):.0f} to "
        f"{fit.get('B_crit_hi', math.nan):.0f}): B_simple / B_crit = {ratio:.2f}.",
        f"tuned lr against B ({', '.join(f'{B}: {lr:g}' for B, lr in lrs)}): log-log slope {lr_slope_below:.2f} "
        f"below B_crit, {lr_slope_above:.2f} across it (item 7 expects about 1, then about 0).",
        f"SCIENCE item 4 (rises by orders of magnitude): "
        f"{'yes' if rise >= 100 else ('one order of magnitude' if rise >= 10 else 'no')}; item 6 (predicts B_crit "
        f"within 1x-10x, usually above): "
        f"{'yes' if 1 <= ratio <= 10 else ('within 0.1x-10x' if 0.1 <= ratio <= 10 else 'no')}.",
    ]
    from minigrad.experiment_figures import gns_figure

    figures = [gns_figure(saved, summary, *_stem(out))]
    return _finish("gns", out, summary, verdict, figures, writer)


def _loglog_slope(points):
    points = [(B, lr) for B, lr in points if lr]
    if len(points) < 2:
        return math.nan
    B, lr = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(B, lr, 1)[0])
