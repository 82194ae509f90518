"""The command's frame: the `minigrad` group, one-line errors and exit statuses, and the option helpers every
command uses (comma lists, TOML settings, a writability check)."""
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


class TableType(click.ParamType):
    """KEY=VALUE,... -> a table (minigrad.machine.settings.parse_table), or a one-line error; a table as it is."""

    name = "table"

    def convert(self, value, param, ctx):
        from minigrad.machine.settings import parse_table

        if isinstance(value, dict):
            return value
        try:
            return parse_table(value, "it")  # click names the option
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def setting_option(name, command, *decls, **extra):
    """The click option of a setting of minigrad.machine.settings, as `command` takes it: flag, type, choices,
    help, default. `bench` leaves the default to its configuration (a TOML file may set it), so its help shows the
    table's default in brackets; other commands take it as the option's default."""
    from minigrad.machine import settings

    s = settings.SETTINGS[name]
    default = s.defaults[command]
    kind = (dict(type=click.Choice(s.choices)) if s.kind == "choice" else
            dict(int=dict(type=int), float=dict(type=float), ints=dict(type=str, callback=int_list, metavar="N,N,..."),
                 floats=dict(type=str, callback=float_list, metavar="X,X,..."), str={},
                 table=dict(type=TableType(), metavar="KEY=VALUE,..."))[s.kind])
    if command == "bench":
        kw = dict(default=None, help=s.help + ("" if default is None else f" [{s.shown(default)}]"))
    elif default is None:
        kw = dict(default=None, help=s.help)
    else:
        lists = s.kind in ("ints", "floats")  # given as the command line writes them: '128,128'
        kw = dict(default=s.shown(default) if lists else default, show_default=s.kind != "table" or bool(default),
                  help=s.help)
    return click.option(*(decls or (s.flag, name)), **{**kind, **kw, **extra})


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

        from minigrad.machine import interrupts, notices, numba_cache

        interrupts.install()  # so that a Ctrl-C Python drops still stops the work (machine/interrupts.py)
        interrupts.survive_closed_stdout()  # `minigrad bench | head -1` stops the printing, not the study
        notices.install()  # a library's warning as one line, without source paths
        numba_cache.ensure_writable(lambda line: click.echo(line, err=True))  # before anything compiles
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            command = click.get_current_context().command_path
            resume = any(word in command.split() for word in RESUMES)
            interrupts.stopped()
            name, status = interrupts.received()
            click.echo(("Interrupted" if name == "SIGINT" else f"Stopped by {name}") + ": " + (
                "finished runs are stored; rerun the same command to resume" if resume else "nothing was stored"),
                err=True)
            sys.exit(status)
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
    from minigrad.machine.text import one_line

    message = one_line(exc) or type(exc).__name__
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
            from minigrad.machine.text import one_line

            click.echo(f"Error: {one_line(exc.format_message())}{hint}", err=True)
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


MAX_TOML_BYTES = 1 << 20  # a settings file is a few hundred bytes; a bound keeps /dev/zero from filling memory


def load_toml(path):
    """The settings of a TOML file, or a one-line error: never a hang on a FIFO, an endless read of a device, or a
    traceback for a file nested too deeply."""
    import os
    import stat

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): opening a FIFO waits for a writer
        raise ValueError(f"{path} is not a regular file (a FIFO, a device, ...); give a TOML file")
    with open(path, "rb") as f:
        data = f.read(MAX_TOML_BYTES + 1)
    if len(data) > MAX_TOML_BYTES:
        raise ValueError(f"{path} is larger than {MAX_TOML_BYTES >> 20} MiB: not a settings file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not valid TOML: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a settings file") from None


def can_write(option, directory):
    """Create and remove a file in `directory`: the one test of writability that holds for root and for /proc too."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ValueError(f"{option}: cannot write in {directory} ({exc.strerror}); choose another place") from None


def processes_and_threads(workers, threads, option="--threads"):
    """--workers and --threads checked against this machine: fewer than one is refused, threads beyond Numba's
    NUMBA_NUM_THREADS are refused, and more worker processes than cores are cut to the cores with a word (the
    rest would only share them, each with its own copy of the data). Returns (workers, threads)."""
    from minigrad.machine.threads import available_cores, max_threads

    if workers is not None and workers < 1:
        raise click.UsageError("--workers must be >= 1 (leave it out for one per core)")
    if threads is not None and not 1 <= threads <= max_threads():
        raise click.UsageError(f"{option} must lie between 1 and {max_threads()} (NUMBA_NUM_THREADS), got "
                               f"{threads if abs(threads) < 10**12 else 'a larger number'}")
    cores = available_cores()
    if workers is not None and workers > cores:
        click.echo(f"--workers {workers if workers < 10**12 else 'that many'}: this machine has {cores} core(s); "
                   f"running {cores} worker processes", err=True)
        workers = cores
    return workers, threads
