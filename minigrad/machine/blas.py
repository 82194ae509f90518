"""Which BLAS library runs the large-batch SGD step's GEMMs (engine/kernels_large): scipy's OpenBLAS, or Intel's MKL.

Numba lowers np.dot to scipy's OpenBLAS, and every other path of the engine keeps it. kernels_large calls gemm itself
(it needs alpha and beta, which np.dot does not expose) through two symbols, minigrad_sgemm and minigrad_dgemm,
bound when it loads to the addresses load() returns: scipy's OpenBLAS by default, MKL's with MINIGRAD_BLAS=mkl (pip
install 'minigrad[mkl]'). Both have the same Fortran interface, so the compiled kernels (and Numba's cache of them)
do not depend on the choice. On the README's 2-vCPU Xeon the step ran 1.2-1.3x faster on MKL from B = 64 up; on
another CPU, measure (`python bench/compare_frameworks.py`, once with MINIGRAD_BLAS=mkl).

MKL's threads run on Intel's OpenMP runtime (asked for explicitly: see _addresses). KMP_BLOCKTIME, how long they spin
for more work after a GEMM, defaults here to 1 ms instead of 200, so that they are asleep by the time other parallel
code (the fused small-batch step, OpenBLAS in an evaluation) wants the cores.
"""
import ctypes
import os

CHOICES = ("openblas", "mkl")
_bound = None  # (name, addresses) of the loaded library


def choice():
    """The library MINIGRAD_BLAS names (default openblas); ValueError (a one-line CLI error) for any other value."""
    name = os.environ.get("MINIGRAD_BLAS", "openblas").strip().lower() or "openblas"
    if name not in CHOICES:
        raise ValueError(f"MINIGRAD_BLAS={os.environ['MINIGRAD_BLAS']!r} is not a BLAS minigrad can use; "
                         f"set it to {' or '.join(CHOICES)} (or unset it)")
    return name


def mkl_path():
    """Path of MKL's single dynamic library (libmkl_rt) where the `mkl` wheel installed it, or None."""
    from importlib import metadata

    try:
        files = metadata.distribution("mkl").files or []
    except metadata.PackageNotFoundError:
        return None
    found = sorted(os.path.realpath(f.locate()) for f in files if os.path.basename(str(f)).startswith("libmkl_rt.so"))
    return next((path for path in found if os.path.exists(path)), None)


def load():
    """{"sgemm": address, "dgemm": address} of the chosen library's gemm, loading it first (once per process).
    machine.threads.limit_threads calls this before it sets thread counts, so that a thread limit reaches MKL too:
    threadpoolctl sets only the libraries already loaded."""
    global _bound
    if _bound is None:
        name = choice()
        _bound = name, _addresses(name)
    return _bound[1]


def bound():
    """The library the large step's GEMMs run on in this process ("openblas", "mkl"), or None before it loaded."""
    return None if _bound is None else _bound[0]


MKL_THREADING_INTEL = 0  # MKL_Set_Threading_Layer's code for Intel's OpenMP runtime (mkl_service.h)


def _addresses(name):
    if name == "openblas":
        from numba.extending import get_cython_function_address

        return {f: get_cython_function_address("scipy.linalg.cython_blas", f) for f in ("sgemm", "dgemm")}
    path = mkl_path()
    if path is None:
        raise ValueError("MINIGRAD_BLAS=mkl, but MKL is not installed in this environment: pip install "
                         "'minigrad[mkl]' (x86-64 Linux), or unset MINIGRAD_BLAS")
    os.environ.setdefault("KMP_BLOCKTIME", "1")  # read when Intel's OpenMP runtime starts (at the first GEMM)
    library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)  # global: threadpoolctl then finds it and sets its threads
    # MKL runs on GNU OpenMP by itself when Numba's parallel code has loaded it first, and then ran the step's GEMMs
    # 0.7-0.9x as fast as OpenBLAS here (against 1.2x on Intel's runtime): ask for Intel's, before the first call
    library.MKL_Set_Threading_Layer(MKL_THREADING_INTEL)
    return {f: ctypes.cast(getattr(library, f), ctypes.c_void_p).value for f in ("sgemm", "dgemm")}
