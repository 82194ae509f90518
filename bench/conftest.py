"""Shared set-up of the benchmark suites (run with `python -m pytest bench/ --benchmark-json out.json`).

Threads: --threads N (default: all cores) sets both BLAS threads (threadpoolctl, both OpenBLAS copies) and Numba
threads for the whole session. Every benchmark records in extra_info: threads, BLAS vendor/version/kernel
architecture of each loaded BLAS, Numba version and threading layer, and what it timed (batch size, shapes, FLOPs).
The JIT is always warmed up before timing: each benchmark calls its function once first.
"""
import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--threads", type=int, default=None,
                     help="BLAS and Numba threads for the benchmarks (default: all cores)")


@pytest.fixture(scope="session")
def threads(request):
    import numba

    from minigrad.machine.threads import limit_threads

    n = request.config.getoption("--threads") or min(len(os.sched_getaffinity(0)), numba.config.NUMBA_NUM_THREADS)
    limits = limit_threads(n)
    numba.set_num_threads(n)
    yield n
    limits.restore_original_limits()


@pytest.fixture(scope="session")
def environment(threads):
    from minigrad.machine.environment import environment

    return environment()


@pytest.fixture
def record(benchmark, threads, environment):
    """record(**info): put the environment and `info` into this benchmark's extra_info."""
    blas = "; ".join(f"{b['vendor']} {b['version']} {b['architecture']}" for b in environment["blas"])

    def put(**info):
        benchmark.extra_info.update(threads=threads, blas=blas, numba=environment["numba"],
                                    numba_threading_layer=_layer(), numpy=environment["numpy"],
                                    minigrad=environment["minigrad"], cpu=environment["cpu"], **info)

    return put


def _layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet chosen"
