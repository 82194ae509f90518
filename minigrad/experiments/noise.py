"""Spread of minibatch gradients around the full gradient for B = 1..4096, next to the step time."""
import math

import numpy as np

from minigrad.experiments.common import finish, stem
from minigrad.machine.threads import use_threads
from minigrad.training.trial import load_data


def run(config, out, writer, executor, echo):
    from minigrad import store
    from minigrad.instruments.noise import fit_inverse_b, noise_vs_batch
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
    from minigrad.experiments.figures import noise_figure

    figures = [noise_figure(saved, *stem(out))]
    return finish("noise", out, summary, verdict, figures, writer)
