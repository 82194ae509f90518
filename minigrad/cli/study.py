"""`minigrad bench` (the study), `bench throughput`, `report` and `merge`."""
import click

from minigrad.machine.settings import ACTIVATIONS, OPTIMIZERS

from minigrad.cli.app import (
    can_write, int_list, load_toml, main, processes_and_threads, setting_option, str_list, user_errors)


STUDY_OPTIONS = [
    click.option("--quick", is_flag=True, help="Lower resolution, about a minute: fewer batch sizes, rates, seeds."),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="TOML file with study settings (keys as in --dry-run's output); options override it."),
    click.option("--out", type=click.Path(dir_okay=False), default="minigrad-study.h5", show_default=True,
                 help="HDF5 file; figures are written beside it. An existing file of the same study resumes."),
    click.option("--overwrite", is_flag=True, help="Start over even if --out holds a study."),
    click.option("--dry-run", is_flag=True, help="Print the resolved configuration and trial count; run nothing."),
    setting_option("data", "bench", "--data", "data_name"),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                 help="Folder with the IDX files of mnist / fashion-mnist [$MINIGRAD_DATA or ./data]."),
    click.option("--n-val", type=int, default=None,
                 help="Validation examples carved from the training set (teacher, mnist, fashion-mnist)."),
    *(setting_option(name, "bench") for name in (
        "hidden", "activation", "optimizer", "momentum", "beta2", "beta2_rule", "beta2_halflife", "batch_sizes",
        "reference_lrs", "lr_points", "seeds",
        "target", "budget_factor", "equal_epochs", "verify_seeds", "sampler")),
    click.option("--workers", type=int, default=None, help="Worker processes [one per core]."),
    click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                 help="Where trials run: worker processes on this machine, or a dask.distributed cluster "
                      "(pip install 'minigrad[dask]')."),
    click.option("--scheduler", default=None,
                 help="Dask scheduler address, e.g. tcp://HOST:8786 (with --executor dask; without it a LocalCluster "
                      "of --workers processes starts on this machine)."),
    click.option("--threads", "--worker-threads", "worker_threads", type=int, default=None,
                 help="BLAS and Numba threads per trial (each worker process) [1]; more than one helps only on an "
                      "idle machine (see `minigrad train --help`)."),
    click.option("--shard", default=None,
                 help="Run slice I of N (0 <= I < N) of the trials, e.g. for a job array; each shard its own --out, "
                      "combined by `minigrad merge`."),
]


def study_options(func):
    for option in reversed(STUDY_OPTIONS):
        func = option(func)
    return func


