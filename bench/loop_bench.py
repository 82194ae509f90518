"""A trial's wall time per step against the bare compiled step, evaluations included; threads under contention.

    python bench/loop_bench.py                      # trial / bare step at B = 1, 8, 64, 1024, both models
    python bench/loop_bench.py --contention         # step times with one competing CPU-bound process: the bare
                                                    # step on 1 and 2 threads, and a run with --threads auto
    python bench/loop_bench.py --eval               # evaluation cost in steps (the evaluation floor's cost model)
    python bench/loop_bench.py --json out.json      # also write the rows

Models: the default study's (teacher data, 32 features, hidden 64,64) and 784-128-128-10 (teacher data with 784
features). The bare step is MLP.train_step_trusted (MLP._train_step in older checkouts) on one batch validated
once (what `minigrad bench throughput` times); the trial is minigrad.train.train with a step budget and no target, timed whole (sampler, schedules, evaluations
and all) after a warm-up run has compiled everything. Uses only APIs that the training loop before the compiled
loop had too, so that the same script times an older checkout (PYTHONPATH=/path/to/old python bench/loop_bench.py).
Reports medians over --repeats runs with their spread (min-max), and the threads in effect.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import minigrad

# the package's layout since issue #13, or the flat one before (to time an older checkout). Decided by the files of
# the minigrad found first: an editable install of another checkout would otherwise supply the modules an older
# checkout lacks, and the older checkout would be timed with the newer engine.
if os.path.isdir(os.path.join(os.path.dirname(minigrad.__file__), "engine")):
    from minigrad.engine.model import MLP
    from minigrad.engine.optim import make_optimizer
    from minigrad.machine.threads import limit_threads
    from minigrad.training.train import Budget, build_model, train
else:
    from minigrad.model import MLP
    from minigrad.optim import make_optimizer
    from minigrad.throughput import limit_threads
    from minigrad.train import Budget, build_model, train

MODELS = {"teacher-64-64": (32, [64, 64]), "784-128-128-10": (784, [128, 128])}
BATCH_SIZES = [1, 8, 64, 1024]


def dataset(features):
    from minigrad import data

    return data.load("teacher", n_features=features) if features != 32 else data.load("teacher")


def bare_step(ds, hidden, B, min_time=0.5):
    """Seconds per MLP.train_step_trusted call on one fixed batch (plain SGD): the mean over a block of calls lasting
    about min_time (a mean, like the trial's time per step: on a shared machine a median of single calls leaves
    out the calls a busy core slowed down)."""
    model, opt = MLP([ds.n_features, *hidden, ds.n_classes], seed=0), make_optimizer("sgd", 1e-3)
    X, y = np.ascontiguousarray(ds.X_train[:B]), np.ascontiguousarray(ds.y_train[:B])
    step = getattr(model, "train_step_trusted", None) or model._train_step  # an older checkout's name
    for _ in range(3):
        step(X, y, opt)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_time:
        for _ in range(10):
            step(X, y, opt)
        n += 10
    return (time.perf_counter() - started) / n


def trial(ds, hidden, B, steps, lr=1e-3):
    """(wall seconds per step, compute seconds per step, evaluation seconds per step) of one train() call."""
    model = build_model(ds, hidden, seed=0)
    started = time.perf_counter()
    trace = train(model, ds, B, lr, budget=Budget(steps=steps), seed=0)
    wall = time.perf_counter() - started
    n = trace.attrs["steps"]
    return wall / n, trace.attrs["compute_s"] / n, trace.attrs["eval_s"] / n


def study_floor(B, n_val):
    # minigrad.training.train.eval_gap_floor's formula (written out: an older checkout has no floor)
    return max(1, math.ceil(n_val / (0.05 * (3 * B + 40))))


def ratios(repeats, batch_sizes, trial_seconds):
    rows = []
    for name, (features, hidden) in MODELS.items():
        ds = dataset(features)
        for B in batch_sizes:
            trial(ds, hidden, B, 50)  # compile
            bare = [bare_step(ds, hidden, B) for _ in range(repeats)]
            # long enough that the evaluation floor, not the 32 evaluations a short run gets, spaces evaluations
            # (as in a study's trials, which run tens of thousands of steps at small B)
            steps = max(200, int(trial_seconds / statistics.median(bare)), 32 * study_floor(B, len(ds.y_val)))
            runs = [trial(ds, hidden, B, steps) for _ in range(repeats)]
            wall = [r[0] for r in runs]
            row = dict(model=name, batch_size=B, steps=steps, bare_s=statistics.median(bare),
                       trial_s=statistics.median(wall), compute_s=statistics.median(r[1] for r in runs),
                       eval_s=statistics.median(r[2] for r in runs))
            row["ratio"] = row["trial_s"] / row["bare_s"]
            row["ratio_range"] = (min(wall) / max(bare), max(wall) / min(bare))
            rows.append(row)
            print(f"{name:16s} B={B:5d}  bare {row['bare_s'] * 1e6:9.1f} us  trial {row['trial_s'] * 1e6:9.1f} us"
                  f"/step (compute {row['compute_s'] * 1e6:8.1f}, eval {row['eval_s'] * 1e6:7.1f})  ratio "
                  f"{row['ratio']:5.2f} [{row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}]", flush=True)
    return rows


def evaluation_cost(batch_sizes):
    """Seconds of one evaluation of the validation split, in bare steps per B (the cost model of eval_gap_floor)."""
    rows = []
    for name, (features, hidden) in MODELS.items():
        ds = dataset(features)
        model = build_model(ds, hidden)
        model.evaluate(ds.X_val, ds.y_val)
        t0 = time.perf_counter()
        for _ in range(20):
            model.evaluate(ds.X_val, ds.y_val)
        ev = (time.perf_counter() - t0) / 20
        for B in batch_sizes:
            bare = bare_step(ds, hidden, B)
            rows.append(dict(model=name, batch_size=B, eval_s=ev, bare_s=bare, eval_in_steps=ev / bare,
                             n_val=len(ds.y_val), fixed_examples=len(ds.y_val) * bare / ev - 3 * B))
            print(f"{name:16s} B={B:5d}  evaluation of {len(ds.y_val)}: {ev * 1e3:7.2f} ms = {ev / bare:8.1f} "
                  f"steps; a step costs {len(ds.y_val) * bare / ev:8.1f} example-evaluations", flush=True)
    return rows


COMPETITOR = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"


def contention(batch_sizes, threads_list):
    """Bare step time per (model, B, threads) alone and with one competing CPU-bound process."""
    import numba

    rows = []
    for name, (features, hidden) in MODELS.items():
        ds = dataset(features)
        for B in batch_sizes:
            times, auto_threads = {}, {}
            for label in ("alone", "busy"):
                competitor = None
                if label == "busy":
                    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR.format(seconds=120)])
                    time.sleep(0.2)
                try:
                    for T in threads_list:
                        with limit_threads(T):
                            numba.set_num_threads(T)
                            times[label, T] = bare_step(ds, hidden, B, min_time=1.0)
                    # a training run with --threads auto: its compute time per step (threads chosen by measurement,
                    # falling back to one when two get slow)
                    model = build_model(ds, hidden, seed=0)
                    steps = max(100, int(1.0 / times[label, 1]))
                    trace = train(model, ds, B, 1e-3, budget=Budget(steps=steps), threads="auto")
                    times[label, "auto"] = trace.attrs["compute_s"] / trace.attrs["steps"]
                    auto_threads[label] = (trace.attrs.get("threads"), trace.attrs.get("threads_fallback_step"))
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
            row = dict(model=name, batch_size=B, **{f"{label}_{T}_s": t for (label, T), t in times.items()})
            one = times["alone", 1]
            row["auto_threads"] = auto_threads
            row["busy_auto_over_alone_one_thread"] = times["busy", "auto"] / one
            rows.append(row)
            cells = "  ".join(f"{label} T={T}: {t * 1e6:8.1f} us" for (label, T), t in times.items())
            print(f"{name:16s} B={B:5d}  {cells}  busy auto / alone T=1: {times['busy', 'auto'] / one:5.2f} "
                  f"(auto chose {auto_threads})", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="BLAS and Numba threads for the ratios [1]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long one timed trial runs")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--contention", action="store_true", help="time steps with a competing process")
    parser.add_argument("--contention-threads", default="1,2", help="thread counts to time under contention")
    parser.add_argument("--eval", action="store_true", help="time an evaluation against the bare step")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import numba

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    out = dict(minigrad=os.path.dirname(minigrad.__file__), threads=args.threads, cpus=os.cpu_count(),
               load_average=os.getloadavg())
    print(f"minigrad from {out['minigrad']}; load average {out['load_average']}", flush=True)
    if args.contention:
        out["contention"] = contention(batch_sizes, [int(t) for t in args.contention_threads.split(",")])
    else:
        with limit_threads(args.threads):
            numba.set_num_threads(args.threads)
            out["eval" if args.eval else "ratios"] = (evaluation_cost(batch_sizes) if args.eval else
                                                      ratios(args.repeats, batch_sizes, args.seconds))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
