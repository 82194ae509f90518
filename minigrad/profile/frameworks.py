"""The same train step in PyTorch (eager) and JAX (jit), timed beside minigrad's: `bench throughput --compare`.

Neither framework is a minigrad dependency. Each runs in a subprocess of an interpreter that has it (default: this
one; MINIGRAD_COMPARE_PYTHON or the `python` argument name another), restricted to the first T cores of this process
(sched_setaffinity, which every thread pool respects) with its thread pools set to T. The parent makes the inputs
with minigrad itself and hands them over in a temporary .npz: the initial parameters of MLP(sizes, activation,
dtype, seed) and the batches of batches.make_batches(sizes, batch_sizes, dtype, seed), so each framework starts
from the same weights and steps on the same data. The worker needs only numpy and the framework (plus numba for the
"minigrad" builder, which bench/compare_frameworks.py uses); it imports this checkout's minigrad.

The step matches MLP.train_step: forward, mean softmax cross-entropy, backward, and the optimizer's update (sgd,
momentum, nesterov, adam with minigrad's default hyper-parameters and no weight decay). GELU is the tanh
approximation, as in minigrad's kernels. Timing is throughput.measure's: the first call timed apart (first_call_s,
JAX's compilation for that shape included), a short warm-up, then timing.time_rounds: the median of every
call, and each round's median (rounds_s), the repeated measurements the answer's intervals resample.

Run as `python -m minigrad.profile.frameworks '<job as JSON>'`, the worker prints one JSON line.
"""
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

from minigrad.machine.settings import ACTIVATIONS, DTYPES, OPTIMIZERS  # noqa: F401 - named once there

FRAMEWORKS = {"torch": "torch-eager", "jax": "jax-jit"}  # --compare name -> the rows' "backend"
# what a backend's worker imports beyond numpy: one of these missing means "not installed", not "failed"
PACKAGES = {"torch-eager": ("torch",), "torch-compile": ("torch",), "jax-jit": ("jax", "jaxlib"),
            "minigrad": ("numba", "scipy", "threadpoolctl")}


def parse_compare(names):
    """"torch,jax", a list, or None/"" -> ["torch", "jax"] (deduplicated, in order); ValueError for unknown names."""
    if not names:
        return []
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name not in FRAMEWORKS:
            raise ValueError(f"unknown framework {name!r} for --compare; choose from {', '.join(FRAMEWORKS)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------------- parent side
def measure(names, sizes, batch_sizes, threads, dtypes, *, activation="relu", optimizer="sgd", lr=1e-4, seed=0,
            repeats=None, min_time=0.3, min_repeats=5, python=None, echo=None, momentum=None, beta2=None):
    """Time each framework's train step per (framework, thread count, dtype, batch size); see the module docstring.

    Returns (rows, skipped): rows are flat dicts (backend, threads, dtype, batch_size, step_time_s, iqr_s,
    samples_per_s, repeats, first_call_s, version); skipped maps a name to a one-line reason (not installed in
    `python`, or failed: that framework stops there, its rows so far are kept). Raises ValueError for bad input."""
    names = parse_compare(names)
    _check_step_config(activation, optimizer)
    batch_sizes, dtypes = _batch_sizes(batch_sizes), [_dtype_name(d) for d in dtypes]
    threads = [int(t) for t in threads]
    cores = _cores()
    for T in threads:
        if not 1 <= T <= len(cores):
            raise ValueError(f"threads must lie between 1 and {len(cores)} (the cores this process may use), got {T}")
    python = python or default_python()
    echo = echo or (lambda msg: None)
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="minigrad-compare-") as tmp:
        inputs = {dtype: write_inputs(os.path.join(tmp, f"{dtype}.npz"), sizes, batch_sizes, dtype, activation, seed)
                  for dtype in dtypes} if names else {}
        for name in names:
            backend = FRAMEWORKS[name]
            for T in threads:
                for dtype in dtypes:
                    if name in skipped:
                        break
                    echo(f"timing {backend}, {T} thread(s), {dtype} ...")
                    job = make_job(backend, inputs[dtype], batch_sizes, T, activation, optimizer, lr, repeats=repeats,
                                   min_time=min_time, min_repeats=min_repeats, momentum=momentum, beta2=beta2)
                    out = run_worker(job, python)
                    if "skipped" in out:
                        skipped[name] = out["skipped"]
                        echo(out["skipped"])
                    else:
                        rows += out["rows"]
    return rows, skipped


