"""The command-line reference (docs/cli.md), generated from the commands' own --help.

    .venv/bin/python -m recap_data.cli.reference > docs/cli.md

`make test` checks that docs/cli.md is what this prints, so an option is never undocumented.
"""

import click

from recap_data.cli.main import cli
from recap_data.cli.stages import sections_table

WIDTH = 100  # fixed, so the text does not depend on the terminal that generated it


def commands(group: click.Group, path: tuple[str, ...] = ("recap-data",)):
    """(command path, command) for the group and everything under it, in order."""
    yield path, group
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def help_text(path: tuple[str, ...]) -> str:
    """`recap-data ... --help` of the command at `path`, at a fixed width."""
    ctx, command = None, cli
    for depth, name in enumerate(path):
        command = cli if depth == 0 else command.commands[name]
        ctx = click.Context(command, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH)
    return command.get_help(ctx)


def reference() -> str:
    parts = ["# recap-data command-line reference\n",
             "Generated from each command's `--help` by `python -m recap_data.cli.reference > docs/cli.md`;",
             "`make test` fails when this file and the commands differ. Options of a stage's config fields",
             "default to the params file's section, then the field's default (README, \"Set up and run\").\n",
             "## params.yaml sections\n", "Each section is one config class; these commands read it "
             "(`recap_data/cli/stages.py`):\n", sections_table(), ""]
    for path, _ in commands(cli):
        parts += [f"## {' '.join(path)}\n", "```", help_text(path).rstrip(), "```\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