@main.group(invoke_without_command=True)
@study_options
@click.pass_context
@user_errors
def bench(ctx, quick, config_path, out, overwrite, dry_run, data_name, data_dir, n_val, workers, executor, scheduler,
          worker_threads, shard, **settings):
    """Which batch size? Compute speed x convergence speed on this machine, stored in --out with figures.

    Runs the default study on the embedded dataset (2-3 minutes on 2 cores; --quick under 1) and prints the
    table, the critical batch size and a recommendation. `minigrad bench throughput` measures compute speed alone.
    """
    if ctx.invoked_subcommand is not None:
        return
    import json

    from minigrad.study.config import make_config
    from minigrad.study.sweep import parse_shard

    if scheduler is not None and executor != "dask":
        raise click.UsageError("--scheduler needs --executor dask")
    if scheduler is not None and workers is not None:
        raise click.UsageError("--workers starts a LocalCluster: the cluster at --scheduler has its own workers")
    workers, worker_threads = processes_and_threads(workers, worker_threads, "--threads (--worker-threads)")
    try:
        shard = parse_shard(shard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    file_settings = load_toml(config_path) if config_path else {}
    quick_setting = file_settings.pop("quick", False)
    if not isinstance(quick_setting, bool):  # "false" is a true string
        raise ValueError(f"{config_path}: quick must be true or false (no quotes), got {quick_setting!r:.40}")
    quick = quick or quick_setting
    settings = {**file_settings, **{k: v for k, v in settings.items() if v is not None}}
    if data_name is not None:
        settings["data"] = data_name
    if data_dir is not None or n_val is not None:
        options = settings.get("data_options")
        settings["data_options"] = {**(options if isinstance(options, dict) else {}),
                                    **({"data_dir": str(data_dir)} if data_dir is not None else {}),
                                    **({"n_val": n_val} if n_val is not None else {})}
    config = make_config(quick=quick, **settings)
    if dry_run:
        from minigrad.study.sweep import count_trials

        n_ref, n_tune, n_equal = count_trials(config)
        click.echo(json.dumps(config, indent=2))
        click.echo(f"trials: {n_ref} reference + {n_tune} tuning (more if a grid is widened, at most "
                   f"{len(config['batch_sizes']) * config['max_widen'] * config['seeds']}) + at most "
                   f"{config['adaptive_budget']} adaptive + {n_equal} equal-budget + at most "
                   f"{2 * config['verify_seeds']} verify = at most "
                   f"{n_ref + n_tune + config['adaptive_budget'] + n_equal + 2 * config['verify_seeds']} before "
                   "widening")
        if shard is not None:
            click.echo(f"shard {shard[0]}/{shard[1]}: the {n_ref} reference trials, then every {shard[1]}th of the "
                       f"{n_tune} of the initial tuning grid; `minigrad merge` the shards, then `minigrad bench` on the "
                       "merged file runs the widening and equal-budget phases")
        return
    from minigrad import api
    from minigrad.machine.checks import memory_fits
    from minigrad.study.executors import DaskExecutor, LocalExecutor
    from minigrad.training.trial import load_data

    # everything that can be checked is checked before --out is touched: the data, the batch sizes, the memory
    dataset = load_data(config)
    too_big = [B for B in config["batch_sizes"] if B > dataset.n_train]
    if too_big:
        raise ValueError(f"batch size(s) {', '.join(map(str, too_big))} exceed the {dataset.n_train} training "
                         "examples; choose --batch-sizes up to that")
    memory_fits("the study", [dataset.n_features, *config["hidden"], dataset.n_classes], max(config["batch_sizes"]),
                4 if config["dtype"] == "float32" else 8, copies=workers or 1)
    threads = worker_threads or 1
    runner = (DaskExecutor(scheduler, workers=workers, threads=threads) if executor == "dask"
              else LocalExecutor(workers, threads=threads))
    from minigrad import store

    with store.remembering_runs():  # the verify phase, run_study's result and the report read each run once
        study = api.run_study(config, out, overwrite=overwrite, executor=runner, echo=click.echo, shard=shard)
        if shard is None:
            show_report(out, study=study)


def open_study(path):
    """The study in `path`, or a one-line error when it holds another kind of file (a train run, an experiment)."""
    from minigrad import api

    study = api.open_study(path)
    if study.file.kind != "study":
        raise ValueError(f"{path} holds a {study.file.kind!r} file, not a study: `minigrad report` reads the files of "
                         "`minigrad bench` (`minigrad export` reads any)")
    return study


def show_report(path, html=False, wide=False, extra=(), study=None):
    """extra: (name, attrs, rows) of step times to answer for that are not stored (a convergence file's); study:
    the file already read (api.run_study's), else it is read from `path`."""
    from pathlib import Path

    from minigrad.study.figures import study_figures

    study = study or open_study(path)
    study.extra_times = tuple(extra)
    path = Path(path)
    if html:  # refused before anything is written: a page named like the study would replace it
        from minigrad.machine.outputs import check_target

        check_target(path.with_suffix(".html"), protect=[path])
    answer = study.answer()
    study.report(wide=wide)
    if path.suffix.lower() == ".json":
        figures = []
        click.echo("figures: none (a convergence file holds no traces; `minigrad report STUDY.h5` draws them)")
    else:
        figures = study_figures(study.analysis, study.file, path.parent, stem=path.stem)
    for written in figures:
        click.echo(f"figure: {written}")
    if html:
        from minigrad.study.html import write

        click.echo(f"html: {write(answer, study.file, figures, path.with_suffix('.html'))}")


@main.command("report")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--html", is_flag=True,
              help="Also write one self-contained HTML page beside the file (STUDY.html): the answer and its recipe, "
                   "the table, the fit, every figure inline, the configuration and the machine.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the answer as JSON (rows, fit, b_crit, recommendation, notes, configuration, machine) "
                   "instead of the table and figures.")
