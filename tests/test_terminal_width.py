"""`minigrad report` in a real terminal (tmux) of 80, 100 and 160 columns: the table keeps the columns that fit, so
no number is cut and every row is one line; the columns left out are named. Skipped where tmux is missing."""
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import tomllib

    from minigrad.study.config import make_config
    from tests.test_bad_input import SMALL_TOML, _fake_study

    path = tmp_path_factory.mktemp("tty") / "s.h5"
    _fake_study(path, make_config(**tomllib.loads(SMALL_TOML)))
    return path


def in_tmux(command, width, tmp_path):
    """What a terminal `width` columns wide shows of `command` (a shell line), scrollback included."""
    session = f"minigrad-test-{width}-{time.monotonic_ns()}"
    done = tmp_path / f"done-{width}"
    line = f"{command}; touch {shlex.quote(str(done))}; sleep 60"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", "60", line], check=True)
    try:
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), "the command did not finish in the terminal"
        shown = subprocess.run(["tmux", "capture-pane", "-p", "-S", "-", "-t", session], capture_output=True,
                               text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return shown


def fits(shown, batch_sizes):
    """Whether the table shown is whole: its heading line has every column it shows (all of them but the ones the
    note under it names), and each batch size's row is one line with a cell under every heading."""
    from minigrad.study.report import COLUMNS

    text = " ".join(shown.split())
    left_out = re.search(r"\((\d+) columns left out to fit", text)
    expected = len(COLUMNS) - (int(left_out.group(1)) if left_out else 0)
    lines = shown.splitlines()
    header = next((line for line in lines if "steps to target" in line), "")
    cells = lambda line: re.split(r"\s{2,}", line.strip())
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in map(str, batch_sizes)]
    return (len(cells(header)) == expected and len(rows) == len(batch_sizes)
            and all(len(cells(row)) == expected and "…" not in row for row in rows))


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_table_fits_the_terminal(study, tmp_path, width):
    from minigrad import api

    batch_sizes = [r["batch_size"] for r in api.open_study(study).answer().rows]
    shown = in_tmux(f"{shlex.quote(sys.executable)} -m minigrad report {shlex.quote(str(study))}", width, tmp_path)
    assert fits(shown, batch_sizes), shown
    header = next(line for line in shown.splitlines() if "steps to target" in line)
    assert "time to target" in header and "best lr" in header and "step time" in header
    if width < 160:
        assert "columns left out to fit" in " ".join(shown.split())


def test_negative_control_every_column_in_a_narrow_terminal_is_seen_cut(study, tmp_path):
    from minigrad import api

    batch_sizes = [r["batch_size"] for r in api.open_study(study).answer().rows]
    shown = in_tmux(f"{shlex.quote(sys.executable)} -m minigrad report --wide {shlex.quote(str(study))}", 80,
                    tmp_path)
    assert not fits(shown, batch_sizes)
