"""`recap-data summary`: one row per iteration (rollout success rate and what produced it) for dvc plots.

Iteration k's rollouts measure the policy of iteration k-1 (the SFT policy first), so the rows
follow params.yaml's `iterations` in order, each naming the policy its rollouts used.
"""

import json
from pathlib import Path

from recap_data.checkpoint import csv_text
from recap_data.errors import RecapError
from recap_data.params import read_section
from recap_data.store import atomic_write_text

COLUMNS = ["iteration", "name", "policy", "success_rate", "episodes", "mean_episode_length", "value_mae",
           "positive_fraction"]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecapError(f"{path}: missing or unreadable metrics ({e}); run the iteration's stages first") from None


def summarize(params: Path, metrics_dir: Path, out: Path) -> list[dict]:
    """Write the per-iteration CSV to `out` atomically; returns its rows."""
    iterations = read_section(params, "iterations")
    rows = []
    for number, (name, spec) in enumerate(iterations.items(), start=1):
        rollout = _read(Path(metrics_dir) / name / "rollout.json")
        value_path, labels_path = Path(metrics_dir) / name / "value.json", Path(metrics_dir) / name / "labels.json"
        value = _read(value_path).get("holdout", {}) if value_path.exists() else {}
        labels = _read(labels_path) if labels_path.exists() else {}
        rows.append({"iteration": number, "name": name, "policy": spec.get("prev"),
                     "success_rate": rollout["success_rate"], "episodes": rollout["episodes"],
                     "mean_episode_length": rollout["mean_episode_length"], "value_mae": value.get("value_mae"),
                     "positive_fraction": labels.get("positive_fraction")})
    atomic_write_text(Path(out), csv_text(rows, COLUMNS))
    return rows
