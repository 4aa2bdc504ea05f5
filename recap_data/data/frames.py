"""The frame table of shards (one row per frame, no images) from DuckDB's `frames` view, and
what training does with it: held-out episodes, weighted sampling, state and action arrays.
Images: frame_dataset.py."""

import numpy as np
import pandas as pd

from recap_data.data.shard_specs import shard_digests
from recap_data.errors import RecapError
from recap_data.store.schema import EPISODE_KEY, STATE_KEY
from recap_data.store.store import ShardStore


def load_frames(store: ShardStore, shard_ids, with_state: bool = True) -> pd.DataFrame:
    """Every frame of the shards: shard, index, episode_index, frame_index, task, success,
    is_intervention and (with_state) the state (column `state`, float32 (8,) arrays)."""
    from recap_data.store.db import SHARD_FIX, connect, unreadable

    shard_ids = list(shard_ids)
    shard_digests(store, shard_ids)  # fails clearly on an unknown shard
    con = connect(store.root, label_sets=False)
    with unreadable(str(store.shards_dir), SHARD_FIX):
        frames = con.execute(f"""
            SELECT shard, "index", episode_index, frame_index, task, success, is_intervention
                   {f', "{STATE_KEY}" AS state' if with_state else ''}
            FROM frames WHERE shard IN (SELECT unnest(?::VARCHAR[]))
            ORDER BY shard, episode_index, frame_index""", [shard_ids]).df()
    empty = sorted(set(shard_ids) - set(frames["shard"]))
    if empty:
        raise RecapError(f"shard {empty[0]!r} has no frames; nothing to train on")
    return frames


def state_matrix(frames: pd.DataFrame) -> np.ndarray:
    """The `state` column as one (F, S) float32 array."""
    return np.stack(frames["state"].to_numpy()).astype(np.float32)  # (F, S)


def holdout_mask(frames: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Per frame: True if its whole episode is held out.

    Per task, about `fraction` of its episodes (at least one where the task has two or more),
    chosen reproducibly for `seed` and so that failures are held out at their overall rate.
    """
    if not 0.0 <= fraction < 1.0:
        raise RecapError(f"value: field 'holdout_fraction' = {fraction} is invalid: use [0, 1)")
    episodes = frames[[*EPISODE_KEY, "task", "success"]].drop_duplicates(EPISODE_KEY).sort_values(EPISODE_KEY)
    fail_rate = float((~episodes["success"].astype(bool)).mean())
    rng = np.random.default_rng(seed)
    held, held_fail = [], 0
    for _, group in episodes.groupby("task", sort=True):
        n = len(group)
        k = 0 if fraction == 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
        group = group.iloc[rng.permutation(n)]
        pools = {True: list(group[~group["success"].astype(bool)].index),
                 False: list(group[group["success"].astype(bool)].index)}
        for _ in range(k):
            want_fail = held_fail + 0.5 <= fail_rate * (len(held) + 1)
            pool = pools[want_fail] or pools[not want_fail]
            held.append(pool.pop(0))
            held_fail += int(not episodes.loc[held[-1], "success"])
    held_keys = episodes.loc[held, EPISODE_KEY]
    key = pd.MultiIndex.from_frame(frames[EPISODE_KEY])
    return key.isin(pd.MultiIndex.from_frame(held_keys))


def mixture_weights(shards: np.ndarray, mixture: dict[str, float]) -> np.ndarray:
    """Per-frame sampling weights so that shard s is drawn with probability w_s / sum(w)."""
    names, counts = np.unique(shards, return_counts=True)
    per_frame = {n: mixture[n] / c for n, c in zip(names, counts, strict=True)}
    weights = pd.Series(shards).map(per_frame).to_numpy(np.float64)
    return weights / weights.sum()


def load_states(store: ShardStore, shard_id: str) -> np.ndarray:
    """observation.state of every frame of a shard as one (frames, S) float32 array, row = dataset index."""
    return load_vectors(store, shard_id, STATE_KEY)


def load_vectors(store: ShardStore, shard_id: str, key: str) -> np.ndarray:
    """A vector feature (state, action) of every frame of a shard: (frames, D) float32, row = dataset index."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from recap_data.store import paths
    from recap_data.store.db import SHARD_FIX, unreadable

    with unreadable(str(store.shard_path(shard_id)), SHARD_FIX):
        table = pq.ParquetDataset(sorted(map(str, store.shard_path(shard_id).glob(paths.DATA_GLOB))),
                                  ).read(columns=["index", key])
    order = np.argsort(table.column("index").to_numpy())
    flat = pc.list_flatten(table.column(key)).to_numpy()
    return flat.reshape(len(table), -1)[order].astype(np.float32)  # (frames, D)
