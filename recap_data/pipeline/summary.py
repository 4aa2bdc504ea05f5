"""`recap-data summary`: success by iteration, with its 95% interval, as CSV and PNG for dvc plots.

Row 0 is the SFT policy, row k the policy of iteration k, each measured by `recap-data eval`
on the same held-out episodes (metrics/<name>/eval.json, and eval_record.json for the episodes
and their mean length). Beside it: the success rate of the
rollouts each iteration recorded (they measure the previous policy, on training initial
states), the value model's held-out MAE and the best constant's, the labelled positive
fraction, and the positive fraction the policy saw in training (indicator prompts only).
"""

import json
from pathlib import Path

from recap_data.config import read_section
from recap_data.errors import RecapError
from recap_data.io import atomic_write_bytes, atomic_write_text, csv_text

COLUMNS = ["iteration", "name", "success_rate", "ci_low", "ci_high", "eval_episodes", "mean_episode_length",
           "rollout_policy", "rollout_success_rate", "value_mae", "constant_mae", "positive_fraction",
           "train_positive_fraction"]


def _read(path: Path, required: bool = True) -> dict:
    if not required and not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecapError(f"{path}: missing or unreadable metrics ({e}); run the iteration's stages first") from None


def _row(number: int, name: str, metrics_dir: Path) -> dict:
    d = Path(metrics_dir) / name
    ev, record = _read(d / "eval.json"), _read(d / "eval_record.json")
    value = _read(d / "value.json", required=False)
    return {"iteration": number, "name": name, "success_rate": ev["success_rate"], "ci_low": ev["ci_low"],
            "ci_high": ev["ci_high"], "eval_episodes": record["episodes"],
            "mean_episode_length": record["mean_episode_length"], "rollout_policy": None,
            "rollout_success_rate": _read(d / "rollout.json", required=False).get("success_rate"),
            "value_mae": value.get("mae"), "constant_mae": value.get("constant_mae"),
            "positive_fraction": _read(d / "labels.json", required=False).get("positive_fraction"),
            "train_positive_fraction": _read(d / "policy.json", required=False).get("positive_fraction")}


def plot(rows: list[dict], path: Path) -> None:
    """Success rate by iteration with its 95% interval as error bars (PNG, written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    x = [r["iteration"] for r in rows]
    y = [r["success_rate"] for r in rows]
    err = [[r["success_rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["success_rate"] for r in rows]]
    ax.errorbar(x, y, yerr=err, fmt="o-", capsize=4)
    ax.set_xticks(x, [r["name"] for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"held-out success, {rows[0]['eval_episodes']} episodes per policy", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def summarize(params: Path, metrics_dir: Path, out: Path, png: Path | None = None) -> list[dict]:
    """Write the CSV to `out` (and the plot to `png`) atomically; returns its rows."""
    iterations = read_section(params, "iterations")
    rows = [_row(0, "sft", metrics_dir)]
    for number, (name, spec) in enumerate(iterations.items(), start=1):
        rows.append({**_row(number, name, metrics_dir), "rollout_policy": spec.get("prev")})
    atomic_write_text(Path(out), csv_text(rows, COLUMNS))
    if png is not None:
        plot(rows, Path(png))
    return rows
