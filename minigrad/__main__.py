"""`python -m minigrad` runs the command line, as the `minigrad` script does."""
from minigrad.cli import main

if __name__ == "__main__":
    main(prog_name="minigrad")
