"""dvc.yaml's code dependencies follow the import graph of the commands each stage runs: each
stage lists the subpackage folders (and top-level modules) whose code it runs, so that a change
to any module a stage runs re-runs that stage, and a change to a subpackage it never imports
does not. On a mismatch the test prints the list to put in dvc.yaml. (.dvcignore keeps
__pycache__ out of the folders' hashes.)"""

import ast
import inspect
import re
from pathlib import Path

import click
import yaml

from recap_data.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recap_data"


def module_file(module: str) -> Path | None:
    """The file of a dotted recap_data module (a package's __init__.py), or None."""
    path = ROOT / module.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def imported_modules(tree: ast.AST) -> set[str]:
    """recap_data modules imported anywhere in `tree` (module level and inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recap_data"):
            found.add(node.module)
            for alias in node.names:  # `from recap_data.store import paths` imports a module
                if module_file(f"{node.module}.{alias.name}"):
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recap_data")}
    return found


def closure(modules: set[str]) -> set[str]:
    """The code files `modules` run: their files and those of everything they import, transitively
    (package __init__ files, which hold docstrings only, left out)."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo += imported_modules(ast.parse(module_file(module).read_text()))
    files = {module_file(m).relative_to(ROOT).as_posix() for m in seen}
    return {f for f in files if not f.endswith("__init__.py") and not f.startswith("recap_data/cli/")}


def command_modules(words: list[str]) -> set[str]:
    """What the `recap-data WORDS...` command's own function imports."""
    command = cli
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
    assert not isinstance(command, click.Group), f"`recap-data {' '.join(words)}` names no command"
    function = inspect.unwrap(command.callback)
    return imported_modules(ast.parse(inspect.cleandoc("\n" + inspect.getsource(function))))


def expected_files(cmd: str) -> set[str]:
    """The code files the recap-data commands of `cmd` run."""
    files = set()
    for part in re.split(r"&&|;", cmd):
        words = part.split()
        if words and words[0] == "recap-data":
            files |= closure(command_modules(words[1:]))
    return files


def expected_deps(cmd: str) -> set[str]:
    """The deps for those files: a subpackage's folder, or a top-level module's file."""
    return {str(Path(f).parent) if Path(f).parent != Path("recap_data") else f for f in expected_files(cmd)}


def stages() -> dict[str, dict]:
    data = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in data.items()}


def test_every_stage_depends_on_exactly_the_code_it_runs():
    wrong = {}
    for name, stage in stages().items():
        have = {d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("recap_data/")}
        want = expected_deps(stage["cmd"])
        assert want, f"stage {name}: no recap-data command found in its cmd"
        if have != want:
            wrong[name] = {"missing": sorted(want - have), "extra": sorted(have - want),
                           "deps": sorted(want)}
    assert not wrong, "dvc.yaml code deps differ from the import graph:\n" + "\n".join(
        f"{name}: missing {w['missing']}, extra {w['extra']}; use:\n" + "\n".join(f"      - {d}" for d in w["deps"])
        for name, w in wrong.items())


def test_the_closure_follows_nested_imports():
    """train value's function imports value.train inside its body; the closure reaches the model,
    the label math (its targets) and the store through it."""
    files = expected_files("recap-data train value --shard x --out y")
    assert {"recap_data/value/train.py", "recap_data/value/model.py", "recap_data/label_math/tables.py",
            "recap_data/data/frames.py", "recap_data/store/db.py", "recap_data/io.py"} <= files
    assert not any(d.startswith(("recap_data/policy/", "recap_data/sim/")) for d in files)
    deps = expected_deps("recap-data train value --shard x --out y")
    assert {"recap_data/value", "recap_data/label_math", "recap_data/data", "recap_data/store", "recap_data/io.py"} \
        <= deps and not {"recap_data/policy", "recap_data/sim", "recap_data/labels"} & deps


def registered_command(words: list[str]) -> str | None:
    """The STAGES entry that `recap-data WORDS...` runs, or None for a command that reads no config."""
    from recap_data.cli.stages import STAGES

    for n in (2, 1):
        if " ".join(words[:n]) in STAGES:
            return " ".join(words[:n])
    return None


def test_every_stage_names_the_params_sections_its_commands_read():
    """A stage's `params:` are the sections (cli/stages.py's registry) of the commands it runs with
    --params, and those its cmd interpolates; no others where every command is registered."""
    from recap_data.cli.stages import sections

    wrong = {}
    for name, stage in stages().items():
        have = {p.split(".")[0] for p in stage.get("params", []) if isinstance(p, str)}
        want = set(re.findall(r"\$\{(\w+)\.", stage["cmd"])) - {"item"}
        unregistered = False
        for part in re.split(r"&&|;", stage["cmd"]):
            words = part.split()
            if not words or words[0] != "recap-data":
                continue
            command = registered_command(words[1:])
            unregistered |= command is None
            if command is not None and "--params" in words:
                want |= set(sections(command))
        if want - have or (not unregistered and have - want):
            wrong[name] = f"has {sorted(have)}, its commands read {sorted(want)}"
    assert not wrong, "dvc.yaml params differ from the sections the commands read:\n" + "\n".join(
        f"{name}: {why}" for name, why in wrong.items())
