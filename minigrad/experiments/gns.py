"""The gradient noise scale B_simple over training next to B_crit from a `minigrad bench` study."""
import math
from pathlib import Path

import numpy as np

from minigrad.experiments.common import MINI_STUDY, finish, run_jobs, stem
from minigrad.study.config import make_config as make_study_config
from minigrad.study import plan
from minigrad.training.trial import load_data


def study_config(quick):
    return make_study_config(quick=True, **(MINI_STUDY if quick else {}))


def ensure_study(config, out, echo, overwrite=False):
    """The study file to compare against: config['study'], or one run now beside `out` (resumed if it is there;
    replaced with `overwrite`, which also covers a file left by an older study configuration)."""
    if config["study"]:
        path = Path(config["study"])
        if not path.exists():
            raise ValueError(f"study file {path} not found; run `minigrad bench --out {path}` first")
        return path
    from minigrad.study.sweep import run_study

    path = Path(out).with_name(Path(out).stem + "-study.h5")
    echo(f"no --study given: running {'a small' if config['study_quick'] else 'the --quick'} batch-size study into "
         f"{path} (resumes if present)")
    run_study(study_config(config["study_quick"]), path, echo=echo, measure_throughput=False, overwrite=overwrite)
    return path


def run(config, out, writer, executor, echo, overwrite=False):
    from minigrad import store
    from minigrad.study import report

    study_path = ensure_study(config, out, echo, overwrite)
    study_file = store.open(study_path)
    analysis = report.analyse(study_file)
    sconf = study_file.config
    results = [plan.result_row(rid, r.attrs, r.trace) for rid, r in study_file.runs.items()]
    _, ref_lr = plan.best_reference(results)
    B_ref = sconf["reference_batch_size"]
    job_config = dict(sconf, experiment="gns")
    n_train = len(load_data(job_config).y_train)
    epochs = sconf["reference_epochs"]
    spec = dict(run_id="gns-run", batch_size=B_ref, lr=ref_lr, seed=config["seed"], epochs=epochs,
                target=analysis.target, total_steps=int(epochs * n_train / B_ref),
                gns=dict(batch_size=config["gns_batch_size"], batches=config["gns_batches"],
                         smoothing=config["smoothing"]), full_gns=config["checkpoints"])
    run_jobs(job_config, [spec], writer, executor, label="training with the noise scale recorded")
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
        f"measured B_crit = {b_crit:.0f} (90% bootstrap interval {fit.get('B_crit_lo', math.nan):.0f} to "
        f"{fit.get('B_crit_hi', math.nan):.0f}): B_simple / B_crit = {ratio:.2f}.",
        f"tuned lr against B ({', '.join(f'{B}: {lr:g}' for B, lr in lrs)}): log-log slope {lr_slope_below:.2f} "
        f"below B_crit, {lr_slope_above:.2f} across it (item 7 expects about 1, then about 0).",
        f"SCIENCE item 4 (rises by orders of magnitude): "
        f"{'yes' if rise >= 100 else ('one order of magnitude' if rise >= 10 else 'no')}; item 6 (predicts B_crit "
        f"within 1x-10x, usually above): "
        f"{'yes' if 1 <= ratio <= 10 else ('within 0.1x-10x' if 0.1 <= ratio <= 10 else 'no')}.",
    ]
    from minigrad.experiments.figures import gns_figure

    figures = [gns_figure(saved, summary, *stem(out))]
    return finish("gns", out, summary, verdict, figures, writer)


def _loglog_slope(points):
    points = [(B, lr) for B, lr in points if lr]
    if len(points) < 2:
        return math.nan
    B, lr = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(B, lr, 1)[0])
