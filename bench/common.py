"""What the benchmarks share: machine facts, the results file, synthetic episode tables, and the
statistics the RECAP benchmarks report (AUC, a mean's t interval over seeds)."""

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


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t, df = n - 1


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN with one outcome only."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t interval over seeds, clipped to [0, 1] (a rate's bounds)."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    half = T95.get(len(x) - 1, 1.96) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), max(0.0, float(x.mean() - half)), min(1.0, float(x.mean() + half))
