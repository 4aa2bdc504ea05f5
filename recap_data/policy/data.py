"""Policy training samples: frames of shards, joined with a label set's indicator, with action chunks.

Rows are in sampler order (shards in mixture order, then dataset index), so the position that
WeightedEpisodeSampler draws is the row. An action chunk holds the actions of the next
chunk_size frames of the same episode; past the episode end it repeats the last action and marks
action_is_pad, as LeRobotDataset does with delta_timestamps.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from recap_data.data.frame_dataset import CameraSource
from recap_data.data.frames import load_frames, load_vectors, state_matrix
from recap_data.data.shard_specs import shard_digests
from recap_data.errors import RecapError
from recap_data.store.schema import ACTION_KEY, STATE_KEY
from recap_data.store.store import ShardStore


@dataclass
class PolicyData:
    """The frames a policy trains on, and where they come from."""

    frames: pd.DataFrame  # one row per frame in sampler order: shard, index, episode_index, task, ...
    episodes: list[tuple[str, int, int]]  # (shard, dataset_from_index, dataset_to_index) in row order
    mixture: dict[str, float]  # shard -> relative sampling weight
    digests: dict[str, str]  # shard -> content digest
    label_set: dict | None  # name, digest, value checkpoint digest (None without labels)

    def successful_episodes(self) -> list[tuple[str, int, int]]:
        """The episodes that succeeded (filtered BC); refused when there are none."""
        first = self.frames.groupby(["shard", "episode_index"], sort=False).first()
        ok = {(s, int(i)) for (s, _), (i, good) in first[["index", "success"]].iterrows() if good}
        kept = [e for e in self.episodes if (e[0], e[1]) in ok]
        if not kept:
            raise RecapError("policy: successes_only, but no episode of these shards succeeded; train on all frames")
        return kept


def load_policy_data(store: ShardStore, mixture: dict[str, float] | None, labels: str | None,
                     mode: str) -> PolicyData:
    """Frames of the mixture's shards (default: every shard of the label set), with `indicator`
    from the label set when one is given. Refuses mode 'use' without a label set, shards outside
    the label set, and a label set whose shards changed since it was computed."""
    from recap_data.store.label_sets import check_shards_unchanged, label_set_names, read_labels, read_manifest

    label_set = None
    if labels is None:
        if mode == "use":
            known = ", ".join(label_set_names(store)) or "none yet; run `recap-data label`"
            raise RecapError(f"policy: indicator_mode 'use' needs a label set: pass --labels NAME "
                             f"(label sets: {known})")
        if not mixture:
            raise RecapError("policy: no shards given; pass --shard ID[=WEIGHT] or --labels NAME")
    else:
        manifest = read_manifest(store, labels)
        check_shards_unchanged(store, manifest)
        labelled = [s["id"] for s in manifest.shards]
        mixture = mixture or {s: 1.0 for s in labelled}
        outside = [s for s in mixture if s not in labelled]
        if outside:
            raise RecapError(f"policy: shard {outside[0]!r} is not in label set {labels!r} (it labels "
                             f"{', '.join(labelled)}); label it first or leave it out")
        label_set = {"name": labels, "digest": manifest.digest,
                     "value_checkpoint_digest": manifest.value_checkpoint.get("digest")}
    digests = shard_digests(store, mixture)
    frames = load_frames(store, mixture)
    order = {s: i for i, s in enumerate(mixture)}
    frames = frames.assign(_order=frames["shard"].map(order)).sort_values(["_order", "index"], ignore_index=True)
    frames = frames.drop(columns="_order")
    for shard, group in frames.groupby("shard", sort=False):
        if not np.array_equal(group["index"].to_numpy(), np.arange(len(group))):
            raise RecapError(f"shard {shard}: dataset indices are not 0..{len(group) - 1}; "
                             "run `recap-data shards verify`")
    if label_set is not None:
        table = read_labels(store, labels, ["index", "indicator"], manifest)[["shard", "index", "indicator"]]
        table["shard"] = table["shard"].astype(str)  # as the frames' column
        frames = frames.merge(table, on=["shard", "index"], how="left", validate="one_to_one")
        missing = int(frames["indicator"].isna().sum())
        if missing:
            raise RecapError(f"label set {labels!r}: {missing} frames have no label row; run `recap-data label` again")
        frames["indicator"] = frames["indicator"].astype(bool)
    bounds = frames.groupby(["shard", "episode_index"], sort=False)["index"].agg(["min", "max"])
    episodes = [(s, int(lo), int(hi) + 1) for (s, _), (lo, hi) in bounds.iterrows()]
    return PolicyData(frames, episodes, dict(mixture), digests, label_set)


def dataset_stats(store: ShardStore, data: PolicyData) -> dict[str, dict[str, torch.Tensor]]:
    """Statistics of state and action over every frame: mean and std for pi0's MEAN_STD
    normalization, the 1st and 99th percentiles for pi0.5's QUANTILES (as LeRobot's stats.json)."""
    actions = np.concatenate([load_vectors(store, s, ACTION_KEY) for s in data.mixture])  # (F, A)
    out = {}
    for key, values in ((STATE_KEY, state_matrix(data.frames)), (ACTION_KEY, actions)):
        q01, q99 = np.quantile(values, [0.01, 0.99], axis=0).astype(values.dtype)  # (2, D) -> D, D
        out[key] = {"mean": torch.from_numpy(values.mean(0)), "std": torch.from_numpy(np.maximum(values.std(0), 1e-3)),
                    "min": torch.from_numpy(values.min(0)), "max": torch.from_numpy(values.max(0)),
                    "q01": torch.from_numpy(q01), "q99": torch.from_numpy(q99)}
    return out


class PolicyFrames(Dataset):
    """Item i (row i of data.frames): cameras (3, H, W), observation.state, an action chunk
    (chunk_size, A) with action_is_pad, and task, indicator, is_intervention for the prompt."""

    def __init__(self, store: ShardStore, data: PolicyData, camera_keys: list[str], chunk_size: int,
                 preloaded: dict | None = None):
        f = data.frames
        self.cameras = CameraSource(store, camera_keys, preloaded)
        self.shard = f["shard"].to_numpy()
        self.index = f["index"].to_numpy(np.int64)
        self.task = f["task"].to_numpy()
        self.state = torch.from_numpy(state_matrix(f))  # (F, S)
        self.indicator = f["indicator"].to_numpy(bool) if "indicator" in f else np.zeros(len(f), bool)
        self.intervention = f["is_intervention"].to_numpy(bool)
        ends = {(s, lo): hi for s, lo, hi in data.episodes}
        first = f.groupby(["shard", "episode_index"], sort=False)["index"].transform("min").to_numpy()
        self.end = np.array([ends[(s, int(lo))] for s, lo in zip(self.shard, first, strict=True)], np.int64)  # (F,)
        self.actions = {s: load_vectors(store, s, ACTION_KEY) for s in data.mixture}  # shard -> (N, A)
        self.offsets = np.arange(chunk_size)  # (chunk,)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        shard, index = self.shard[i], int(self.index[i])
        wanted = index + self.offsets  # (chunk,) dataset indices
        pad = wanted >= self.end[i]
        chunk = self.actions[shard][np.minimum(wanted, self.end[i] - 1)]  # (chunk, A)
        return {**self.cameras(shard, index), STATE_KEY: self.state[i], ACTION_KEY: torch.from_numpy(chunk),
                "action_is_pad": torch.from_numpy(pad), "task": self.task[i],
                "indicator": bool(self.indicator[i]), "is_intervention": bool(self.intervention[i])}
