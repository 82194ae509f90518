"""Running a study: compute speed first, then the phases of trials on an executor, every result stored as it lands.

Only this (driver) process writes the HDF5 file; workers return plain dicts of arrays. A trial is stored when it
finishes, so a killed study keeps every finished trial and a rerun of the same command runs only the others.
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

from minigrad import study as S


class LocalExecutor:
    """Worker processes on this machine, one BLAS and one Numba thread each (default: one per core)."""

    name = "local"

    def __init__(self, workers=None):
        self.workers = workers or os.cpu_count() or 1
        self._pool = None

    def __enter__(self):
        # spawn, not fork: the driver has BLAS and Numba threads running after measuring throughput
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=S.worker_setup)
        return self

    def __exit__(self, *exc):
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, config, specs):
        """Yield each trial's result as it finishes."""
        futures = [self._pool.submit(S.run_trial, config, spec) for spec in specs]
        for future in as_completed(futures):
            yield future.result()


def stored_results(path):
    """Result rows of the runs already in the file (a resume starts from these)."""
    from minigrad import store

    study = store.open(path)
    return [S.result_row(run_id, run.attrs, run.trace) for run_id, run in study.runs.items()], study


def plan(config, results):
    """Every trial the study needs given the results so far: (phase, [spec, ...]) in order, the later phases only
    once the earlier ones are complete."""
    phases = [("reference", S.reference_trials(config))]
    done = {r["run_id"] for r in results}
    if not all(t["run_id"] in done for t in phases[0][1]):
        return phases
    target, _ = S.choose_target(config, results)
    _, reference_lr = S.best_reference(results)
    tune = S.tune_trials(config, reference_lr, target, config["batch_sizes"], results,
                         S.reference_cost(config, results, target))
    phases.append(("tune", tune))
    if not all(t["run_id"] in done for t in tune):
        return phases
    phases.append(("equal", S.equal_budget_trials(config, reference_lr, target, config["batch_sizes"], results)))
    return phases


def count_trials(config):
    """Trials of the first plan (before any widening of the learning-rate grids), for --dry-run."""
    n_ref = len(S.reference_trials(config))
    n_tune = len(config["batch_sizes"]) * config["lr_points"] * config["seeds"]
    n_equal = len(config["batch_sizes"]) * 2 * config["seeds"]
    return n_ref, n_tune, n_equal


def run_study(config, out, *, overwrite=False, executor=None, echo=print, measure_throughput=True):
    """Run (or resume) the study described by `config` into the HDF5 file `out`; returns its path."""
    from minigrad import store
    from minigrad.progress import progress_bar

    S.validate(config)
    with store.Store.create(out, config, kind="study", overwrite=overwrite) as writer:
        results, saved = stored_results(out)
        if writer.resumed:
            echo(f"resuming {out}: {len(results)} trials already stored")
        dataset = S.load_data(config)
        sizes = [dataset.n_features, *config["hidden"], dataset.n_classes]
        if measure_throughput and not saved.throughput:
            from minigrad import throughput

            # alone on the machine: no worker has started yet
            echo(f"compute speed: timing one training step of {sizes} at {len(config['batch_sizes'])} batch sizes")
            measured = throughput.measure(sizes=sizes, batch_sizes=config["batch_sizes"], backends="blas",
                                          dtype=config["dtype"], activation=config["activation"],
                                          optimizer=config["optimizer"])
            writer.write_throughput(measured["rows"])
            writer.set_attrs({"ceiling_gflops": measured.get("ceiling_gflops")})

        executor = executor or LocalExecutor()
        with executor:
            while True:
                done = {r["run_id"] for r in results}
                phases = plan(config, results)
                name, specs = next(((n, [t for t in ts if t["run_id"] not in done]) for n, ts in phases
                                    if any(t["run_id"] not in done for t in ts)), (None, []))
                if not specs:
                    break
                with progress_bar(f"{name} trials ({executor.name})", total=len(specs)) as advance:
                    for result in executor.run(config, specs):
                        writer.write_run(result["run_id"], result["attrs"], result["columns"])
                        results.append(S.result_row(result["run_id"], result["attrs"], result["columns"]))
                        advance(advance=1)
                writer.flush()
        target, how = S.choose_target(config, results)
        writer.set_attrs({"target": target, "target_reason": how})
    return out
