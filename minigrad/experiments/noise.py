"""Spread of minibatch gradients around the full gradient for B = 1..4096, next to the step time."""
import math

import numpy as np

from minigrad.experiments import verdict as V
from minigrad.experiments.common import finish, stem
from minigrad.machine.threads import use_threads
from minigrad.training.trial import load_data


def run(config, out, writer, executor, echo):
    from minigrad import store
    from minigrad.instruments.noise import noise_vs_batch
    from minigrad.machine.progress import progress_bar
    from minigrad.training.train import Budget, build_model, train

    dataset = load_data(config)
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
                use_threads(config["threads"]):
            result = noise_vs_batch(model, dataset.X_train, dataset.y_train, sizes, draws=config["draws"],
                                    min_examples=config["min_examples"], seed=config["seed"],
                                    progress=lambda f: advance(completed=f))
        columns = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
        attrs.update({k: v for k, v in result.items() if not isinstance(v, np.ndarray)})
        writer.write_run(run_id, attrs, columns)
    writer.flush()

    saved = store.open(out)
    summary, verdict, tests = {}, [], []
    for run_id, r in saved.runs.items():
        t, a = r.trace, r.attrs
        B, n = t["batch_size"].astype(float), a["n"]
        # drawn without replacement, the spread is sqrt(tr(Sigma)/B (n-B)/(n-1)): divided by the finite-population
        # factor it falls exactly like B^-0.5 (a bias of ~0.01 in the exponent otherwise, which the fit resolves)
        small = B <= n / 2
        fpc = np.sqrt((n - B[small]) / (n - 1))
        (_, slope), (_, slope_se), _ = weighted_fit(
            np.stack([np.ones(small.sum()), np.log(B[small])], axis=1), np.log(t["spread_rms"][small] / fpc),
            (t["spread_se"] / t["spread_rms"])[small])
        vs_pred = t["spread_rms"] / t["predicted_rms"]
        intercept, inv_slope, intercept_se, inv_slope_se, chi2 = fit_line(B, t["mean_sqnorm"], t["sqnorm_se"])
        # without replacement: E|G_B|^2 = |G|^2 - tr/(n-1) + tr n/((n-1) B), exactly linear in 1/B
        pred_slope = a["trsigma"] * n / (n - 1)
        pred_intercept = a["g2"] - a["trsigma"] / (n - 1)
        st = t["step_time_s"]
        c, t0 = np.polyfit(B, st, 1)
        summary[run_id] = dict(at_epochs=a["at_epochs"], spread_slope=slope, spread_slope_se=slope_se,
                               spread_vs_predicted_max=float(np.max(np.abs(vs_pred - 1))), b_simple=a["b_simple"],
                               g2=a["g2"], trsigma=a["trsigma"], fit_intercept=intercept, fit_slope=inv_slope,
                               fit_intercept_se=intercept_se, fit_slope_se=inv_slope_se, fit_chi2_dof=chi2,
                               pred_intercept=pred_intercept, pred_slope=pred_slope, step_time_1=float(st[0]),
                               step_time_max=float(st[-1]), B_max=int(B[-1]), t0=float(t0), c=float(c))
        s, at = summary[run_id], f"epoch {a['at_epochs']:g}"
        # each judged against its own standard error; resolution: what a useful measurement must be able to see
        # (10% of the slope tr(Sigma), half of |G|^2, 0.05 in the exponent)
        run_tests = [
            V.agrees(f"{at}: spread |G_B - G| ~ B^-0.5", "exponent of B (finite-population factor divided out)",
                     slope, slope_se, -0.5, 0.05, 1, noise="90% interval from the weighted log-log fit's SE"),
            V.agrees(f"{at}: item 5, slope of mean |G_B|^2 in 1/B is tr(Sigma)", "fitted slope", inv_slope,
                     inv_slope_se, pred_slope, 0.1 * abs(pred_slope), 1),
            V.agrees(f"{at}: item 5, intercept is |G|^2 (finite-population form)", "fitted intercept", intercept,
                     intercept_se, pred_intercept, 0.5 * a["g2"], 1),
        ]
        s["tests"] = [v.as_dict() for v in run_tests]
        tests += run_tests
        verdict.append(
            f"{at}: mean |G_B|^2 = {intercept:.4g} (SE {intercept_se:.2g}) + {inv_slope:.4g} (SE {inv_slope_se:.2g})/B"
            f" (weighted fit over {len(B)} batch sizes, at least {int(t['draws'].min())} draws each, chi2/dof "
            f"{chi2:.2f}, SEs scaled up by sqrt(chi2/dof) when above 1); exact: |G|^2 = {a['g2']:.4g}, "
            f"tr(Sigma) = {a['trsigma']:.4g}, B_simple = {a['b_simple']:.0f}; spread within "
            f"{100 * s['spread_vs_predicted_max']:.0f}% of sqrt(tr(Sigma)/B (n-B)/(n-1)) at every B.")
        verdict += [v.line() for v in run_tests]
    first = next(iter(summary.values()))
    verdict.append(f"step time ({config['threads'] or 'all'} thread(s)): {first['step_time_1'] * 1e6:.0f} us at B=1, "
                   f"{first['step_time_max'] * 1e3:.2f} ms at "
                   f"B={first['B_max']} ({first['step_time_max'] / first['step_time_1']:.0f}x the cost for "
                   f"{first['B_max']}x the examples and {math.sqrt(first['B_max']):.0f}x less noise).")
    overall = V.combine("", tests)
    verdict.append(f"docs/science.md: noise ~ 1/sqrt(B) (two speeds) and expectation 5 (|G_B|^2 linear in 1/B): {overall} "
                   f"({sum(v.outcome == V.REPRODUCED for v in tests)} of {len(tests)} tests reproduced, "
                   f"{sum(v.outcome == V.NOT_REPRODUCED for v in tests)} not).")
    summary["outcome"] = overall
    bs = [(s["at_epochs"], s["b_simple"]) for s in summary.values() if isinstance(s, dict)]
    if len(bs) > 1:
        verdict.append("B_simple (exact, whole training split) at " + ", ".join(
            f"epoch {e:g}: {b:.0f}" for e, b in bs) + " (one model and seed, no interval: item 4's trend is "
            "tested by `minigrad experiment gns`).")
    from minigrad.experiments.figures import noise_figure

    figures = [noise_figure(saved, *stem(out))]
    return finish("noise", out, summary, verdict, figures, writer)


def fit_line(batch_sizes, values, errors):
    """values = intercept + slope / B: (intercept, slope, their standard errors, chi2 per degree of freedom)."""
    B = np.asarray(batch_sizes, float)
    coef, se, chi2 = weighted_fit(np.stack([np.ones_like(B), 1.0 / B], axis=1), values, errors)
    return float(coef[0]), float(coef[1]), float(se[0]), float(se[1]), chi2


def weighted_fit(A, values, errors):
    """Least squares of values = A @ coef with weights 1/error^2: (coef, standard errors, chi2 per degree of
    freedom). The standard errors are scaled up by sqrt(chi2/dof) when that exceeds 1: the per-point errors come
    from a few dozen draws of a heavy-tailed |G_B|^2 and can understate."""
    v, e = np.asarray(values, float), np.asarray(errors, float)
    Aw = np.asarray(A, float) / e[:, None]
    coef, *_ = np.linalg.lstsq(Aw, v / e, rcond=None)
    cov = np.linalg.inv(Aw.T @ Aw)
    chi2 = float(np.sum((Aw @ coef - v / e) ** 2)) / max(1, len(v) - A.shape[1])
    cov *= max(1.0, chi2)
    return coef, np.sqrt(np.diag(cov)), chi2
