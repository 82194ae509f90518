"""The gradient noise scale B_simple over training next to B_crit from a `minigrad bench` study."""
import math
from pathlib import Path

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import MINI_STUDY, finish, run_jobs, stem
from minigrad.study.config import make_config as make_study_config
from minigrad.study import plan
from minigrad.training.trial import load_data
from minigrad.training.spec import TrialSpec


def study_config(quick, data=None):
    return make_study_config(quick=True, data=data, **(MINI_STUDY if quick else {}))


def ensure_study(config, out, echo, overwrite=False):
    """The study file to compare against: config['study'], or one run now beside `out` (resumed if it is there;
    replaced with `overwrite`, which also covers a file left by an older study configuration)."""
    if config["study"]:
        if config["data"]:
            raise ValueError("give --data or --study, not both: a study file trains on its own data")
        path = Path(config["study"])
        if not path.exists():
            raise ValueError(f"study file {path} not found; run `minigrad bench --out {path}` first")
        return path
    from minigrad.study.sweep import run_study

    path = Path(out).with_name(Path(out).stem + "-study.h5")
    echo(f"no --study given: running {'a small' if config['study_quick'] else 'the --quick'} batch-size study into "
         f"{path} (resumes if present)")
    run_study(study_config(config["study_quick"], config["data"]), path, echo=echo, measure_throughput=False,
              overwrite=overwrite)
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
    # trained past the target (no stop) for `long_factor` times the study's reference budget, so that the rise up
    # to the target and the rise after it are measured on one trajectory
    epochs = sconf["reference_epochs"] * config["long_factor"]
    spec = TrialSpec(run_id="gns-run", batch_size=B_ref, lr=ref_lr, seed=config["seed"], epochs=epochs,
                target=analysis.target, stop_at_target=False, total_steps=int(epochs * n_train / B_ref),
                gns=dict(batch_size=config["gns_batch_size"], batches=config["gns_batches"],
                         smoothing=config["smoothing"]),
                two_batch_gns=dict(small=config["two_batch"][0], big=config["two_batch"][1], window=config["window"]),
                full_gns=config["checkpoints"])
    run_jobs(job_config, [spec], writer, executor, label="training with the noise scale recorded")
    saved = store.open(out)
    t = saved.runs["gns-run"].trace
    full = np.isfinite(t["full_b_simple"]) & (t["full_b_simple"] > 0)
    steps_full, b_full, loss_full = t["step"][full], t["full_b_simple"][full], t["full_loss"][full]
    at = np.flatnonzero(t["at_target"] > 0)
    target_step = int(t["step"][at[0]]) if len(at) else None
    b_target_full = float(t["full_b_simple"][at[0]]) if len(at) else math.nan
    b_target_run = float(t["tb_b_simple"][at[0]]) if len(at) else math.nan
    fit = analysis.fit or {}
    b_crit = fit.get("B_crit", math.nan)
    bench = analysis.gns  # B_simple near the target from the study's own tuning trials (if they recorded it)
    lrs = [(r["batch_size"], r["best_lr"]) for r in analysis.rows if r["best_lr"] is not None]
    below = [(B, lr) for B, lr in lrs if B < b_crit] if math.isfinite(b_crit) else lrs
    above = [(B, lr) for B, lr in lrs if B >= b_crit] if math.isfinite(b_crit) else []
    upto = steps_full <= (target_step if target_step is not None else steps_full.max())
    trend_all, trend_target = _trend(b_full, loss_full), _trend(b_full[upto], loss_full[upto])
    # the pooled series against the trace's running training loss (the full-split loss is only at checkpoints)
    pooled = np.isfinite(t["tb_b_simple"]) & (t["tb_b_simple"] > 0)
    trend_pooled = _trend(t["tb_b_simple"][pooled], t["train_loss"][pooled])
    agree = t["tb_b_simple"][full] / b_full
    agree = agree[np.isfinite(agree)]
    summary = dict(study=str(study_path), target=analysis.target, target_step=target_step, B_crit=b_crit,
                   B_crit_lo=fit.get("B_crit_lo"), B_crit_hi=fit.get("B_crit_hi"), reference_batch=B_ref,
                   reference_lr=ref_lr, epochs=epochs, b_simple_full=b_full.tolist(), steps_full=steps_full.tolist(),
                   loss_full=loss_full.tolist(), trend=trend_all, trend_to_target=trend_target,
                   trend_pooled=trend_pooled, b_simple_target_full=b_target_full,
                   b_simple_target_pooled=b_target_run, b_simple_bench=bench.get("b_simple", math.nan),
                   bench_trials=bench.get("trials", 0),
                   ratio=b_target_full / b_crit if math.isfinite(b_crit) and b_crit > 0 else math.nan,
                   lr_slope_below=_loglog_slope(below), lr_slope_above=_loglog_slope(below[-1:] + above),
                   tuned_lrs=lrs, pooled_vs_exact=float(np.median(agree)) if len(agree) else math.nan,
                   pooled_vs_exact_lo=float(agree.min()) if len(agree) else math.nan,
                   pooled_vs_exact_hi=float(agree.max()) if len(agree) else math.nan)
    noise = "90% t-interval of the fitted slope over the checkpoints"
    rises = V.below("item 4: B_simple rises as the loss falls", "slope of log B_simple against log training loss",
                    trend_all["slope"], trend_all["lo"], trend_all["hi"], 0.0, noise, 1)
    orders = V.above("item 4: by orders of magnitude (>= 100x over the run)", "fitted rise over the run",
                     trend_all["rise"], trend_all["rise_lo"], trend_all["rise_hi"], 100.0, noise, 1)
    tests = [rises, orders]
    ratio = summary["ratio"]
    tests.append(V.within("item 6: B_simple at the target predicts B_crit within 1x-10x", "B_simple / B_crit",
                          ratio, *_ratio_interval(b_target_full, fit), 1.0, 10.0,
                          "B_crit's 16-84% interval from the study", sconf["seeds"]))
    summary["tests"], summary["outcome"] = [v.as_dict() for v in tests], V.combine("item 4", tests[:2])

    def seg(tr):
        return (f"{tr['first']:.3g} -> {tr['last']:.3g} ({tr['observed_rise']:.0f}x observed) over loss "
                f"{tr['loss_first']:.3g} -> {tr['loss_last']:.3g}; slope {tr['slope']:+.2f} "
                f"[{tr['lo']:+.2f}, {tr['hi']:+.2f}], Spearman rho(B_simple, loss) {tr['rho']:+.2f}, {tr['n']} points")

    verdict = [
        f"B_simple exact (whole training split, B={B_ref}, lr={ref_lr:g}, {epochs:g} epochs, not stopped at the "
        f"target): up to the target (step {target_step}): {seg(trend_target)}; over the whole run: {seg(trend_all)}.",
        f"B_simple pooled as McCandlish et al. (two-batch estimator, |G_Bs|^2 and |G_Bb|^2 at Bs="
        f"{config['two_batch'][0]}, Bb={config['two_batch'][1]}, |G|^2 and tr(Sigma) each averaged over the last "
        f"{config['window']} evaluations, then divided): {seg(trend_pooled)}; {summary['pooled_vs_exact']:.2f}x "
        f"the exact value at the median checkpoint ({summary['pooled_vs_exact_lo']:.2f}x to "
        f"{summary['pooled_vs_exact_hi']:.2f}x).",
        f"at the study's target (val error {analysis.target:g}): B_simple = {b_target_full:.0f} exact, "
        f"{b_target_run:.0f} pooled two-batch; the study's best-lr tuning trials (per-example estimator, stopped at "
        f"the target): {summary['b_simple_bench']:.0f} ({summary['bench_trials']} trials).",
        f"measured B_crit = {b_crit:.0f} (90% bootstrap interval {fit.get('B_crit_lo', math.nan):.0f} to "
        f"{fit.get('B_crit_hi', math.nan):.0f}): B_simple / B_crit = {ratio:.2f}.",
        f"tuned lr against B ({', '.join(f'{B}: {lr:g}' for B, lr in lrs)}): log-log slope "
        f"{summary['lr_slope_below']:.2f} below B_crit, {summary['lr_slope_above']:.2f} across it (item 7 expects "
        f"about 1, then about 0).",
    ]
    verdict += [v.line() for v in tests]
    if target_step is not None and trend_target["n"] >= 2:
        # which limits the rise: stopping at the target (training on multiplies it by >= 3) or the task (the loss
        # cannot fall much further, so neither can B_simple)
        more = trend_all["observed_rise"] / trend_target["observed_rise"]
        summary["rise_after_target"] = more
        verdict.append(
            f"item 4's size: B_simple rose {trend_target['observed_rise']:.0f}x up to the target and "
            f"{trend_all['observed_rise']:.0f}x by the end of a run {config['long_factor']:g}x the study's budget "
            f"({more:.1f}x more after the target, where the training loss fell from {trend_target['loss_last']:.3g} "
            f"to {trend_all['loss_last']:.3g}; over the whole run it fell "
            f"{trend_all['loss_first'] / trend_all['loss_last']:.1f}x): "
            + ("mostly how it is measured, training stops before B_simple is done rising"
               if more >= 3 else "this task: B_simple follows the loss, and the loss has little further to fall")
            + " (rule: how it is measured if training on multiplies the rise by 3 or more).")
    from minigrad.experiments.figures import gns_figure

    figures = [gns_figure(saved, summary, *stem(out))]
    return finish("gns", out, summary, verdict, figures, writer)


