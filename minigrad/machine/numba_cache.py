"""Where Numba keeps compiled kernels, and a fallback when nowhere is writable.

Numba caches a `cache=True` function in NUMBA_CACHE_DIR if that is set and writable, else in the package's own
__pycache__, else in the user's cache folder (~/.cache/numba); when none can be written (a read-only install, no
writable home, a read-only NUMBA_CACHE_DIR) it raises at import time, which the user would see as an internal
error. `ensure_writable` checks the same places without importing Numba and, when none can be written, points
NUMBA_CACHE_DIR at a temporary folder for this run (worker processes inherit it) and says so.
"""
import atexit
import os
import shutil
import tempfile

_ENGINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine")


def writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def candidates():
    """The folders Numba would try, in its order."""
    places = [os.environ["NUMBA_CACHE_DIR"]] if os.environ.get("NUMBA_CACHE_DIR") else []
    places.append(os.path.join(_ENGINE, "__pycache__"))
    home_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    places.append(os.path.join(home_cache, "numba"))
    return places


def ensure_writable(note=None):
    """None if Numba can cache where it looks; else the temporary folder now in NUMBA_CACHE_DIR (and `note` gets
    one line saying where the cache should go)."""
    places = candidates()
    if any(writable(p) for p in places):
        return None
    folder = tempfile.mkdtemp(prefix="minigrad-numba-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["NUMBA_CACHE_DIR"] = folder
    try:
        import sys

        if "numba" in sys.modules:  # already read its configuration: tell it too
            sys.modules["numba"].config.CACHE_DIR = folder
    except AttributeError:
        pass
    if note is not None:
        note(f"note: Numba cannot cache compiled code in {', '.join(places)} (not writable); compiling into {folder} "
             "for this run only: set NUMBA_CACHE_DIR to a writable folder to keep it between runs")
    return folder
