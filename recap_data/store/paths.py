"""Every on-disk location of recap-data, in one place.

    <root>/                      the data root: --root, $RECAP_DATA_ROOT, or ./data
      shards/<shard_id>/         a committed shard: a finalized LeRobot v3 dataset ...
        manifest.json            ... plus recap-data's manifest (written last, inside the rename)
        meta/ data/ videos/      LeRobot v3 layout
      .tmp/<shard_id>.tmp.<host>@<pid>.<token>/shard/
                                 a shard being written; renamed into shards/ when verified,
                                 never read; left-overs of dead writers are removed
      labels/<name>/             a label set (labels/write.py) ...
        manifest.json            ... its manifest, written inside the atomic rename
        tables/<shard_id>/part-NNNNN.parquet  its label rows, whole episodes per part
      labels/.<name>.tmp.<host>@<pid>.<token>/  a label set being written (hidden: never listed)
    <checkpoint>/                a trainer's output (`train value`, `train policy`; any path)
      model.safetensors  config.json  tokenizer/  provenance.json   both models
      normalization.json  reward.json                               the value model
      policy_{pre,post}processor*.json|.safetensors                 pi0 (LeRobot's processors)
      metrics.json  loss.csv                                        the training run
    reports/<label set>/         `recap-data report`'s default output
    metrics/  plots/  models/    the pipeline's outputs (dvc.yaml)
Checkpoints, exports and reports are written like label sets, in a hidden sibling first (io.py).
"""

import os
from pathlib import Path

ROOT_ENV = "RECAP_DATA_ROOT"
DEFAULT_ROOT = "data"
SHARDS_DIR = "shards"
TMP_DIR = ".tmp"
MANIFEST = "manifest.json"
# LeRobot v3 files, relative to a shard directory (globs DuckDB understands).
DATA_GLOB = "data/*/*.parquet"
EPISODES_GLOB = "meta/episodes/*/*.parquet"
TASKS_FILE = "meta/tasks.parquet"
INFO_FILE = "meta/info.json"
LABELS_DIR = "labels"
LABEL_TABLES_DIR = "tables"
# Checkpoints (relative to a checkpoint directory) and the working tree's output folders.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
PROVENANCE_FILE = "provenance.json"
NORMALIZATION_FILE = "normalization.json"
REWARD_FILE = "reward.json"
METRICS_FILE = "metrics.json"
LOSS_FILE = "loss.csv"
REPORTS_DIR = "reports"
METRICS_DIR = "metrics"
VIDEO_FILE = "videos/{key}/chunk-{chunk:03d}/file-{file:03d}.mp4"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: an explicit path, else $RECAP_DATA_ROOT, else ./data."""
    return Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
