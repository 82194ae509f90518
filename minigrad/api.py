"""The Python API under the CLI: the same functions `minigrad bench` and `minigrad report` call.

    import minigrad
    config = minigrad.make_config(quick=True, batch_sizes=[1, 8, 64, 512])
    study = minigrad.run_study(config, "study.h5")          # or minigrad.open_study("study.h5")
    study.summary()                                         # per batch size: a pandas DataFrame (columns if no pandas)
    study.traces()                                          # every evaluation point of every run, long format
    study.analysis                                          # fit, B_crit, recommendation (minigrad.study.analysis)
    study.answer()                                          # the answer every output renders (.to_dict(): --json)
    study.figures()                                         # {name: matplotlib Figure}; no backend is switched

Nothing here compiles anything until a study runs.
"""
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from minigrad import store
from minigrad.study.config import make_config  # noqa: F401 - part of the API


def run_study(config, out="minigrad-study.h5", *, overwrite=False, executor=None, echo=print, shard=None,
              measure_throughput=True):
    """Run (or resume) a study from `config` (make_config) into the HDF5 file `out`; returns the Study.
    executor: minigrad.study.executors.LocalExecutor (default: one worker process per core), DaskExecutor or
    InlineExecutor (this process). measure_throughput=False skips the compute-speed phase (no step times, so no
    time-to-target: convergence only)."""
    from minigrad.study.sweep import run_study as run

    run(config, out, overwrite=overwrite, executor=executor, echo=echo, shard=shard,
        measure_throughput=measure_throughput)
    return open_study(out)


def open_study(path):
    """A study file read into memory (the file is closed again; a file whose runs are not a study's is refused), or
    a convergence file (`minigrad export STUDY --convergence FILE.json`: the study without its traces)."""
    if str(path).lower().endswith(".json"):
        from minigrad.study import convergence

        return Study(convergence.read(path))
    from minigrad.study.schema import check_runs

    study = store.open(path)
    return Study(check_runs(study) if study.kind == "study" else study)


@dataclass
class Study:
    """A study file with its analysis, as tables and figures."""

    file: store.StudyFile
    extra_times: tuple = ()  # (name, attrs, rows) of step times answered for but not stored (a convergence file)

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def config(self) -> dict:
        return self.file.config

    @cached_property
    def analysis(self):
        """The fit, B_crit and recommendation (minigrad.study.analysis.Analysis), computed from the file alone."""
        from minigrad.study import analysis

        return analysis.analyse(self.file)

    def answer(self):
        """The answer (minigrad.study.answer.Answer) that the terminal, `report --json`, the HTML page and this API
        all render: str(answer) is the sentence and its recipe; answer.to_dict() is what `minigrad report STUDY
        --json` prints (rows per batch size with intervals, fit, b_crit, recommendation with its recipe, notes,
        equal budget, adaptive phase, configuration, machine); in a notebook it shows as the answer card."""
        from minigrad.study import answer
        from minigrad.study.retime import other_analyses

        return answer.of(self.analysis, self.file.attrs, others=other_analyses(self.file, self.extra_times))

    def retime(self, threads=None, echo=print):
        """Measure t(B) on this machine for the study's model and batch sizes (the compute-speed phase alone) and
        store it in the file as one more step-time table; the trials and the original table stay as they were.
        Returns the Study read again, whose answer() shows every table's answer side by side."""
        from minigrad.study.retime import retime

        retime(self.path, threads=threads, echo=echo)
        return open_study(self.path)

    def summary(self):
        """One row per batch size: step time, tuned lr, steps-, examples- and time-to-target, status."""
        return as_table(self.analysis.rows)

    def runs(self):
        """One row per stored run: its id and attributes (batch size, lr, seed, phase, status, ...)."""
        return as_table(self.file.summary())

    def traces(self, phase=None):
        """Every evaluation point of every run (of `phase`, if given), one row each, with run_id, phase, batch_size,
        lr and seed next to the trace columns (step, examples, val_error, ...)."""
        rows = []
        for run_id, run in self.file.runs.items():
            if phase is not None and run.attrs.get("phase") != phase:
                continue
            keys = {k: run.attrs.get(k) for k in ("phase", "batch_size", "lr", "seed")}
            columns = {k: v for k, v in run.trace.items() if getattr(v, "ndim", 0) == 1}
            n = len(next(iter(columns.values()), []))
            rows += [{"run_id": run_id, **keys, **{k: v[i].item() for k, v in columns.items() if len(v) == n}}
                     for i in range(n)]
        return as_table(rows)

    def figures(self):
        """{name: matplotlib Figure} of the six study figures; show one by leaving it as a notebook cell's value."""
        from minigrad.study.figures import make_figures

        return make_figures(self.analysis, self.file)

    def report(self, console=None, wide=False):
        """Print the table and the recommendation, as `minigrad report` does (wide: every column)."""
        from minigrad.study import report

        report.print_report(self.answer(), console, wide=wide)


def as_table(rows):
    """A list of dicts as a pandas DataFrame when pandas is installed, else as {column: list}."""
    try:
        import pandas
    except ImportError:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        return {k: [row.get(k) for row in rows] for k in keys}
    return pandas.DataFrame(rows)
