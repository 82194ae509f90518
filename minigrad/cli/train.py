"""`minigrad train` (one training run), `export` and `data fetch`."""
import click

from minigrad.cli.app import main, setting_option, user_errors


def budget_options(func):
    for option in reversed([
        setting_option("steps", "train"),
        setting_option("examples", "train"),
        setting_option("epochs", "train", help="Budget in epochs (default 20 if none is given)."),
    ]):
        func = option(func)
    return func


def check_train_settings(c):
    """The values of `minigrad train`, each once, before any data is loaded or file touched."""
    from minigrad.machine import settings

    labels = {"lr": "--lr (learning rate)", "target": "--target (a validation error)",
              "beta2_halflife": "--beta2-halflife (samples)"}
    for name, setting in settings.for_command("train").items():
        if name in c:
            setting.check(c[name], labels.get(name, setting.flag))


def make_budget(steps, examples, epochs, default_epochs=20.0):
    from minigrad.training.train import Budget

    given = [v for v in (steps, examples, epochs) if v is not None]
    if len(given) > 1:
        raise click.UsageError("give one budget: --steps, --examples or --epochs")
    return Budget(steps=steps, examples=examples, epochs=epochs if given else default_epochs)


@main.command()
@setting_option("data", "train", "--data", "data_name")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the IDX files of mnist / fashion-mnist [$MINIGRAD_DATA or ./data].")
@setting_option("n_val", "train")
@setting_option("data_options", "train")
@setting_option("hidden", "train")
@setting_option("activation", "train")
@setting_option("loss", "train")
@setting_option("batch_size", "train")
@setting_option("lr", "train")
@setting_option("optimizer", "train")
@setting_option("momentum", "train")
@setting_option("beta2", "train")
@setting_option("beta2_rule", "train")
@setting_option("beta2_halflife", "train")
@setting_option("weight_decay", "train")
@click.option("--lr-schedule", type=click.Choice(["constant", "step", "cosine"]), default="constant",
              show_default=True)
@setting_option("milestones", "train", show_default=False)
@setting_option("gamma", "train")
@setting_option("warmup_epochs", "train")
@setting_option("batch_growth", "train")
@setting_option("batch_stages", "train")
@click.option("--scale-lr", type=click.Choice(["none", "linear", "sqrt"]), default="none", show_default=True,
              help="Scale --lr from --reference-batch-size to --batch-size.")
@setting_option("reference_batch_size", "train")
@budget_options
@setting_option("target", "train", help="Validation error that counts as reached.")
@click.option("--keep-going", is_flag=True, help="Train the whole budget even after reaching the target.")
@setting_option("patience", "train", help="Early stopping: evaluations without improvement before stopping (best "
                                          "parameters kept).")
@setting_option("sampler", "train")
@click.option("--keep-last", is_flag=True, help="Keep each epoch's last partial batch (default: drop it).")
@setting_option("dtype", "train")
@click.option("--backend", type=click.Choice(["blas", "blas-unfused", "loops", "loops-parallel"]), default="blas",
              show_default=True)
@click.option("--threads", default="1", show_default=True,
              help="BLAS and Numba threads: a count, or 'auto' (two only where they measure 1.3x faster for this model "
                   "and batch size, and back to one if the machine gets busy). A fixed count gives the same run "
                   "bit for bit every time; two threads on a machine where another program holds a core can be "
                   "10-100x slower.")
