"""Ctrl-C that is not lost. Python raises KeyboardInterrupt wherever the main thread happens to be, and one raised
inside a garbage-collector callback (a weakref's, a __del__) is printed as "Exception ignored" and dropped: the
command then runs on to the end. The CLI's handler also records the keypress, and every progress step checks it.
"""
import signal
import threading

_pressed = threading.Event()


def _handler(signum, frame):
    _pressed.set()
    raise KeyboardInterrupt


def install():
    """Record Ctrl-C as well as raising it, unless SIGINT is ignored or handled by someone else (left alone)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def check():
    """Raise KeyboardInterrupt if Ctrl-C was pressed (under install's handler) since the last clear()."""
    if _pressed.is_set():
        raise KeyboardInterrupt


def clear():
    _pressed.clear()
