"""Label sets: the advantage math, and the versioned directories that hold the labels.

    <root>/labels/<name>/
      manifest.json          value checkpoint digest, shard digests, reward and label params,
                             epsilon and realised positive fraction per task, counts, time
      tables/<shard>.parquet one row per frame, keyed by (shard, episode_index, frame_index)

Label columns (no `observation.`/`action` prefix, so no LeRobot policy takes them as inputs):
reward, mc_return, return_norm, return_bin, nstep_return, value = V(o_t), value_next =
V(o_{t+N}) (0 when t+N >= T), advantage A_t = nstep_return + value_next - value (float64),
epsilon (the frame's threshold) and indicator = A_t > epsilon, always true on interventions.
A label set is written once, atomically; --force replaces it atomically; it is never edited.
"""

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recap_data import paths
from recap_data.atomic import atomic_directory
from recap_data.checkpoint import directory_digest, write_json
from recap_data.errors import RecapError
from recap_data.params import Count, Float, check_fields
from recap_data.returns import RewardConfig, compute_returns
from recap_data.store import SHARD_ID_RE, ShardStore, validate_shard_id

LABEL_FORMAT = "recap-data/label-set@1"
THRESHOLDS = ("per_task", "global")
KEY = ["shard", "episode_index", "frame_index"]
LABEL_COLUMNS = [*KEY, "index", "task", "success", "is_intervention", "reward", "mc_return", "return_norm",
                 "return_bin", "nstep_return", "value", "value_next", "advantage", "epsilon", "indicator"]


@dataclass
class LabelConfig:
    """Labeling (params.yaml section `label`)."""

    positive_fraction: Float(0, 1, low_open=True, high_open=True) = 0.3  # target fraction of frames with A_t > epsilon
    threshold: str = "per_task"  # per_task: one epsilon per task (the paper); global: one over all frames
    batch_size: Count = 64  # frames per value-model batch (label only; relabel runs no model)

    def validate(self) -> "LabelConfig":
        check_fields(self, "label")
        if self.threshold not in THRESHOLDS:
            raise RecapError(f"label: field 'threshold' = {self.threshold!r} is invalid: use one of "
                             f"{', '.join(THRESHOLDS)}")
        return self


@dataclass
class LabelManifest:
    """What a label set records about itself (manifest.json)."""

    name: str
    created_at: str
    value_checkpoint: dict  # {"path", "digest"} of the model whose values these are
    shards: list[dict]  # [{"id", "digest", "episodes", "frames"}] labelled, in order
    reward: dict  # RewardConfig used for returns and n-step advantages
    label: dict  # LabelConfig used for the thresholds
    return_normalizers: dict  # task -> normalizer (from the value checkpoint)
    per_task: dict  # task -> {"epsilon", "positive_fraction", "target", "frames", "episodes", "interventions"}
    frames: int
    positive_fraction: float  # realised over all frames
    parent: dict | None = None  # relabel: {"name", "digest"} of the label set whose values were reused
    digest: str = ""  # sha256 over the label tables
    format: str = LABEL_FORMAT
    extra: dict = field(default_factory=dict)


def label_set_path(store: ShardStore, name: str) -> Path:
    return store.root / paths.LABELS_DIR / name


def label_set_names(store: ShardStore) -> list[str]:
    base = store.root / paths.LABELS_DIR
    if not base.is_dir():
        return []
    # Only valid names: staging and aside directories are hidden (.<name>.tmp.<pid>.<token>).
    return sorted(p.name for p in base.iterdir() if SHARD_ID_RE.match(p.name) and (p / paths.MANIFEST).is_file())


def read_manifest(store: ShardStore, name: str) -> LabelManifest:
    path = label_set_path(store, name) / paths.MANIFEST
    if not path.is_file():
        known = ", ".join(label_set_names(store)) or "none"
        raise RecapError(f"{path.parent}: no label set {name!r} (label sets: {known}); "
                         "make one with `recap-data label`")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != LABEL_FORMAT:
            raise RecapError(f"{path}: field 'format' is {data.get('format')!r}, expected {LABEL_FORMAT!r}")
        return LabelManifest(**data)
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise RecapError(f"{path}: unreadable label set manifest ({str(e).splitlines()[0]}); "
                         "make the label set again with `recap-data label` or `relabel --force`") from None


def read_labels(store: ShardStore, name: str) -> pd.DataFrame:
    """All label rows of a label set, sorted by shard, episode, frame."""
    from recap_data.db import LABELS_FIX, unreadable

    files = sorted((label_set_path(store, name) / paths.LABEL_TABLES_DIR).glob("*.parquet"))
    if not files:
        raise RecapError(f"{label_set_path(store, name) / paths.LABEL_TABLES_DIR}: no label tables; {LABELS_FIX}")
    tables = []
    for f in files:
        with unreadable(str(f), LABELS_FIX):
            tables.append(pd.read_parquet(f))
    return pd.concat(tables, ignore_index=True).sort_values(KEY, ignore_index=True)


def check_shards_unchanged(store: ShardStore, manifest: LabelManifest) -> None:
    """The shards a label set was computed from must still hold the same content."""
    for s in manifest.shards:
        now = store.manifest(s["id"]).digest
        if now != s["digest"]:
            raise RecapError(f"label set {manifest.name}: shard {s['id']} changed since its values were computed "
                             f"({s['digest'][:19]} then, {now[:19]} now); run `recap-data label` again")


