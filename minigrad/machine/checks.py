"""Checks of user-given settings, shared by the command line, the study and the experiments' configurations.

Each check returns the value (as int or float) or raises ValueError with one line naming the setting, what it must
be and what it got. Values may come from the command line or from TOML, so types are checked too: TOML's "3" is a
string, not a count, and true is not a number. Infinite and NaN values are refused everywhere: a budget of inf
epochs never ends, an lr of NaN retries for minutes before failing.
"""
import math
import numbers as _numbers
import os


def _is_number(value):
    return isinstance(value, _numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


LARGEST_INT = 2**63 - 1  # every count, size and seed ends up in an int64 (NumPy, HDF5): larger ones are refused


def shown(value, width=40):
    """repr(value) cut to `width` characters for a one-line message: a 401-digit integer is "a 401-digit integer"."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** width:
        return f"a {len(str(abs(value)))}-digit integer"
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def number(name, value, lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False):
    """value as a finite number in [lo, hi] (open ends with lo_open / hi_open); integer: a whole number (at most
    LARGEST_INT when hi is None)."""
    kind = "an integer" if integer else "a finite number"
    if integer and hi is None:
        hi = LARGEST_INT
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    top = "inf" if hi is None else "2^63 - 1" if hi == LARGEST_INT else f"{hi:g}"
    span = f" in {left}{'-inf' if lo is None else f'{lo:g}'}, {top}{right}"
    ok = _is_number(value)
    if ok and isinstance(value, _numbers.Integral):
        ok = -LARGEST_INT <= value <= LARGEST_INT  # compared as integers: float() of a huge one overflows
    if ok:
        ok = math.isfinite(value) and (not integer or float(value) == int(value))
    if ok:
        ok = ((lo is None or (value > lo if lo_open else value >= lo))
              and (hi is None or (value < hi if hi_open else value <= hi)))
    if not ok:
        raise ValueError(f"{name} must be {kind}{span}, got {shown(value)}")
    return int(value) if integer else float(value)


def numbers(name, values, lo=None, hi=None, *, lo_open=False, integer=False, unique=False):
    """A non-empty list of numbers, each as number() checks it."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list, got {shown(values)}")
    out = [number(name, v, lo, hi, lo_open=lo_open, integer=integer) for v in values]
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat, got {shown(values)}")
    return out


def choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, got {shown(value)}")
    return value


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_bytes(sizes, batch_size, itemsize=4, copies=1):
    """About the memory one training run takes: parameters, gradients and two optimizer buffers (4 x P), and each
    layer's activations and their gradients at the largest batch size (2 x B x sum of widths); `copies` runs at once."""
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    return copies * itemsize * (4 * params + 2 * batch_size * sum(sizes))


def memory_fits(what, sizes, batch_size, itemsize=4, copies=1):
    """Refuse, before allocating anything, a model or batch that cannot fit in the memory available now."""
    need = training_bytes(sizes, batch_size, itemsize, copies)
    have = available_memory()
    if have is not None and need > 0.8 * have:
        raise ValueError(f"{what} needs about {need / 2**30:,.1f} GiB of memory ({copies} run(s) of layer widths "
                         f"{list(sizes)} at batch size {batch_size}), {have / 2**30:,.1f} GiB are available: "
                         "use smaller --hidden or batch sizes")
    return need


def unreadable(path):
    """Why `path` cannot be opened for reading ("Permission denied", ...), or None when it can: asked before a
    format check that would report an unreadable file as a damaged one."""
    try:
        with open(path, "rb"):
            return None
    except IsADirectoryError:
        return None  # the callers say "is a directory" themselves
    except OSError as exc:
        return exc.strerror or type(exc).__name__