def train_steps(name, sizes, batch_sizes, dtype="float32", *, activation="relu", optimizer="sgd", lr=1e-4, seed=0,
                python=None, momentum=None, beta2=None):
    """One train step of framework `name` ("torch", "jax" or a backend name) on each batch of make_batches, in
    order, from MLP(sizes, activation, dtype, seed)'s parameters: (losses, flat parameters in MLP.params' layout).
    What MLP.train_step gives on the same batches, for checking that the timed step is the same computation.
    Raises RuntimeError with the skip message if the framework can't run."""
    backend = FRAMEWORKS.get(name, name)
    if backend not in BUILDERS:
        raise ValueError(f"unknown framework {name!r}; choose from {', '.join(list(FRAMEWORKS) + list(BUILDERS))}")
    _check_step_config(activation, optimizer)
    dtype, batch_sizes = _dtype_name(dtype), _batch_sizes(batch_sizes)
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="minigrad-compare-") as tmp:
        path = write_inputs(os.path.join(tmp, "inputs.npz"), sizes, batch_sizes, dtype, activation, seed)
        out = run_worker(make_job(backend, path, batch_sizes, 1, activation, optimizer, lr, check=True,
                                  momentum=momentum, beta2=beta2),
                         python or default_python())
    if "skipped" in out:
        raise RuntimeError(out["skipped"])
    return out["losses"], np.asarray(out["params"], dtype)


def default_python():
    return os.environ.get("MINIGRAD_COMPARE_PYTHON") or sys.executable


def make_job(backend, inputs, batch_sizes, threads, activation="relu", optimizer="sgd", lr=1e-4, *, repeats=None,
             min_time=0.3, min_repeats=5, check=False, momentum=None, beta2=None):
    """What the worker runs: `backend` (a key of BUILDERS) on the inputs saved at `inputs` by write_inputs, pinned to
    the first `threads` cores of this process; check: one step per batch, reporting losses and parameters.
    momentum (Adam's beta1) and beta2: the optimizer's, None for minigrad's defaults."""
    return {"backend": backend, "inputs": inputs, "batch_sizes": list(batch_sizes), "threads": threads,
            "cores": _cores()[:threads], "activation": activation, "hyper": _hyper(optimizer, lr, momentum, beta2),
            "repeats": repeats,
            "min_time": min_time, "min_repeats": min_repeats, "check": check}


def write_inputs(path, sizes, batch_sizes, dtype, activation, seed):
    """Save MLP(sizes, activation, dtype, seed)'s initial weights and biases and make_batches' batches to `path`."""
    import numpy as np

    from minigrad.engine.model import MLP
    from minigrad.profile.batches import make_batches

    model = MLP(sizes, activation=activation, dtype=dtype, seed=seed)
    arrays = {f"w{i}": w for i, w in enumerate(model.weights)} | {f"b{i}": b for i, b in enumerate(model.biases)}
    for B, (X, y) in make_batches(sizes, batch_sizes, dtype, seed).items():
        arrays[f"X{B}"], arrays[f"y{B}"] = X, y
    np.savez(path, **arrays)
    return path


