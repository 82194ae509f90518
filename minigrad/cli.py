"""The `minigrad` command: thin click commands over the library.

Nothing heavy is imported at module level, so `minigrad --help` answers at once and compiles nothing. A user mistake
(a ValueError from the library, or a click usage error) ends in one line on stderr and exit status 2.
"""
import functools
import sys

import click

from minigrad import __version__


def comma_list(convert, what):
    """A click callback: '1,2,4' -> [convert('1'), convert('2'), convert('4')], or a one-line error."""
    def callback(ctx, param, value):
        if value is None or isinstance(value, list):
            return value
        try:
            return [convert(v.strip()) for v in str(value).split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {what}, got {value!r}") from None

    return callback


int_list, float_list, str_list = comma_list(int, "integers"), comma_list(float, "numbers"), comma_list(str, "names")


RESUMES = {"bench", "experiment", "merge"}  # commands whose --out keeps finished work: a rerun resumes it


def user_errors(func):
    """Every way a command can fail ends in one line on stderr, never a traceback.

    Exit status 2: the user can fix it by changing the command, its inputs or the machine's state -- a bad value or
    file (ValueError), a file or directory that cannot be read or written (OSError: permissions, a full disk, a lock),
    too little memory. Exit status 1: a failure that is not the user's mistake (trials that keep failing, a bug);
    MINIGRAD_DEBUG=1 shows its traceback. Ctrl-C stops the workers and exits with 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import os

        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            command = click.get_current_context().command_path
            resume = any(word in command.split() for word in RESUMES)
            click.echo("Interrupted: " + ("finished runs are stored; rerun the same command to resume"
                                          if resume else "nothing was stored"), err=True)
            sys.exit(130)
        except (ValueError, FileNotFoundError) as exc:
            _fail(exc, 2)
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _fail(f"{where}{exc.strerror or exc}", 2)
        except MemoryError:
            _fail("not enough memory for these settings; use smaller --hidden or batch sizes", 2)
        except Exception as exc:  # noqa: BLE001 - a failure that is not the user's: one line, status 1
            if os.environ.get("MINIGRAD_DEBUG"):
                raise
            kind = type(exc).__name__
            _fail(f"{kind}: {exc}" if kind == "TrialError" else
                  f"internal error ({kind}: {exc}); rerun with MINIGRAD_DEBUG=1 for the traceback and report it", 1)

    return wrapper


def _fail(exc, status):
    message = " ".join(str(exc).split()) or type(exc).__name__
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


class OneLineErrors(click.Group):
    """click's usage errors as one line (the message and where to find help), like every other error."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            status = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            click.echo(f"Error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Interrupted", err=True)
            sys.exit(130)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minigrad")
def main():
    """minigrad: which batch size should I use on this machine?

    Measures compute speed (time per step at each batch size) and convergence speed (steps to a target validation
    error at each batch size, learning rate tuned per batch size) with a hand-written Numba MLP.
    """


STUDY_OPTIONS = [
    click.option("--quick", is_flag=True, help="Lower resolution, about a minute: fewer batch sizes, rates, seeds."),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="TOML file with study settings (keys as in --dry-run's output); options override it."),
    click.option("--out", type=click.Path(dir_okay=False), default="minigrad-study.h5", show_default=True,
                 help="HDF5 file; figures are written beside it. An existing file of the same study resumes."),
    click.option("--overwrite", is_flag=True, help="Start over even if --out holds a study."),
    click.option("--dry-run", is_flag=True, help="Print the resolved configuration and trial count; run nothing."),
    click.option("--data", "data_name", default=None, help="Dataset name or .npz/.h5 path [teacher]."),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                 help="Folder with the IDX files of mnist / fashion-mnist [$MINIGRAD_DATA or ./data]."),
    click.option("--n-val", type=int, default=None,
                 help="Validation examples carved from the training set (teacher, mnist, fashion-mnist)."),
    click.option("--hidden", default=None, callback=int_list, help="Hidden widths [64,64]."),
    click.option("--activation", type=click.Choice(["relu", "tanh", "gelu"]), default=None),
    click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam"]), default=None),
    click.option("--momentum", type=float, default=None, help="Momentum (Adam: beta1) [0.9]."),
    click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [1,2,4,...,1024]."),
    click.option("--lrs", "reference_lrs", default=None, callback=float_list,
                 help="Learning rates of the reference run; they centre the per-B grids."),
    click.option("--lr-points", type=int, default=None, help="Learning rates per batch size [5]."),
    click.option("--seeds", type=int, default=None, help="Seeds per cell [5]."),
    click.option("--target", type=float, default=None, help="Validation error to reach [from a reference run]."),
    click.option("--budget-factor", type=float, default=None,
                 help="A tuning trial may take this many times the reference run's steps (examples/B below B_ref) [3]."),
    click.option("--equal-epochs", type=float, default=None, help="Epochs of the equal-budget comparison [5]."),
    click.option("--sampler", type=click.Choice(["shuffle", "replacement", "stratified"]), default=None),
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


