"""Is the answer's uncertainty honest? One study with many seeds per cell is the reference; split into disjoint small
studies of the default seed count, each is analysed as a study of its own and held against the reference.

    python bench/calibration.py [--dir DIR] [--data teacher,digits,mnist] [--seeds 20] [--split 5[,2]]
                                [--batch-sizes 4,8,16,32,64,128] [--random N] [--json OUT.json]

Per data set it runs (or, when DIR already holds it, reuses) one reference study: --quick's grids and budgets at
--batch-sizes with --seeds seeds per cell, no adaptive rounds, a token equal-budget phase, censoring off (every
trial to its target or budget), stored as DIR/reference-<data>.h5. The small studies are subsets of its seeds
(0-4, 5-9, ...): the same trials, never rerun. Each small study is analysed by minigrad.study.analysis as a study
file of its own, and the figures are:

  S coverage      the fraction of (small study, B) whose 90% interval of S(B) holds the reference's S(B)
  B_crit coverage the fraction of small studies whose 90% interval of B_crit holds the reference's B_crit
  regret          the reference's time-to-target at the small study's pick over the reference's fastest, - 1
  stated          the regret the small study states (90% of its resamples) and whether the true one is within it;
                  also whether it is within the seed bootstrap's regret alone (uncertainty.regret), which the
                  stated one widens at few seeds (uncertainty.stated_regret)
  contiguous      whether the small study's tie set is a run of neighbouring batch sizes
  random          with --random N, the pick's regret in N more small studies of random seed subsets: they
                  overlap, so they are not independent, but 4 disjoint studies show little of the distribution

and the same after censoring: every small study's tuning trials censored as `minigrad bench` would have censored
them (minigrad.study.plan.censor_bound from its own centre cells; the stopping step from
minigrad.training.train.censor_step, exact for these traces, so the stored uncensored trials show what a censored
study would have stored), with the share of tuning worker time that censoring saves. `mnist` is an MNIST-format
set built once in DIR/mnist/ from scikit-learn's digits, upscaled to 28x28 and written as IDX files (1,497 training
images, 300 of them carved out for validation, and 300 test images).

A reference study takes a few minutes per data set on 2 cores; rerunning the script reuses it.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's minigrad

from minigrad import store  # noqa: E402
from minigrad.study import analysis, plan as S  # noqa: E402
from minigrad.study.config import make_config  # noqa: E402
from minigrad.training.train import censor_step  # noqa: E402

TIMING = ("compute_s", "eval_s")


def mnist_format(root):
    """DIR/mnist/: scikit-learn's digits upscaled to 28x28 (each pixel 3x3, 2 pixels of border), as IDX files."""
    from sklearn.datasets import load_digits

    from minigrad.data import write_idx

    folder = Path(root) / "mnist"
    if (folder / "t10k-labels-idx1-ubyte").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    X, y = load_digits(return_X_y=True)
    images = np.zeros((len(X), 28, 28), np.uint8)
    images[:, 2:26, 2:26] = np.kron(X.reshape(-1, 8, 8), np.ones((3, 3))) * (255 / 16)
    n_test = 300
    for prefix, sl in (("train", slice(n_test, None)), ("t10k", slice(0, n_test))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images[sl])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y[sl].astype(np.uint8))
    return folder


def reference_study(root, data, seeds, batch_sizes):
    """The many-seed study of one data set (run, or resumed: a finished one is only read)."""
    from minigrad.study.sweep import run_study

    options = {}
    if data == "mnist":
        mnist_format(root)
        options = {"data_dir": str(root), "n_val": 300}
    config = make_config(quick=True, data=data, data_options=options, seeds=seeds, batch_sizes=batch_sizes,
                         adaptive_budget=0, equal_epochs=0.01, censor="off")
    path = Path(root) / f"reference-{data}.h5"
    started = time.perf_counter()
    run_study(config, path, echo=lambda line: print(f"  [{data}] {line}", flush=True))
    return path, time.perf_counter() - started


def subset(study, seeds):
    """The study of these seeds alone: the reference phase and the tuning trials of `seeds`."""
    runs = {rid: run for rid, run in study.runs.items()
            if run.attrs["phase"] == "reference" or (run.attrs["phase"] == "tune" and run.attrs["seed"] in seeds)}
    config = dict(study.config, seeds=len(seeds))
    return dataclasses.replace(study, runs=runs, attrs=dict(study.attrs, config=config))