@click.option("--wide", is_flag=True,
              help="Show every column of the table, even where it wraps (by default the columns that fit the "
                   "terminal; the HTML page and --json always have all).")
@click.option("--retime", is_flag=True,
              help="Measure the step times t(B) on this machine (the compute-speed phase alone, seconds), store them "
                   "in the file as one more step-time table, and answer for them with the stored convergence, beside "
                   "the study's own answer. The trials and the original table are kept as they are.")
@click.option("--threads", "retime_threads", default=None, callback=int_list,
              help="With --retime or --step-times torch|jax: the thread counts to time, the faster kept per B [1 and "
                   "every core].")
@click.option("--step-times", "step_times_path", type=click.Path(dir_okay=False), default=None,
              help="A CSV (batch_size,step_time_s) or JSON file of seconds per step measured anywhere (several rows "
                   "per B are measurement rounds), or torch / jax: PyTorch eager or JAX jit timed here on the same "
                   "model and batches (in $MINIGRAD_COMPARE_PYTHON or this interpreter); stored in the study file as "
                   "one more table and answered for. Format: docs/usage.md.")
@user_errors
def report_command(path, html, as_json, wide, retime, retime_threads, step_times_path):
    """Rebuild a study's table, recommendation and figures from its HDF5 file alone; with --retime or
    --step-times, also answer for other step times, side by side."""
    if retime_threads and not (retime or step_times_path in ("torch", "jax")):
        raise click.UsageError("--threads is for --retime and --step-times torch|jax")
    extra = add_step_times(path, retime, retime_threads, step_times_path) if retime or step_times_path else []
    if as_json:
        import json

        study = open_study(path)
        study.extra_times = tuple(extra)
        click.echo(json.dumps(study.answer().to_dict(), indent=2))
        return
    show_report(path, html=html, wide=wide, extra=extra)


def add_step_times(path, retime, threads, step_times_path):
    """Store a step-times file's table (checked whole first: a bad file writes nothing) and/or re-time here. A
    convergence file (.json) is not written to: its tables are returned, (name, attrs, rows) each, to answer for."""
    from pathlib import Path

    from minigrad import api
    from minigrad.study import retime as R

    study = api.open_study(path).file
    if study.kind != "study":
        raise ValueError(f"{path} holds a {study.kind!r} file, not a study: --retime and --step-times need a file "
                         "of `minigrad bench`")
    stored = not str(path).lower().endswith(".json")
    extra = []
    echo = lambda msg: click.echo(msg, err=True)  # noqa: E731 - stdout may be --json's
    if step_times_path in ("torch", "jax"):
        name, rows, attrs = R.measure_framework(study, step_times_path, threads=threads, echo=echo)
        if stored:
            R.add_table(path, study, name, rows, attrs)
        else:
            extra.append((name, attrs, rows))
    elif step_times_path:
        from minigrad.study import step_times

        rows, attrs = step_times.read(step_times_path)
        name = R.table_name("file", Path(step_times_path).stem)
        R.check_covers(study, f"--step-times {step_times_path}", rows)
        if stored:
            R.add_table(path, study, name, rows, attrs)
        else:
            extra.append((name, attrs, rows))
    if retime and stored:
        R.retime(path, threads=threads, echo=echo)
    elif retime:
        extra.append(R.measure(study, threads=threads, echo=echo))
    return extra


def _step_chunk():
    from minigrad.training.train import step_chunk

    return step_chunk


class PathTableHelp(click.Command):
    """A command whose --help ends with the step-path table, rendered from the engine's registry (engine/steps.py)
    only when help is asked for, so that running the command does not wait for it."""

    def format_epilog(self, ctx, formatter):
        from minigrad.engine.steps import table_text

        with formatter.section("Step paths (the rows' path column)"):
            width = max(40, (formatter.width or 80) - formatter.current_indent - 2)
            for line in table_text(width).splitlines():
                formatter.write(" " * formatter.current_indent + line + "\n")


