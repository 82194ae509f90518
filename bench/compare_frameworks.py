"""Time the same MLP train step in minigrad, PyTorch eager, torch.compile and jax.jit, side by side.

The step is the one `minigrad bench throughput` times: an MLP (784-256-256-10 by default) with ReLU, mean softmax
cross-entropy and a plain SGD update, float32, random standard-normal inputs and random labels. Each framework runs
in its own subprocess, one after the other (two thread pools in one process would fight over the cores), restricted
to the first --threads cores (sched_setaffinity, which every framework's thread pool respects) and told to use that
many threads. The time per step is the median over repeats after warm-up (JIT and torch.compile compilation
excluded), with adaptive repeats (at least --min-time seconds and 5 steps per batch size).

PyTorch and JAX are not minigrad dependencies: install them in a separate environment and point --frameworks-python
at it. A framework that is missing there is skipped with a message, never an error:

    python3 -m venv /work/venv-compare
    /work/venv-compare/bin/pip install torch jax jaxlib        # CPU wheels
    python bench/compare_frameworks.py --threads 2 --frameworks-python /work/venv-compare/bin/python \\
        --json compare.json

Output: one table row per batch size with each framework's median step time and samples/s, and the ratio of
minigrad's samples/s to the best of the others. --json writes {"rows": [...], "env": {...}}.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FRAMEWORKS = ("minigrad", "torch-eager", "torch-compile", "jax-jit")
DEFAULT_BATCH_SIZES = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096"


# ------------------------------------------------------------------------------------------- timing (worker side)
def time_steps(step, batch_size, min_time, min_repeats=5, warmup=3):
    """Median and IQR of step() in seconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    samples = []
    started = time.perf_counter()
    while len(samples) < min_repeats or time.perf_counter() - started < min_time:
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 100_000:
            break
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return statistics.median(samples), q[2] - q[0], len(samples)


def data(sizes, batch_size, seed=0):
    import numpy as np

    r = np.random.default_rng(seed)
    return r.standard_normal((batch_size, sizes[0])).astype(np.float32), r.integers(0, sizes[-1], batch_size)


def he_init(sizes, seed=0):
    import numpy as np

    r = np.random.default_rng(seed)
    return [(r.normal(0.0, (2.0 / c) ** 0.5, (o, c)).astype(np.float32), np.zeros(o, np.float32))
            for c, o in zip(sizes[:-1], sizes[1:])]


def steps_minigrad(sizes, lr, threads):
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    from minigrad import MLP, SGD

    threadpool_limits(threads)
    numba.set_num_threads(threads)
    model, opt = MLP(sizes, dtype=np.float32, seed=0), SGD(lr)

    def make(batch_size):
        X, y = data(sizes, batch_size)
        model.check_batch(X, y)
        return lambda: model._train_step(X, y, opt)

    import minigrad
    return make, {"minigrad": minigrad.__version__, "numba": numba.__version__, "numpy": np.__version__}


def steps_torch(sizes, lr, threads, compiled):
    import torch

    torch.set_num_threads(threads)
    layers = []
    for l, (w, b) in enumerate(he_init(sizes)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if l < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.functional.cross_entropy

    def eager_step(X, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X), y)
        loss.backward()
        opt.step()
        return loss

    step_fn = torch.compile(eager_step) if compiled else eager_step

    def make(batch_size):
        X, y = data(sizes, batch_size)
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        return lambda: step_fn(X, y)

    return make, {"torch": torch.__version__}


def steps_jax(sizes, lr, threads):
    import jax
    import jax.numpy as jnp

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in he_init(sizes)]

    def loss_fn(params, X, y):
        a = X
        for l, (w, b) in enumerate(params):
            a = a @ w.T + b
            if l < len(params) - 1:
                a = jax.nn.relu(a)
        logp = jax.nn.log_softmax(a)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(params, X, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss

    state = {"params": params}

    def make(batch_size):
        X, y = data(sizes, batch_size)
        X, y = jnp.asarray(X), jnp.asarray(y.astype("int32"))

        def run():
            state["params"], loss = step(state["params"], X, y)
            loss.block_until_ready()

        return run

    return make, {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else ""}


def worker(framework, sizes, batch_sizes, threads, min_time, lr):
    """Runs in the subprocess: prints one JSON line {"framework", "rows" or "skipped", "versions"}."""
    try:
        if framework == "minigrad":
            make, versions = steps_minigrad(sizes, lr, threads)
        elif framework.startswith("torch"):
            make, versions = steps_torch(sizes, lr, threads, compiled=framework == "torch-compile")
        else:
            make, versions = steps_jax(sizes, lr, threads)
    except ImportError as exc:
        print(json.dumps({"framework": framework, "skipped": f"{framework}: {exc}"}))
        return
    rows = []
    for B in batch_sizes:
        try:
            step = make(B)
            t0 = time.perf_counter()
            step()  # first call: JIT / torch.compile for this shape
            compile_s = time.perf_counter() - t0
            median, iqr, n = time_steps(step, B, min_time)
        except Exception as exc:  # a framework failing (e.g. no C++ compiler for torch.compile): skip it, say why
            print(json.dumps({"framework": framework, "skipped": f"{framework}: {type(exc).__name__}: {exc}"}))
            return
        rows.append({"framework": framework, "batch_size": B, "step_time_s": median, "iqr_s": iqr,
                     "samples_per_s": B / median, "repeats": n, "first_call_s": compile_s})
    print(json.dumps({"framework": framework, "rows": rows, "versions": versions}))


# ------------------------------------------------------------------------------------------------- parent side
def run_worker(python, framework, args):
    cmd = [python, os.path.abspath(__file__), "--worker", framework, "--sizes", args.sizes,
           "--batch-sizes", args.batch_sizes, "--threads", str(args.threads), "--min-time", str(args.min_time),
           "--lr", str(args.lr)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               NUMBA_NUM_THREADS=str(max(args.threads, 1)))
    # the repository root on the path, so the worker imports this checkout's minigrad
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          preexec_fn=lambda: os.sched_setaffinity(0, range(args.threads)))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"framework": framework, "skipped": f"{framework}: worker failed ({tail})"}


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
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.worker:
        worker(args.worker, sizes, batch_sizes, args.threads, args.min_time, args.lr)
        return 0
    if args.threads < 1 or args.threads > len(os.sched_getaffinity(0)):
        parser.error(f"--threads must lie between 1 and {len(os.sched_getaffinity(0))}")
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}")

    results, versions = {}, {}
    for fw in frameworks:
        python = args.minigrad_python if fw == "minigrad" else args.frameworks_python
        print(f"timing {fw} ({python}, {args.threads} thread(s)) ...", file=sys.stderr, flush=True)
        out = run_worker(python, fw, args)
        if "skipped" in out:
            print(f"skipped {out['skipped']}", file=sys.stderr)
            continue
        results[fw] = {row["batch_size"]: row for row in out["rows"]}
        versions.update(out.get("versions", {}))

    present = [fw for fw in frameworks if fw in results]
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
        env = {"sizes": sizes, "threads": args.threads, "versions": versions, "cpu": _cpu_model()}
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "env": env}, fh, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _cpu_model():
    # the driver may run under an interpreter without minigrad (see --minigrad-python), so this does not import
    # minigrad.throughput's copy
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
