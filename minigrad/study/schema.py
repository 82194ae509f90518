"""What the runs of a `minigrad bench` study hold, checked once where a study is read (api.open_study, a resume,
`experiment gns --study`): a file that lacks it is refused in one line naming it, before a KeyError deep in the
analysis would show as an internal error."""
from collections import Counter

from minigrad.store.reader import damaged

RUN_ATTRS = ("phase", "batch_size", "lr", "seed", "status", "best_val_error")  # what the phases decide on
RUN_COLUMNS = ("step", "examples", "val_error")  # the trace columns the analysis and figures read


def check_runs(study):
    """Raise a StoreError naming `study.path` if a run lacks RUN_ATTRS or RUN_COLUMNS, or if one run alone has or
    lacks a trace column that the other runs of its phase lack or have (one code writes every run of a phase, so
    that is a damaged name). Returns the study."""
    for run_id, run in study.runs.items():
        missing = [k for k in RUN_ATTRS if run.attrs.get(k) is None] + [
            k for k in RUN_COLUMNS if getattr(run.trace.get(k), "ndim", 0) != 1]
        if missing:
            raise damaged(study.path, f"run {run_id} has no {', '.join(missing)}")
    by_phase = {}
    for run_id, run in study.runs.items():
        by_phase.setdefault(run.attrs["phase"], []).append((run_id, set(run.trace)))
    for phase, columns in by_phase.items():
        if len(columns) < 3:
            continue
        counts = Counter(c for _, names in columns for c in names)
        for run_id, names in columns:
            odd = sorted(c for c in counts if (counts[c] == 1 and c in names)
                         or (counts[c] == len(columns) - 1 and c not in names))
            if odd:
                raise damaged(study.path, f"run {run_id}'s trace columns differ from the other {phase} runs' in "
                                          f"{', '.join(odd)}")
    return study
