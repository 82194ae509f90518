"""The `minigrad` command: thin click commands over the library.

Nothing heavy is imported at module level, so `minigrad --help` answers at once and compiles nothing. A user mistake
(a ValueError from the library, or a click usage error) ends in one line on stderr and exit status 2.
"""
from minigrad.cli import experiment, study, train  # noqa: F401 (each module adds its commands to main)
from minigrad.cli.app import load_toml, main
from minigrad.cli.study import show_report

__all__ = ["main", "load_toml", "show_report"]
