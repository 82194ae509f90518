"""A study's wall time, two versions side by side: `minigrad bench` of two checkouts on the same tasks in one run.

Each (task, checkout) runs `python -m minigrad bench` in a subprocess with that checkout first on PYTHONPATH, into a
fresh folder, the checkouts alternating within every repeat so that a change in the machine's load hits both. Per
run it reports the wall time, the phases' wall times as the study stored them (root attribute phase_wall_s), the
wall time without the verify phase (a phase that says its own cost) and the pick; then per task and checkout the
median of the repeats with their range, and the ratio of the medians. Numba's cache is each checkout's own, warm
after a first run; --fresh gives every run an empty NUMBA_CACHE_DIR (as a fresh install has).

    python bench/study_wall.py BEFORE_CHECKOUT AFTER_CHECKOUT [--tasks default,digits,mnist] [--repeats 1]
                               [--mnist-dir DIR] [--fresh] [--json out.json]

Tasks: default (the embedded teacher task), quick (bench --quick), digits (scikit-learn's digits), mnist (an
MNIST-format folder: DIR/mnist/ with the four IDX files, `--data mnist --data-dir DIR --n-val 300`).
A benchmark, not a test: the figures depend on how busy the machine is; run it on an idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TASKS = {"default": [], "quick": ["--quick"], "digits": ["--data", "digits"]}


def task_args(task, mnist_dir):
    if task == "mnist":
        if not mnist_dir:
            raise SystemExit("the mnist task needs --mnist-dir DIR (DIR/mnist/ holds the IDX files)")
        return ["--data", "mnist", "--data-dir", mnist_dir, "--n-val", "300"]
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; choose from default, quick, digits, mnist")
    return TASKS[task]


def run(checkout, args, fresh):
    """One study: (wall seconds, {phase: seconds}, pick) from a subprocess running that checkout's minigrad."""
    with tempfile.TemporaryDirectory(prefix="minigrad-wall-") as folder:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
        if fresh:
            env["NUMBA_CACHE_DIR"] = os.path.join(folder, "numba-cache")
        out = os.path.join(folder, "study.h5")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "minigrad", "bench", *args, "--out", out], check=True, env=env,
                       cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        probe = ("import json, sys, h5py\n"
                 "f = h5py.File(sys.argv[1], 'r')\n"
                 "print(json.dumps({'phases': json.loads(f.attrs.get('phase_wall_s', '{}'))}))\n")
        read = subprocess.run([sys.executable, "-c", probe, out], check=True, capture_output=True, text=True, env=env)
        phases = json.loads(read.stdout)["phases"]
        answer = subprocess.run([sys.executable, "-m", "minigrad", "report", out, "--json"], check=True,
                                capture_output=True, text=True, env=env, cwd=folder)
        pick = json.loads(answer.stdout).get("recommendation", {}).get("batch_size")
    return wall, phases, pick


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--tasks", default="default,digits,mnist")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--mnist-dir")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--json")
    a = p.parse_args(argv)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    versions = {"before": a.before, "after": a.after}
    rows = []
    for task in tasks:
        args = task_args(task, a.mnist_dir)
        for repeat in range(a.repeats):
            order = list(versions) if repeat % 2 == 0 else list(reversed(versions))
            for name in order:
                wall, phases, pick = run(versions[name], args, a.fresh)
                rest = wall - phases.get("verify", 0.0)
                rows.append(dict(task=task, version=name, repeat=repeat, wall_s=wall, without_verify_s=rest,
                                 phases=phases, pick=pick))
                print(f"{task:8s} {name:6s} #{repeat}: {wall:6.1f} s wall, {rest:6.1f} s without verify, pick B = "
                      f"{pick}; " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), flush=True)
    print("\nmedians (range) of the wall time without the verify phase")
    for task in tasks:
        med = {}
        for name in versions:
            values = [r["without_verify_s"] for r in rows if r["task"] == task and r["version"] == name]
            med[name] = statistics.median(values)
            print(f"{task:8s} {name:6s} {med[name]:6.1f} s ({min(values):.1f}-{max(values):.1f}, {len(values)} runs)")
        print(f"{task:8s} after / before = {med['after'] / med['before']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
