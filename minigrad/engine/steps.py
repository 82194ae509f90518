"""The training step's paths: one object per path, and the one rule that picks a path (MLP.step_for asks it).

A path is one way of running forward, backward and update at one batch size: its kernels, the buffers they need
besides the model's workspace, the Python call (MLP.train_step), the compiled loop that takes many steps without
returning to Python (loop.Stepper), the gradient a fused step leaves to be formed on first read (settle), and the
bytes its buffers add (MLP.memory_count). A Step object holds all of that for one path, batch size and thread count;
MLP.step_for builds it (once per batch size) and every caller asks it rather than the path's name.

PATHS is the registry: each path's name, when it is chosen, its kernels, and the measurement that set its threshold.
`table()` renders it for docs/architecture.md and `minigrad bench throughput --help`; it is typed nowhere else.

Legend: B = batch size, T = workers (threads) of the fused step.
"""
import math
from collections import namedtuple

import numpy as np

from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import kernels_loops as KL
from minigrad.engine import kernels_small as KS
from minigrad.engine import passes as P
from minigrad.engine import step_loops as SL
from minigrad.engine.optim import OPTIMIZERS, STEP, WEIGHT_DECAY

# backend name -> (linear_forward, linear_backward) with the signatures of kernels.py
BACKENDS = {
    "blas": (K.linear_forward, K.linear_backward),
    # the same kernels with every op a pass of its own at every B (no fused step): the readable path to profile
    "blas-unfused": (K.linear_forward, K.linear_backward),
    "loops": (KL.linear_forward, KL.linear_backward),
    "loops-parallel": (KL.linear_forward_parallel, KL.linear_backward_parallel),
    # B single-example passes with the gradient accumulated (passes.forward_backward_per_example); batched forward
    # passes (evaluate, logits) go through BLAS
    "per-example": (K.linear_forward, K.linear_backward),
}
SMALL = (KS.linear_forward, KS.linear_backward)

# Batch sizes up to which the blas backends use the small-batch kernels instead of BLAS (gradients, evaluation, and
# train steps of optimizers other than plain SGD). Measured side by side on 2 Zen 5 cores (784-256-256-10, float32,
# OpenBLAS 0.3.30 with its Haswell kernels): the small kernels overtake BLAS between B = 8 and 16.
SMALL_BATCH_MAX = 8
# Plain SGD on --backend blas: kernels_small's fused step wins where it splits each layer's rows across two or more
# threads and the weights are large enough that each worker's share outweighs the barriers between the layers; else
# kernels_large's BLAS step is faster at every B. FUSED_SGD_MAX: the largest B of the fused step, by workers.
FUSED_SGD_MAX = {1: 0, 2: 32}
FUSED_SGD_MIN_PARAMS = 200_000
# The measurements behind them: compiled-loop step times, fused / large, on a 2-vCPU Xeon (OpenBLAS SkylakeX
# kernels; python bench/step_paths.py 1 and 2).
MEASURED_SERIAL = ("bench/step_paths.py 1, fused / large on a 2-vCPU Xeon: 1.15-2.2x at B = 1 and 1.3-4x at "
                   "B = 2-24 for 32-64-64-10, 784-128-128-10 and 784-256-256-10, so never fused on one thread")
MEASURED_PARALLEL = ("bench/step_paths.py 2, fused / large on a 2-vCPU Xeon: 0.51-0.94x for 784-256-256-10 (270k "
                     "parameters) at B = 1-24, 1.2x at 40; 1.0-1.7x for 784-128-128-10 at B <= 8, 2.6-4.1x for "
                     "32-64-64-10")
MEASURED_SMALL = ("small kernels against BLAS, 784-256-256-10 on 2 Zen 5 cores (OpenBLAS 0.3.30 Haswell): "
                  "they overtake between B = 8 and 16")


def fused_sgd_max(workers):
    return FUSED_SGD_MAX[min(workers, 2)]


_fused_threading = {}  # threading layer -> True if the fused step may run its workers in parallel under it


