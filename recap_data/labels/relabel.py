"""`recap-data relabel LABELS...`: a new label set from label sets' stored values, no model run.

Changes the advantage's params (n_steps, positive fraction, per-task or global threshold); the
returns, advantages and thresholds are recomputed from the stored V(o_t) of every frame, in the
passes of passes.py (out of core). The shards must be unchanged since those values were
computed. Several label sets relabel as one: one threshold per task over all their frames.
"""

from __future__ import annotations

from dataclasses import asdict

from recap_data.config import build_config
from recap_data.errors import RecapError
from recap_data.io import atomic_directory, write_json
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.labels.passes import DEFAULT_MEMORY_LIMIT_MB, label_passes
from recap_data.labels.write import check_rows, label_manifest
from recap_data.store import paths
from recap_data.store.label_sets import (
    LABELS_FIX,
    LabelManifest,
    check_shards_unchanged,
    label_set_path,
    read_manifest,
    table_parts,
)
from recap_data.store.store import ShardStore, validate_shard_id


def source_advantage(store: ShardStore, source: str, overrides: dict | None = None) -> AdvantageConfig:
    """The advantage params `source` was labelled with, with `overrides` on top, checked."""
    return build_config(AdvantageConfig, {**read_manifest(store, source).advantage, **(overrides or {})}, "relabel")


def relabel(store: ShardStore, sources: str | list[str], name: str, advantage: AdvantageConfig | None = None,
            force: bool = False, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, progress: bool = False,
            mixed_checkpoints: bool = False) -> LabelManifest:
    """Relabel one label set, or several as one, into `name` with the `advantage` params (default:
    the first source's own, as source_advantage gives them with any changes). Several sources get
    one threshold per task over all their frames: the answer of labeling their union at once.
    Their reward params and return normalizers must agree, a shard may be in one source only, and
    their value checkpoints must be one unless `mixed_checkpoints`."""
    names = [sources] if isinstance(sources, str) else list(sources)
    parents = [read_manifest(store, source) for source in names]
    for parent in parents:
        check_shards_unchanged(store, parent)
    origin = combine(store, names, parents, mixed_checkpoints)
    cfg = (advantage or build_config(AdvantageConfig, parents[0].advantage, "relabel")).validate()
    reward = build_config(RewardConfig, parents[0].reward, "relabel")
    # each shard is in one source: its parts in shard order are the union's parts in key order
    parts = sorted((part for source, parent in zip(names, parents, strict=True)
                    for part in table_parts(store, source, parent)), key=lambda part: part["shard"])
    tasks = sorted({task for parent in parents for task in parent.per_task})
    frames = sum(parent.frames for parent in parents)
    target = label_set_path(store, validate_shard_id(name, "label set name"))
    with atomic_directory(target, force=force, what="label set") as tmp:
        per_task, counts, rows, digest, written = label_passes(
            tmp, parts, tasks, origin["normalizers"], reward, cfg, frames, memory_limit_mb, progress)
        check_rows(name, rows, origin["shards"])
        manifest = label_manifest(
            name, origin["shards"], per_task, value_checkpoint=origin["value_checkpoint"], reward=reward,
            advantage=cfg, label=parents[0].label, normalizers=origin["normalizers"], frames=int(counts[0].sum()),
            positives=int(counts[1].sum()), parent=origin["parent"], digest=digest, parts=written)
        write_json(tmp / paths.MANIFEST, asdict(manifest))
    return manifest


def combine(store: ShardStore, names: list[str], parents: list[LabelManifest], mixed_checkpoints: bool = False) -> dict:
    """What the source label sets `names` (their manifests `parents`) give the one relabelled from
    them, checked: their shards (each in one source, in shard order), return normalizers and value
    checkpoint, and the lineage (`parent`: the name, digest and advantage params of one source;
    `sources` lists every one)."""
    where = ", ".join(names)
    if len(set(names)) < len(names):
        raise RecapError(f"relabel {where}: a source is named twice; name each label set once")
    owner: dict[str, str] = {}  # shard -> the source holding it
    normalized: dict[str, tuple[float, str]] = {}  # task -> its return normalizer and the first source with it
    first, first_name = parents[0], names[0]
    for name, p in zip(names, parents, strict=True):
        manifest = label_set_path(store, name) / paths.MANIFEST
        missing = [t for t in sorted(p.per_task) if t not in p.return_normalizers]
        if missing:
            raise RecapError(f"{manifest}: task {missing[0]!r} has no return normalizer; {LABELS_FIX}")
        for s in p.shards:
            if s["id"] in owner:
                raise RecapError(f"relabel: shard {s['id']} is in label sets {owner[s['id']]} and {name}; give "
                                 "each shard's values once (relabel the sets without it, or label it once)")
            owner[s["id"]] = name
        if p.reward != first.reward:
            changed = sorted(k for k in {*p.reward, *first.reward} if p.reward.get(k) != first.reward.get(k))
            raise RecapError(f"relabel: label sets {first_name} and {name} define returns differently (reward field "
                             f"{changed[0]!r}: {first.reward.get(changed[0])!r} and {p.reward.get(changed[0])!r}); "
                             "relabel them apart, or label their shards again with one value model")
        for task, value in p.return_normalizers.items():
            had, by = normalized.setdefault(task, (value, name))
            if had != value:
                raise RecapError(f"relabel: label sets {by} and {name} normalize task {task!r}'s returns by {had:g} "
                                 f"and {value:g}; relabel them apart, or label their shards again with one value model")
        if p.value_checkpoint.get("digest") != first.value_checkpoint.get("digest") and not mixed_checkpoints:
            paths_ = f"{first.value_checkpoint.get('path')} and {p.value_checkpoint.get('path')}"
            raise RecapError(f"relabel: label sets {first_name} and {name} hold values of different value "
                             f"checkpoints ({paths_}); their advantages are not comparable: relabel them apart, or "
                             "pass --mixed-checkpoints")
    shards = sorted((s for p in parents for s in p.shards), key=lambda s: s["id"])
    checkpoints = [p.value_checkpoint for p in parents]
    sources = [{"name": name, "digest": p.digest, "advantage": p.advantage, "value_checkpoint": p.value_checkpoint}
               for name, p in zip(names, parents, strict=True)]
    one = len(parents) == 1
    return {"shards": shards, "normalizers": {task: value for task, (value, _) in normalized.items()},
            "value_checkpoint": checkpoints[0] if all(c == checkpoints[0] for c in checkpoints)
            else {"path": "mixed", "digest": "mixed", "sources": checkpoints},
            "parent": {"name": first_name if one else where, "digest": first.digest if one else None,
                       "advantage": first.advantage, "sources": sources}}


