"""Progress for long work: a rich bar on a terminal, a few plain lines otherwise (logs, CI, pipes)."""
import sys
import time
from contextlib import contextmanager

from minigrad.machine import interrupts


@contextmanager
def progress_bar(description, total, stream=None):
    """Yields advance(advance=1 or completed=x): moves the bar. Shows elapsed and remaining time."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if total > 1 else
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=Console(file=stream), transient=False) as progress:
            task = progress.add_task(description, total=total)

            def update(advance=None, completed=None):
                interrupts.check()  # a Ctrl-C that Python dropped stops the work here
                progress.update(task, advance=advance, completed=completed)

            yield update
        return

    started, state = time.monotonic(), {"done": 0.0, "printed": -1}

    def advance(advance=None, completed=None):
        interrupts.check()  # a Ctrl-C that Python dropped stops the work here
        state["done"] = completed if completed is not None else state["done"] + (advance or 0)
        decile = int(10 * state["done"] / total) if total else 10
        if decile > state["printed"]:  # a line per tenth of the work, so logs stay short
            state["printed"] = decile
            elapsed = time.monotonic() - started
            done = f"{state['done']:g}/{total:g}" if total > 1 else f"{100 * state['done'] / total:.0f}%"
            left = (f", ~{elapsed * (total - state['done']) / state['done']:.0f} s left" if state["done"] > 0.01 * total
                    else "")  # an estimate from the first 1% is mostly start-up cost
            print(f"{description}: {done} done, {elapsed:.0f} s elapsed{left}", file=stream, flush=True)

    yield advance
