"""`minigrad experiment ...`: the classic experiments, one command each."""
import click

from minigrad.machine.settings import OPTIMIZERS

from minigrad.cli.app import float_list, int_list, main, processes_and_threads, user_errors


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

    workers, threads = processes_and_threads(workers, threads)
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
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None)
@click.option("--seeds", type=int, default=None, help="Seeds per setting [3].")
def experiment_keskar(quick, out, overwrite, workers, threads, data_name, epochs, lr, optimizer, seeds):
    """Small batch against large batch (10% of the data) at a fixed epoch budget and learning rate: errors,
    generalisation gap, top Hessian eigenvalue, eps-sharpness, interpolation; then the large batch re-tuned."""
    run_experiment("keskar", quick, out, overwrite, workers, threads, data_name, epochs=epochs, lr=lr, optimizer=optimizer,
                   seeds=seeds)


@experiment.command("smith")
@experiment_options("smith")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None)
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
        from minigrad import api

        kind = api.open_study(study).file.kind  # a damaged study is refused here, before any work
        if kind != "study":
            raise ValueError(f"--study {study} holds a {kind!r} file; give a study file written by `minigrad bench`")
    run_experiment("gns", quick, out, overwrite, workers, threads, data_name, study=study)


@experiment.command("stratified")
@experiment_options("stratified")
@click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [8,64].")
@click.option("--seeds", type=int, default=None, help="Seeds per sampler and batch size [48].")
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


@experiment.command("adam-batch")
@experiment_options("adam-batch")
@click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [1,16,128,1024].")
@click.option("--seeds", type=int, default=None, help="Seeds per rate, arm and batch size [3].")
@click.option("--adam-lr", type=float, default=None, help="Adam's grid centre at B=32, scaled by sqrt(B/32) [2e-3].")
def experiment_adam_batch(quick, out, overwrite, workers, threads, data_name, batch_sizes, seeds, adam_lr):
    """Adam with beta2 fixed against beta2 by its half-life in samples, and SGD without momentum, rates tuned per B:
    steps and examples to target, divergences, the width of the learning-rate basin."""
    run_experiment("adam-batch", quick, out, overwrite, workers, threads, data_name, batch_sizes=batch_sizes,
                   seeds=seeds, adam_lr=adam_lr)


@experiment.command("lr-surge")
@experiment_options("lr-surge")
@click.option("--batch-sizes", default=None, callback=int_list, help="Batch sizes [4,16,64,256,1024,4096].")
@click.option("--seeds", type=int, default=None, help="Seeds per rate, optimizer and batch size [3].")
@click.option("--adam-lr", type=float, default=None, help="Adam's grid centre at B=32, scaled by sqrt(B/32) [2e-3].")
def experiment_lr_surge(quick, out, overwrite, workers, threads, data_name, batch_sizes, seeds, adam_lr):
    """The tuned learning rate against B for SGD and Adam at two targets, next to B_simple from the same trials:
    SGD's rises then saturates, Adam's falls past a peak near B_simple that moves right at a stricter target."""
    run_experiment("lr-surge", quick, out, overwrite, workers, threads, data_name, batch_sizes=batch_sizes,
                   seeds=seeds, adam_lr=adam_lr)


@experiment.command("data-vs-width")
@experiment_options("data-vs-width")
@click.option("--widths", default=None, callback=int_list, help="Hidden widths, two layers each [16,64,256].")
@click.option("--data-fractions", default=None, callback=float_list,
              help="Fractions of the training split, at width 64 [0.125,0.25,0.5,1].")
@click.option("--seeds", type=int, default=None, help="Seeds per rate and batch size [2].")
def experiment_data_vs_width(quick, out, overwrite, workers, threads, data_name, widths, data_fractions, seeds):
    """B_crit across a 16x range of widths at a fixed training set, and across training-set sizes at a fixed
    width: it moves little with width and grows with the data."""
    run_experiment("data-vs-width", quick, out, overwrite, workers, threads, data_name, widths=widths,
                   data_fractions=data_fractions, seeds=seeds)


@experiment.command("cbs")
@experiment_options("cbs")
@click.option("--batch-size", type=int, default=None, help="The base run's batch size [32].")
@click.option("--lr", type=float, default=None, help="The base run's learning rate [0.1].")
@click.option("--at-epochs", default=None, callback=float_list, help="Checkpoints, in epochs [0.25,2,6].")
@click.option("--seeds", type=int, default=None, help="Seeds [4].")
@click.option("--study", type=click.Path(dir_okay=False), default=None,
              help="A `minigrad bench` study of the same data and model: its B_crit along training beside CBS(t).")
def experiment_cbs(quick, out, overwrite, workers, threads, data_name, batch_size, lr, at_epochs, seeds, study):
    """The critical batch size by branching (Merrill et al. 2025): from checkpoints of one run, continue with 1x to
    8x the batch for the same examples; CBS(t) = the largest that makes the same progress; does it rise, then
    flatten?"""
    run_experiment("cbs", quick, out, overwrite, workers, threads, data_name, batch_size=batch_size, lr=lr,
                   at_epochs=at_epochs, seeds=seeds, study=study)