def fused_workers(threads=None):
    """How many workers the fused SGD step splits the layers across: `threads` (default numba.get_num_threads())
    under the OpenMP threading layer, else 1. Its barriers need every worker running at once, which OpenMP's static
    schedule gives and a work-stealing pool (TBB) does not promise."""
    import numba

    T = numba.get_num_threads() if threads is None else threads
    if T < 2:
        return 1
    if not _fused_threading:
        KS.probe_threading(np.zeros(2))  # makes Numba choose its threading layer, so that it can be asked
        _fused_threading["ok"] = numba.threading_layer() == "omp"
    return T if _fused_threading["ok"] else 1


def linear_kernels(backend, B):
    """(linear_forward, linear_backward) of `backend` at batch size B: the small-batch kernels stand in for BLAS up
    to SMALL_BATCH_MAX rows (also for evaluation and plain gradients)."""
    small = backend in ("blas", "blas-unfused", "per-example") and B <= SMALL_BATCH_MAX
    return SMALL if small else BACKENDS[backend]


def choose(backend, n_params, B, kind, T):
    """The name of the path a step takes: backend, parameter count, batch size, optimizer kind (OPTIMIZERS code, or
    None for a gradient without an update) and the fused step's workers T. MLP.step_for is its one caller."""
    if backend == "blas" and kind == OPTIMIZERS["sgd"]:
        if B <= fused_sgd_max(T) and n_params >= FUSED_SGD_MIN_PARAMS:
            return "fused-sgd-parallel" if T > 1 else "fused-sgd-serial"
        return "blas-fused-sgd"
    if backend == "blas" and B <= SMALL_BATCH_MAX:
        return "blas-small"
    return backend


def workspace_bytes(sizes, B, itemsize):
    """Bytes of model.Workspace(B) besides its activations: dzs, the per-example norms, the batch buffer and its
    int64 labels."""
    return B * sum(sizes[1:]) * itemsize + B * itemsize + B * sizes[0] * itemsize + B * 8


class Step:
    """A plain step: passes.train_step on the backend's linear kernels, every op its own pass."""

    defers_grads = False  # whether the step leaves model.grads to be formed on first read (settle)

    def __init__(self, model, name, B, T):
        self.model, self.name, self.B, self.T = model, name, B, T
        self.linear = linear_kernels(model.backend, B)
        # what the compiled calls take, as plain tuples (kernels.plain: the faster to hand over from Python)
        self.net, self.grads = K.plain(model.net), K.plain(model.grads_views)
        self._ws = self._work = None

    @property
    def ws(self):
        """The model's workspace of this batch size (allocated on first use: asking for a path allocates nothing)."""
        if self._ws is None:
            self._ws = self.model.workspace(self.B)
        return self._ws

    @property
    def work(self):
        """The workspace's zs, acts, dzs as the compiled calls take them (kernels.Work's layout)."""
        if self._work is None:
            self._work = K.plain(self.ws.work)
        return self._work

    def update(self, optimizer):
        """`optimizer`'s update of the model's flat vectors, laid out as kernels.Update."""
        m = self.model
        return optimizer.kind, m.params, m.grads_buffer, optimizer.state, optimizer.hyper

    def gradient(self, X, y, sqnorms):
        """Mean loss of the batch; fills model.grads_buffer (no update). sqnorms: see passes.forward_backward."""
        return P.forward_backward(*self.linear, self.net, self.grads, self.work, X, y, sqnorms)

    def __call__(self, X, y, optimizer):
        """One step from Python: the loss (NaN/Inf: the update was skipped)."""
        self.model.defer_grads(None)
        return P.train_step(*self.linear, self.net, self.grads, self.work, X, y, self.ws.no_sqnorms,
                            self.update(optimizer))

    def run(self, optimizer, chunk):
        """Steps of the compiled loop (step_loops; chunk: loop.Chunk on this step's workspace) -> why it stopped."""
        args = self.net, self.grads, self.work, self.ws.no_sqnorms, self.update(optimizer)  # step_loops.plain_step's
        return SL.run_steps(SL.plain_step, *self.linear, args, *chunk)

    def settle(self):
        """Form model.grads from what a deferring step kept (only steps that defer are asked)."""

    def count_bytes(self, parts):
        """Add the bytes this path holds besides the model's own buffers to MLP.memory_count's parts."""


