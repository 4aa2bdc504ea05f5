"""Stage configs from params.yaml sections, with command-line overrides.

Each pipeline stage has one config dataclass whose fields are the keys of its params.yaml
section, named once by the class's `section` attribute (recap_data/cli/stages.py maps each
command to the configs it reads); each field is declared with `param(default, "one-line doc")`,
whose doc is kept in the field's metadata and becomes its --help text (an option without one is
an error at import). Precedence: command-line option > params file section > dataclass default,
and an error names where the refused value came from: `params.yaml: rollout: field 'episodes'`,
`rollout: option --episodes`, or the field alone for a default or a value set in code.

Every field is checked where the config is built, the same way for every stage: its type, a
finite value for every float (never NaN or infinity), and the range or choices its annotation
declares, e.g. `steps: Count = param(500, ...)` (Count = Int(1), at least 1) or
`env: Choice("embedded", "libero")`. The same range or choice is the type of the field's
command-line option (a click.Choice lists the choices in --help), so `--lr nan` and `lr: nan` in
a params file are refused alike. A stage's own cross-field rules stay in its `validate()`.
"""

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import click
import yaml

from recap_data.errors import RecapError, first_line


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field: bounds inclusive unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value) -> str | None:
        """Why `value` is out of range (the fix, as 'use ...'), or None."""
        finite = not isinstance(value, float) or math.isfinite(value)
        low_ok = self.low is None or value > self.low or (value == self.low and not self.low_open)
        high_ok = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return None if finite and low_ok and high_ok else f"use {self.describe()}"

    def describe(self) -> str:
        def text(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is not None and self.high is not None:
            return (f"a number in {'(' if self.low_open else '['}{text(self.low)}, {text(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"a number {'>' if self.low_open else '>='} {text(self.low)}"
        if self.high is not None:
            return f"a number {'<' if self.high_open else '<='} {text(self.high)}"
        return "a finite number"


@dataclass(frozen=True)
class OneOf:
    """The allowed values of a text field."""

    values: tuple[str, ...]

    def problem(self, value) -> str | None:
        return None if value in self.values else f"use one of {', '.join(self.values)}"


def Choice(*values: str):
    """A text field that takes one of `values`: `split: Choice("validation", "test") = "validation"`."""
    return Annotated[str, OneOf(tuple(values))]


def Int(low: int | None = None, high: int | None = None):
    """An int field within [low, high]: `tasks: Int(1, 10) = 10`."""
    return Annotated[int, Range(low, high)]


def Float(low: float | None = None, high: float | None = None, low_open: bool = False,
          high_open: bool = False):
    """A finite float field within its bounds: `dropout: Float(0, 1, high_open=True) = 0.3`."""
    return Annotated[float, Range(low, high, low_open, high_open)]


FINITE = Range()  # any float field without a declared range: finite
Count = Int(1)  # 1, 2, ...
Natural = Int(0)  # 0, 1, ...
Seed = Int(0, 2**32 - 1)  # numpy's seeds
Positive = Float(0, low_open=True)
NonNegative = Float(0)
Fraction = Float(0, 1)


class Bounded(click.ParamType):
    """A click type for a number with a Range: a wrong type, NaN, infinity or a value out of
    range is a usage error naming the option and the fix."""

    def __init__(self, kind: type, bounds: Range):
        self.kind, self.bounds = kind, bounds
        self.name = "integer" if kind is int else "float"

    def convert(self, value, param, ctx):
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a valid {self.name}", param, ctx)
        problem = self.bounds.problem(number)
        if problem:
            self.fail(f"{value} is invalid: {problem}", param, ctx)
        return number


# Path types of the command-line options: inputs must exist; a file is never taken for a folder.
InputFile = click.Path(exists=True, dir_okay=False, path_type=Path)
InputDir = click.Path(exists=True, file_okay=False, path_type=Path)
OutputFile = click.Path(dir_okay=False, path_type=Path)
OutputDir = click.Path(file_okay=False, path_type=Path)


def field_spec(hint) -> tuple[type | None, Range | OneOf | None]:
    """(scalar type, declared range or choices) of a field's type hint; floats without a range must
    be finite."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    bounds = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        bounds = next((e for e in extras if isinstance(e, (Range, OneOf))), None)
    kind = hint if hint in (int, float, str, bool) else None
    if kind is float and bounds is None:
        bounds = FINITE
    return kind, bounds if kind in (int, float, str) else None


def is_a(kind: type, value) -> bool:
    """Whether `value` is of a field's scalar type: a bool is never a number, an int is a float."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind) or (kind is float and isinstance(value, int))


class FieldError(RecapError):
    """A field's value refused by its type or declared range; build_config names where it came from."""

    def __init__(self, section: str, field: str, complaint: str):
        super().__init__(f"{section}: field '{field}' {complaint}")
        self.field, self.complaint = field, complaint


def section_of(cls) -> str:
    """The params.yaml section a config class reads (its `section` attribute)."""
    try:
        return cls.section
    except AttributeError:
        raise TypeError(f"config class {cls.__name__} has no `section` attribute naming its params.yaml "
                        "section") from None


def check_fields(cfg) -> None:
    """Each field of a config against its type and declared range (see the module doc)."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        kind, bounds = field_spec(hints[f.name])
        value = getattr(cfg, f.name)
        if value is None or kind is None:
            continue
        if not is_a(kind, value):
            raise FieldError(section_of(cfg), f.name, f"= {value!r} must be {kind.__name__}")
        problem = bounds.problem(value) if bounds else None
        if problem:
            raise FieldError(section_of(cfg), f.name, f"= {value!r} is invalid: {problem}")


def param(default, doc: str):
    """A config field with its one-line documentation, kept in the field's metadata (the --help
    text); a list or dict default is copied for each instance."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def field_doc(f: dataclasses.Field) -> str:
    """The documentation `param` gave a field; a field without one is a programming error."""
    if "doc" not in f.metadata:
        raise TypeError(f"config field '{f.name}' has no documentation: declare it with param(default, doc)")
    return f.metadata["doc"]


def read_section(path: Path | None, section: str, required: bool = True) -> dict:
    """One section of a YAML params file ({} without a file); a missing section is an error if required."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecapError(f"{path}: cannot read params ({first_line(e)}); give a YAML file of "
                         "sections such as `value:`") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise RecapError(f"{path}: params must be a mapping of sections (such as `value:`), not a "
                         f"{type(data).__name__}; see params.yaml")
    if section not in data and not required:
        return {}
    if section not in data:
        raise RecapError(f"{path}: no section '{section}:'; add it (keys: the stage's config fields)")
    if not isinstance(data[section], dict):
        raise RecapError(f"{path}: section '{section}' must be a mapping of field: value")
    return data[section]


# Fields that moved between params sections: (old section, field) -> its section now. A params file
# written before the move gets a one-line error saying where the field lives.
MOVED_FIELDS = {("reward", "n_steps"): "advantage", ("label", "positive_fraction"): "advantage",
                ("label", "threshold"): "advantage"}
# The advantage's fields and the section each lived in before (where older value checkpoints and
# label sets stored them).
ADVANTAGE_FROM = {field: old for (old, field), now in MOVED_FIELDS.items() if now == "advantage"}


def refuse_moved(section: str, values, where: str) -> None:
    """A field of `section` that has moved to another section since is a one-line error saying where."""
    moved = [(f, MOVED_FIELDS[(section, f)]) for f in sorted(values) if (section, f) in MOVED_FIELDS]
    if moved:
        field, now = moved[0]
        raise RecapError(f"{where}: field '{section}.{field}' has moved to section '{now}'; move it there "
                         f"({now}.{field})")


def build_config(cls, values: dict, where: str, options: tuple[str, ...] = ()):
    """cls(**values), checked, with unknown keys and refused values reported as one line naming the
    field and where its value came from: `where` (a params file, or words such as "command line"),
    or the command-line option for the names in `options`."""
    section = section_of(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    refuse_moved(section, unknown, where)
    if unknown:
        raise RecapError(f"{where}: section '{section}' has unknown field '{unknown[0]}'; "
                         f"known fields: {', '.join(names)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    values = dict(values)
    for key, value in values.items():
        kind, _ = field_spec(hints[key])
        if value is None or kind is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif kind is str and isinstance(value, int) and not isinstance(value, bool):
            values[key] = str(value)  # YAML reads `task: 8` as a number; the field takes an index or a name
        elif not is_a(kind, value):
            raise RecapError(f"{where}: field '{section}.{key}' = {value!r} must be {kind.__name__}")
    cfg = cls(**values)  # validate() checks each field's range (check_fields), then the stage's own rules
    if not hasattr(cfg, "validate"):
        return cfg
    from_file = Path(where).is_file()
    try:
        return cfg.validate()
    except FieldError as e:  # say where the value came from
        if e.field in options:
            raise RecapError(f"{section}: option --{e.field.replace('_', '-')} {e.complaint}") from None
        if e.field not in values or not from_file:  # a default, or a value set in code
            raise RecapError(str(e)) from None
        raise RecapError(f"{where}: {e}") from None
    except RecapError as e:  # the stage's own rules: name the params file the values came from
        raise (RecapError(f"{where}: {e}") if from_file else e) from None


def load_config(cls, params: Path | None, overrides: dict | None = None, required: bool = True,
                defaults: dict | None = None):
    """Config of one stage: `defaults` (values recorded elsewhere, such as a checkpoint's, over the
    fields' own), then the params file's section (which may be left out where not `required`), then
    non-None overrides (command-line options) on top."""
    values = {**(defaults or {}), **read_section(params, section_of(cls), required)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return build_config(cls, {**values, **given}, str(params) if params else "command line", tuple(given))


def config_options(cls, skip: tuple[str, ...] = (), default_from: str | None = None):
    """Click options for the scalar fields of `cls` (default None: the params file or default wins);
    `default_from` says in --help where an option left out comes from, instead of the field's default."""
    hints = typing.get_type_hints(cls, include_extras=True)

    def decorate(command):
        for f in reversed(dataclasses.fields(cls)):
            kind, bounds = field_spec(hints[f.name])
            if f.name in skip or kind is None:
                continue
            flag = f.name.replace("_", "-")
            text = f"{field_doc(f)} [default: {f.default if default_from is None else default_from}]"
            if isinstance(bounds, Range) and bounds != FINITE:
                text = f"{text[:-1]}; {bounds.describe()}]"
            if kind is bool:
                option = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=text)
            elif isinstance(bounds, OneOf):
                option = click.option(f"--{flag}", f.name, type=click.Choice(bounds.values), default=None, help=text)
            else:
                option = click.option(f"--{flag}", f.name, type=Bounded(kind, bounds) if bounds else kind,
                                      default=None, help=text)
            command = option(command)
        return command

    return decorate


def pick(options: dict, cls) -> dict:
    """The entries of `options` that are fields of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names}
