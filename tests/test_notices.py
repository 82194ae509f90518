"""A library's warning reaches a user's terminal as one line of minigrad's words: no source path, once."""
import subprocess
import sys

CODE = """
import warnings
from minigrad.machine import notices
{install}
for _ in range(3):
    warnings.warn("overflow encountered in multiply", RuntimeWarning)
"""


def stderr_of(install):
    done = subprocess.run([sys.executable, "-c", CODE.format(install=install)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_warning_is_one_line_without_a_source_path():
    lines = stderr_of("notices.install()").splitlines()
    assert lines == ["note: overflow encountered in multiply (numeric warning inside a computation; the work goes on)"]


def test_negative_control_pythons_own_warning_shows_the_path():
    err = stderr_of("")
    assert "<string>:" in err and "RuntimeWarning" in err