def load_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None


@main.group(invoke_without_command=True)
@study_options
@click.pass_context
@user_errors
def bench(ctx, quick, config_path, out, overwrite, dry_run, data_name, data_dir, n_val, workers, executor, scheduler,
          worker_threads, shard, **settings):
    """Which batch size? Compute speed x convergence speed on this machine, stored in --out with figures.

    Runs the default study on the embedded dataset (about 5 minutes on 2 cores; --quick about 1) and prints the
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
    if worker_threads is not None and worker_threads < 1:
        raise click.UsageError("--threads (--worker-threads) must be >= 1")
    if workers is not None and workers < 1:
        raise click.UsageError("--workers must be >= 1 (leave it out for one per core)")
    try:
        shard = parse_shard(shard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    file_settings = load_toml(config_path) if config_path else {}
    quick = quick or bool(file_settings.pop("quick", False))
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
                   f"{config['adaptive_budget']} adaptive + {n_equal} equal-budget = at most "
                   f"{n_ref + n_tune + config['adaptive_budget'] + n_equal} before widening")
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
    api.run_study(config, out, overwrite=overwrite, executor=runner, echo=click.echo, shard=shard)
    if shard is None:
        show_report(out)


def show_report(path, html=False):
    from pathlib import Path

    from minigrad import api
    from minigrad.study.figures import study_figures

    study = api.open_study(path)
    if study.file.kind != "study":
        raise ValueError(f"{path} holds a {study.file.kind!r} file, not a study: `minigrad report` reads the files of "
                         "`minigrad bench` (`minigrad export` reads any)")
    study.report()
    path = Path(path)
    figures = study_figures(study.analysis, study.file, path.parent, stem=path.stem)
    for written in figures:
        click.echo(f"figure: {written}")
    if html:
        from minigrad.study.html import write

        click.echo(f"html: {write(study.analysis, study.file, figures, path.with_suffix('.html'))}")


@main.command("report")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--html", is_flag=True,
              help="Also write one self-contained HTML page beside the file (STUDY.html): the answer and its recipe, "
                   "the table, the fit, every figure inline, the configuration and the machine.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the answer as JSON (rows, fit, b_crit, recommendation) instead of the table and figures.")
@user_errors
def report_command(path, html, as_json):
    """Rebuild a study's table, recommendation and figures from its HDF5 file alone."""
    if as_json:
        import json

        from minigrad import api

        click.echo(json.dumps(api.open_study(path).answer(), indent=2))
        return
    show_report(path, html=html)


def _step_chunk():
    from minigrad.training.train import step_chunk

    return step_chunk


