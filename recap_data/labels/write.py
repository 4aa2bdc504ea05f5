"""Label sets: the label params, and the versioned directories that hold the labels (the math
that fills them is recap_data/label_math).

    <root>/labels/<name>/
      manifest.json          value checkpoint digest, shard digests, reward, advantage and label
                             params, epsilon and realised positive fraction per task, counts,
                             time, parts
      tables/<shard>/part-NNNNN.parquet
                             one row per frame, keyed by (shard, episode_index, frame_index), in
                             parts of whole episodes (labels/parts.py)

Label columns (no `observation.`/`action` prefix, so no LeRobot policy takes them as inputs):
reward, mc_return, return_norm, return_bin, nstep_return, value = V(o_t), value_next =
V(o_{t+N}) (0 when t+N >= T), advantage A_t = nstep_return + value_next - value (float64),
epsilon (the frame's threshold) and indicator = A_t > epsilon, always true on interventions.
A label set is written once, atomically; --force replaces it atomically; it is never edited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from recap_data.config import Count, Natural, check_fields, param
from recap_data.errors import RecapError
from recap_data.io import atomic_directory, write_json
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.store import paths
from recap_data.store.label_sets import KEY, LabelManifest, label_set_path
from recap_data.store.store import ShardStore, validate_shard_id

if TYPE_CHECKING:  # pandas is imported where it is used, not with the CLI
    import pandas as pd


@dataclass
class LabelConfig:
    """The value pass of `label` (the advantage's own params are in
    section `advantage`)."""

    section = "label"  # its params.yaml section (a class attribute, not a field)

    batch_size: Count = param(64, "frames per value-model batch (label only; relabel runs no model)")
    decode_workers: Natural = param(
        0, "camera decoder processes at once (label only); 0: one per core left free by the model")

    def validate(self) -> LabelConfig:
        check_fields(self)
        return self


def write_label_set(store: ShardStore, name: str, labels: pd.DataFrame, per_task: dict, *, value_checkpoint: dict,
                    shards: list[dict], reward: RewardConfig, advantage: AdvantageConfig, cfg: LabelConfig,
                    normalizers: dict,
                    parent: dict | None = None, force: bool = False) -> LabelManifest:
    """Write the table parts and the manifest into a temporary directory, then rename it into place."""
    from recap_data.labels.parts import PartWriter, episode_cuts, frame_to_table

    check_rows(name, labels.groupby("shard", observed=True).size().to_dict(), shards,
               duplicated=bool(labels.duplicated(KEY).any()))  # once, not once per shard
    target = label_set_path(store, validate_shard_id(name, "label set name"))
    with atomic_directory(target, force=force, what="label set") as tmp:
        with PartWriter(tmp / paths.LABEL_TABLES_DIR) as writer:
            for shard, rows in labels.groupby("shard", sort=True, observed=True):
                for lo, hi in episode_cuts(rows["episode_index"].to_numpy()):
                    writer.submit(str(shard), frame_to_table(rows.iloc[lo:hi]))
            digest = writer.finish()
        manifest = label_manifest(name, shards, per_task, value_checkpoint=value_checkpoint, reward=reward,
                                  advantage=advantage, label=asdict(cfg), normalizers=normalizers, frames=len(labels),
                                  positives=int(labels["indicator"].sum()), parent=parent, digest=digest,
                                  parts=writer.parts)
        write_json(tmp / paths.MANIFEST, asdict(manifest))
    return manifest


def check_rows(name: str, rows_per_shard: dict, shards: list[dict], duplicated: bool = False) -> None:
    """Every frame of every input shard has exactly one label row; else nothing is written."""
    for s in shards:
        if rows_per_shard.get(s["id"], 0) != s["frames"] or duplicated:
            raise RecapError(f"label set {name}: shard {s['id']} has {rows_per_shard.get(s['id'], 0)} label rows for "
                             f"{s['frames']} frames; nothing was written")


def label_manifest(name: str, shards: list[dict], per_task: dict, *, value_checkpoint: dict, reward: RewardConfig,
                   advantage: AdvantageConfig, label: dict, normalizers: dict, frames: int, positives: int,
                   parent: dict | None, digest: str, parts: list[dict]) -> LabelManifest:
    """`label`: the value pass's LabelConfig as a dict (relabel keeps its source's)."""
    return LabelManifest(
        name=name, created_at=datetime.now(UTC).isoformat(timespec="seconds"), value_checkpoint=value_checkpoint,
        shards=shards, reward=reward.to_dict(), advantage=advantage.to_dict(), label=label,
        return_normalizers=normalizers,
        per_task=per_task, frames=frames, positive_fraction=positives / frames if frames else 0.0,
        parent=parent, digest=digest, parts=parts)