class PerExampleStep(Step):
    """B single-example passes, their gradients accumulated, then one update (passes.train_step_per_example)."""

    def __init__(self, model, name, B, T):
        super().__init__(model, name, B, T)
        self.one = K.plain(model.one_example)

    def gradient(self, X, y, sqnorms):
        return P.forward_backward_per_example(self.net, self.one, X, y, sqnorms, self.model.grads_buffer)

    def __call__(self, X, y, optimizer):
        return P.train_step_per_example(self.net, self.one, X, y, self.ws.no_sqnorms, self.update(optimizer))

    def run(self, optimizer, chunk):
        args = self.net, self.one, self.ws.no_sqnorms, self.update(optimizer)
        return SL.run_steps(SL.per_example_step, *self.linear, args, *chunk)

    def count_bytes(self, parts):
        # one example's gradient besides the batch's, and the B = 1 workspace with its activations
        sizes, item = self.model.sizes, self.model.dtype.itemsize
        parts["gradients"] += self.model.n_params * item
        if self.B != 1:
            parts["workspace"] += workspace_bytes(sizes, 1, item) + (sum(sizes[1:]) + sum(sizes[1:-1])) * item


class DeferringStep(Step):
    """A fused plain-SGD step: it never forms the gradient, and keeps what it is made of (settle forms it)."""

    defers_grads = True
    _buffers = _kept = None

    @property
    def buffers(self):
        """The path's own buffers (a named tuple), allocated on first use."""
        if self._buffers is None:
            self._buffers = self.allocate()
        return self._buffers

    @property
    def kept(self):
        """The buffers as the kernel takes them (a plain tuple)."""
        if self._kept is None:
            self._kept = K.plain(self.buffers)
        return self._kept

    def kernel(self, X, y, optimizer):
        """The step's compiled call -> loss."""
        raise NotImplementedError

    def __call__(self, X, y, optimizer):
        self.model.defer_grads(None)
        value = self.kernel(X, y, optimizer)
        if math.isfinite(value):
            optimizer.hyper[STEP] += 1
            self.model.defer_grads(self)
        else:  # the update was skipped; the gradient (which the caller may inspect) comes from the plain path
            self.gradient(X, y, self.ws.no_sqnorms)
        return value

    def chunk_done(self, why, steps_before, chunk):
        # after a compiled chunk: the last batch's gradient is formed on first read
        if chunk.counters[SL.STEPS] > steps_before or why == SL.NONFINITE:
            self.model.defer_grads(self)
        return why


