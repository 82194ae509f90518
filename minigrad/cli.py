"""The `minigrad` command: thin click commands over the library.

Nothing heavy is imported at module level, so `minigrad --help` answers at once and compiles nothing. A user mistake
(a ValueError from the library, or a click usage error) ends in one line on stderr and exit status 2.
"""
import functools
import sys

import click

from minigrad import __version__


def int_list(ctx, param, value):
    """'1,2,4' -> [1, 2, 4] (click callback)."""
    if value is None or isinstance(value, list):
        return value
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def float_list(ctx, param, value):
    if value is None or isinstance(value, list):
        return value
    try:
        return [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def user_errors(func):
    """Turn the library's ValueErrors (bad data, bad files, bad settings) into one line and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minigrad")
def main():
    """minigrad: which batch size should I use on this machine?

    Measures compute speed (time per step at each batch size) and convergence speed (steps to a target validation
    error at each batch size, learning rate tuned per batch size) with a hand-written Numba MLP.
    """


@main.group(invoke_without_command=True)
@click.pass_context
def bench(ctx):
    """Measure compute and convergence speed; `bench throughput` measures compute speed alone."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@bench.command("throughput")
@click.option("--sizes", default="784,256,256,10", show_default=True, callback=int_list,
              help="Layer widths, inputs first.")
@click.option("--batch-sizes", default="1,2,4,8,16,32,64,128,256,512,1024,2048,4096", show_default=True,
              callback=int_list, help="Batch sizes to time.")
@click.option("--backend", type=click.Choice(["blas", "loops", "loops-parallel", "all"]), default="blas",
              show_default=True, help="GEMM path; 'all' times every one side by side.")
@click.option("--threads", default=None, callback=int_list,
              help="BLAS and Numba threads, e.g. 1,2 (default: all cores).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--activation", type=click.Choice(["relu", "tanh", "gelu"]), default="relu", show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam"]), default="sgd",
              show_default=True)
@click.option("--repeats", default=None, type=int, help="Timed steps per batch size (default: adaptive).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows as JSON: {\"rows\": [...]}.")
@user_errors
def bench_throughput(sizes, batch_sizes, backend, threads, dtype, activation, optimizer, repeats, json_path):
    """Median time of one training step per batch size, samples/s, GFLOP/s and % of the GEMM ceiling."""
    from minigrad import throughput

    result = throughput.measure(sizes=sizes, batch_sizes=batch_sizes, backends=backend, threads=threads,
                                dtype=dtype, activation=activation, optimizer=optimizer, repeats=repeats)
    throughput.print_result(result)
    if json_path:
        throughput.write_json(result, json_path)
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
