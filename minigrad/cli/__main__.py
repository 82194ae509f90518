"""`python -m minigrad.cli`, as `python -m minigrad` and the `minigrad` script."""
from minigrad.cli import main

main(prog_name="minigrad")
