"""Label sets: the advantage math, and the versioned directories that hold the labels.

    <root>/labels/<name>/
      manifest.json          value checkpoint digest, shard digests, reward and label params,
                             epsilon and realised positive fraction per task, counts, time, parts
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

import numpy as np

from recap_data.config import Count, Float, Natural, check_fields, param
from recap_data.errors import RecapError
from recap_data.io import atomic_directory, write_json
from recap_data.store import paths
from recap_data.store.label_sets import KEY, LABEL_COLUMNS, LabelManifest, label_set_path
from recap_data.store.store import ShardStore, validate_shard_id
from recap_data.value.returns import RewardConfig, compute_returns

if TYPE_CHECKING:  # pandas is imported where it is used, not with the CLI
    import pandas as pd

THRESHOLDS = ("per_task", "global")


@dataclass
class LabelConfig:
    """Labeling (params.yaml section `label`)."""

    positive_fraction: Float(0, 1, low_open=True, high_open=True) = param(
        0.3, "target fraction of frames with A_t > epsilon")
    threshold: str = param("per_task", "per_task: one epsilon per task (the paper); global: one over all frames")
    batch_size: Count = param(64, "frames per value-model batch (label only; relabel runs no model)")
    decode_workers: Natural = param(
        0, "camera decoder processes at once (label only); 0: one per core left free by the model")

    def validate(self) -> LabelConfig:
        check_fields(self, "label")
        if self.threshold not in THRESHOLDS:
            raise RecapError(f"label: field 'threshold' = {self.threshold!r} is invalid: use one of "
                             f"{', '.join(THRESHOLDS)}")
        return self


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
    """Label rows and per-task statistics from frames with keys, task, success, is_intervention,
    value: the compiled kernels (labels/kernels.py) on frames sorted by shard, episode and frame,
    as label tables store them; reference_labels, which they match bit for bit, for anything
    else (unsorted frames, and every input the kernels refuse, so that it names the problem)."""
    import pandas as pd

    from recap_data.labels import kernels  # numba: imported when labels are built, not with the CLI

    cfg.validate()
    reward.validate()
    if frames.empty:
        return reference_labels(frames, reward, cfg, normalizers)
    shard_codes, _ = sorted_codes(frames["shard"])  # (F,) shard order = string order, as the sort's
    codes, tasks = sorted_codes(frames["task"])  # (F,) task code per frame
    if any(task not in normalizers for task in tasks):
        return reference_labels(frames, reward, cfg, normalizers)
    frame_index = frames["frame_index"].to_numpy(np.int64)
    starts, status = kernels.episode_starts(shard_codes, frames["episode_index"].to_numpy(np.int64), frame_index)
    if status != kernels.OK:
        return reference_labels(frames, reward, cfg, normalizers)
    value = frames["value"].to_numpy(np.float64)
    n = len(frames)
    out = {name: np.empty(n, np.float64) for name in
           ("reward", "mc_return", "return_norm", "nstep_return", "value_next", "advantage", "epsilon")}
    out["return_bin"] = np.empty(n, np.int64)
    divisors = np.array([normalizers[task] for task in tasks], np.float64)  # (tasks,)
    status = kernels.per_frame(starts, frames["success"].to_numpy(bool), codes, divisors, value, float(reward.c_fail),
                               reward.n_steps, reward.number_of_bins, out["reward"], out["mc_return"],
                               out["return_norm"], out["return_bin"], out["nstep_return"], out["value_next"],
                               out["advantage"])
    if status != kernels.OK:
        return reference_labels(frames, reward, cfg, normalizers)
    groups = codes if cfg.threshold == "per_task" else np.zeros(n, np.int8)
    epsilon_of = kernels.thresholds(out["advantage"], groups, int(groups.max()) + 1, cfg.positive_fraction)
    intervention = frames["is_intervention"].to_numpy(bool)
    out["indicator"] = np.empty(n, bool)
    kernels.indicators(out["advantage"], groups, epsilon_of, intervention, out["epsilon"], out["indicator"])
    per_task = task_statistics(kernels.task_counts(codes, len(tasks), frame_index, out["indicator"], intervention),
                               tasks, epsilon_of, cfg)
    # the computed columns, and the input's own (their dtypes kept, as the reference keeps them)
    columns = {c: out[c] if c in out else frames[c].array for c in LABEL_COLUMNS}
    return pd.DataFrame(columns, copy=False), per_task


def sorted_codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes (F,), values): pd.factorize(column, sort=True), without hashing every string when the
    column is categorical (as label tables read them)."""
    import pandas as pd

    from recap_data.labels import kernels

    if isinstance(column.dtype, pd.CategoricalDtype) and not column.isna().any():
        categories, codes = column.cat.categories, column.cat.codes.to_numpy()
        present = kernels.counts(codes, len(categories)) > 0
        if present.all() and categories.is_monotonic_increasing:
            return codes, categories  # as they are (int8 for a few categories): no copy
        order = np.argsort(categories.to_numpy(), kind="stable")
        order = order[present[order]]  # the categories that occur, in sorted order
        remap = np.full(len(categories), -1, np.int64)
        remap[order] = np.arange(len(order))
        return remap[codes], categories[order]
    return pd.factorize(column, sort=True)


