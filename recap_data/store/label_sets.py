"""The label sets of a store, as readers see them: where they live, their manifests and their
rows (the label math and the writer are in recap_data.labels).

    <root>/labels/<name>/
      manifest.json          value checkpoint digest, shard digests, reward, advantage and
                             label params, epsilon and realised positive fraction per task,
                             counts, time, and every table part with its row count
      tables/<shard>/part-00000.parquet ...
                             one row per frame, keyed by (shard, episode_index, frame_index),
                             in key order; each part holds whole episodes, so that a reader
                             can stream a label set part by part (labels/relabel.py)

Older formats are still read, and `recap-data relabel` rewrites them in the current one (@3):
format 2 kept the advantage's params inside the reward's (n_steps) and the label's (positive
fraction, threshold); format 1 also kept one table per shard, tables/<shard>.parquet, and listed
no parts.
Only valid names are label sets: a writer's staging and aside directories are hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recap_data.config import ADVANTAGE_FROM
from recap_data.errors import RecapError
from recap_data.io import read_json
from recap_data.store import paths
from recap_data.store.store import MISSING_FIX, SHARD_ID_RE, ShardStore

if TYPE_CHECKING:  # pandas is imported where it is used, not with the CLI
    import pandas as pd

LABEL_FORMAT = "recap-data/label-set@3"
LABEL_FORMAT_2 = "recap-data/label-set@2"  # the advantage's params inside reward and label: still read
LABEL_FORMAT_1 = "recap-data/label-set@1"  # one table per shard, no parts listed: still read
LABELS_FIX = "make the label set again with `recap-data label --force` or `relabel --force`"
KEY = ["shard", "episode_index", "frame_index"]
LABEL_COLUMNS = [*KEY, "index", "task", "success", "is_intervention", "reward", "mc_return", "return_norm",
                 "return_bin", "nstep_return", "value", "value_next", "advantage", "epsilon", "indicator"]


@dataclass
class LabelManifest:
    """What a label set records about itself (manifest.json)."""

    name: str
    created_at: str
    value_checkpoint: dict  # {"path", "digest"} of the model whose values these are
    shards: list[dict]  # [{"id", "digest", "episodes", "frames"}] labelled, in order
    reward: dict  # RewardConfig used for the returns (the value model's targets)
    label: dict  # LabelConfig of the value pass (batch size, decoders)
    return_normalizers: dict  # task -> normalizer (from the value checkpoint)
    per_task: dict  # task -> {"epsilon", "positive_fraction", "target", "frames", "episodes", "interventions"}
    frames: int
    positive_fraction: float  # realised over all frames
    parent: dict | None = None  # relabel: {"name", "digest", "advantage"} of the set whose values it reused
    digest: str = ""  # sha256 over the label tables
    format: str = LABEL_FORMAT
    extra: dict = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)  # [{"path", "shard", "rows"}] in key order (formats 2, 3)
    advantage: dict = field(default_factory=dict)  # AdvantageConfig: n_steps, positive_fraction, threshold


def table_parts(store: ShardStore, name: str, manifest: LabelManifest | None = None) -> list[dict]:
    """Every table part of label set `name` (its manifest, if read already), in key order:
    {"path" (absolute), "shard", "rows" (None for format 1, which recorded none)}; a part that is
    missing is a one-line error."""
    manifest = manifest or read_manifest(store, name)
    base = label_set_path(store, name)
    if manifest.format == LABEL_FORMAT_1:
        parts = [{"path": f"{paths.LABEL_TABLES_DIR}/{s['id']}.parquet", "shard": s["id"], "rows": None}
                 for s in sorted(manifest.shards, key=lambda s: s["id"])]
    else:
        parts = manifest.parts
    for part in parts:
        if not (base / part["path"]).is_file():
            raise RecapError(f"{base / part['path']}: label table part missing ({len(parts)} parts listed in "
                             f"{paths.MANIFEST}); {MISSING_FIX}")
    return [{**part, "path": base / part["path"]} for part in parts]


def label_set_path(store: ShardStore, name: str) -> Path:
    return store.root / paths.LABELS_DIR / name


def label_set_names(store: ShardStore) -> list[str]:
    base = store.root / paths.LABELS_DIR
    if not base.is_dir():
        return []
    # Only valid names: staging and aside directories are hidden (.<name>.tmp.<host>@<pid>.<token>).
    return sorted(p.name for p in base.iterdir() if SHARD_ID_RE.match(p.name) and (p / paths.MANIFEST).is_file())


def read_manifest(store: ShardStore, name: str) -> LabelManifest:
    path = label_set_path(store, name) / paths.MANIFEST
    if not path.is_file():
        known = ", ".join(label_set_names(store)) or "none"
        raise RecapError(f"{path.parent}: no label set {name!r} (label sets: {known}); make one with "
                         "`recap-data label`, or `dvc pull` it where DVC tracks the store")
    fix = "make the label set again with `recap-data label` or `relabel --force`"
    data = read_json(path, what="label set manifest", fix=fix)
    if data.get("format") not in (LABEL_FORMAT, LABEL_FORMAT_2, LABEL_FORMAT_1):
        raise RecapError(f"{path}: field 'format' is {data.get('format')!r}, expected {LABEL_FORMAT!r} (or the "
                         f"older {LABEL_FORMAT_2!r} or {LABEL_FORMAT_1!r}); {fix}")
    try:
        manifest = LabelManifest(**data)
    except TypeError as e:  # a field missing or unknown
        raise RecapError(f"{path}: unreadable label set manifest ({e}); {fix}") from None
    if manifest.format != LABEL_FORMAT:  # the advantage's params, where formats 1 and 2 kept them
        try:
            manifest.advantage = {k: getattr(manifest, section).pop(k) for k, section in ADVANTAGE_FROM.items()}
        except (KeyError, AttributeError) as e:
            raise RecapError(f"{path}: unreadable label set manifest (no {e} in its reward or label); {fix}") from None
    if set(manifest.advantage) != set(ADVANTAGE_FROM):
        raise RecapError(f"{path}: unreadable label set manifest (field 'advantage' must hold "
                         f"{', '.join(ADVANTAGE_FROM)}); {fix}")
    return manifest


def read_labels(store: ShardStore, name: str, columns: list[str] | None = None,
                manifest: LabelManifest | None = None) -> pd.DataFrame:
    """The label rows of a label set (all columns, or `columns` and the key), sorted by shard,
    episode, frame; `shard` and `task` as categoricals (as parquet stores them: a dictionary).
    `manifest`: the label set's, if read already."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recap_data.store.db import unreadable  # db reads label sets too: import when used

    wanted = None if columns is None else list(dict.fromkeys([*KEY, *columns]))
    tables = []
    for part in table_parts(store, name, manifest):
        with unreadable(str(part["path"]), LABELS_FIX):
            tables.append(pq.read_table(part["path"], columns=wanted, read_dictionary=["shard", "task"]))
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    d_shard = np.diff(frame["shard"].cat.codes.to_numpy())  # (F-1,) steps of the key between rows
    d_episode, d_frame = np.diff(frame["episode_index"].to_numpy()), np.diff(frame["frame_index"].to_numpy())
    in_order = bool(np.all((d_shard > 0) | ((d_shard == 0) & ((d_episode > 0) | ((d_episode == 0) & (d_frame > 0))))))
    if not in_order or not frame["shard"].cat.categories.is_monotonic_increasing:
        frame = frame.sort_values(KEY, ignore_index=True)
    return frame