class FusedStep(DeferringStep):
    """kernels_small's one-pass step: forward, backward and the SGD update, each layer's rows split across T
    workers (serial on one)."""

    def allocate(self):
        return KS.fused_buffers(self.model.sizes, self.B, self.T, self.model.dtype)

    def barrier_failed(self, advice):
        if self.buffers.counter[KS.BARRIER_FAILED]:
            raise RuntimeError(f"the fused SGD step's {self.T} workers did not all run at once (threading layer "
                               f"problem); {advice}")

    def kernel(self, X, y, optimizer):
        lr, wd = optimizer.lr, float(optimizer.hyper[WEIGHT_DECAY])
        if self.T == 1:
            KS.sgd_step_serial(self.net, self.work, self.kept, X, y, lr, wd)
        else:
            KS.sgd_step_parallel(self.T, self.net, self.work, self.kept, X, y, lr, wd)
            self.barrier_failed("set numba.set_num_threads(1) to run it on one core")
        return float(self.buffers.value[0])

    def run(self, optimizer, chunk):
        args = self.net, self.work, self.kept, optimizer.hyper, self.T
        before = chunk.counters[SL.STEPS]
        if self.T == 1:
            why = SL.run_fused_serial(args, *chunk)
        else:
            why = SL.run_steps(SL.fused_parallel_step, *self.linear, args, *chunk)
            self.barrier_failed("run with one thread (--threads 1)")
        return self.chunk_done(why, before, chunk)

    def settle(self):
        # per layer dweight = dout^T inp and dbias = sum_b dout, by the register-blocked kernels; the first layer's
        # input is the step's copy of the batch, the last layer's dout worker 0's copy of the loss gradient
        m, fb, ws = self.model, self.buffers, self.ws
        L = len(m.weights)
        for l in range(L):
            dout = fb.dlogits[0] if l == L - 1 else ws.dzs[l]
            inp = ws.acts[l - 1] if l > 0 else fb.X
            KS.linear_dweight_rows(m.grads_views.dweights[l], m.grads_views.dbiases[l], dout, inp, 0, m.sizes[l + 1])

    def count_bytes(self, parts):
        # kernels_small.Fused: parts, dlogits and the batch copy, then the int64 counter (16) and float64 loss
        sizes, B, T, item = self.model.sizes, self.B, self.T, self.model.dtype.itemsize
        parts["workspace"] += (T * B * sum(sizes[:-1]) + T * B * sizes[-1] + B * sizes[0]) * item + 16 * 8 + 8


class LargeStep(DeferringStep):
    """kernels_large's step: BLAS GEMMs with the SGD update folded into the weight-gradient GEMMs and the bias
    passes into the activation passes."""

    def allocate(self):
        return KG.large_buffers(self.model.sizes, self.B, self.model.dtype, self.model.grads_views.dweights[0])

    def kernel(self, X, y, optimizer):
        return KG.sgd_step(self.net, self.work, self.kept, X, y, optimizer.lr, float(optimizer.hyper[WEIGHT_DECAY]))

    def run(self, optimizer, chunk):
        before = chunk.counters[SL.STEPS]
        why = SL.run_large((self.net, self.work, self.kept, optimizer.hyper), *chunk)
        if why == SL.NONFINITE:
            # the step met the NaN/Inf before its backward pass: the gradient comes from the plain path
            self.gradient(self.ws.X, self.ws.y, self.ws.no_sqnorms)
            return why
        return self.chunk_done(why, before, chunk)

    def settle(self):
        # per layer dweight = dout^T inp and dbias = sum_b dout through BLAS; the first layer's input is the step's
        # copy of the batch, and when that layer was not folded its dweight is in place already (only dbias is left)
        m, lb, ws = self.model, self.buffers, self.ws
        for l in range(len(m.weights)):
            dout, inp = ws.dzs[l], ws.acts[l - 1] if l > 0 else lb.X
            if l == 0 and not lb.fold_first:
                KG.column_sums(m.grads_views.dbiases[0], dout)
            else:
                K.linear_backward(dout, m.grads_views.dweights[l], m.grads_views.dbiases[l], dout, inp, m.weights[l],
                                  False)

    def count_bytes(self, parts):
        # kernels_large.Large: the batch copy (first layer folded), the bias sums and BLAS's scalars (6 int32,
        # 2 uint8, 2 of the dtype)
        sizes, B, item = self.model.sizes, self.B, self.model.dtype.itemsize
        parts["workspace"] += ((B * sizes[0] if B < sizes[1] else 0) + max(sizes[1:]) + 2) * item + 26


Path = namedtuple("Path", "name step when kernels measured")


