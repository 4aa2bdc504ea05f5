"""`recap-data label --value-ckpt CKPT`: run the value model once over every frame, then label.

Value inference streams each shard episode by episode, in order (camera videos decoded in runs
of episodes by a pool of `decode_workers` decoder processes, a few runs in memory; see
store/decode.py), in batches, with a progress bar. Under `accelerate launch` (or
torchrun) every process takes every k-th episode and the main process gathers the values, so
the label set is the same as one process's. The rest (returns, advantages, thresholds,
indicators) is label_math.tables.build_labels (compiled kernels); `recap-data relabel` redoes
only that part.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.io import prefetch, refuse_existing
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels
from recap_data.labels.write import LabelConfig, write_label_set
from recap_data.store.label_sets import LabelManifest, label_set_path
from recap_data.store.store import ShardStore, validate_shard_id


def _batches(episodes, keys: list[str], batch_size: int):
    """(dataset indices (n,), images (n, K, H, W, 3) uint8) in batches that run across episode ends."""
    indices, images, pending = [], [], 0
    for episode, cams in episodes:
        indices.append(np.arange(int(episode["dataset_from_index"]), int(episode["dataset_to_index"])))
        images.append(np.stack([cams[k] for k in keys], axis=1))  # (T, K, H, W, 3)
        pending += len(indices[-1])
        while pending >= batch_size:
            index, image = np.concatenate(indices), np.concatenate(images)
            yield index[:batch_size], image[:batch_size]
            indices, images, pending = [index[batch_size:]], [image[batch_size:]], pending - batch_size
    if pending:
        yield np.concatenate(indices), np.concatenate(images)


def predict_values(ckpt, images: np.ndarray, state, ids, mask, device) -> np.ndarray:
    """Expected normalized return (n,) float64 for images (n, K, H, W, 3) uint8, state (n, S) and
    tokenized task texts ids, mask (n, max_text_tokens)."""
    import torch

    pixels = torch.from_numpy(images).to(device).permute(0, 1, 4, 2, 3).float() / 255  # (n, K, 3, H, W)
    on_gpu = torch.device(device).type == "cuda"
    with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=on_gpu):
        logits = ckpt.model(pixels, state.to(device), ids.to(device), mask.to(device))  # (n, bins)
    return ckpt.model.values(logits).double().cpu().numpy()


def infer_values(ckpt, store: ShardStore, frames: pd.DataFrame, batch_size: int, progress: bool = True,
                 rank: int = 0, world: int = 1, device="cpu", decode_workers: int = 0) -> pd.DataFrame:
    """(shard, index, value) for this process's share of episodes: every `world`-th, from `rank`.

    `frames` (load_frames: shard, index, task, ...) names the shards, in order, and each frame's task.
    decode_workers: camera decoder processes at once (0: one per core the model leaves free:
    all but torch's threads on CPU, all but this process's thread beside a GPU).
    """
    import torch
    from tqdm import tqdm

    from recap_data.data.frames import load_states
    from recap_data.io import pool_size
    from recap_data.store.decode import episode_table, iter_episode_frames

    ckpt.model.to(device).eval()
    workers = pool_size(decode_workers, torch.get_num_threads() if torch.device(device).type == "cpu" else 1)
    keys = ckpt.model.cfg.camera_keys
    work = []  # (shard, episodes of this process)
    for shard in pd.unique(frames["shard"]):
        missing = [k for k in keys if k not in store.manifest(shard).features]
        if missing:
            raise RecapError(f"shard {shard} lacks camera {missing[0]} that the value model takes ({keys})")
        work.append((shard, episode_table(store.shard_path(shard)).iloc[rank::world]))
    bar = tqdm(total=sum(int(mine["length"].sum()) for _, mine in work), desc="value inference", unit="frame",
               disable=not progress)
    results = [pd.DataFrame({"shard": pd.Series(dtype=str), "index": pd.Series(dtype=np.int64),
                             "value": pd.Series(dtype=np.float64)})]
    for shard, mine in work:
        states = torch.from_numpy(load_states(store, shard))  # (frames, S)
        rows_of_shard = frames[frames["shard"] == shard]
        # Each task text is tokenized once; a frame picks its task's row by code.
        task_codes, task_texts = pd.factorize(rows_of_shard["task"])
        task_ids, task_mask = ckpt.encoder(list(task_texts))  # (tasks, max_text_tokens) each
        code_of = np.empty(len(states), dtype=np.int64)  # task code by dataset index
        code_of[rows_of_shard["index"].to_numpy()] = task_codes
        episodes = iter_episode_frames(store.shard_path(shard), store.manifest(shard).features, keys, mine,
                                       threads=1, workers=workers)
        for rows, images in prefetch(_batches(episodes, keys, batch_size)):
            codes = torch.from_numpy(code_of[rows])
            values = predict_values(ckpt, images, states[rows], task_ids[codes], task_mask[codes], device)
            results.append(pd.DataFrame({"shard": shard, "index": rows, "value": values}))
            bar.update(len(rows))
    bar.close()
    return pd.concat(results, ignore_index=True)


def label(store: ShardStore, shard_ids: list[str], value_ckpt: Path, name: str, reward: RewardConfig,
          cfg: LabelConfig, advantage: AdvantageConfig | None = None, force: bool = False,
          progress: bool = True) -> LabelManifest | None:
    """Value inference over every frame of the shards, then a new label set `name` (None on other
    ranks); `advantage`: its params (default AdvantageConfig's)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from recap_data.data.frames import load_frames
    from recap_data.data.shard_specs import shard_digests
    from recap_data.value.model import load_value_checkpoint

    cfg.validate()
    advantage = (advantage or AdvantageConfig()).validate()
    if not shard_ids:
        raise RecapError("label: no shards given; pass --shard ID (see `recap-data shards list`)")
    refuse_existing(label_set_path(store, validate_shard_id(name, "label set name")), force, "label set")
    state = PartialState(cpu=not torch.cuda.is_available())
    ckpt = load_value_checkpoint(value_ckpt, reward)
    before = shard_digests(store, shard_ids)
    frames = load_frames(store, shard_ids, with_state=False)
    values = infer_values(ckpt, store, frames, cfg.batch_size, progress and state.is_main_process,
                          state.process_index, state.num_processes, state.device, cfg.decode_workers)
    gathered = gather_object([values]) if state.num_processes > 1 else [values]
    if not state.is_main_process:
        return None
    values = pd.concat(gathered, ignore_index=True)
    frames = frames.merge(values, on=["shard", "index"], how="left", validate="one_to_one")
    if len(values) != len(frames) or frames["value"].isna().any():
        raise RecapError(f"label: {len(values)} values for {len(frames)} frames; every frame needs exactly one")
    if shard_digests(store, shard_ids) != before:
        raise RecapError("label: a shard changed while its values were computed; run `recap-data label` again")
    labels, per_task = build_labels(frames, reward, advantage, ckpt.normalizers)
    shards = [{"id": s, "digest": before[s], "episodes": store.manifest(s).episodes,
               "frames": store.manifest(s).frames} for s in shard_ids]
    return write_label_set(store, name, labels, per_task, value_checkpoint={"path": str(value_ckpt),
                           "digest": ckpt.digest}, shards=shards, reward=reward, advantage=advantage, cfg=cfg,
                           normalizers=ckpt.normalizers, force=force)
