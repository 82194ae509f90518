"""Ctrl-C that is not lost. Python raises KeyboardInterrupt wherever the main thread happens to be, and one raised
inside a garbage-collector callback (a weakref's, a __del__) is printed as "Exception ignored" and dropped: the
command then runs on to the end. The CLI's handler also records the keypress, and every progress step checks it.

SIGTERM (a `kill`, a batch scheduler's time limit) and SIGHUP (the terminal closed) are treated the same way: the
work stops as on Ctrl-C, finished work is kept, and the command exits with 128 + the signal's number.
"""
import os
import signal
import threading
import weakref

_pressed = threading.Event()
_received = []  # the signal that stopped the work, for the exit message and status


def _handler(signum, frame):
    _pressed.set()
    _received[:] = [signum]
    if frame is not None and (frame.f_code.co_filename == weakref.__file__ or frame.f_code.co_name == "__del__"):
        return  # inside a garbage-collector callback a raise is printed as "Exception ignored" and dropped: the
        # recorded press stops the work at the next progress step instead (check)
    raise KeyboardInterrupt


def helpers_ignore_hangup():
    """Start multiprocessing's resource tracker with SIGHUP ignored (it ignores SIGINT and SIGTERM itself): a
    closed terminal would kill it, and the tracker started again in its place prints a traceback for every
    semaphore it never saw. Call before starting worker processes."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return  # signal dispositions can be changed only from the main thread (a pool restarted from another keeps
        # the tracker it has)
    from multiprocessing import resource_tracker

    saved = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # inherited by the tracker: an ignored signal stays so
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, saved)


def install():
    """Record Ctrl-C as well as raising it, unless SIGINT is ignored or handled by someone else (left alone); and
    stop on SIGTERM and SIGHUP as on Ctrl-C where they still have their default action (killing the process on
    the spot, with worker processes and their semaphores left behind)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, _handler)


def stopped():
    """The work has stopped and the command is exiting: a further signal (a second Ctrl-C, the repeat above) is
    ignored rather than raised in the interpreter's shutdown."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is _handler:
            signal.signal(number, signal.SIG_IGN)


def received():
    """(name, exit status) of the signal that stopped the work: ("SIGINT", 130) for Ctrl-C."""
    number = _received[0] if _received else signal.SIGINT
    return signal.Signals(number).name, 128 + int(number)


def check():
    """Raise KeyboardInterrupt if Ctrl-C was pressed (under install's handler) since the last clear()."""
    if _pressed.is_set():
        raise KeyboardInterrupt


def clear():
    _pressed.clear()


class _StopPrintingOnClosedPipe:
    """sys.stdout that stops printing, and nothing else, when the reader goes away (`minigrad bench | head -1`):
    the rest of the output goes to /dev/null, so the work goes on and the interpreter's last flush is quiet."""

    def __init__(self, stream):
        self._stream = stream

    def _closed(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()
            self._stream.flush()  # what was buffered for the closed pipe now goes to /dev/null

    def __getattr__(self, name):
        return getattr(self._stream, name)


def survive_closed_stdout():
    """Make a closed stdout stop only the printing (see _StopPrintingOnClosedPipe)."""
    import sys

    stream = sys.stdout
    if stream is None or isinstance(stream, _StopPrintingOnClosedPipe):
        return
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing to do
        return
    sys.stdout = _StopPrintingOnClosedPipe(stream)
