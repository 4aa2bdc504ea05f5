"""Training data from shards: mixture specs, the frame table, held-out episodes, weighted sampling.

The frame table (one row per frame, no images) comes from DuckDB's `frames` view. Images come
from memory when the shards' decoded frames fit (decoded once, front to back, see decode.py),
else from each shard's LeRobotDataset when a sample is drawn.
"""

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from recap_data.errors import RecapError
from recap_data.store.schema import EPISODE_KEY, STATE_KEY
from recap_data.store.store import ShardStore


def split_specs(specs: list[str] | tuple[str, ...], store: ShardStore | None = None) -> list[str]:
    """Repeated and comma-separated --shard values, as one list: ['a', 'b,c'] -> ['a', 'b', 'c'].

    `@FILE` stands for the shards of an index file (`recap-data index`), with their weights
    (`id=weight`); with `store`, their content must still match the index.
    """
    from recap_data.store.shard_index import read_index

    out = []
    for item in specs:
        for spec in (s.strip() for s in item.split(",")):
            if spec.startswith("@"):
                out += [f"{e['id']}={e['weight']}" for e in read_index(spec[1:], store)]
            elif spec:
                out.append(spec)
    return out


def shard_ids(specs: list[str] | tuple[str, ...], store: ShardStore | None = None) -> list[str]:
    """The shard ids of --shard values, without weights."""
    return [s.partition("=")[0] for s in split_specs(specs, store)]


def parse_mixture(specs: list[str] | tuple[str, ...], store: ShardStore | None = None) -> dict[str, float]:
    """['base', 'iter1=2'] or ['base,iter1=2'] -> {'base': 1.0, 'iter1': 2.0} (relative shard weights);
    ['@data/index/iter1.json'] -> the index file's shards and weights."""
    mixture: dict[str, float] = {}
    for spec in split_specs(specs, store):
        name, _, weight = spec.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if value <= 0 or not np.isfinite(value):
            raise RecapError(f"shard spec {spec!r}: the weight must be a positive number (ID or ID=WEIGHT)")
        if name in mixture:
            raise RecapError(f"shard {name!r} is listed twice; give each shard once (ID or ID=WEIGHT)")
        mixture[name] = value
    if not mixture:
        raise RecapError("no shards given; pass --shard ID[=WEIGHT] (see `recap-data shards list`)")
    return mixture


def shard_digests(store: ShardStore, shard_ids) -> dict[str, str]:
    """{shard: content digest} from the manifests (an unknown shard is an error naming the known ones)."""
    return {s: store.manifest(s).digest for s in shard_ids}


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


def preload_cameras(store: ShardStore, shard_ids, keys: list[str], budget_mb: int, progress: bool = True,
                    workers: int = 0) -> dict[str, dict[str, np.ndarray]] | None:
    """Decode every camera frame of the shards into memory if they fit in `budget_mb` (else None),
    with `workers` decoder processes at once (0: one per core; the model does not run yet)."""
    from tqdm import tqdm

    from recap_data.io import pool_size
    from recap_data.store.decode import camera_bytes, decode_cameras

    manifests = [store.manifest(s) for s in shard_ids]
    need = sum(camera_bytes(m.features, keys, m.frames) for m in manifests)
    if need > budget_mb * 2**20:
        return None
    workers = pool_size(workers, reserved=0)
    return {m.shard_id: decode_cameras(store.shard_path(m.shard_id), m.features, keys, m.frames, workers=workers)
            for m in tqdm(manifests, desc=f"decoding frames ({need / 2**20:.0f} MB)", unit="shard",
                          disable=not progress)}


class CameraSource:
    """Camera images of any frame of the shards, as LeRobotDataset returns them: (3, H, W) floats in [0, 1].

    From `preloaded` ({shard: {camera: (N, H, W, 3) uint8}}) when given, else from each shard's
    LeRobotDataset, opened lazily (once per DataLoader worker).
    """

    def __init__(self, store: ShardStore, camera_keys: list[str],
                 preloaded: dict[str, dict[str, np.ndarray]] | None = None):
        self.root = store.shards_dir
        self.camera_keys = list(camera_keys)
        self.preloaded = preloaded
        self._datasets: dict = {}

    def _dataset(self, shard: str):
        if shard not in self._datasets:
            from lerobot.datasets.lerobot_dataset import LeRobotDataset

            self._datasets[shard] = LeRobotDataset(f"recap-data/{shard}", root=self.root / shard)
        return self._datasets[shard]

    def __call__(self, shard: str, index: int) -> dict[str, torch.Tensor]:
        """{camera key: (3, H, W) float32} of frame `index` (dataset index) of `shard`."""
        if self.preloaded is not None:
            cams = self.preloaded[shard]
            return {k: torch.from_numpy(cams[k][index]).permute(2, 0, 1).float() / 255  # (3, H, W)
                    for k in self.camera_keys}
        item = self._dataset(shard)[int(index)]
        if int(item["index"]) != index:
            raise RecapError(f"shard {shard}: frame {index} read back as {int(item['index'])}; "
                             "run `recap-data shards verify`")
        return {k: item[k] for k in self.camera_keys}


class ShardFrames(Dataset):
    """Samples of chosen frames: camera images (K, 3, H, W), state, task and targets.

    `frames` holds at least shard, index, task, state, return_bin, return_norm; images come from
    a CameraSource over `preloaded` (see there).
    """

    def __init__(self, store: ShardStore, frames: pd.DataFrame, camera_keys: list[str],
                 preloaded: dict[str, dict[str, np.ndarray]] | None = None):
        self.cameras = CameraSource(store, camera_keys, preloaded)
        self.shard = frames["shard"].to_numpy()
        self.index = frames["index"].to_numpy(np.int64)
        self.task = frames["task"].to_numpy()
        self.state = torch.from_numpy(state_matrix(frames))  # (F, S)
        self.return_bin = torch.from_numpy(frames["return_bin"].to_numpy(np.int64))
        self.return_norm = torch.from_numpy(frames["return_norm"].to_numpy(np.float32))

    def __len__(self) -> int:
        return len(self.index)

    def images(self, i: int) -> torch.Tensor:
        """(K, 3, H, W) floats in [0, 1], as LeRobotDataset returns them."""
        cams = self.cameras(self.shard[i], int(self.index[i]))
        return torch.stack([cams[k] for k in self.cameras.camera_keys])  # (K, 3, H, W)

    def __getitem__(self, i: int) -> dict:
        images = self.images(i)
        return {"images": images, "state": self.state[i], "task": self.task[i],
                "return_bin": self.return_bin[i], "return_norm": self.return_norm[i], "row": i}


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
