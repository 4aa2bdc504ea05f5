"""`recap-data export LABELS --out DIR`: a LeRobot v3 dataset of the label set's shards with the labels added.

For tools that read only LeRobot datasets (lerobot-train and friends): every frame gains the
label columns (no `observation.`/`action` prefix, so policies do not take them as inputs), each
of shape (1,) and float32 or int32, the dtypes LeRobot's dataset visualizer charts beside the
video (it skips bool, int64 and float64 columns): the indicator as 0/1, the return bin as int32,
every float as float32. Each shard is copied with LeRobot's dataset_tools.add_features; several
shards are then merged with merge_datasets. Written into a temporary directory and renamed into
place.
"""

import shutil
from pathlib import Path

import numpy as np

from recap_data.errors import RecapError
from recap_data.io import atomic_directory
from recap_data.store.label_sets import check_shards_unchanged, read_labels, read_manifest
from recap_data.store.store import ShardStore

# label column -> LeRobot dtype, all of shape (1,): what the visualizer charts (float32, int32)
EXPORTED = {"mc_return": "float32", "return_norm": "float32", "return_bin": "int32", "nstep_return": "float32",
            "value": "float32", "value_next": "float32", "advantage": "float32", "epsilon": "float32",
            "indicator": "int32"}


def export(store: ShardStore, name: str, out: Path, force: bool = False) -> Path:
    """Write the LeRobot dataset to `out`; returns it."""
    from lerobot.datasets.dataset_tools import add_features, merge_datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    manifest = read_manifest(store, name)
    check_shards_unchanged(store, manifest)
    labels = read_labels(store, name, manifest=manifest)
    with atomic_directory(Path(out), force=force, what="export") as tmp:
        parts = []
        for s in manifest.shards:
            rows = labels[labels["shard"] == s["id"]].sort_values("index")
            if not np.array_equal(rows["index"].to_numpy(), np.arange(s["frames"])):
                raise RecapError(f"label set {name}: the label rows of shard {s['id']} do not cover its frames "
                                 f"0..{s['frames'] - 1}; run `recap-data label` again")
            source = LeRobotDataset(f"recap-data/{s['id']}", root=store.shard_path(s["id"]))
            features = {c: (rows[c].to_numpy().astype(dtype), {"dtype": dtype, "shape": (1,), "names": None})
                        for c, dtype in EXPORTED.items()}
            target = tmp / "parts" / s["id"] if len(manifest.shards) > 1 else tmp / "dataset"
            parts.append(add_features(source, features, output_dir=target, repo_id=f"recap-data/{name}"))
        if len(parts) > 1:
            merge_datasets(parts, output_repo_id=f"recap-data/{name}", output_dir=tmp / "dataset")
            shutil.rmtree(tmp / "parts")
        for p in (tmp / "dataset").iterdir():  # the dataset becomes `out` itself
            p.rename(tmp / p.name)
        (tmp / "dataset").rmdir()
    return Path(out)