def worker_timeout():
    """Seconds a framework's worker may take (MINIGRAD_FRAMEWORK_TIMEOUT, default 1800): an interpreter that never
    answers must not hang the measurement."""
    text = os.environ.get("MINIGRAD_FRAMEWORK_TIMEOUT", "1800")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"MINIGRAD_FRAMEWORK_TIMEOUT must be a positive number of seconds, got {text[:40]!r}")
    return seconds


def run_worker(job, python):
    """Run the worker for `job` in `python`; its JSON result, or {"skipped": one-line reason}."""
    backend, T = job["backend"], job["threads"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    env = dict(os.environ, OMP_NUM_THREADS=str(T), OPENBLAS_NUM_THREADS=str(T), MKL_NUM_THREADS=str(T),
               NUMBA_NUM_THREADS=str(T), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    if T == 1:
        # the affinity is what binds XLA's pool; these flags keep Eigen from spawning threads that would only wait
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    # this checkout's minigrad first: the repository root on the path, and as the working directory (python -m
    # puts the working directory ahead of PYTHONPATH)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    timeout = worker_timeout()
    python = os.path.abspath(python) if os.sep in python else python  # the worker runs in the repository's folder
    try:  # in a process group of its own, so that a timeout or Ctrl-C ends whatever it started too
        proc = subprocess.Popen([python, "-m", "minigrad.profile.frameworks", json.dumps(job)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env, cwd=root,
                                start_new_session=True)
    except OSError as exc:
        return {"skipped": f"{backend}: cannot run {python} ({exc.strerror or exc}); skipped"}
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        return {"skipped": f"{backend}: {python} did not answer in {timeout:g} s (MINIGRAD_FRAMEWORK_TIMEOUT); "
                           "skipped"}
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            if "missing" in out:
                return {"skipped": f"{out['missing']} is not installed in {python} "
                                   f"(pip install {out['missing']} to compare); skipped"}
            if "error" in out:
                return {"skipped": f"{backend} failed ({T} thread(s)): {out['error']}; skipped"}
            return out
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no output"])[-1]
    return {"skipped": f"{backend} failed ({T} thread(s)): worker died ({tail.strip()}); skipped"}


def _check_step_config(activation, optimizer):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} can't be compared; the frameworks run {', '.join(OPTIMIZERS)}")


def _hyper(optimizer, lr, momentum=None, beta2=None):
    # the optimizer's values (minigrad's defaults where None: momentum 0.9, Adam's betas and eps), read back from
    # minigrad's own optimizer, so the frameworks take the same update
    from minigrad.engine.optim import BETA2, EPS, MOMENTUM, make_optimizer

    options = {}
    if momentum is not None and optimizer != "sgd":
        options["beta1" if optimizer == "adam" else "momentum"] = momentum
    if beta2 is not None and optimizer == "adam":
        options["beta2"] = beta2
    h = make_optimizer(optimizer, lr, **options).hyper
    return dict(optimizer=optimizer, lr=float(lr), momentum=float(h[MOMENTUM]), beta2=float(h[BETA2]),
                eps=float(h[EPS]))


def _batch_sizes(batch_sizes):
    batch_sizes = list(dict.fromkeys(int(B) for B in batch_sizes))
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch_sizes}")
    return batch_sizes


def _dtype_name(dtype):
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return name


def _cores():
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))


# ------------------------------------------------------------------------------------------------ worker: builders
# Each builder takes the initial weights (OC, C) and biases as numpy arrays and returns (make_step, get_params,
# version): make_step(X, y) -> step(), one train step on that batch returning the loss (computation finished);
# get_params() -> [(w, b), ...] as numpy arrays.