def task_statistics(counts: np.ndarray, tasks, epsilon_of: np.ndarray, cfg: LabelConfig) -> dict:
    """Per task: epsilon, realised and target positive fraction, frames, episodes, interventions,
    from counts (4, tasks) of frames, positive frames, episodes and interventions."""
    frames_per, positives, episodes_per, interventions = counts
    task_eps = epsilon_of if cfg.threshold == "per_task" else np.full(len(tasks), epsilon_of[0])
    return {str(task): {"epsilon": float(task_eps[i]), "positive_fraction": float(positives[i] / frames_per[i]),
                        "target": cfg.positive_fraction, "frames": int(frames_per[i]),
                        "episodes": int(episodes_per[i]), "interventions": int(interventions[i])}
            for i, task in enumerate(tasks)}


def reference_labels(frames: pd.DataFrame, reward: RewardConfig, cfg: LabelConfig,
                     normalizers: dict[str, float]) -> tuple[pd.DataFrame, dict]:
    """build_labels in pandas and numpy, the formulas as written: the reference the compiled
    kernels are tested against, and what names the frame when the kernels refuse an input."""
    import pandas as pd
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
    frame_zero = out["frame_index"].to_numpy() == 0  # once per episode
    counts = np.stack([np.bincount(codes, minlength=n), np.bincount(codes, weights=indicator, minlength=n),
                       np.bincount(codes[frame_zero], minlength=n),
                       np.bincount(codes, weights=intervention, minlength=n)])
    per_task = task_statistics(counts, tasks, epsilon_of, cfg)
    return out[LABEL_COLUMNS], per_task


def write_label_set(store: ShardStore, name: str, labels: pd.DataFrame, per_task: dict, *, value_checkpoint: dict,
                    shards: list[dict], reward: RewardConfig, cfg: LabelConfig, normalizers: dict,
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
        manifest = label_manifest(name, shards, per_task, value_checkpoint=value_checkpoint, reward=reward, cfg=cfg,
                                  normalizers=normalizers, frames=len(labels),
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
                   cfg: LabelConfig, normalizers: dict, frames: int, positives: int, parent: dict | None,
                   digest: str, parts: list[dict]) -> LabelManifest:
    return LabelManifest(
        name=name, created_at=datetime.now(UTC).isoformat(timespec="seconds"), value_checkpoint=value_checkpoint,
        shards=shards, reward=reward.to_dict(), label=asdict(cfg), return_normalizers=normalizers,
        per_task=per_task, frames=frames, positive_fraction=positives / frames if frames else 0.0,
        parent=parent, digest=digest, parts=parts)
