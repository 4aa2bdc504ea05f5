"""Stage configs from params.yaml sections, with command-line overrides.

Each pipeline stage has one config dataclass whose fields are the keys of its params.yaml
section; a field's trailing `# comment` is its documentation (and its --help text).
Precedence: command-line option > params file section > dataclass default.
"""

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path

import click
import yaml

from recap_data.errors import RecapError

_FIELD_DOC = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def field_docs(cls) -> dict[str, str]:
    """The trailing comment of each field in the class source (and its dataclass bases'): its
    one-line documentation."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                m = _FIELD_DOC.match(line)
                if m:
                    docs[m.group(1)] = m.group(2).strip()
    return docs


def read_section(path: Path | None, section: str, required: bool = True) -> dict:
    """One section of a YAML params file ({} without a file); a missing section is an error if required."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecapError(f"{path}: cannot read params ({str(e).splitlines()[0]})") from None
    if section not in data and not required:
        return {}
    if section not in data:
        raise RecapError(f"{path}: no section '{section}:'; add it (keys: the stage's config fields)")
    if not isinstance(data[section], dict):
        raise RecapError(f"{path}: section '{section}' must be a mapping of field: value")
    return data[section]


def build_config(cls, section: str, values: dict, where: str):
    """cls(**values) with unknown keys and wrong types reported as one line naming the field."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise RecapError(f"{where}: section '{section}' has unknown field '{unknown[0]}'; "
                         f"known fields: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        kind = _scalar_type(hints[key])
        if value is None or kind is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif kind is str and isinstance(value, int) and not isinstance(value, bool):
            values[key] = str(value)  # YAML reads `task: 8` as a number; the field takes an index or a name
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RecapError(f"{where}: field '{section}.{key}' = {value!r} must be {kind.__name__}")
    cfg = cls(**values)
    return cfg.validate() if hasattr(cfg, "validate") else cfg


def load_config(cls, section: str, params: Path | None, overrides: dict | None = None):
    """Config of one stage: the params file's section, then non-None overrides on top."""
    values = dict(read_section(params, section))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_config(cls, section, values, str(params) if params else "command line")


def _scalar_type(hint):
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    return hint if hint in (int, float, str, bool) else None


def config_options(cls, skip: tuple[str, ...] = ()):
    """Click options for the scalar fields of `cls` (default None: the params file or default wins)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)

    def decorate(command):
        for f in reversed(dataclasses.fields(cls)):
            kind = _scalar_type(hints[f.name])
            if f.name in skip or kind is None:
                continue
            flag = f.name.replace("_", "-")
            text = f"{docs.get(f.name, f.name)} [default: {f.default}]"
            if kind is bool:
                option = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=text)
            else:
                option = click.option(f"--{flag}", f.name, type=kind, default=None, help=text)
            command = option(command)
        return command

    return decorate


def pick(options: dict, cls) -> dict:
    """The entries of `options` that are fields of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names}
