"""Time the same MLP train step in minigrad, PyTorch eager, torch.compile and jax.jit, side by side.

The step is the one `minigrad bench throughput` times: an MLP (784-256-256-10 by default) with ReLU, mean softmax
cross-entropy and a plain SGD update, float32. Every framework starts from the same initial weights (minigrad's
MLP(sizes, seed=0)) and steps on the same batches (minigrad.profile.batches.make_batches: standard-normal inputs, random
labels). The builders, the worker and the timing are minigrad/profile/frameworks.py's (what `bench throughput --compare`
runs): each framework runs in its own subprocess, one after the other (two thread pools in one process would fight
over the cores), restricted to the first --threads cores (sched_setaffinity, which every framework's thread pool
respects) and told to use that many threads. The time per step is the median over repeats after the first call
(JIT and torch.compile compilation, reported apart) and a short warm-up, with adaptive repeats (at least --min-time
seconds and 5 steps per batch size).

PyTorch and JAX are not minigrad dependencies: install them in a separate environment (it needs numpy, not
minigrad) and point --frameworks-python at it. A framework that is missing there is skipped with a message, never an
error. This script itself needs minigrad's dependencies (it makes the initial weights and batches with minigrad):

    python3 -m venv ~/venv-compare
    ~/venv-compare/bin/pip install torch jax jaxlib        # CPU wheels
    python bench/compare_frameworks.py --threads 2 --frameworks-python ~/venv-compare/bin/python \\
        --json compare.json

Output: one table row per batch size with each framework's median step time and samples/s, and the ratio of
minigrad's samples/s to the best of the others. --json writes {"rows": [...], "env": {...}}.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's minigrad

from minigrad.profile import frameworks  # noqa: E402

FRAMEWORKS = ("minigrad", "torch-eager", "torch-compile", "jax-jit")  # keys of frameworks.BUILDERS
DEFAULT_BATCH_SIZES = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="784,256,256,10")
    parser.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"comma-separated subset of {', '.join(FRAMEWORKS)}")
    parser.add_argument("--frameworks-python", default=sys.executable,
                        help="interpreter with torch and jax installed (default: this one)")
    parser.add_argument("--minigrad-python", default=sys.executable,
                        help="interpreter with minigrad's dependencies (default: this one)")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of timed steps per batch size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    batch_sizes = list(dict.fromkeys(int(b) for b in args.batch_sizes.split(",")))
    if args.threads < 1 or args.threads > len(os.sched_getaffinity(0)):
        parser.error(f"--threads must lie between 1 and {len(os.sched_getaffinity(0))}")
    names = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(names) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}")

    results, versions = {}, {}
    with tempfile.TemporaryDirectory(prefix="compare-frameworks-") as tmp:
        inputs = frameworks.write_inputs(os.path.join(tmp, "inputs.npz"), sizes, batch_sizes, "float32", "relu", 0)
        for fw in names:
            python = args.minigrad_python if fw == "minigrad" else args.frameworks_python
            print(f"timing {fw} ({python}, {args.threads} thread(s)) ...", file=sys.stderr, flush=True)
            job = frameworks.make_job(fw, inputs, batch_sizes, args.threads, "relu", "sgd", args.lr,
                                      min_time=args.min_time)
            out = frameworks.run_worker(job, python)
            if "skipped" in out:
                print(out["skipped"], file=sys.stderr)
                continue
            results[fw] = {row["batch_size"]: row for row in out["rows"]}
            versions[fw] = out["version"]

    present = [fw for fw in names if fw in results]
    header = f"{'B':>6} " + " ".join(f"{fw + ' us':>17} {'samples/s':>11}" for fw in present)
    if "minigrad" in results and len(present) > 1:
        header += f" {'minigrad/best other':>20}"
    print(f"MLP {args.sizes}, relu, cross-entropy, SGD, float32, {args.threads} thread(s); median step time")
    print(header)
    rows = []
    for B in batch_sizes:
        line = f"{B:>6} "
        for fw in present:
            row = results[fw][B]
            rows.append(row)
            line += f"{row['step_time_s'] * 1e6:>17.1f} {row['samples_per_s']:>11,.0f} "
        others = [results[fw][B]["samples_per_s"] for fw in present if fw != "minigrad"]
        if "minigrad" in results and others:
            line += f"{results['minigrad'][B]['samples_per_s'] / max(others):>20.2f}"
        print(line)
    if args.json:
        from minigrad.machine.environment import environment

        env = {"sizes": sizes, "threads": args.threads, "lr": args.lr, "versions": versions,
               "cpu": environment()["cpu"]}
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "env": env}, fh, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
