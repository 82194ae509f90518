"""`minigrad train` (one training run), `export` and `data fetch`."""
import click

from minigrad.cli.app import float_list, int_list, main, user_errors


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
    C.number("--beta2", c["beta2"], 0, 1, lo_open=True, hi_open=True)
    if c["beta2_halflife"] is not None:
        C.number("--beta2-halflife (samples)", c["beta2_halflife"], 0, 1e15, lo_open=True)
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
@click.option("--beta2", type=float, default=0.999, show_default=True,
              help="Adam's beta2; with --beta2-rule halflife, its value at --reference-batch-size.")
@click.option("--beta2-rule", type=click.Choice(["fixed", "halflife"]), default="fixed", show_default=True,
              help="fixed: --beta2 at any batch size; halflife: beta2 = 0.5^(B / t_half), the same half-life in "
                   "samples at every B (t_half from --beta2-halflife, else that of --beta2 at --reference-batch-size).")
@click.option("--beta2-halflife", type=float, default=None, help="t_half in samples for --beta2-rule halflife.")
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
def train(data_name, data_dir, n_val, hidden, activation, loss, batch_size, lr, optimizer, momentum, beta2, beta2_rule,
          beta2_halflife, weight_decay, lr_schedule, milestones, gamma, warmup_epochs, batch_growth, scale_lr,
          reference_batch_size, steps, examples, epochs, target, keep_going, patience, sampler, keep_last, dtype,
          backend, threads, seed, data_seed, out, overwrite):
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
                        momentum=momentum, weight_decay=weight_decay, beta2=beta2, beta2_rule=beta2_rule,
                        beta2_halflife=beta2_halflife, reference_batch_size=reference_batch_size)
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
