"""Python warnings, on a user's terminal, as one line of minigrad's own words: no source paths, no code lines, each
message once. The numerics are meant to raise none (a value that blows up becomes NaN with a reason where it is
made); this is the net under them, installed by the CLI in the driver and in every worker process."""
import sys
import warnings

_seen = set()


def _show(message, category, filename, lineno, file=None, line=None):
    text = " ".join(str(message).split())
    if text in _seen:
        return
    _seen.add(text)
    what = "numeric warning" if issubclass(category, RuntimeWarning) else "warning"
    try:
        print(f"note: {text} ({what} inside a computation; the work goes on)", file=file or sys.stderr)
    except (OSError, ValueError):  # a closed stderr: nothing to tell
        pass


def install():
    warnings.showwarning = _show
