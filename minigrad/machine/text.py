"""Numbers as people read them, and values as JSON."""
import math
import os


def fmt_seconds(s):
    """'12.3 us', '4.56 ms', '7.89 s'; '-' for None and non-finite values."""
    if s is None or not math.isfinite(s):
        return "-"
    if abs(s) >= 1:
        return f"{s:.2f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_count(x):
    return "-" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def json_default(v):
    """json.dumps default: numpy scalars and arrays, paths."""
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    raise TypeError(f"cannot store a {type(v).__name__} as JSON")


def plain(value):
    """A value made of dicts, lists, numbers and numpy scalars as strict JSON types: dict keys as str, non-finite
    floats as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def one_line(message, width=300):
    """`message` on one line and at most about `width` characters: whitespace runs become one space, and a word
    longer than 80 characters (a path, a number) keeps its start and end around "..."."""
    words = str(message).split()
    text = " ".join(words)
    if len(text) <= width:
        return text
    return " ".join(w if len(w) <= 80 else f"{w[:40]}...{w[-30:]}" for w in words)[:width * 2]