def add_advantages(frames: pd.DataFrame, n_steps: int) -> pd.DataFrame:
    """value_next and advantage for frames sorted by episode and frame, with value and nstep_return."""
    t = frames["frame_index"].to_numpy(np.int64)
    ahead = t + n_steps < frames["length"].to_numpy(np.int64)  # o_{t+N} exists in the episode
    value = frames["value"].to_numpy(np.float64)
    rows = np.arange(len(frames))
    # Rows of an episode are contiguous and in frame order, so o_{t+N} is row + N when it exists.
    value_next = np.where(ahead, value[np.minimum(rows + n_steps, len(frames) - 1)], 0.0)
    advantage = frames["nstep_return"].to_numpy(np.float64) + value_next - value
    return frames.assign(value_next=value_next, advantage=advantage)


def threshold(advantages: np.ndarray, fraction: float) -> float:
    """epsilon with round(fraction * n) advantages strictly above it (exactly, unless values tie)."""
    ordered = np.sort(advantages)[::-1]  # descending
    k = int(round(fraction * len(ordered)))
    if k == 0:
        return float(ordered[0])
    if k >= len(ordered):
        return float(np.nextafter(ordered[-1], -np.inf))
    return float((ordered[k - 1] + ordered[k]) / 2)


def build_labels(frames: pd.DataFrame, reward: RewardConfig, cfg: LabelConfig,
                 normalizers: dict[str, float]) -> tuple[pd.DataFrame, dict]:
    """Label rows and per-task statistics from frames with keys, task, success, is_intervention, value."""
    cfg.validate()
    bad = ~np.isfinite(frames["value"].to_numpy(np.float64))
    if bad.any():
        row = frames[bad].iloc[0]
        raise RecapError(f"shard {row['shard']}: episode {row['episode_index']} frame {row['frame_index']} has value "
                         f"{row['value']}; the value model produced NaN or infinity ({int(bad.sum())} frames)")
    out, _ = compute_returns(frames, reward, normalizers)
    out = add_advantages(out, reward.n_steps)
    advantage = out["advantage"].to_numpy()
    codes, tasks = pd.factorize(out["task"], sort=True)  # (F,) task code per frame
    groups = codes if cfg.threshold == "per_task" else np.zeros(len(out), np.int64)
    # One sort by (group, advantage) instead of a pandas group loop: each group is a slice.
    order = np.lexsort((advantage, groups))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(groups))])
    epsilon_of = np.array([threshold(advantage[order[lo:hi]], cfg.positive_fraction)
                           for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
    eps = epsilon_of[groups]  # (F,)
    intervention = out["is_intervention"].to_numpy(bool)
    indicator = (advantage > eps) | intervention
    out = out.assign(epsilon=eps, indicator=indicator)
    n = len(tasks)
    frames_per = np.bincount(codes, minlength=n)
    positives = np.bincount(codes, weights=indicator, minlength=n)
    episodes_per = np.bincount(codes[out["frame_index"].to_numpy() == 0], minlength=n)  # frame 0: once per episode
    interventions = np.bincount(codes, weights=intervention, minlength=n)
    task_eps = epsilon_of if cfg.threshold == "per_task" else np.full(n, epsilon_of[0])
    per_task = {str(task): {"epsilon": float(task_eps[i]), "positive_fraction": float(positives[i] / frames_per[i]),
                            "target": cfg.positive_fraction, "frames": int(frames_per[i]),
                            "episodes": int(episodes_per[i]), "interventions": int(interventions[i])}
                for i, task in enumerate(tasks)}
    return out[LABEL_COLUMNS], per_task


def write_label_set(store: ShardStore, name: str, labels: pd.DataFrame, per_task: dict, *, value_checkpoint: dict,
                    shards: list[dict], reward: RewardConfig, cfg: LabelConfig, normalizers: dict,
                    parent: dict | None = None, force: bool = False) -> LabelManifest:
    """Write the tables and the manifest into a temporary directory, then rename it into place."""
    counts = labels.groupby("shard").size()
    for s in shards:  # every frame of every input shard has exactly one row
        if counts.get(s["id"], 0) != s["frames"] or labels.duplicated(KEY).any():
            raise RecapError(f"label set {name}: shard {s['id']} has {counts.get(s['id'], 0)} label rows for "
                             f"{s['frames']} frames; nothing was written")
    target = label_set_path(store, validate_shard_id(name, "label set name"))
    with atomic_directory(target, force=force, what="label set") as tmp:
        tables = tmp / paths.LABEL_TABLES_DIR
        tables.mkdir()
        for shard, rows in labels.groupby("shard", sort=True):
            rows.to_parquet(tables / f"{shard}.parquet", index=False)
        manifest = LabelManifest(
            name=name, created_at=datetime.now(UTC).isoformat(timespec="seconds"), value_checkpoint=value_checkpoint,
            shards=shards, reward=reward.to_dict(), label=asdict(cfg), return_normalizers=normalizers,
            per_task=per_task, frames=len(labels), positive_fraction=float(labels["indicator"].mean()),
            parent=parent, digest=directory_digest(tables))
        write_json(tmp / paths.MANIFEST, asdict(manifest))
    return manifest