def _paths():
    small, par, ser = SMALL_BATCH_MAX, FUSED_SGD_MAX[2], FUSED_SGD_MAX[1]
    params = f"{FUSED_SGD_MIN_PARAMS:,}"
    plain = "passes.train_step"
    return (
        Path("fused-sgd-parallel", FusedStep, f"--backend blas, plain SGD, B <= {par} on 2 or more threads (OpenMP), "
             f"{params} parameters or more", "kernels_small.sgd_step_parallel: forward, backward and update in one "
             "pass, each layer's rows split across the threads", MEASURED_PARALLEL),
        Path("fused-sgd-serial", FusedStep, f"the same on one thread, B <= {ser}" + (" (never)" if ser < 1 else ""),
             "kernels_small.sgd_step_serial", MEASURED_SERIAL),
        Path("blas-fused-sgd", LargeStep, "--backend blas, plain SGD otherwise (the default study's step)",
             "kernels_large.sgd_step: BLAS GEMMs, the update folded into the weight-gradient GEMM, bias passes merged",
             "the two rows above"),
        Path("blas-small", Step, f"--backend blas, B <= {small}, an optimizer other than plain SGD",
             f"{plain} on kernels_small's linear kernels, kernels.py's other ops", MEASURED_SMALL),
        Path("blas", Step, f"--backend blas, B > {small}, an optimizer other than plain SGD",
             f"{plain} on kernels.py (GEMMs through BLAS)", "the row above"),
        Path("blas-unfused", Step, "--backend blas-unfused", f"{plain}, every op its own pass (kernels.py; "
             f"kernels_small's linear kernels at B <= {small})", "-"),
        Path("loops", Step, "--backend loops", f"{plain} on kernels_loops.py's linear kernels", "-"),
        Path("loops-parallel", Step, "--backend loops-parallel", f"{plain} on kernels_loops.py's parallel linear "
             "kernels", "-"),
        Path("per-example", PerExampleStep, "--backend per-example", "passes.train_step_per_example: B "
             "single-example passes of kernels_small's linear kernels, gradients accumulated", "-"),
    )


def paths():
    """The registry, name -> Path, at the current thresholds."""
    return {p.name: p for p in _paths()}


def make(model, name, B, T):
    """The Step of path `name` for `model` at batch size B with T fused workers (MLP.step_for caches it)."""
    return paths()[name].step(model, name, B, T)


def table():
    """The path table as Markdown: path, when it is chosen, its kernels, and what set its threshold."""
    rows = ["| path | chosen when | kernels | threshold measured by |", "|---|---|---|---|"]
    rows += [f"| `{p.name}` | {p.when} | {p.kernels} | {p.measured} |" for p in _paths()]
    return "\n".join(rows) + "\n"


def table_text(width=100):
    """The path table as plain text for --help: each path, then what it runs and when, indented."""
    import textwrap

    out = []
    for p in _paths():
        out.append(p.name)
        for label, text in (("when", p.when), ("runs", p.kernels)):
            out += textwrap.wrap(text, width, initial_indent=f"  {label}: ", subsequent_indent="        ")
    return "\n".join(out)


HEADING = "## Step paths"


def docs_section():
    """docs/architecture.md's step-path section, generated from the registry (python -m minigrad.engine.steps)."""
    return (f"{HEADING}\n\n"
            "<!-- generated from minigrad/engine/steps.py by `python -m minigrad.engine.steps docs/architecture.md`; "
            "tests/test_steps.py checks it -->\n\n"
            "A training step takes one of these paths, picked per batch size by `MLP.step_for` "
            "(minigrad/engine/steps.py, one object per path) and recorded in every trace (attribute `step_path`) "
            "and throughput row (column `path`). The default study (plain SGD on the blas backend) runs "
            "`blas-fused-sgd`: `kernels_large.sgd_step`.\n\n" + table())


def with_docs_section(text):
    """Markdown `text` with its step-path section replaced by docs_section() (appended if it has none); the
    section runs from its heading to the next heading of the same level."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HEADING), None)
    if start is None:
        return text + ("\n" if text and not text.endswith("\n\n") else "") + docs_section()
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[:start]) + docs_section() + ("\n" if end < len(lines) else "") + "".join(lines[end:])


if __name__ == "__main__":
    import pathlib
    import sys

    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/architecture.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(with_docs_section(target.read_text() if target.exists() else "# Architecture\n\n"))
    print(f"wrote the step-path table to {target}")