def check_shards_unchanged(store: ShardStore, manifest: LabelManifest) -> None:
    """The shards a label set was computed from must still hold the same content."""
    for s in manifest.shards:
        now = store.present_manifest(s["id"], named_by=f"label set {manifest.name!r}").digest
        if now != s["digest"]:
            raise RecapError(f"label set {manifest.name}: shard {s['id']} changed since its values were computed "
                             f"({s['digest'][:19]} then, {now[:19]} now); run `recap-data label` again")


def absent_shards(store: ShardStore) -> dict[str, str]:
    """Shards the store should hold but lacks, each with why: a directory under shards/ without
    its manifest (shards are renamed into place whole, so this is damage or a partial copy), or
    a shard that a label set names and the store does not have (a `dvc pull` that lost it)."""
    absent = {n: f"{store.shard_path(n)} has no {paths.MANIFEST}" for n in store.names_on_disk() if not store.exists(n)}
    for name in label_set_names(store):
        try:
            named = read_manifest(store, name).shards
        except RecapError:  # a torn label set is its own readers' error, not a listing's
            continue
        for s in named:
            if not store.exists(s["id"]) and s["id"] not in absent:
                absent[s["id"]] = f"label set {name!r} names it, and {store.shards_dir} does not hold it"
    return dict(sorted(absent.items()))
