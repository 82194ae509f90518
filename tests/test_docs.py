"""The README and docs/ stay true to the code: every relative link leads to a file (and heading) that exists, every
`minigrad ...` line in a shell block parses against the real command line, and nothing the program or the docs
say points at a file the user does not have."""
import re
import shlex
from pathlib import Path

import click
import pytest

from minigrad.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def dead_links(page):
    dead = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not followed (no network here)
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            dead.append(target)
    return dead


def shell_commands(page):
    """Every line of a ```bash block that runs minigrad, comments and placeholders (<...>) aside."""
    text = page.read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["minigrad"] and "<" not in line and "$" not in line:
                yield words[1:]
            elif "&& minigrad" in line:
                yield shlex.split(line.split("&& minigrad", 1)[1], comments=True)


def parse(args):
    """Resolve the subcommands and parse each one's options with click's own parser (an unknown option or a
    missing value raises click.UsageError); values are not converted, so files named in the docs need not exist."""
    command, rest, ctx = main, list(args), click.Context(main, info_name="minigrad")
    while True:
        _, rest, _ = command.make_parser(ctx).parse_args(rest)
        if not (isinstance(command, click.Group) and rest and rest[0] in command.commands):
            return command
        command = command.commands[rest[0]]
        ctx, rest = click.Context(command, info_name=rest[0], parent=ctx), rest[1:]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_dead_links(page):
    assert dead_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_in_the_docs_parses(page):
    for args in shell_commands(page):
        try:
            parse(args)
        except click.UsageError as exc:
            pytest.fail(f"{page.name}: `minigrad {shlex.join(args)}`: {exc.format_message()}")


def test_nothing_points_at_a_file_the_user_does_not_have():
    sources = [p for p in (ROOT / "minigrad").rglob("*.py")] + PAGES
    developers_only = r"SCIENCE\.md|SCIENCE item|SCIENCE:|DESIGN\.md"  # notes of the developers, not shipped
    offenders = [str(p.relative_to(ROOT)) for p in sources if re.search(developers_only, p.read_text())]
    assert offenders == []


def test_negative_control_a_dead_link_and_a_stale_command_are_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nSee [there](missing.md) and [here](#title) and [nowhere](#no-such-heading).\n\n"
                    "```bash\nminigrad bench --no-such-option 3\nminigrad report x.h5 --wide\n```\n")
    assert dead_links(page) == ["missing.md", "#no-such-heading"]
    stale, fine = list(shell_commands(page))
    with pytest.raises(click.UsageError):
        parse(stale)
    parse(fine)
