"""The classic experiments, one module each: configuration, runs, HDF5 (through minigrad.store), verdict, figures.

    noise       spread of minibatch gradients around the full gradient for B = 1..4096, next to the step time
    keskar      small batch against large batch at a fixed epoch budget: errors, sharpness, re-tuning
    smith       learning-rate step decay against growing the batch by the same factor (Smith et al. 2017)
    gns         the gradient noise scale B_simple over training next to B_crit from a `minigrad bench` study
    stratified  shuffled against class-stratified batches: steps-to-target and its spread over seeds
    momentum    heavy-ball momentum against SGD: steps-to-target per B with lr (and momentum) tuned per B
    adam-batch  Adam with beta2 fixed or by its half-life in samples, and plain SGD, tuned per B from B = 1 up
    lr-surge    the tuned rate against B for SGD and Adam at two targets, next to B_simple
    data-vs-width  B_crit across model widths at a fixed training set, and across training-set sizes
    cbs         the critical batch size measured by branching from checkpoints with 1x to 8x the batch
"""
from importlib import import_module
from pathlib import Path

from minigrad.experiments.common import DEFAULTS, EXPERIMENTS, QUICK, Outcome, make_config  # noqa: F401 - the API


def run(name, config, out, *, overwrite=False, executor=None, workers=None, threads=1, echo=print):
    """Run (or resume) experiment `name` with `config` (from make_config) into the HDF5 file `out`.

    Its training runs go to `executor` (minigrad.study.executors: LocalExecutor, DaskExecutor, InlineExecutor),
    by default a local pool of `workers` processes (2), or this process when workers is 1, each run on `threads`
    BLAS and Numba threads."""
    from minigrad import store
    from minigrad.machine.threads import use_threads
    from minigrad.study.executors import InlineExecutor, LocalExecutor

    if config.get("data"):  # bad data is refused here, once, not by every worker after retries
        from minigrad.training.trial import load_data

        load_data(config)
    inline = executor is None and workers == 1
    if executor is None:
        executor = InlineExecutor() if inline else LocalExecutor(workers or 2, threads=threads)
    module = import_module(f"minigrad.experiments.{name.replace('-', '_')}")
    if hasattr(module, "check"):  # settings that need the data, refused before the file is created
        module.check(config)
    runner = module.run
    with store.Store.create(out, config, kind=f"experiment/{name}", overwrite=overwrite) as writer, executor, \
            use_threads(threads if inline else None):
        if writer.resumed:
            echo(f"resuming {out}: {len(writer.completed_run_ids())} runs already stored")
        if name == "gns":
            return runner(config, Path(out), writer, executor, echo, overwrite=overwrite)
        return runner(config, Path(out), writer, executor, echo)
