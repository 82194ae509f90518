"""Answers that travel: the study's convergence (steps to target per batch size, rate and seed) does not depend on
the machine, its step times t(B) do. A study re-timed elsewhere (`minigrad report STUDY --retime`), or given step
times measured anywhere (`--step-times FILE`, minigrad.study.step_times), keeps its trials and its original
/throughput table untouched and gains one more named table under /step_times; each table gives one more answer,
T(B) = S(B) t(B) with the stored convergence, shown beside the study's own.
"""
import dataclasses
import datetime
import os
import re
import socket
import time

from minigrad.study.analysis import analyse, step_times


def machine_attrs(threads):
    """Where a table of step times is measured: host, CPU, the step's BLAS, the thread counts tried, the date."""
    from minigrad.machine.environment import cpu_model, step_blas

    return {"source": "minigrad (re-timed)", "host": socket.gethostname(), "cpu": cpu_model(),
            "blas": step_blas() or "openblas", "threads": ",".join(map(str, threads)),
            "measured": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def table_name(*parts):
    """A name for /step_times/<name>: the parts joined, every character a study file's names refuse made '_'."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(str(p) for p in parts if p))[:200].lstrip(".=+-") or "times"


def retime(path, *, threads=None, echo=print):
    """Measure t(B) on this machine for the study's model and batch sizes (the compute-speed phase alone, in this
    process) and add it to the study file as one more step-time table; returns its name. threads: the thread
    counts to try (default: 1 and every core, the faster kept per B, as the study does)."""
    from minigrad import store

    study = store.open(path)
    if study.kind != "study":
        raise ValueError(f"{path} holds a {study.kind!r} file, not a study: --retime needs a file of `minigrad bench`")
    name, rows, attrs = measure(study, threads=threads, echo=echo)
    add_table(path, study, name, rows, attrs)
    echo(f"stored step-time table {name!r} in {path}")
    return name


def measure(study, *, threads=None, echo=print):
    """(name, rows, attrs) of a step-time table measured here for a study (a StudyFile, or a convergence file
    read back), the compute-speed phase of `minigrad bench` alone."""
    from minigrad.study.plan import timed_batch_sizes
    from minigrad.study.sweep import _measure_throughput
    from minigrad.training.trial import load_data

    config = study.config
    dataset = load_data(config)
    sizes = [dataset.n_features, *config["hidden"], dataset.n_classes]
    threads = sorted(set(threads or {1, os.cpu_count() or 1}))
    echo(f"re-timing: one training step of {sizes} at {len(timed_batch_sizes(config))} batch sizes, threads "
         f"{', '.join(map(str, threads))}, on this machine")
    attrs = machine_attrs(threads)
    start = time.perf_counter()
    measured = _measure_throughput({"sizes": sizes, "batch_sizes": timed_batch_sizes(config), "backends": "blas",
                                    "dtypes": config["dtype"], "activation": config["activation"],
                                    "optimizer": config["optimizer"], "threads": threads})
    echo(f"re-timed in {time.perf_counter() - start:.1f} s")
    name = table_name(attrs["host"], attrs["blas"], "thr" + attrs["threads"].replace(",", "+"),
                      attrs["measured"][:19].replace(":", ""))
    rows = [dict(row, host=attrs["host"]) for row in measured["rows"]]
    return name, rows, dict(attrs, ceiling_gflops=measured.get("ceiling_gflops"))


def framework_step(study):
    """The step `--step-times torch|jax` times for a study: its model (sizes, activation, dtype), optimizer (with
    its momentum and beta2) and batch sizes, in frameworks.measure's keywords; ValueError for a study whose step the
    frameworks' worker does not write (a loss other than softmax cross-entropy)."""
    from minigrad.profile.throughput import LR
    from minigrad.training.trial import load_data

    config = study.config
    if config.get("loss", "cross_entropy") != "cross_entropy":
        raise ValueError(f"--step-times torch|jax times a softmax cross-entropy step, and this study trains with "
                         f"loss {config['loss']!r}; time its step yourself and pass --step-times FILE")
    dataset = load_data(config)
    return dict(sizes=[dataset.n_features, *config["hidden"], dataset.n_classes],
                batch_sizes=list(config["batch_sizes"]), dtype=config["dtype"], activation=config["activation"],
                optimizer=config["optimizer"], lr=LR, momentum=config.get("momentum"),
                beta2=config.get("beta2") if config.get("beta2_rule", "fixed") == "fixed" else None)


