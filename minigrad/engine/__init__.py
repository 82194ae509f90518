"""The engine: Numba kernels (kernels.py is the file to read), the flat-vector MLP and its optimizers.

Numba's cache (cache=True) checks a compiled function against its own file only. A function that calls into another
file, such as the training loop's run_large (step_loops.py) calling kernels_large.sgd_step, keeps running its old
compiled callee after that other file is edited, silently. So the engine caches into a directory named after a hash
of all its sources (unless NUMBA_CACHE_DIR chooses one): an edit anywhere here recompiles everything once, and never
runs stale code.
"""
import hashlib
import os


def cache_dir(directory=os.path.dirname(os.path.abspath(__file__))):
    """__pycache__/numba-<hash of every .py file in `directory`> inside that directory."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            digest.update(name.encode())
            with open(os.path.join(directory, name), "rb") as fh:
                digest.update(fh.read())
    return os.path.join(directory, "__pycache__", f"numba-{digest.hexdigest()[:16]}")


def _use_cache_dir():
    import numba

    if not os.environ.get("NUMBA_CACHE_DIR"):
        numba.config.CACHE_DIR = cache_dir()


_use_cache_dir()
