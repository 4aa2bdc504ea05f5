"""Factory fixtures: tiny real shards in a temporary store."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub in tests

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from recap_data.demo_data import DemoDataConfig, make_demo_data  # noqa: E402
from recap_data.store import ShardStore  # noqa: E402

TINY = dict(episodes=3, tasks=3, min_length=8, max_length=14, image_size=32)


def tiny_config(**overrides) -> DemoDataConfig:
    return DemoDataConfig(**{**TINY, **overrides})


@pytest.fixture
def store(tmp_path) -> ShardStore:
    return ShardStore(tmp_path / "data")


@pytest.fixture
def make_shard(store):
    """make_shard(shard_id, **DemoDataConfig overrides) -> Manifest of a tiny committed shard."""

    def make(shard_id: str = "base", **overrides):
        return make_demo_data(store, tiny_config(shard_id=shard_id, **overrides), progress=False)

    return make


@pytest.fixture
def make_lerobot_dataset(tmp_path):
    """make_lerobot_dataset(name, lengths, successes) -> root of a plain LeRobot v3 dataset (no outcomes)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    def make(name: str = "src", lengths=(5, 7, 6), successes=(True, False, True)) -> Path:
        root = tmp_path / name
        features = {
            "observation.images.image": {"dtype": "video", "shape": (32, 32, 3),
                                         "names": ["height", "width", "channels"]},
            "observation.state": {"dtype": "float32", "shape": (8,), "names": None},
            "action": {"dtype": "float32", "shape": (7,), "names": None},
            "is_success": {"dtype": "bool", "shape": (1,), "names": None},
        }
        ds = LeRobotDataset.create(f"test/{name}", fps=20, features=features, root=root)
        rng = np.random.default_rng(0)
        for length, ok in zip(lengths, successes, strict=True):
            for t in range(length):
                ds.add_frame({
                    "observation.images.image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                    "observation.state": rng.normal(size=8).astype(np.float32),
                    "action": rng.normal(size=7).astype(np.float32),
                    "is_success": np.array([ok and t == length - 1]),  # true on the last frame only
                    "task": "put both moka pots on the stove",
                })
            ds.save_episode()
        ds.finalize()
        return root

    return make


def run_cli(*args: str, root: Path | None = None):
    """Invoke the real `recap-data` entry point in-process; returns click's Result."""
    from click.testing import CliRunner

    from recap_data.cli import cli

    prefix = ["--root", str(root)] if root else []
    return CliRunner().invoke(cli, [*prefix, *args], catch_exceptions=False)


PYTHON = sys.executable
