"""Does the recipe give the time it promises? Run the `minigrad train` line a study prints, timed, and say whether
its compute time to the target lands inside the printed interval of T(pick) = S(pick) t(pick).

The answer promises the median over seeds of the steps to the target times t(B), with a 90% bootstrap interval.
The printed line trains seed 0; this runs it as printed, then with --seed for each further seed the study trained
the pick with, and compares with the interval both the printed line's compute time and the median over the runs.
For each run: its steps to the target beside the study's trial of the same seed, its compute time (the train loop's
own `compute_s`, evaluations and start-up excluded, as in T(B)) and per step beside t(B), and the command's wall
time. A benchmark, not a test: the verdict depends on how busy the machine is.

    python bench/recipe_time.py minigrad-study.h5 [--json out.json]
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's minigrad

import minigrad  # noqa: E402
from minigrad import store  # noqa: E402


def run_recipe(words, seed, folder):
    """Run `minigrad train` with these words (and --seed), in a subprocess: (run attrs, wall seconds)."""
    out = os.path.join(folder, f"seed{seed}.h5")
    cmd = [sys.executable, "-m", "minigrad", *words, "--seed", str(seed), "--out", out]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    run, = store.open(out).runs.values()
    return run.attrs, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a study file of `minigrad bench`")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    study = minigrad.open_study(args.study)
    answer = study.answer()
    if not answer.recipe:
        sys.exit("the study has no pick, so no recipe")
    row = next(r for r in answer.rows if r["batch_size"] == answer.pick)
    words = shlex.split(answer.recipe.split("  #")[0])[1:]  # without the leading `minigrad`
    trials = {int(r.attrs["seed"]): r.attrs for r in study.file.runs.values()
              if r.attrs.get("phase") in ("tune", "adapt") and int(r.attrs["batch_size"]) == answer.pick
              and float(r.attrs["lr"]) == float(row["best_lr"])}
    lo, hi = row["time_lo"], row["time_hi"]
    print(f"recipe: {answer.recipe}")
    print(f"promised: T({answer.pick}) = {row['time_s'] * 1e3:.2f} ms ({lo * 1e3:.2f} to {hi * 1e3:.2f} ms) = "
          f"{row['steps']:,.0f} steps x t(B) {row['step_time_s'] * 1e6:.1f} us on {row['threads']} thread(s)")
    runs = []
    with tempfile.TemporaryDirectory(prefix="minigrad-recipe-") as folder:
        for seed in sorted({0, *trials}):
            attrs, wall = run_recipe(words, seed, folder)
            trial = trials.get(seed, {})
            runs.append(dict(seed=seed, status=attrs["status"], steps=attrs.get("steps_to_target"),
                             trial_steps=trial.get("steps_to_target"), compute_s=attrs["compute_s"],
                             per_step_s=attrs["compute_s"] / attrs["steps"], wall_s=wall,
                             inside=bool(lo <= attrs["compute_s"] <= hi)))
            r = runs[-1]
            print(f"seed {seed}: {r['status']} at {r['steps']} steps (the study's trial: {r['trial_steps']}), "
                  f"compute {r['compute_s'] * 1e3:.2f} ms ({r['per_step_s'] * 1e6:.1f} us a step), wall "
                  f"{wall:.2f} s: {'inside' if r['inside'] else 'OUTSIDE'} the interval")
    median = statistics.median(r["compute_s"] for r in runs)
    verdict = dict(printed_line_inside=runs[0]["inside"], median_compute_s=median,
                   median_inside=bool(lo <= median <= hi),
                   steps_as_trials=all(r["steps"] == r["trial_steps"] for r in runs if r["trial_steps"] is not None))
    print(f"the printed line (seed 0): {'inside' if verdict['printed_line_inside'] else 'OUTSIDE'}; the median over "
          f"{len(runs)} seeds, {median * 1e3:.2f} ms: {'inside' if verdict['median_inside'] else 'OUTSIDE'}; steps "
          f"to target {'the same as' if verdict['steps_as_trials'] else 'NOT the same as'} the study's trials")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(recipe=answer.recipe, promised=dict(time_s=row["time_s"], lo=lo, hi=hi,
                                                               steps=row["steps"], step_time_s=row["step_time_s"]),
                           runs=runs, verdict=verdict), f, indent=1)
    return verdict


if __name__ == "__main__":
    main()