def torch_steps(weights, biases, activation, hyper, threads, compiled=False):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed before the first parallel work; a second builder in one process can't
        pass
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": lambda: torch.nn.GELU(approximate="tanh")}
    layers = []
    for i, (w, b) in enumerate(zip(weights, biases)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.from_numpy(w).dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if i < len(weights) - 1:
            layers.append(act[activation]())
    model = torch.nn.Sequential(*layers)
    name, lr, mu = hyper["optimizer"], hyper["lr"], hyper["momentum"]
    if name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(mu, hyper["beta2"]), eps=hyper["eps"])
    else:  # PyTorch's momentum is minigrad's: v <- mu v + g; p <- p - lr v (Nesterov: p <- p - lr (g + mu v))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0 if name == "sgd" else mu,
                              nesterov=name == "nesterov")

    def train_step(X, y):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        return loss

    step_fn = torch.compile(train_step) if compiled else train_step

    def make_step(X, y):
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        return lambda: step_fn(X, y)

    def get_params():
        return [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                for m in model if isinstance(m, torch.nn.Linear)]

    return make_step, get_params, f"torch {torch.__version__}"


def jax_steps(weights, biases, activation, hyper, threads):
    # threads: XLA has no runtime setting; the worker's affinity (and run_worker's XLA_FLAGS for 1) bound its pool
    import jax

    if weights[0].dtype.name == "float64":
        jax.config.update("jax_enable_x64", True)  # else JAX silently computes in float32
    import jax.numpy as jnp

    act = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": lambda a: jax.nn.gelu(a, approximate=True)}[activation]
    name, lr, mu, beta2, eps = (hyper[k] for k in ("optimizer", "lr", "momentum", "beta2", "eps"))
    tree_map = jax.tree_util.tree_map

    def loss_fn(params, X, y):
        a = X
        for i, (w, b) in enumerate(params):
            a = a @ w.T + b
            if i < len(params) - 1:
                a = act(a)
        logp = jax.nn.log_softmax(a)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def update(params, state, grads):
        # minigrad.engine.optim's updates, written out: (new params, new state)
        if name == "sgd":
            return tree_map(lambda p, g: p - lr * g, params, grads), state
        if name in ("momentum", "nesterov"):
            v = tree_map(lambda v, g: mu * v + g, state, grads)
            if name == "momentum":
                return tree_map(lambda p, v: p - lr * v, params, v), v
            return tree_map(lambda p, g, v: p - lr * (g + mu * v), params, grads, v), v
        t, m, v = state
        t = t + 1
        m = tree_map(lambda m, g: mu * m + (1 - mu) * g, m, grads)
        v = tree_map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
        c1, c2 = 1 / (1 - mu**t), 1 / (1 - beta2**t)
        return tree_map(lambda p, m, v: p - lr * (m * c1 / (jnp.sqrt(v * c2) + eps)), params, m, v), (t, m, v)

    def train_step(params, state, X, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        params, state = update(params, state, grads)
        return params, state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))  # donated buffers are updated in place, as PyTorch's are

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in zip(weights, biases)]

    def zeros():  # a fresh buffer each: two references to one donated buffer are refused
        return tree_map(jnp.zeros_like, params)

    if name == "sgd":
        state = ()
    elif name == "adam":
        state = (jnp.zeros((), weights[0].dtype), zeros(), zeros())
    else:
        state = zeros()
    st = {"params": params, "state": state}

    def make_step(X, y):
        X, y = jnp.asarray(X), jnp.asarray(y.astype("int32"))

        def run():
            st["params"], st["state"], loss = jax.block_until_ready(step(st["params"], st["state"], X, y))
            return loss

        return run

    def get_params():
        import numpy as np

        return [(np.asarray(w), np.asarray(b)) for w, b in st["params"]]

    return make_step, get_params, f"jax {jax.__version__}"


