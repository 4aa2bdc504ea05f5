"""`recap-data base`: the pipeline's base shard, from the embedded generator or a local LeRobot dataset.

The embedded default (`source: demo`) is recorded in the embedded world by scripted demonstrators
(demo_data.py).
With `source: lerobot`, `path` names a LeRobot v3 dataset on disk (for example a local copy of
the LIBERO demonstrations) that is imported as the base shard: its episodes are successful
demonstrations unless `success_column` names a per-frame success flag.
"""

from dataclasses import dataclass, fields
from pathlib import Path

from recap_data.config import Choice, param
from recap_data.data.demo_data import DemoDataConfig
from recap_data.errors import RecapError
from recap_data.store.store import Manifest, ShardStore


@dataclass
class BaseDataConfig(DemoDataConfig):
    """Where the base shard comes from (params.yaml section `base`); the generator's fields apply to `demo`."""

    source: Choice("demo", "lerobot") = param(
        "demo", "demo: the embedded world's demonstrators; lerobot: import the dataset at `path`")
    path: str | None = param(None, "lerobot: a local LeRobot v3 dataset directory")
    success_column: str | None = param(None, "lerobot: per-frame success flag column (none: every episode succeeded)")


def make_base(store: ShardStore, cfg: BaseDataConfig, progress: bool = True) -> Manifest:
    """Write the base shard (a generator shard with the same config already there is kept as it is)."""
    from recap_data.data.demo_data import make_demo_data
    from recap_data.store.importer import import_shard

    if cfg.source == "demo":
        demo = DemoDataConfig(**{f.name: getattr(cfg, f.name) for f in fields(DemoDataConfig)})
        return make_demo_data(store, demo, progress=progress)
    if not cfg.path or not Path(cfg.path).is_dir():
        raise RecapError(f"base: field 'path' = {cfg.path!r} is not a directory; point it at a local LeRobot v3 "
                         "dataset (e.g. a downloaded copy of the LIBERO demonstrations)")
    outcome = "column" if cfg.success_column else "all-success"
    writer = import_shard(store, Path(cfg.path), cfg.shard_id, outcome=outcome, success_column=cfg.success_column)
    return writer.manifest
