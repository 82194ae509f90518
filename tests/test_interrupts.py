"""A Ctrl-C that Python drops (raised inside a garbage-collector callback) still stops the work at the next progress
step, once the CLI's handler is installed."""
import io
import signal
import sys
import weakref

import pytest

from minigrad.machine import interrupts
from minigrad.machine.progress import progress_bar


class Thing:
    pass


def ctrl_c_inside_a_gc_callback():
    # the KeyboardInterrupt is raised inside a weakref callback: Python prints "Exception ignored" and drops it
    thing = Thing()
    weakref.finalize(thing, signal.raise_signal, signal.SIGINT)
    del thing


@pytest.fixture
def sigint_handler(monkeypatch):
    # Python's default handler for the test, and a record of the exceptions Python drops
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: dropped.append(info.exc_type))
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.clear()
    yield dropped
    signal.signal(signal.SIGINT, saved)
    interrupts.clear()


def test_a_dropped_ctrl_c_stops_the_next_progress_step(sigint_handler):
    interrupts.install()
    with progress_bar("work", 10, stream=io.StringIO()) as advance:
        advance(1)
        ctrl_c_inside_a_gc_callback()  # a raise there would be dropped by Python: the handler only records it
        assert sigint_handler == []  # nothing raised into the callback (no "Exception ignored" on stderr)
        with pytest.raises(KeyboardInterrupt):
            advance(1)


def test_without_the_handler_the_dropped_ctrl_c_is_lost(sigint_handler):
    # negative control: Python's own handler raises in the callback, the exception is dropped, nothing remembers it
    with progress_bar("work", 10, stream=io.StringIO()) as advance:
        ctrl_c_inside_a_gc_callback()
        advance(1)
        advance(1)
    assert sigint_handler == [KeyboardInterrupt]  # it happened, and was lost


def test_an_ignored_sigint_stays_ignored(sigint_handler):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.install()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
