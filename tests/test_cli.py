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


def test_config_help_comes_from_field_metadata_and_an_undocumented_field_is_refused():
    from dataclasses import dataclass, field

    import pytest

    from recap_data.config import Count, config_options, param

    @dataclass
    class Documented:
        steps: Count = param(5, "optimizer steps")
        tags: list = param(["a"], "a list default is copied per instance")

    @config_options(Documented)
    @click.command()
    def run(**_):
        pass

    (option,) = [p for p in run.params if p.name == "steps"]
    assert option.help == "optimizer steps [default: 5; a number >= 1]"
    first, second = Documented(), Documented()
    first.tags.append("b")
    assert second.tags == ["a"]

    @dataclass
    class Undocumented:
        steps: Count = field(default=5)

    with pytest.raises(TypeError, match="'steps' has no documentation"):
        config_options(Undocumented)(click.command()(lambda **_: None))


def test_a_choice_field_is_one_check_for_options_and_params_files(tmp_path):
    from dataclasses import dataclass

    import pytest

    from recap_data.config import Choice, build_config, check_fields, config_options, load_config, param
    from recap_data.errors import RecapError

    @dataclass
    class Mode:
        mode: Choice("fast", "slow") = param("fast", "how to go")
        other: Choice("a", "b") | None = param(None, "optional")
        section = "go"

        def validate(self):
            check_fields(self)
            return self

    @config_options(Mode)
    @click.command()
    def run(**_):
        pass

    (option,) = [p for p in run.params if p.name == "mode"]
    assert isinstance(option.type, click.Choice) and option.type.choices == ("fast", "slow")
    assert "[fast|slow]" in run.get_help(click.Context(run))
    params = tmp_path / "params.yaml"
    params.write_text("go: {mode: walk}\n")
    with pytest.raises(RecapError, match=rf"^{params}: go: field 'mode' = 'walk' is invalid: use one of fast, slow$"):
        load_config(Mode, params)
    with pytest.raises(RecapError, match=r"^go: field 'other' = 'c' is invalid: use one of a, b$"):
        Mode(other="c").validate()
    assert load_config(Mode, params, {"mode": "slow"}).mode == "slow" and Mode().other is None
    with pytest.raises(RecapError, match=r"^go: option --other = 'c' is invalid: use one of a, b$"):
        load_config(Mode, params, {"mode": "slow", "other": "c"})  # the refused value is the option's
    with pytest.raises(RecapError, match=r"^go: field 'mode' = 'walk' is invalid"):  # a value set in code
        build_config(Mode, {"mode": "walk"}, "command line")


def test_missing_gl_libraries_are_one_line_errors_naming_the_debian_package(monkeypatch):
    import pytest

    from recap_data.errors import RecapError
    from recap_data.sim import gl, libero

    monkeypatch.setitem(gl.NEEDS, "egl", [*gl.NEEDS["egl"], (("libEGL_missing_for_test.so.1",), "libegl-test0")])
    assert gl.missing_packages("egl")[-1] == "libegl-test0"
    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(RecapError) as e:
        libero.configure()  # the check runs before LIBERO is imported
    assert "\n" not in str(e.value) and "apt-get install" in str(e.value) and "libegl-test0" in str(e.value)
