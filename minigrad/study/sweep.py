"""Running a study: compute speed first, then the phases of trials on an executor, every result stored as it lands.

Only this (driver) process writes the HDF5 file; workers return plain dicts of arrays. A trial is stored when it
finishes, so a killed study keeps every finished trial and a rerun of the same command runs only the others, on any
executor. The executors (this machine's process pool, a dask.distributed cluster) live in minigrad.study.executors.

Shards (`--shard i/n`, for batch schedulers such as SLURM job arrays). The phases are adaptive: the reference phase
sets the target and centres the grids, a grid is widened where its best rate lies on an edge, and the equal-budget
phase uses each batch size's tuned rate. So a shard runs:

  1. the whole reference phase itself: the same trials with the same seeds on every shard (training is
     deterministic), so every shard plans the same target, reference rate and grids;
  2. its slice of the initial tuning grid, the bulk of the study: the grid trials as planned from the reference
     phase alone, in plan order (batch size, rate, seed), every n-th starting at the i-th. The slice depends on the
     reference results only, never on tuning results, so a killed shard resumes the same slice, and the slices of
     all shards are disjoint and cover the grid, their sizes differing by at most one;

and then stops. Widening a grid needs every seed at every rate of its batch size, and the equal-budget phase needs
every batch size's tuned rate: those need all shards' results. `minigrad merge OUT.h5 shard*.h5` combines the shard
files, and `minigrad bench` with the same settings on OUT.h5 (any executor: the local pool or a dask cluster)
resumes it and runs the widening rounds and the equal-budget phase, which gives the same study as one unsharded run
(the slices run uncensored, as no centre cell bounds them yet: trials an unsharded study would have censored run to
their end, which changes no statistic; see minigrad.study.plan.censor_bound).
"""
import contextlib
import json
import time

from minigrad.study import plan as S
from minigrad.study.analysis import step_times
from minigrad.study.config import DEFAULT_CONFIG, validate
from minigrad.training.trial import load_data
from minigrad.study.executors import DaskExecutor, LocalExecutor, TrialError  # noqa: F401 - the executors' public home

# ------------------------------------------------------------------------------------------------------- shards


def parse_shard(text):
    """'i/n' -> (i, n) with 0 <= i < n; '0/1' (the whole study) -> None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i, n = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ValueError(f"a shard is I/N with integers 0 <= I < N (e.g. 0/8), not {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"a shard is I/N with 0 <= I < N (e.g. 0/8), not {i}/{n}")
    return None if n == 1 else (i, n)


def shard_text(shard):
    return None if shard is None else f"{shard[0]}/{shard[1]}"


def initial_grid(config, results):
    """The tuning trials planned from the reference phase alone (the initial grids, before any widening), in plan
    order: what the shards divide. Needs the reference phase complete."""
    reference = [r for r in results if r["phase"] == "reference"]
    target, _ = S.choose_target(config, reference)
    _, reference_lr = S.best_reference(reference)
    return S.tune_trials(config, reference_lr, target, config["batch_sizes"], reference,
                         S.reference_cost(config, reference, target), censor=False)  # no centre cell to bound it yet


def shard_slice(specs, shard):
    """Shard (i, n)'s trials of `specs`: every n-th, starting at the i-th."""
    i, n = shard
    return specs[i::n]


# ------------------------------------------------------------------------------------------------------- plan
def stored_results(path):
    """Result rows of the runs already in the file (a resume starts from these)."""
    from minigrad import store
    from minigrad.study.schema import check_runs

    study = check_runs(store.open(path))
    return [S.result_row(run_id, run.attrs, run.trace) for run_id, run in study.runs.items()], study


def plan(config, results, times=None):
    """Every trial the study needs given the results so far: (phase, [spec, ...]) in order, the later phases only
    once the earlier ones are complete. times: {B: step times per measurement round} (None: decide on steps)."""
    phases = [("reference", S.reference_trials(config))]
    done = {r["run_id"] for r in results}
    if not all(t.run_id in done for t in phases[0][1]):
        return phases
    target, _ = S.choose_target(config, results)
    _, reference_lr = S.best_reference(results)
    reference = S.reference_cost(config, results, target)
    tune = S.tune_trials(config, reference_lr, target, config["batch_sizes"], results, reference)
    phases.append(("tune", tune))
    if not all(t.run_id in done for t in tune):
        return phases
    adapt, _ = S.adaptive_trials(config, results, target, reference, times or {})
    phases.append(("adapt", adapt))
    if adapt:
        return phases
    phases.append(("equal", S.equal_budget_trials(config, reference_lr, target, config["batch_sizes"], results)))
    return phases


