"""Thread control for every library that computes: the BLAS copies (through threadpoolctl) and Numba.

A step's time depends on both counts, so they are always set together (`use_threads`) and recorded as each library
reports them (`thread_settings`).
"""
import os


def limit_threads(T):
    """threadpool_limits(T) (a context manager) over every BLAS the model may call. Numba loads scipy's OpenBLAS
    lazily, at the first np.dot it compiles, and a limit set before that load does not reach it; so load it first,
    and the library of the large step's GEMMs (machine/blas.py: MKL with MINIGRAD_BLAS=mkl) too."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's OpenBLAS)

    from minigrad.machine import blas

    blas.load()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=T)


def max_threads():
    """The most Numba threads this process can use (NUMBA_NUM_THREADS)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


def available_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class use_threads:
    """BLAS and Numba threads limited to `count` inside the block (None: leave them), restored afterwards."""

    def __init__(self, count):
        self.count = count

    def __enter__(self):
        if self.count:
            import numba

            self._numba = numba.get_num_threads()
            self._limits = limit_threads(self.count)
            numba.set_num_threads(min(self.count, max_threads()))
        return self

    def __exit__(self, *exc):
        if self.count:
            import numba

            self._limits.restore_original_limits()
            numba.set_num_threads(self._numba)
        return False


def set_process_threads(threads=1):
    """For a worker process (or thread): `threads` BLAS and Numba threads from now on; OMP_NUM_THREADS too, so a BLAS
    loaded later starts with that count. Returns the BLAS limits object (keep it alive)."""
    import numba

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    limits = limit_threads(threads)
    numba.set_num_threads(min(threads, max_threads()))
    return limits


def thread_settings():
    """What the limits really set, as the libraries report it: {"numba": n, "blas": {library file: n}}."""
    import numba
    from threadpoolctl import threadpool_info

    return dict(numba=numba.get_num_threads(),
                blas={os.path.basename(i.get("filepath", "")): i.get("num_threads") for i in threadpool_info()})
