"""The training step's paths: one object per path, and the one rule that picks a path (MLP.step_for asks it).

A path is one way of running forward, backward and update at one batch size: its kernels, the buffers they need
besides the model's workspace, the Python call (MLP.train_step), the compiled loop that takes many steps without
returning to Python (loop.Stepper), the gradient a fused step leaves to be formed on first read (settle), and the
bytes its buffers add (MLP.memory_count). A Step object (engine/step_objects.py) holds all of that for one path, batch size and thread
count; MLP.step_for builds it (once per batch size) and every caller asks it rather than the path's name.

Where this machine's timings are kept (engine/step_choice.py), MLP.step_for takes the measured path among
`candidates` instead of `choose`'s thresholds.

PATHS is the registry: each path's name, when it is chosen, its kernels, and the measurement that set its threshold.
`table()` renders it for docs/architecture.md and `minigrad bench throughput --help`; it is typed nowhere else.

Legend: B = batch size, T = workers (threads) of the fused step.
"""
from collections import namedtuple

import numpy as np

from minigrad.engine import kernels_small as KS
from minigrad.engine.kernels_choice import BACKENDS, SMALL, SMALL_BATCH_MAX, linear_kernels  # noqa: F401 (re-exported)
from minigrad.engine.optim import OPTIMIZERS
from minigrad.engine.step_objects import (BlockedLargeStep, FusedStep, LargeStep, PerExampleStep,  # noqa: F401
                                          Step, workspace_bytes)

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


# the paths only a measurement picks (engine/step_choice.py), never the thresholds
MEASURED_ONLY = ("blas-fused-sgd-blocked",)
# the largest B at which the paths that skip BLAS (the fused and small-batch kernels) are measured at all
CANDIDATE_MAX_B = 64


def candidates(backend, n_params, B, kind, T):
    """The paths that could run this step on --backend blas, for step_choice to time (none on the other backends,
    whose kernels the user named)."""
    if backend != "blas":
        return []
    small = B <= CANDIDATE_MAX_B
    if kind == OPTIMIZERS["sgd"]:
        fused = "fused-sgd-parallel" if T > 1 else "fused-sgd-serial"
        # the unfused plain steps make the large step's GEMMs and more passes: not worth timing
        blocked = ["blas-fused-sgd-blocked"] if B > BlockedLargeStep.rows else []  # else the same calls
        return ["blas-fused-sgd"] + blocked + ([fused] if small else [])
    return ["blas-small", "blas"] if small else []


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
        Path("blas-fused-sgd-blocked", BlockedLargeStep, "--backend blas, plain SGD, with MINIGRAD_STEP_CHOICES=on, "
             "where this machine's timings (engine/step_choice.py) found it the fastest",
             "kernels_large.sgd_step with its forward and "
             f"input-gradient GEMMs in blocks of {BlockedLargeStep.rows} batch rows (kernels_large.gemm_rows)",
             "engine/step_choice.py, on the machine that runs it"),
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