@bench.command("throughput")
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
@click.option("--activation", type=click.Choice(["relu", "tanh", "gelu"]), default="relu", show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam"]), default="sgd",
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


def can_write(option, directory):
    """Create and remove a file in `directory`: the one test of writability that holds for root and for /proc too."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ValueError(f"{option}: cannot write in {directory} ({exc.strerror}); choose another place") from None


# ----------------------------------------------------------------------------------------------- one training run
def budget_options(func):
    for option in reversed([
        click.option("--steps", type=int, default=None, help="Budget in optimizer steps."),
        click.option("--examples", type=int, default=None, help="Budget in training examples seen."),
        click.option("--epochs", type=float, default=None, help="Budget in epochs (default 20 if none is given)."),
    ]):
        func = option(func)
    return func


def check_train_settings(c):
    """The values of `minigrad train`, each once, before any data is loaded or file touched."""
    from minigrad.machine import checks as C

    C.numbers("--hidden", c["hidden"], 1, 1_000_000, integer=True)
    C.number("--batch-size", c["batch_size"], 1, None, integer=True)
    C.number("--lr (learning rate)", c["lr"], 0, 1e6, lo_open=True)
    C.number("--momentum", c["momentum"], 0, 1, hi_open=True)
    C.number("--weight-decay", c["weight_decay"], 0, 1e3)
    C.number("--gamma", c["gamma"], 0, 1e3, lo_open=True)
    C.number("--warmup-epochs", c["warmup_epochs"], 0, 1e5)
    C.number("--batch-growth", c["batch_growth"], 1, 1e6, integer=True)
    C.number("--reference-batch-size", c["reference_batch_size"], 1, None, integer=True)
    for value in c["milestones"]:
        C.number("--milestones", value, 0, 1e5)
    if c["steps"] is not None:
        C.number("--steps", c["steps"], 1, 1e12, integer=True)
    if c["examples"] is not None:
        C.number("--examples", c["examples"], 1, 1e15, integer=True)
    if c["epochs"] is not None:
        C.number("--epochs", c["epochs"], 0, 1e5, lo_open=True)
    if c["target"] is not None:
        C.number("--target (a validation error)", c["target"], 0, 1)
    if c["patience"] is not None:
        C.number("--patience", c["patience"], 1, None, integer=True)
    if c["n_val"] is not None:
        C.number("--n-val", c["n_val"], 1, None, integer=True)
    C.number("--seed", c["seed"], 0, 2**63 - 1, integer=True)
    C.number("--data-seed", c["data_seed"], 0, 2**63 - 1, integer=True)


def make_budget(steps, examples, epochs, default_epochs=20.0):
    from minigrad.training.train import Budget

    given = [v for v in (steps, examples, epochs) if v is not None]
    if len(given) > 1:
        raise click.UsageError("give one budget: --steps, --examples or --epochs")
    return Budget(steps=steps, examples=examples, epochs=epochs if given else default_epochs)


@main.command()
@click.option("--data", "data_name", default="teacher", show_default=True,
              help="Dataset name (teacher, mnist, fashion-mnist, digits) or a .npz/.h5 file with X and y.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the IDX files of mnist / fashion-mnist [$MINIGRAD_DATA or ./data].")
@click.option("--n-val", type=int, default=None,
              help="Validation examples carved from the training set (teacher, mnist, fashion-mnist).")
@click.option("--hidden", default="128,128", show_default=True, callback=int_list, help="Hidden layer widths.")
@click.option("--activation", type=click.Choice(["relu", "tanh", "gelu"]), default="relu", show_default=True)
@click.option("--loss", type=click.Choice(["cross_entropy", "mse"]), default="cross_entropy", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True, help="Base learning rate.")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam"]), default="sgd",
              show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="Momentum (or Adam's beta1).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["constant", "step", "cosine"]), default="constant",
              show_default=True)
@click.option("--milestones", default="", callback=float_list,
              help="Epochs at which the step schedule decays the rate / the batch size grows.")
@click.option("--gamma", type=float, default=0.1, show_default=True, help="Step-decay factor.")
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True, help="Linear learning-rate warm-up.")
@click.option("--batch-growth", type=int, default=1, show_default=True,
              help="Multiply the batch size by this at each milestone (Smith et al. 2017).")
@click.option("--scale-lr", type=click.Choice(["none", "linear", "sqrt"]), default="none", show_default=True,
              help="Scale --lr from --reference-batch-size to --batch-size.")
@click.option("--reference-batch-size", type=int, default=32, show_default=True)
@budget_options
@click.option("--target", type=float, default=None, help="Validation error that counts as reached.")
@click.option("--keep-going", is_flag=True, help="Train the whole budget even after reaching the target.")
@click.option("--patience", type=int, default=None,
              help="Early stopping: evaluations without improvement before stopping (best parameters kept).")
@click.option("--sampler", type=click.Choice(["shuffle", "replacement", "stratified"]), default="shuffle",
              show_default=True)
@click.option("--keep-last", is_flag=True, help="Keep each epoch's last partial batch (default: drop it).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--backend", type=click.Choice(["blas", "blas-unfused", "loops", "loops-parallel"]), default="blas",
              show_default=True)
@click.option("--threads", default="1", show_default=True,
              help="BLAS and Numba threads: a count, or 'auto' (two only where they measure 1.3x faster for this model "
                   "and batch size, and back to one if the machine gets busy). A fixed count gives the same run "
                   "bit for bit every time; two threads on a machine where another program holds a core can be "
                   "10-100x slower.")
@click.option("--seed", type=int, default=0, show_default=True, help="Initialisation and batch order.")
@click.option("--data-seed", type=int, default=0, show_default=True,
              help="Which sample of the dataset and which split (fixed across --seed).")
@click.option("--out", type=click.Path(dir_okay=False), default="runs.h5", show_default=True,
              help="HDF5 file for the trace.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@user_errors
def train(data_name, data_dir, n_val, hidden, activation, loss, batch_size, lr, optimizer, momentum, weight_decay,
          lr_schedule, milestones, gamma, warmup_epochs, batch_growth, scale_lr, reference_batch_size, steps, examples,
          epochs, target, keep_going, patience, sampler, keep_last, dtype, backend, threads, seed, data_seed, out,
          overwrite):
    """Train one run and store its trace; prints a one-line summary."""
    config = {key: value for key, value in locals().items() if key not in ("out", "overwrite")}
    check_train_settings(config)
    budget = make_budget(steps, examples, epochs)
    from minigrad.machine.checks import memory_fits
    from minigrad.training.threads import parse_threads

    try:
        threads = parse_threads(threads)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threads") from None
    from minigrad import store
    from minigrad.machine.progress import progress_bar
    from minigrad.training.schedules import scaled_lr
    from minigrad.training.trial import load_data, prepare, run_trial

    options = {**({"data_dir": str(data_dir)} if data_dir is not None else {}),
               **({"n_val": n_val} if n_val is not None else {})}
    model_config = dict(data=data_name, data_options=options, data_seed=data_seed, hidden=hidden,
                        activation=activation, loss=loss, dtype=dtype, backend=backend, optimizer=optimizer,
                        momentum=momentum, weight_decay=weight_decay)
    spec = dict(run_id="run", batch_size=batch_size, lr=scaled_lr(lr, batch_size, reference_batch_size, scale_lr),
                seed=seed, steps=budget.steps, examples=budget.examples, epochs=budget.epochs, target=target,
                stop_at_target=not keep_going, sampler=sampler, drop_last=not keep_last, patience=patience,
                lr_schedule=dict(kind=lr_schedule, milestones=milestones, gamma=gamma, warmup_epochs=warmup_epochs),
                batch_schedule=dict(milestones=milestones, factor=batch_growth), keep_params=True, threads=threads)
    dataset = load_data(model_config)
    n_train = len(dataset.y_train)
    if not 1 <= batch_size <= n_train:
        raise ValueError(f"--batch-size must lie between 1 and the training split's {n_train} examples")
    memory_fits("this run", [dataset.n_features, *hidden, dataset.n_classes],
                batch_size * batch_growth ** len(milestones), 4 if dtype == "float32" else 8)
    prepare(model_config, spec)  # every check before the output file is touched: a mistake leaves nothing behind
    with store.Store.create(out, config, kind="train", overwrite=overwrite, resume=False) as writer:
        with progress_bar("training", total=1.0) as advance:
            result = run_trial(model_config, spec, progress=lambda fraction: advance(completed=fraction))
        writer.write_run("run", result["attrs"], result["columns"], result["arrays"])
    a = result["attrs"]
    reached = (f"target {target:g} reached at step {a['steps_to_target']} ({a['examples_to_target']} examples)"
               if a["steps_to_target"] is not None else
               (f"target {target:g} not reached" if target is not None else "no target"))
    click.echo(f"{a['status']}: {a['steps']} steps, {a['examples']} examples, {a['compute_s']:.2f} s compute on "
               f"{a.get('threads', '?')} thread(s), {a['eval_s']:.2f} s evaluating; "
               f"val error {a['final_val_error']:.4f} (best {a['best_val_error']:.4f}), test error "
               f"{a['test_error']:.4f}; {reached} -> {out}")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--csv", "csv_dir", type=click.Path(file_okay=False), required=True, help="Folder for the CSV files.")
@user_errors
def export(path, csv_dir):
    """Write a study or run file's summary, throughput and traces as CSV."""
    from minigrad import store

    for written in store.export_csv(path, csv_dir):
        click.echo(f"wrote {written}")


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


@main.group()
def data():
    """Datasets: the embedded default needs nothing; MNIST-family sets are fetched once."""


@data.command()
@click.argument("name", type=click.Choice(["mnist", "fashion-mnist"]))
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to store the files (default: $MINIGRAD_DATA or ./data).")
@user_errors
def fetch(name, data_dir):
    """Download a dataset, verify its SHA-256 checksums, and store it atomically."""
    from minigrad import data as datasets

    for written in datasets.fetch(name, data_dir) or []:
        click.echo(f"have {written}")


# ------------------------------------------------------------------------------------------------- experiments
@main.group()
def experiment():
    """The classic experiments, one command each: HDF5 file + figures + a short printed verdict.

    Each takes --out and --quick (under a minute); the default runs in a few minutes on 2 cores. A rerun with the
    same settings resumes from --out.
    """


def experiment_options(name, data=True):
    options = [
        click.option("--out", type=click.Path(dir_okay=False), default=f"minigrad-{name}.h5", show_default=True,
                     help="HDF5 file; figures are written beside it. The same configuration resumes."),
        click.option("--quick", is_flag=True, help="Lower resolution, under a minute."),
        click.option("--overwrite", is_flag=True, help="Start over even if --out holds this experiment."),
        click.option("--workers", type=int, default=None, help="Worker processes for independent runs [2]."),
        click.option("--threads", type=int, default=1, show_default=True,
                     help="BLAS and Numba threads per training run (see `minigrad train --help`)."),
    ]
    if data:
        options.append(click.option("--data", "data_name", default=None,
                                    help="Dataset name or .npz/.h5 path [teacher]."))

    def wrap(func):
        for option in reversed(options):
            func = option(func)
        return user_errors(func)

    return wrap


def run_experiment(name, quick, out, overwrite, workers, threads, data_name=None, **settings):
    import minigrad.experiments as experiments

    if workers is not None and workers < 1:
        raise click.UsageError("--workers must be >= 1")

    if threads < 1:
        raise click.UsageError("--threads must be >= 1")
    if data_name is not None:
        settings["data"] = data_name
    config = experiments.make_config(name, quick=quick, **settings)
    outcome = experiments.run(name, config, out, overwrite=overwrite, workers=workers, threads=threads,
                              echo=click.echo)
    click.echo(f"{name} verdict:")
    for line in outcome.verdict:
        click.echo(f"  - {line}")
    for path in outcome.figures:
        click.echo(f"figure: {path}")
    click.echo(f"stored in {out}")


@experiment.command("noise")
@experiment_options("noise")
@click.option("--at-epochs", default=None, callback=float_list, help="Training epochs before each measurement [1,10].")
@click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [1,2,4,...,4096].")
@click.option("--draws", type=int, default=None, help="Minibatches per batch size, at least [32].")
def experiment_noise(quick, out, overwrite, workers, threads, data_name, at_epochs, batch_sizes, draws):
    """Spread of minibatch gradients around the full gradient (falls like 1/sqrt(B)) next to the step time, for
    B = 1 to 4096, and mean |G_B|^2 against 1/B."""
    run_experiment("noise", quick, out, overwrite, workers, threads, data_name, at_epochs=at_epochs, batch_sizes=batch_sizes,
                   draws=draws)


@experiment.command("keskar")
@experiment_options("keskar")
@click.option("--epochs", type=float, default=None, help="The fixed epoch budget [10].")
@click.option("--lr", type=float, default=None, help="The fixed learning rate [1e-3, Adam].")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam"]), default=None)
@click.option("--seeds", type=int, default=None, help="Seeds per setting [3].")
def experiment_keskar(quick, out, overwrite, workers, threads, data_name, epochs, lr, optimizer, seeds):
    """Small batch against large batch (10% of the data) at a fixed epoch budget and learning rate: errors,
    generalisation gap, top Hessian eigenvalue, eps-sharpness, interpolation; then the large batch re-tuned."""
    run_experiment("keskar", quick, out, overwrite, workers, threads, data_name, epochs=epochs, lr=lr, optimizer=optimizer,
                   seeds=seeds)


@experiment.command("smith")
@experiment_options("smith")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam"]), default=None)
@click.option("--lr", type=float, default=None, help="Initial learning rate [0.2].")
@click.option("--factor", type=int, default=None, help="Decay / growth factor at each milestone [5].")
@click.option("--seeds", type=int, default=None, help="Seeds per schedule [5].")
def experiment_smith(quick, out, overwrite, workers, threads, data_name, optimizer, lr, factor, seeds):
    """Learning-rate step decay against growing the batch by the same factor at the same milestones."""
    run_experiment("smith", quick, out, overwrite, workers, threads, data_name, optimizer=optimizer, lr=lr, factor=factor,
                   seeds=seeds)


@experiment.command("gns")
@experiment_options("gns")
@click.option("--study", type=click.Path(dir_okay=False), default=None,
              help="A `minigrad bench` study file (default: run a --quick study beside --out).")
def experiment_gns(quick, out, overwrite, workers, threads, data_name, study):
    """The gradient noise scale B_simple over training next to the critical batch size B_crit of a study."""
    if study is not None:
        if data_name is not None:
            raise ValueError("give --data or --study, not both: a study file trains on its own data")
        from minigrad import store

        kind = store.open(study).kind
        if kind != "study":
            raise ValueError(f"--study {study} holds a {kind!r} file; give a study file written by `minigrad bench`")
    run_experiment("gns", quick, out, overwrite, workers, threads, data_name, study=study)


@experiment.command("stratified")
@experiment_options("stratified")
@click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [8,64].")
@click.option("--seeds", type=int, default=None, help="Seeds per sampler and batch size [12].")
def experiment_stratified(quick, out, overwrite, workers, threads, data_name, batch_sizes, seeds):
    """Shuffled against class-stratified batches: steps-to-target and its spread over seeds."""
    run_experiment("stratified", quick, out, overwrite, workers, threads, data_name, batch_sizes=batch_sizes, seeds=seeds)


@experiment.command("momentum")
@experiment_options("momentum")
@click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [8,64,512].")
@click.option("--seeds", type=int, default=None, help="Seeds per learning rate, momentum and batch size [3].")
def experiment_momentum(quick, out, overwrite, workers, threads, data_name, batch_sizes, seeds):
    """Heavy-ball momentum against SGD: steps-to-target per B, lr (and momentum) tuned per B (expectation 8)."""
    run_experiment("momentum", quick, out, overwrite, workers, threads, data_name, batch_sizes=batch_sizes,
                   seeds=seeds)


if __name__ == "__main__":
    main()
