"""Child process of the kill test in test_store.py: writes runs into a study file until it is killed.

Prints "ready" once imported, then each run id after write_run has returned for it: the parent kills it with SIGKILL
and checks that every printed run is in the file, intact. Runs are made from their index, so the parent can
rebuild them to compare. `python _store_kill_writer.py PATH POINTS naive` appends in place without the journal:
the negative control.
"""
import sys

import numpy as np

from minigrad import store


def make_run(i: int, n: int):
    rng = np.random.default_rng(i)
    attrs = {"batch_size": 2 ** (i % 8), "lr": 0.1 / (i + 1), "optimizer": "sgd", "seed": i,
             "status": "COMPLETE" if i % 3 else "DIVERGED", "steps_to_target": i if i % 3 else None}
    trace = {"step": np.arange(n, dtype=np.int64) * (i + 1),
             "train_loss": rng.random(n),                     # noise: compresses badly, so writes take time
             "val_error": rng.random(n).astype(np.float32)}
    arrays = {"params": rng.standard_normal(n // 4)}
    return attrs, trace, arrays


def run_id(i: int) -> str:
    return f"r{i:05d}"


def naive(path: str, n: int) -> None:
    """The negative control: append each run to the study file in place (open, write, close), no journal."""
    import h5py

    print("ready", flush=True)
    i = 0
    while True:
        attrs, trace, arrays = make_run(i, n)
        with h5py.File(path, "a", libver=store._LIBVER) as f:
            g = f["runs"].create_group(run_id(i))
            g.attrs.update({k: v for k, v in attrs.items() if v is not None})
            for name, a in trace.items():
                g.create_dataset(name, data=a, chunks=True, maxshape=(None,), compression="gzip", shuffle=True)
            g.create_dataset("arrays/params", data=arrays["params"], compression="gzip", shuffle=True)
        print(run_id(i), flush=True)
        i += 1


def main(path: str, n: int, flush_every: int, stop: int) -> None:
    print("ready", flush=True)
    with store.Store.create(path, {"test": "kill", "points": n}) as w:
        i = len(w.completed_run_ids())  # one writer writes in order, so the stored runs are r0 .. r(i-1)
        while i < stop:
            w.write_run(run_id(i), *make_run(i, n))
            print(run_id(i), flush=True)
            i += 1
            if i % flush_every == 0:
                w.flush()  # commits happen mid-study too, so kills land in them


if __name__ == "__main__":
    if sys.argv[3] == "naive":
        naive(sys.argv[1], int(sys.argv[2]))
    else:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
