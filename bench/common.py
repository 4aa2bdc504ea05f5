"""What the benchmarks share: machine facts, the results file, synthetic episode tables."""

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}
    if "torch" in sys.modules:  # only where the benchmark uses torch
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


def synthetic_frames(n_frames: int, rng: np.random.Generator) -> pd.DataFrame:
    """About n_frames frames in episodes of 20-180 frames (mean 100), 10 tasks, 80% successes:
    shard, episode_index, frame_index, index, task (categorical), success."""
    lengths = rng.integers(20, 181, size=n_frames // 100)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    tasks = pd.Categorical.from_codes(episode % 10, [f"task {i}" for i in range(10)])
    return pd.DataFrame({"shard": "base", "episode_index": episode, "frame_index": np.arange(len(episode)) - starts,
                         "index": np.arange(len(episode)), "task": tasks,
                         "success": (rng.random(len(lengths)) < 0.8)[episode]})
