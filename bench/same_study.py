"""Whether two study files hold the same trial results, bit for bit: every run's traces and its outcome.

    python bench/same_study.py BEFORE.h5 AFTER.h5

Compares the set of runs, every trace column except the timings (<what>_s: compute_s, eval_s, gns_s, ...), and every
run attribute except those that time or place the run (<what>_s seconds, host, dates). Prints what differs; exit status 1 if anything does. Used to
check that a change to the engine leaves the default study's results as they were (`minigrad bench --quick` before
and after).

A run that AFTER stored as CENSORED (stopped early: minigrad.study.plan.censor_bound) is held to what censoring
promises instead: its trace is the first rows of BEFORE's, bit for bit, BEFORE's run had not reached the target by
the step it stopped at, and its batch size, rate and seed are the same; the count of such runs is printed.
"""
import sys

import h5py
import numpy as np

def timing(name):
    # attributes that measure time or record where and when the run happened, not what it computed
    return name.endswith("_s") or name.endswith("_seconds") or name in {"started", "finished", "host", "pid", "date"}


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return a.tobytes() == b.tobytes()  # bit for bit, NaN included
    return bool(np.array_equal(a, b))


def compare(before, after):
    problems, compared = [], dict(runs=0, columns=0, attrs=0, censored=0)
    with h5py.File(before, "r") as f, h5py.File(after, "r") as g:
        runs_f, runs_g = set(f["runs"]), set(g["runs"])
        if runs_f != runs_g:
            problems.append(f"runs differ: only before {sorted(runs_f - runs_g)[:5]}, only after "
                            f"{sorted(runs_g - runs_f)[:5]}")
        for run in sorted(runs_f & runs_g):
            a, b = f["runs"][run], g["runs"][run]
            compared["runs"] += 1
            if b.attrs.get("status") == "CENSORED" and a.attrs.get("status") != "CENSORED":
                compared["censored"] += 1
                problems += censored_problems(run, a, b)
                continue
            for column in sorted(set(a) | set(b)):
                if timing(column):
                    continue
                compared["columns"] += 1
                if column not in a or column not in b or not same(a[column][()], b[column][()]):
                    problems.append(f"{run}: column {column} differs")
            for key in sorted(set(a.attrs) | set(b.attrs)):
                if timing(key):
                    continue
                compared["attrs"] += 1
                if key not in a.attrs or key not in b.attrs or not same(a.attrs[key], b.attrs[key]):
                    problems.append(f"{run}: attr {key} differs: {a.attrs.get(key)!r} / {b.attrs.get(key)!r}")
    return problems, compared


def censored_problems(run, a, b):
    """What is wrong with AFTER's censored copy `b` of BEFORE's run `a` (nothing: [])."""
    rows = len(b["step"][()])
    out = [f"{run}: censored column {c} is not the start of the uncensored one" for c in sorted(set(a) | set(b))
           if not timing(c) and (c not in a or c not in b or not same(a[c][()][:rows], b[c][()]))]
    reached = a.attrs.get("steps_to_target")
    if reached is not None and not (isinstance(reached, float) and np.isnan(reached)) and reached <= b.attrs["steps"]:
        out.append(f"{run}: censored at step {b.attrs['steps']}, but the uncensored run reached the target at {reached}")
    out += [f"{run}: censored copy's {k} differs" for k in ("phase", "batch_size", "lr", "seed")
            if not same(a.attrs[k], b.attrs[k])]
    return out


def main():
    problems, compared = compare(sys.argv[1], sys.argv[2])
    print(f"compared {compared['runs']} runs: {compared['columns']} trace columns and {compared['attrs']} "
          f"attributes (timings left out); {compared['censored']} runs censored after, checked as prefixes")
    for p in problems:
        print(p)
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
