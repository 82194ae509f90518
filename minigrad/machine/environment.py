"""What a measurement depends on: the CPU, the BLAS libraries and their threads, Numba, versions.

`environment()` is the detailed record a throughput run keeps; `study_record()` the flat one a study file keeps in
its root attributes (its keys are part of the file format).
"""
import datetime
import os
import platform
import socket
from importlib import metadata


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _numba_cpu():
    try:
        import llvmlite.binding as ll

        return ll.get_host_cpu_name()
    except Exception:  # pragma: no cover - informational only
        return ""


def _blas_info():
    try:
        from threadpoolctl import threadpool_info  # lazily: it inspects every loaded library

        return threadpool_info()
    except Exception:  # metadata must never stop a measurement
        return []


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment():
    """CPU, BLAS libraries (vendor, version, kernel architecture, threads), Numba's threading layer and thread count,
    and versions."""
    import llvmlite
    import numba
    import numpy as np
    import scipy

    from minigrad import __version__

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        layer = "not yet chosen"
    blas = [dict(library=os.path.basename(i.get("filepath", "")), user_api=i.get("user_api"),
                 vendor=i.get("internal_api"), version=i.get("version"), architecture=i.get("architecture"),
                 threads=i.get("num_threads"), threading_layer=i.get("threading_layer"))
            for i in _blas_info()]
    return dict(cpu=cpu_model(), cores=os.cpu_count(), machine=platform.machine(), system=platform.system(),
                python=platform.python_version(), minigrad=__version__, numpy=np.__version__,
                scipy=scipy.__version__, numba=numba.__version__, llvmlite=llvmlite.__version__,
                numba_threading_layer=layer, numba_num_threads=numba.config.NUMBA_NUM_THREADS,
                numba_cpu=_numba_cpu(), blas=blas, step_blas=step_blas(),
                env_vars={k: os.environ[k] for k in sorted(os.environ)
                          if k.startswith(("OPENBLAS_", "OMP_", "NUMBA_", "MKL_", "KMP_", "MINIGRAD_BLAS"))})


def step_blas():
    """The library the large-batch SGD step's GEMMs run on (machine/blas.py): the loaded one, else the one
    MINIGRAD_BLAS names; never an error, as metadata must not stop a measurement."""
    from minigrad.machine import blas

    try:
        return blas.bound() or blas.choice()
    except ValueError:
        return os.environ.get("MINIGRAD_BLAS")


def study_record():
    """Where and with what a study ran: enough to tell whether two files' timings can be compared."""
    import h5py
    import numpy as np

    from minigrad import __version__

    blas = [{k: info.get(k) for k in ("user_api", "internal_api", "version", "architecture", "num_threads")}
            for info in _blas_info()]
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                              "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")}
    threads["cpu_count"] = os.cpu_count()
    return {"minigrad_version": __version__, "numpy_version": np.__version__, "numba_version": _version("numba"),
            "h5py_version": h5py.__version__, "hdf5_version": h5py.version.hdf5_version,
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": socket.gethostname(), "cpu": cpu_model(), "blas": blas, "step_blas": step_blas(),
            "threads": threads}