def _trend(b, loss):
    """log B_simple against log training loss: slope with its 90% interval, the rise it implies over the loss
    range (exp(-slope * log(loss_first / loss_last)), with the same interval), Spearman's rho, the observed rise,
    and the point (geometric means of loss and B_simple) the fitted line passes through."""
    from scipy.stats import spearmanr

    b, loss = np.asarray(b, float), np.asarray(loss, float)
    ok = np.isfinite(b) & (b > 0) & np.isfinite(loss) & (loss > 0)
    b, loss = b[ok], loss[ok]
    nan = math.nan
    if len(b) < 2:
        return dict(n=len(b), slope=nan, se=nan, lo=nan, hi=nan, rise=nan, rise_lo=nan, rise_hi=nan, rho=nan,
                    first=nan, last=nan, observed_rise=nan, loss_first=nan, loss_last=nan, centre=[nan, nan])
    slope, se, lo, hi = V.linear_fit(np.log(loss), np.log(b))
    span = math.log(loss[0] / loss[-1])
    return dict(n=int(len(b)), slope=slope, se=se, lo=lo, hi=hi, rise=math.exp(-slope * span),
                rise_lo=math.exp(-hi * span), rise_hi=math.exp(-lo * span),
                rho=float(spearmanr(b, loss).statistic) if len(b) > 2 else nan, first=float(b[0]),
                last=float(b[-1]), observed_rise=float(b[-1] / b[0]), loss_first=float(loss[0]),
                loss_last=float(loss[-1]),
                centre=[float(np.exp(np.log(loss).mean())), float(np.exp(np.log(b).mean()))])


def _ratio_interval(b_simple, fit):
    """B_simple / B_crit over B_crit's interval; NaN when that is missing or degenerate (a one-seed study)."""
    lo, hi = fit.get("B_crit_lo"), fit.get("B_crit_hi")
    if not (lo and hi and math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        return math.nan, math.nan
    return b_simple / hi, b_simple / lo


def _loglog_slope(points):
    points = [(B, lr) for B, lr in points if lr]
    if len(points) < 2:
        return math.nan
    B, lr = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(B, lr, 1)[0])
