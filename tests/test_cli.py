"""Every command has help text and is documented in README.md."""

from pathlib import Path

import click

from recap_data.cli.main import cli
from recap_data.cli.reference import commands as reference_commands

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_command_has_help_and_is_in_readme():
    readme = README.read_text()
    commands = {" ".join(path[1:]): cmd for path, cmd in reference_commands(cli) if len(path) > 1}
    assert {"make-demo-data", "shards list", "shards show", "shards verify", "shards import", "sql"} <= set(commands)
    for name, cmd in commands.items():
        assert (cmd.help or "").strip(), f"`recap-data {name}` has no help text"
        assert f"recap-data {name}" in readme, f"`recap-data {name}` is not documented in README.md"
        # (what --help prints is checked against docs/cli.md below; click printing a docstring cannot fail)
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, f"`recap-data {name} {param.opts[0]}` has no help text"


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    readme = README.read_text()
    setup = readme.split("## Set up and run")[1].split("\n## ")[0]
    blocks = setup.split("```")[1::2]  # each starts with its language tag line (maybe empty)
    commands = [ln.strip() for b in blocks for ln in b.splitlines()[1:] if ln.strip() and not ln.startswith("#")]
    assert commands == ["make repro", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_cli_reference_in_docs_is_generated_from_help():
    from recap_data.cli.reference import reference

    docs = README.parent / "docs" / "cli.md"
    assert docs.read_text() == reference(), (
        "docs/cli.md differs from the commands' --help: "
        "run `.venv/bin/python -m recap_data.cli.reference > docs/cli.md`")