def minigrad_steps(weights, biases, activation, hyper, threads):
    import numba
    import numpy as np

    import minigrad
    from minigrad.engine.model import MLP
    from minigrad.engine.optim import make_optimizer
    from minigrad.machine.threads import limit_threads

    limit_threads(threads)
    numba.set_num_threads(threads)
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    model = MLP(sizes, activation=activation, dtype=weights[0].dtype)
    for w, b, w0, b0 in zip(model.weights, model.biases, weights, biases):
        w[...], b[...] = w0, b0
    options = {"adam": dict(beta1=hyper["momentum"], beta2=hyper["beta2"], eps=hyper["eps"]),
               "sgd": {}}.get(hyper["optimizer"], dict(momentum=hyper["momentum"]))
    opt = make_optimizer(hyper["optimizer"], hyper["lr"], **options)

    def make_step(X, y):
        model.check_batch(X, y)  # once, as the training loop does
        return lambda: model.train_step_trusted(X, y, opt)

    def get_params():
        return [(np.array(w), np.array(b)) for w, b in zip(model.weights, model.biases)]

    return make_step, get_params, f"minigrad {minigrad.__version__}, numba {numba.__version__}"


BUILDERS = {"torch-eager": torch_steps, "torch-compile": lambda *a: torch_steps(*a, compiled=True),
            "jax-jit": jax_steps, "minigrad": minigrad_steps}


# ---------------------------------------------------------------------------------------------------- worker
def worker(job):
    """Runs in the subprocess; returns what it prints: {"rows", "version"}, {"losses", "params"} (job["check"]),
    {"missing": package} or {"error": one line}."""
    if job.get("cores") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, job["cores"])  # before any import starts a thread pool
    backend = job["backend"]
    try:
        import numpy as np

        inputs = np.load(job["inputs"])
        L = sum(1 for k in inputs.files if k.startswith("w"))
        weights, biases = [inputs[f"w{i}"] for i in range(L)], [inputs[f"b{i}"] for i in range(L)]
        make_step, get_params, version = BUILDERS[backend](weights, biases, job["activation"], job["hyper"],
                                                          job["threads"])
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in PACKAGES.get(backend, ()):
            return {"missing": exc.name.split(".")[0]}
        return {"error": _one_line(exc)}
    except Exception as exc:
        return {"error": _one_line(exc)}
    try:
        if job.get("check"):
            losses = [float(make_step(inputs[f"X{B}"], inputs[f"y{B}"])()) for B in job["batch_sizes"]]
            return {"losses": losses, "params": np.concatenate([a.ravel() for wb in get_params() for a in wb]).tolist()}
        from minigrad.machine.timing import BUSY_SPREAD, median_iqr, time_calls, time_rounds

        rows = []
        for B in job["batch_sizes"]:
            step = make_step(inputs[f"X{B}"], inputs[f"y{B}"])
            t0 = time.perf_counter()
            step()  # compiles what this B needs (JAX, torch.compile)
            first = time.perf_counter() - t0
            time_calls(step, min_time=0.02, min_repeats=2)  # warm-up
            # in rounds, as minigrad's own step times: their medians carry the timing's spread into the answer;
            # rounds too far apart are measured once more, and marked busy if they stay so
            for attempt in range(2):
                rounds = time_rounds(step, job.get("repeats"), job.get("min_time", 0.3), job.get("min_repeats", 5))
                medians = [median_iqr(r)[0] for r in rounds]
                spread = max(medians) / min(medians) - 1.0
                if spread <= BUSY_SPREAD:
                    break
            median, iqr = median_iqr([t for r in rounds for t in r])
            rows.append(dict(backend=backend, threads=job["threads"], dtype=weights[0].dtype.name, batch_size=B,
                             step_time_s=median, iqr_s=iqr, samples_per_s=B / median,
                             repeats=sum(map(len, rounds)), first_call_s=first, version=version,
                             rounds_s=" ".join(repr(m) for m in medians), remeasured=attempt,
                             busy=int(spread > BUSY_SPREAD),
                             busy_reason=f"rounds {spread:.0%} apart" if spread > BUSY_SPREAD else ""))
        return {"rows": rows, "version": version}
    except Exception as exc:  # e.g. torch.compile without a C++ compiler
        return {"error": _one_line(exc)}


def _one_line(exc):
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))), flush=True)