def next_batch(config, results, shard=None, times=None):
    """(phase, the trials to run now, the shard's done: True when a shard has nothing left to run);
    (None, [], False) when the study is complete."""
    done = {r["run_id"] for r in results}
    phases = plan(config, results, times)
    if shard is not None and len(phases) > 1:  # the reference phase is complete: the shard's slice of the grid
        mine = [t for t in shard_slice(initial_grid(config, results), shard) if t.run_id not in done]
        return ("tune", mine, False) if mine else (None, [], True)
    for name, specs in phases:
        missing = [t for t in specs if t.run_id not in done]
        if missing:
            return name, missing, False
    return None, [], False


def count_trials(config):
    """Trials of the first plan (before any widening of the learning-rate grids), for --dry-run."""
    n_ref = len(S.reference_trials(config))
    n_tune = len(config["batch_sizes"]) * config["lr_points"] * config["seeds"]
    n_equal = len(config["batch_sizes"]) * 2 * config["seeds"]
    return n_ref, n_tune, n_equal


# ------------------------------------------------------------------------------------------------------- driver
class PhaseWalls:
    """Wall seconds of each phase this run of the driver went through, in the order they ran (the widening rounds
    add up under "tune", the adaptive rounds under "adapt"), so a phase added to the study says what it costs. A
    phase that found all its trials stored ran nothing and is not listed."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def timing(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)

    def sentence(self):
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        return f"wall time by phase: {parts} (total {sum(self.seconds.values()):.1f} s)"


def _measure_throughput(kwargs):
    """Runs where the trials run (executor.call_alone): the compute speed of the machine that trains.

    Times every batch size with one thread and with all cores and keeps the faster of the two, as a user would
    train: threads help large batches, while at small ones their synchronisation can cost more than it saves
    (much more when another program holds a core). Each kept row says which thread count it used. All cores are
    timed from the largest B down to the first B where they do not beat one thread (below it they cannot win: the
    two would time the same one-thread work, and keeping the faster of two noisy figures would flatter it); the
    machine's GEMM ceiling and bandwidths, which the answer does not use, are taken from its earlier measurement
    when there is one (profile/limits.py)."""
    import os

    from minigrad.profile import throughput
    from minigrad.training.train import step_chunk

    # steps timed as the trials take them, in the compiled loop (a Python call per step would add microseconds)
    kwargs = dict(kwargs)
    threads = kwargs.pop("threads", None) or sorted({1, os.cpu_count() or 1})  # `report --retime` may choose them
    measured = throughput.measure(threads=threads, chunk=step_chunk, kept_limits=True, prune_threads=True,
                                  memory=False, **kwargs)
    fastest = {}
    for row in measured["rows"]:
        best = fastest.get(row["batch_size"])
        if best is None or row["step_time_s"] < best["step_time_s"]:
            fastest[row["batch_size"]] = row
    measured["rows"] = [fastest[B] for B in sorted(fastest)]
    return measured


def _timing_note(measured):
    """What the compute-speed phase left out, said: the thread counts not timed where they cannot win, and the
    machine limits taken from an earlier measurement."""
    parts = []
    for T, skipped in sorted((measured.get("pruned") or {}).items()):
        timed = sorted(set(measured["config"]["batch_sizes"]) - set(skipped))
        if skipped:
            parts.append(f"{T} threads timed at B = {', '.join(map(str, timed))} only (below, they were no faster than 1 thread)")
    kept = sorted({v["measured_at"] for v in (measured.get("limits") or {}).values() if v.get("source") == "kept"})
    if kept:
        parts.append(f"GEMM ceiling and bandwidths as this machine measured them at {kept[-1]}")
    return "; " + "; ".join(parts) if parts else ""


def _check_shard(out, stored, wanted):
    if stored == wanted:
        return
    if wanted is None:
        raise ValueError(f"{out} holds shard {stored} of a study: run it with --shard {stored}, or combine the shards "
                         "with `minigrad merge` and run the merged file")
    if stored is None:
        raise ValueError(f"{out} holds a study that is not a shard: give shard {wanted} its own --out")
    raise ValueError(f"{out} holds shard {stored}, not {wanted}: give each shard its own --out")


def run_study(config, out, *, overwrite=False, executor=None, echo=print, measure_throughput=True, shard=None):
    """Run (or resume) the study described by `config` into the HDF5 file `out`; returns its path.

    executor: a LocalExecutor (default) or DaskExecutor. shard: 'i/n' or (i, n): run the reference phase and this
    shard's slice of the initial tuning grid (module docstring); the file records the shard, and only the same
    shard resumes it."""
    from minigrad import store
    from minigrad.machine.progress import progress_bar

    validate(config)
    shard = parse_shard(shard)
    label = shard_text(shard)
    with store.Store.create(out, config, kind="study", overwrite=overwrite, defaults=DEFAULT_CONFIG) as writer:
        results, saved = stored_results(out)
        if results or saved.attrs.get("shard") is not None:  # a file with nothing in it takes any shard
            _check_shard(out, saved.attrs.get("shard"), label)
        if writer.resumed:
            echo(f"resuming {out}: {len(results)} trials already stored")
        if label is not None and saved.attrs.get("shard") != label:
            writer.set_attrs({"shard": label})
        dataset = load_data(config)
        sizes = [dataset.n_features, *config["hidden"], dataset.n_classes]

        executor = executor or LocalExecutor()
        duplicates = 0
        walls = PhaseWalls()
        with executor:
            for line in executor.notes():
                echo(line)
            if measure_throughput and not saved.throughput:
                # alone where the trials will run: no trial has been submitted yet
                echo(f"compute speed: timing one training step of {sizes} at {len(S.timed_batch_sizes(config))} "
                     f"batch sizes ({executor.name})")
                with walls.timing("compute speed"):
                    host, measured = executor.call_alone(_measure_throughput, {
                        "sizes": sizes, "batch_sizes": S.timed_batch_sizes(config), "backends": "blas",
                        "dtypes": config["dtype"], "activation": config["activation"],
                        "optimizer": config["optimizer"]})
                writer.write_throughput([dict(row, host=host) for row in measured["rows"]])
                saved.throughput = measured["rows"]
                writer.set_attrs({"ceiling_gflops": measured.get("ceiling_gflops"), "throughput_host": host,
                                  "limits_measured_at": json.dumps(measured.get("limits", {}))})
                echo(f"compute speed measured on {host}{_timing_note(measured)}")

            where = executor.name + (f", shard {label}" if label else "")
            times = step_times(saved.throughput)  # the adaptive phase weighs batch sizes by time-to-target
            while True:
                name, specs, shard_done = next_batch(config, results, shard, times)
                if not specs:
                    break
                with progress_bar(f"{name} trials ({where})", total=len(specs)) as advance, walls.timing(name):
                    for result in executor.run(config, specs):
                        if result["run_id"] in writer.completed_run_ids():
                            duplicates += 1  # a result delivered twice is written once
                            continue
                        writer.write_run(result["run_id"], result["attrs"], result["columns"])
                        results.append(S.result_row(result["run_id"], result["attrs"], result["columns"]))
                        advance(advance=1)
                writer.flush()
            if shard is None and not shard_done:
                _verify(config, out, results, executor, writer, where, times, walls)
        if getattr(executor, "restarts", 0):
            echo(f"{executor.restarts} time(s) a worker process died; its unfinished trials were rerun")
        if duplicates:
            echo(f"{duplicates} duplicate result(s) ignored")
        if shard_done:
            grid = initial_grid(config, results)
            echo(f"shard {label}: done: the reference phase and {len(shard_slice(grid, shard))} of the {len(grid)} "
                 "trials of the initial tuning grid. When every shard is done, combine the files with `minigrad merge "
                 "OUT.h5 shard*.h5` and run `minigrad bench --out OUT.h5` with the same settings: it runs the "
                 "widening rounds and the equal-budget phase, which need every shard's results")
        target, how = S.choose_target(config, results)
        writer.set_attrs({"target": target, "target_reason": how})
        if shard is None:
            _, state = S.adaptive_trials(config, results, target, S.reference_cost(config, results, target), times)
            writer.set_attrs({"adaptive_state": state})
            echo(f"adaptive phase: {state}")
        if walls.seconds:
            writer.set_attrs({"phase_wall_s": json.dumps(walls.seconds)})
            echo(walls.sentence())
    return out


def verify_phase(config, path, results, times=None):
    """The verify phase's trials (minigrad.study.schedule): the schedule the finished study recommends, against its
    pick; [] when it is off, the study unfinished, or no schedule predicts a saving."""
    from minigrad import store
    from minigrad.study import schedule as SCH
    from minigrad.study.analysis import analyse

    if not config.get("verify_seeds") or next_batch(config, results, times=times)[1]:
        return []
    analysis = analyse(store.open(path))
    target = analysis.target
    return SCH.verify_trials(config, analysis.schedule, S.reference_cost(config, results, target), target)


def _verify(config, out, results, executor, writer, where, times, walls):
    start = time.perf_counter()  # the phase's cost includes the analysis that chooses the schedule
    done = writer.completed_run_ids()
    specs = [t for t in verify_phase(config, out, results, times) if t.run_id not in done]
    if not specs:
        return
    from minigrad.machine.progress import progress_bar

    walls.seconds["verify"] = time.perf_counter() - start
    with progress_bar(f"verify trials ({where})", total=len(specs)) as advance, walls.timing("verify"):
        for result in executor.run(config, specs):
            if result["run_id"] in writer.completed_run_ids():
                continue
            writer.write_run(result["run_id"], result["attrs"], result["columns"])
            results.append(S.result_row(result["run_id"], result["attrs"], result["columns"]))
            advance(advance=1)
    writer.flush()


def study_complete(config, path):
    """Whether the study in `path` has every trial it needs."""
    results, study = stored_results(path)
    return next_batch(config, results, times=step_times(study.throughput))[0] is None
