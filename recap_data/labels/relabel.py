"""`recap-data relabel LABELS`: a new label set from a label set's stored values, no model run.

Changes the label params (positive fraction, per-task or global threshold) or n_steps; the
returns, advantages and thresholds are recomputed from the stored V(o_t) of every frame, in
seconds. The shards must be unchanged since those values were computed.
"""

from dataclasses import asdict

from recap_data.config import build_config
from recap_data.labels.labelset import LabelConfig, build_labels, write_label_set
from recap_data.store.label_sets import LabelManifest, check_shards_unchanged, read_labels, read_manifest
from recap_data.store.store import ShardStore
from recap_data.value.returns import RewardConfig

VALUE_COLUMNS = ["shard", "episode_index", "frame_index", "index", "task", "success", "is_intervention", "value"]


def relabel(store: ShardStore, source: str, name: str, label_overrides: dict, n_steps: int | None = None,
            force: bool = False) -> LabelManifest:
    """Relabel `source` into `name`; label params default to the source's, overridden by `label_overrides`."""
    parent = read_manifest(store, source)
    check_shards_unchanged(store, parent)
    cfg = build_config(LabelConfig, "label", {**parent.label, **label_overrides}, "relabel")
    given = {} if n_steps is None else {"n_steps": n_steps}  # 0 is refused, not taken as "not given"
    reward = build_config(RewardConfig, "reward", {**parent.reward, **given}, "relabel")
    frames = read_labels(store, source, VALUE_COLUMNS)[VALUE_COLUMNS]
    labels, per_task = build_labels(frames, reward, cfg, parent.return_normalizers)
    return write_label_set(store, name, labels, per_task, value_checkpoint=parent.value_checkpoint,
                           shards=parent.shards, reward=reward, cfg=cfg, normalizers=parent.return_normalizers,
                           parent={"name": parent.name, "digest": parent.digest, "label": asdict(LabelConfig(
                               **parent.label))}, force=force)
