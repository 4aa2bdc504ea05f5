"""Factory fixtures: tiny real shards in a temporary store."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub in tests
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each (and
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # in the commands they start), not two per worker fighting

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.io import normal_scheduling
from recap_data.store.store import ShardStore

TINY = dict(episodes=3, tasks=3, max_steps=20, image_size=32)


def mix(success: float) -> dict:
    """Demonstrator fractions with `success` of the episodes successful (half expert, half poor)."""
    return dict(regime="custom", expert=success / 2, poor=success / 2, decoy=(1 - success) / 2,
                release=(1 - success) / 2, timeout=0.0)


def tiny_config(**overrides) -> DemoDataConfig:
    return DemoDataConfig(**{**TINY, **overrides})


FIRST = ("test_pipeline.py",)  # the longest module (a `dvc repro`): the other worker takes the rest beside it


def pytest_collection_modifyitems(items):
    """The longest module first: `make test` hands out modules in collection order (pytest-xdist's
    --dist loadfile --no-loadscope-reorder), so the rest of the suite runs beside it."""
    items.sort(key=lambda item: item.path.name not in FIRST)  # a stable sort: the order within each module stays


@pytest.fixture
def store(tmp_path) -> ShardStore:
    return ShardStore(tmp_path / "data")


@pytest.fixture
def make_shard(store):
    """make_shard(shard_id, **DemoDataConfig overrides) -> Manifest of a tiny committed shard."""

    def make(shard_id: str = "base", **overrides):
        return make_demo_data(store, tiny_config(shard_id=shard_id, **overrides), progress=False)

    return make


def build_labeled(root: Path) -> Path:
    """Two tiny shards, a 3-step value checkpoint and the label set `raw` made from it, under `root`."""
    from recap_data.label_math.config import RewardConfig
    from recap_data.labels.infer import label
    from recap_data.labels.write import LabelConfig
    from recap_data.value.train import ValueTrainConfig, train_value

    store = ShardStore(root / "data")
    for shard, seed in (("base", 0), ("more", 1)):
        make_demo_data(store, DemoDataConfig(shard_id=shard, episodes=8, tasks=2, max_steps=24,
                                             image_size=32, seed=seed), progress=False)
    ckpt = root / "value"
    train_value(store, {"base": 1.0, "more": 1.0}, ckpt, ValueTrainConfig(steps=3, batch_size=8, num_workers=0),
                RewardConfig(), progress=False)
    label(store, ["base", "more"], ckpt, "raw", RewardConfig(), LabelConfig(batch_size=7), progress=False)
    return root


@pytest.fixture(scope="session")
def labeled_once(tmp_path_factory) -> Path:
    """The directory `labeled` copies, built once per test run: under pytest-xdist the first worker
    that needs it builds it in the run's shared temporary directory while the others wait on a lock."""
    import fcntl
    import shutil

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_labeled(tmp_path_factory.mktemp("labels"))
    shared = tmp_path_factory.getbasetemp().parent / "labeled-once"  # one per run: pytest-of-user/pytest-N
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / "complete").exists():
            shutil.rmtree(shared, ignore_errors=True)  # what a worker that failed building it left
            build_labeled(shared)
            (shared / "complete").touch()
    return shared


@pytest.fixture(scope="module")
def labeled(labeled_once, tmp_path_factory):
    """(store, value checkpoint): two shards, a tiny value checkpoint and the label set `raw` made from it;
    a copy per test module (tests add label sets and checkpoints beside them, or damage them)."""
    import shutil

    root = tmp_path_factory.mktemp("labels")
    shutil.copytree(labeled_once, root, dirs_exist_ok=True)
    return ShardStore(root / "data"), root / "value"


@pytest.fixture(scope="session")
def warm_cli_bin(tmp_path_factory) -> Path:
    """A folder holding a `recap-data` shim served by one warm server per test process
    (tests/warm_cli.py): put it first on PATH where a test runs many cold `recap-data` commands."""
    from warm_cli import warm_cli

    with warm_cli(tmp_path_factory.mktemp("warm")) as bin_dir:
        yield bin_dir


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
        with normal_scheduling():  # one camera: LeRobot encodes in this process (see normal_scheduling)
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

    from recap_data.cli.main import cli

    prefix = ["--root", str(root)] if root else []
    return CliRunner().invoke(cli, [*prefix, *args], catch_exceptions=False)


PYTHON = sys.executable
TORCHRUN = str(Path(PYTHON).parent / "torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_process(warm: Path | None) -> list[str]:
    """What torchrun starts in each process: the warm shim (tests/warm_cli.py: the real CLI, forked
    from a server that has imported torch) or, cold, `python -m recap_data.cli.main` as a user's would."""
    return ["--no-python", str(warm / "recap-data")] if warm else ["-m", "recap_data.cli.main"]


def torchrun(processes: int, root: Path, *args: str, env: dict | None = None,
             warm: Path | None = None) -> subprocess.CompletedProcess:
    """`recap-data --root ROOT ARGS` under torchrun (what `accelerate launch` starts) with `processes`
    local processes of one thread each, on a free port (pytest-xdist workers run torchrun side by
    side); `warm`: the warm_cli_bin fixture, to skip each process's cold imports."""
    cmd = [TORCHRUN, "--nproc_per_node", str(processes), "--master_port", str(free_port()), *per_process(warm),
           "--root", str(root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