def measure_framework(study, name, *, threads=None, echo=print):
    """(name, rows, attrs) of step times of PyTorch eager ("torch") or JAX jit ("jax") on this machine, for the
    study's model, optimizer and batch sizes (framework_step): `bench throughput --compare`'s timing
    (minigrad.profile.frameworks, in a subprocess of $MINIGRAD_COMPARE_PYTHON or this interpreter), in rounds, the
    faster thread count kept per B. ValueError (one line) when the framework is missing or fails."""
    from minigrad.profile import frameworks

    step = framework_step(study)
    threads = sorted(set(threads or {1, os.cpu_count() or 1}))
    backend = frameworks.FRAMEWORKS[frameworks.parse_compare(name)[0]]
    echo(f"timing {backend}: one training step of {step['sizes']} at {len(step['batch_sizes'])} batch sizes, "
         f"threads {', '.join(map(str, threads))}")
    start = time.perf_counter()
    dtype = step.pop("dtype")
    # the framework's skip reason is said once, in the error below
    quiet = (lambda msg: None if msg.endswith("; skipped") else echo(msg))  # noqa: E731
    rows, skipped = frameworks.measure([name], step.pop("sizes"), step.pop("batch_sizes"), threads, [dtype],
                                       echo=quiet, **step)
    if skipped:
        raise ValueError(f"--step-times {name}: {skipped[name].removesuffix('; skipped')}; or set "
                         "MINIGRAD_COMPARE_PYTHON to an interpreter that has it")
    echo(f"timed in {time.perf_counter() - start:.1f} s")
    fastest = {}
    for row in rows:
        if row["batch_size"] not in fastest or row["step_time_s"] < fastest[row["batch_size"]]["step_time_s"]:
            fastest[row["batch_size"]] = row
    attrs = dict(machine_attrs(threads), source=f"{backend} {rows[0].get('version', '')}".strip())
    attrs.pop("blas")
    table = table_name(backend, attrs["host"], "thr" + attrs["threads"].replace(",", "+"),
                       attrs["measured"][:19].replace(":", ""))
    return table, [dict(fastest[B], host=attrs["host"]) for B in sorted(fastest)], attrs


def add_table(path, study, name, rows, attrs):
    """Write /step_times/<name> through the study's one writer (its lock and atomic commit): the trials and
    /throughput are copied as they are."""
    from minigrad import store

    with store.Store.create(path, study.config, kind=study.kind) as writer:
        writer.write_step_times(name, rows, attrs)


def other_analyses(study_file, extra=()):
    """[(name, attrs, Analysis)] of every further step-time table of the file, then of `extra` ((name, attrs, rows)
    not stored), each analysed with the stored convergence. A table lacking a batch size of the study is refused
    (ValueError)."""
    tables = [(n, t["attrs"], t["rows"]) for n, t in study_file.step_times.items()] + list(extra)
    out = []
    for name, attrs, rows in tables:
        check_covers(study_file, f"step-time table {name!r}", rows)
        out.append((name, attrs, analyse(dataclasses.replace(study_file, throughput=rows))))
    return out


def check_covers(study_file, name, rows):
    """Every batch size the study tuned must have a step time in `rows`; name: what to call them in the error."""
    tuned = {int(r.attrs["batch_size"]) for r in study_file.runs.values() if r.attrs.get("phase") == "tune"}
    missing = sorted(tuned - set(step_times(rows)))
    if missing:
        raise ValueError(f"{name}: no step time for batch size(s) {', '.join(map(str, missing))} of the study; give "
                         f"one for every batch size it tuned ({', '.join(map(str, sorted(tuned)))})")
