"""Frames with their camera images for torch training: from memory when the shards' decoded
frames fit (decoded once, front to back, see store/decode.py), else from each shard's
LeRobotDataset when a sample is drawn."""

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from recap_data.data.frames import state_matrix
from recap_data.errors import RecapError
from recap_data.store.store import ShardStore


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

    `frames` holds at least shard, index, frame_index, task, state, return_bin, return_norm; images come from
    a CameraSource over `preloaded` (see there).
    """

    def __init__(self, store: ShardStore, frames: pd.DataFrame, camera_keys: list[str],
                 preloaded: dict[str, dict[str, np.ndarray]] | None = None):
        self.cameras = CameraSource(store, camera_keys, preloaded)
        self.shard = frames["shard"].to_numpy()
        self.index = frames["index"].to_numpy(np.int64)
        self.task = frames["task"].to_numpy()
        self.state = torch.from_numpy(state_matrix(frames))  # (F, S)
        self.frame_index = torch.from_numpy(frames["frame_index"].to_numpy(np.float32))
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
        return {"images": images, "state": self.state[i], "frame_index": self.frame_index[i], "task": self.task[i],
                "return_bin": self.return_bin[i], "return_norm": self.return_norm[i], "row": i}