@bench.command("throughput", cls=PathTableHelp)
@click.option("--sizes", default="784,256,256,10", show_default=True, callback=int_list,
              help="Layer widths, inputs first.")
@click.option("--batch-sizes", default="1,2,4,8,16,32,64,128,256,512,1024,2048,4096", show_default=True,
              callback=int_list, help="Batch sizes to time.")
@click.option("--backend", default="blas", show_default=True, callback=str_list,
              help="Path(s) of the step: blas, blas-unfused (every op its own pass, to set the fusions against), "
                   "loops, loops-parallel, per-example, a comma list, or all (every one, in float32 and float64).")
@click.option("--threads", default=None, callback=int_list,
              help="BLAS and Numba threads, e.g. 1,2 (default: all cores).")
@click.option("--dtype", "dtypes", default=None, callback=str_list,
              help="float32, float64 or float32,float64 (default: float32; both with --backend all).")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd",
              show_default=True)
@click.option("--repeats", default=None, type=int, help="Timed steps per batch size (default: adaptive).")
@click.option("--breakdown", default=None, callback=int_list,
              help="Batch size(s) at which to time every op of the step and place its GEMMs on the roofline.")
@click.option("--compare", default=None,
              help="Also time PyTorch (eager) and/or JAX (jit) on the same model and data: torch, jax or torch,jax.")
@click.option("--compare-python", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Interpreter that has torch/jax installed (default: this one).")
@click.option("--in-loop", is_flag=True,
              help="Time steps as training takes them, in chunks of the compiled loop (what `minigrad bench` does), "
                   "instead of one Python call a step (as the frameworks of --compare are timed).")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None,
              help="Write the figures (samples/s and time per example against B, roofline) to this directory.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write everything measured as JSON: {\"rows\": [...], \"breakdowns\": [...], ...}.")
@user_errors
def bench_throughput(sizes, batch_sizes, backend, threads, dtypes, activation, optimizer, repeats, breakdown, compare,
                     compare_python, in_loop, figures_dir, json_path):
    """Median time of one training step per batch size and path, samples/s, GFLOP/s, % of the GEMM ceiling and
    peak memory; with --breakdown, where the time of a step goes and the roofline."""
    import os

    from minigrad.profile import report as profile_report
    from minigrad.profile import throughput

    # where the results go is checked before minutes of timing, not after
    if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise ValueError(f"--json: the directory of {json_path} does not exist; create it first")
    if json_path:
        can_write("--json", os.path.dirname(os.path.abspath(json_path)))
    if figures_dir:
        try:
            os.makedirs(figures_dir, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--figures: cannot create directory {figures_dir} ({exc.strerror})") from None
        can_write("--figures", figures_dir)
    backend = "all" if backend == ["all"] else backend
    if not dtypes:
        dtypes = ["float32", "float64"] if backend == "all" else ["float32"]
    result = throughput.measure(sizes=sizes, batch_sizes=batch_sizes, backends=backend, threads=threads,
                                dtypes=dtypes, activation=activation, optimizer=optimizer, repeats=repeats,
                                breakdown=breakdown, compare=compare, compare_python=compare_python,
                                echo=lambda msg: click.echo(msg, err=True), chunk=_step_chunk() if in_loop else None)
    profile_report.print_result(result)
    if json_path:
        profile_report.write_json(result, json_path)
        click.echo(f"wrote {json_path}")
    if figures_dir:
        from minigrad.profile.figures import throughput_figures

        for path in throughput_figures(result, figures_dir):
            click.echo(f"figure: {path}")


@main.command("merge")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT instead of adding to it.")
@user_errors
def merge_command(out, inputs, overwrite):
    """Combine shard files (`bench --shard I/N`) of one study into OUT; `bench` on OUT finishes the study.

    Refuses files of different configurations and runs whose copies differ; a run found in several files is kept once.
    """
    from minigrad.study.merge import merge

    merge(out, inputs, overwrite=overwrite, echo=click.echo)