def censored(study):
    """`study` as a study with censoring on would have stored it, and the tuning worker seconds that saves: every
    trial at a non-centre rate that had not reached the target by its censoring step is cut there (its trace's
    rows up to that evaluation), status CENSORED."""
    config = study.config
    results = [S.result_row(rid, run.attrs, run.trace) for rid, run in study.runs.items()]
    _, reference_lr = S.best_reference(results)
    cells = S.steps_per_cell(results)
    seed_ids = sorted({r["seed"] for r in results if r["phase"] == "tune"})
    runs, saved, total = dict(study.runs), 0.0, 0.0
    for rid, run in study.runs.items():
        a = run.attrs
        if a["phase"] != "tune":
            continue
        total += a["compute_s"] + a["eval_s"]
        B = int(a["batch_size"])
        grid = S.grid_for(config, reference_lr, B)
        centre = grid[len(grid) // 2]
        if float(a["lr"]) == centre:
            continue
        bound = S.censor_bound(cells.get((B, centre), []), int(a["budget_steps"]))
        if bound is None or len(cells.get((B, centre), [])) != len(seed_ids):
            continue
        stop = censor_step(bound, int(a["eval_gap_floor"]), config["eval_growth"], int(a["budget_steps"]))
        reached = a.get("steps_to_target")
        if stop is None or a["status"] == "DIVERGED" and int(a["steps"]) <= stop or (
                reached is not None and reached <= stop):
            continue
        rows = int(np.searchsorted(run.trace["step"], stop)) + 1
        assert run.trace["step"][rows - 1] == stop, (rid, stop)  # censor_step names an evaluation of the trace
        trace = {k: v[:rows] for k, v in run.trace.items()}
        cut = {k: float(trace[k][-1]) for k in TIMING}
        saved += sum(a[k] - cut[k] for k in TIMING)
        attrs = dict(a, status="CENSORED", steps=stop, censor_steps=bound, steps_to_target=None,
                     examples_to_target=None, best_val_error=float(np.min(trace["val_error"])), **cut)
        runs[rid] = store.Run(rid, attrs, trace, run.arrays)
    return dataclasses.replace(study, runs=runs), saved, total


def figures(small, reference):
    """The figures of one small study's analysis against the reference's."""
    rows = {r["batch_size"]: r for r in small.rows}
    truth = {r["batch_size"]: r for r in reference.rows}
    covered = [bool(rows[B]["steps_lo"] <= truth[B]["steps"] <= rows[B]["steps_hi"]) for B in truth
               if B in rows and math.isfinite(truth[B]["steps"])]
    fit, ref_fit = small.fit, reference.fit
    crit = None
    if ref_fit["determined"] and math.isfinite(fit["B_crit_lo"]):
        crit = bool(fit["B_crit_lo"] <= ref_fit["B_crit"] <= fit["B_crit_hi"])
    rec = small.recommendation
    times = {B: r["time_s"] for B, r in truth.items() if math.isfinite(r["time_s"])}
    fastest = min(times.values())
    regret = times.get(rec["batch_size"], math.inf) / fastest - 1
    Bs = [r["batch_size"] for r in small.rows]
    idx = [Bs.index(B) for B in rec["tied"]]
    return dict(S_covered=covered, B_crit_covered=crit, pick=rec["batch_size"], tied=rec["tied"],
                regret=regret, stated_regret=rec["regret"], within_stated=bool(regret <= rec["regret"] + 1e-12),
                within_bootstrap=bool(regret <= rec.get("regret_bootstrap", rec["regret"]) + 1e-12),
                contiguous=idx == list(range(idx[0], idx[0] + len(idx))),
                S=[rows[B]["steps"] for B in sorted(rows)], S_lo=[rows[B]["steps_lo"] for B in sorted(rows)],
                S_hi=[rows[B]["steps_hi"] for B in sorted(rows)])


def summarise(entries):
    s_cov = [c for e in entries for c in e["S_covered"]]
    crit = [e["B_crit_covered"] for e in entries if e["B_crit_covered"] is not None]
    regrets = [e["regret"] for e in entries]
    return dict(S_coverage=float(np.mean(s_cov)), S_checks=len(s_cov),
                B_crit_coverage=float(np.mean(crit)) if crit else math.nan, B_crit_checks=len(crit),
                regret_median=float(np.median(regrets)), regret_max=float(np.max(regrets)),
                within_stated=float(np.mean([e["within_stated"] for e in entries])),
                within_bootstrap=float(np.mean([e["within_bootstrap"] for e in entries])),
                contiguous=float(np.mean([e["contiguous"] for e in entries])), studies=len(entries))


def calibrate(path, split, draws=0):
    study = store.open(path)
    seeds = sorted({int(r.attrs["seed"]) for r in study.runs.values() if r.attrs["phase"] == "tune"})
    reference = analysis.analyse(study)
    out = dict(reference=dict(S={r["batch_size"]: r["steps"] for r in reference.rows},
                              T={r["batch_size"]: r["time_s"] for r in reference.rows},
                              B_crit=reference.fit["B_crit"], B_crit_determined=reference.fit["determined"],
                              pick=reference.recommendation["batch_size"], seeds=len(seeds)),
               before=[], after=[], saved_s=0.0, total_s=0.0, same_answer=[])
    for k in range(len(seeds) // split):
        part = set(seeds[k * split:(k + 1) * split])
        small = subset(study, part)
        plain = analysis.analyse(small)
        cut, saved, total = censored(small)
        after = analysis.analyse(cut)
        out["before"].append(dict(figures(plain, reference), seeds=sorted(part)))
        out["after"].append(dict(figures(after, reference), seeds=sorted(part)))
        out["saved_s"] += saved
        out["total_s"] += total
        out["same_answer"].append(all(
            a[key] == b[key] for a, b in zip(plain.rows, after.rows)
            for key in ("steps", "steps_lo", "steps_hi", "time_s", "time_lo", "time_hi", "best_lr"))
            and plain.recommendation["batch_size"] == after.recommendation["batch_size"]
            and plain.recommendation["tied"] == after.recommendation["tied"]
            and plain.recommendation["regret"] == after.recommendation["regret"]
            and str(plain.fit["B_crit"]) == str(after.fit["B_crit"]))
    rng = np.random.default_rng(split)
    out["random"] = [figures(analysis.analyse(subset(study, set(int(x) for x in rng.choice(seeds, split, replace=False)))),
                             reference)["regret"] for _ in range(draws)]
    return out


def show(data, result, seconds):
    ref = result["reference"]
    print(f"\n{data}: reference {ref['seeds']} seeds per cell ({seconds:.0f} s to run or read); S(B) "
          + ", ".join(f"{B}: {s:,.0f}" for B, s in ref["S"].items())
          + f"; B_crit {ref['B_crit']:.1f}{'' if ref['B_crit_determined'] else ' (not determined)'}; "
          f"fastest B = {min(ref['T'], key=lambda B: ref['T'][B])}")
    for label in ("before", "after"):
        s = summarise(result[label])
        print(f"  {label:6s} S coverage {s['S_coverage']:.0%} of {s['S_checks']}, B_crit coverage "
              f"{s['B_crit_coverage']:.0%} of {s['B_crit_checks']}, regret median {s['regret_median']:.1%} max "
              f"{s['regret_max']:.1%}, true regret within the stated one in {s['within_stated']:.0%} (within the seed "
              f"bootstrap's alone in {s['within_bootstrap']:.0%}), tie set "
              f"contiguous in {s['contiguous']:.0%} of {s['studies']} studies")
        for e in result[label]:
            print(f"         seeds {e['seeds'][0]}-{e['seeds'][-1]}: pick {e['pick']} (tied {e['tied']}), regret "
                  f"{e['regret']:.1%}, stated {e['stated_regret']:.1%}")
    if result["random"]:
        r = np.array(result["random"])
        print(f"  regret over {len(r)} random (overlapping) small studies: median {np.median(r):.1%}, 90th percentile "
              f"{np.quantile(r, 0.9):.1%}, max {r.max():.1%}, within 5% in {np.mean(r <= 0.05):.0%}")
    share = result["saved_s"] / result["total_s"] if result["total_s"] else math.nan
    print(f"  censoring saves {result['saved_s']:.1f} of {result['total_s']:.1f} s of tuning worker time "
          f"({share:.0%}); S(B), its intervals, T(B), B_crit and the pick identical in "
          f"{sum(result['same_answer'])} of {len(result['same_answer'])} small studies")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="calibration", help="where the reference studies are kept [./calibration]")
    parser.add_argument("--data", default="teacher,digits,mnist")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--split", default="5", help="seeds per small study, or several: 5,2 [5: the default "
                        "study's; --quick's is 2]")
    parser.add_argument("--batch-sizes", default="4,8,16,32,64,128")
    parser.add_argument("--random", type=int, default=0, help="also the pick's regret in this many small studies of "
                        "random, overlapping seed subsets (many more than the disjoint ones; no censoring) [0]")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    everything = {}
    for data in args.data.split(","):
        path, seconds = reference_study(root, data, args.seeds, batch_sizes)
        for split in (int(k) for k in args.split.split(",")):
            everything[f"{data}/{split}"] = calibrate(path, split, args.random)
            show(f"{data}, {split} seeds per small study", everything[f"{data}/{split}"], seconds)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1, default=float))


if __name__ == "__main__":
    main()
