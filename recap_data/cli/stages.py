"""The stage registry: each command that reads params.yaml, and the config classes it reads, each
from its own section (the class's `section`). The commands take their config options and their
`--params` help from it, docs/cli.md lists it (reference.py), and tests check dvc.yaml's
`params:` and the presets in pipelines/ against it.
"""

import click

from recap_data.config import InputFile, config_options, load_config, pick, section_of
from recap_data.data.base_data import BaseDataConfig
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.labels.write import LabelConfig
from recap_data.policy.train import PolicyTrainConfig
from recap_data.sim.evaluate import EvalConfig
from recap_data.sim.rollout import RolloutConfig
from recap_data.store.shard_index import MixtureConfig
from recap_data.value.train import ValueTrainConfig

# command (its words after `recap-data`) -> the configs it reads, in the order its --help lists them
STAGES: dict[str, tuple[type, ...]] = {
    "base": (BaseDataConfig,),
    "index": (MixtureConfig,),
    "train value": (ValueTrainConfig, RewardConfig),
    "train policy": (PolicyTrainConfig,),
    "rollout": (RolloutConfig,),
    "eval": (EvalConfig,),
    "label": (LabelConfig, AdvantageConfig, RewardConfig),
    "relabel": (AdvantageConfig,),
}
# where a command's options default from, when not the params file's section or the field's default
DEFAULT_FROM = {"relabel": "the source's"}


def sections(command: str) -> list[str]:
    """The params.yaml sections `command` reads."""
    return [section_of(cls) for cls in STAGES[command]]


def params_help(command: str, extra: str = "options override it") -> str:
    names = [f"`{s}`" for s in sections(command)]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"params.yaml to read the {listed} section{'s' if len(names) > 1 else ''} from ({extra})."


def params_option(command: str, extra: str = "options override it"):
    """The command's --params option, naming the sections it reads."""
    return click.option("--params", type=InputFile, help=params_help(command, extra))


def stage_options(command: str):
    """An option per scalar field of each config the command reads."""
    def decorate(function):
        for cls in reversed(STAGES[command]):
            function = config_options(cls, default_from=DEFAULT_FROM.get(command))(function)
        return function
    return decorate


def sections_table() -> str:
    """A Markdown table: params.yaml section, its config class, the commands that read it."""
    readers: dict[type, list[str]] = {}
    for command, classes in STAGES.items():
        for cls in classes:
            readers.setdefault(cls, []).append(command)
    rows = ["| params.yaml section | config | read by |", "| --- | --- | --- |"]
    for cls, commands in sorted(readers.items(), key=lambda item: section_of(item[0])):
        rows.append(f"| `{section_of(cls)}` | `{cls.__module__}.{cls.__name__}` | "
                    f"{', '.join(f'`recap-data {c}`' for c in commands)} |")
    return "\n".join(rows)


def load_stage(command: str, params, options: dict, required: bool = True, defaults: dict | None = None) -> tuple:
    """The configs `command` reads, in STAGES order: each from its params section (the file's,
    which may be left out where not `required`) over its `defaults` (config class -> values), with
    the command's options on top."""
    return tuple(load_config(cls, params, pick(options, cls), required, (defaults or {}).get(cls))
                 for cls in STAGES[command])