@setting_option("seed", "train")
@setting_option("data_seed", "train")
@click.option("--out", type=click.Path(dir_okay=False), default="runs.h5", show_default=True,
              help="HDF5 file for the trace.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@user_errors
def train(data_name, data_dir, n_val, data_options, hidden, activation, loss, batch_size, lr, optimizer, momentum, beta2, beta2_rule,
          beta2_halflife, weight_decay, lr_schedule, milestones, gamma, warmup_epochs, batch_growth, batch_stages,
          scale_lr, reference_batch_size, steps, examples, epochs, target, keep_going, patience, sampler, keep_last, dtype,
          backend, threads, seed, data_seed, out, overwrite):
    """Train one run and store its trace; prints a one-line summary."""
    config = {key: value for key, value in locals().items() if key not in ("out", "overwrite")}
    check_train_settings(config)
    budget = make_budget(steps, examples, epochs)
    batch_schedule = dict(milestones=milestones, factor=batch_growth)
    largest = batch_size * batch_growth ** len(milestones)
    if batch_stages is not None:
        from minigrad.training.schedules import parse_stages

        stages = parse_stages(batch_stages)
        if batch_growth != 1 or scale_lr != "none":
            raise click.UsageError("--batch-stages sets B and the rate of every stage: drop --batch-growth and "
                                   "--scale-lr")
        batch_size, lr, scale_lr = stages[0].batch_size, stages[0].lr, "none"
        batch_schedule, largest = dict(stages=batch_stages), max(s.batch_size for s in stages)
    from minigrad.machine.checks import memory_fits
    from minigrad.training.threads import parse_threads

    try:
        threads = parse_threads(threads)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threads") from None
    from minigrad import store
    from minigrad.machine.progress import progress_bar
    from minigrad.training.schedules import scaled_lr
    from minigrad.training.spec import TrialSpec
    from minigrad.training.trial import load_data, prepare, run_trial

    options = dict(data_options)  # what the data loader takes; it refuses an option it does not know
    for key, value, flag in (("data_dir", data_dir, "--data-dir"), ("n_val", n_val, "--n-val")):
        if value is not None:
            if key in options:
                raise click.UsageError(f"{flag} and --data-options {key}=... say the same; give one")
            options[key] = str(value) if key == "data_dir" else value
    model_config = dict(data=data_name, data_options=options, data_seed=data_seed, hidden=hidden,
                        activation=activation, loss=loss, dtype=dtype, backend=backend, optimizer=optimizer,
                        momentum=momentum, weight_decay=weight_decay, beta2=beta2, beta2_rule=beta2_rule,
                        beta2_halflife=beta2_halflife, reference_batch_size=reference_batch_size)
    spec = TrialSpec(run_id="run", batch_size=batch_size, lr=scaled_lr(lr, batch_size, reference_batch_size, scale_lr),
                seed=seed, steps=budget.steps, examples=budget.examples, epochs=budget.epochs, target=target,
                stop_at_target=not keep_going, sampler=sampler, drop_last=not keep_last, patience=patience,
                lr_schedule=dict(kind=lr_schedule, milestones=milestones, gamma=gamma, warmup_epochs=warmup_epochs),
                batch_schedule=batch_schedule, keep_params=True, threads=threads)
    dataset = load_data(model_config)
    n_train = len(dataset.y_train)
    if not 1 <= batch_size <= n_train:
        raise ValueError(f"--batch-size must lie between 1 and the training split's {n_train} examples")
    if largest > n_train and batch_stages is not None:
        raise ValueError(f"--batch-stages asks for B = {largest}, more than the training split's {n_train} examples")
    memory_fits("this run", [dataset.n_features, *hidden, dataset.n_classes],
                largest, 4 if dtype == "float32" else 8)
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
@click.option("--csv", "csv_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for summary.csv, throughput.csv and traces.csv.")
@click.option("--tensorboard", "tb_dir", type=click.Path(file_okay=False), default=None,
              help="New folder of TensorBoard event files: one run directory per trial (phase/B_lr_seed), scalars "
                   "under val/ and train/ against the step, examples_seen, the configuration as text "
                   "(pip install 'minigrad[tensorboard]'; view with `tensorboard --logdir DIR`).")
@click.option("--parquet", "parquet_dir", type=click.Path(file_okay=False), default=None,
              help="New folder for summary, throughput and traces as Parquet (needs pandas and pyarrow).")
@click.option("--convergence", "convergence_path", type=click.Path(dir_okay=False), default=None,
              help="JSON file of the study's convergence half (per B and rate: steps to target per seed, status; the "
                   "fit; its own step times and every further step-time table the file holds), to answer with step times from anywhere: `minigrad report FILE.json "
                   "--step-times times.csv`. Format: docs/usage.md.")
@user_errors
def export(path, csv_dir, tb_dir, parquet_dir, convergence_path):
    """Write a study or run file's summary, throughput and traces as CSV, TensorBoard event files or Parquet, or a
    study's convergence as JSON."""
    from minigrad import store

    if not (csv_dir or tb_dir or parquet_dir or convergence_path):
        raise click.UsageError("say where to: --csv DIR, --tensorboard DIR, --parquet DIR and/or --convergence FILE")
    written = []
    if convergence_path:
        from minigrad.study import convergence

        study = store.open(path)
        if study.kind != "study":
            raise ValueError(f"{path} holds a {study.kind!r} file, not a study: --convergence needs a file of "
                             "`minigrad bench`")
        written.append(convergence.export(study, convergence_path))
    if tb_dir:
        from minigrad.store.exports import export_tensorboard

        runs = export_tensorboard(path, tb_dir)
        click.echo(f"wrote {len(runs)} run directories under {tb_dir} (tensorboard --logdir {tb_dir})")
    if parquet_dir:
        from minigrad.store.exports import export_parquet

        written += export_parquet(path, parquet_dir)
    if csv_dir:
        written += store.export_csv(path, csv_dir)
    for name in written:
        click.echo(f"wrote {name}")


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
