"""`recap-data summary`: success and throughput by iteration, with 95% intervals, as CSV and PNG
for dvc plots, for RECAP and for each baseline arm the run trains beside it.

Row 0 is the SFT policy, row k the policy of iteration k, each measured by `recap-data eval`
on the same held-out episodes (metrics/<name>/eval.json, and eval_record.json for the episodes
and their mean length): the success rate with its Wilson interval, the mean steps of a success,
and the throughput (successes per 1,000 environment steps) with its interval. Beside it: the
success rate of the rollouts each iteration recorded (they measure the previous policy, on
training initial states), the value model's held-out MAE and the best constant's, the labelled
positive fraction, and the positive fraction the policy saw in training (indicator prompts only).
Each baseline arm named in params `baselines` (policy.baselines.BASELINES) was trained on iteration
k's data from the SFT policy and evaluated on the same episodes (metrics/<k>/<arm>/eval.json):
its columns `<arm>_success_rate` ... are in every file, empty for an arm the run did not train,
so that dvc.yaml's plots name fixed columns; in row 0 they repeat SFT's, where both start.
"""

import json
from pathlib import Path

from recap_data.config import read_section
from recap_data.errors import RecapError
from recap_data.io import atomic_write_bytes, atomic_write_text, csv_text
from recap_data.policy.baselines import BASELINES

ARM_COLUMNS = ["success_rate", "ci_low", "ci_high", "throughput", "throughput_low", "throughput_high"]
COLUMNS = ["iteration", "name", *ARM_COLUMNS, "success_steps", "eval_episodes", "mean_episode_length",
           "rollout_policy", "rollout_success_rate", "value_mae", "constant_mae", "positive_fraction",
           "train_positive_fraction", *(f"{arm}_{c}" for arm in BASELINES for c in ARM_COLUMNS)]


def _read(path: Path, required: bool = True) -> dict:
    if not required and not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecapError(f"{path}: missing or unreadable metrics ({e}); run the iteration's stages first") from None


def read_baselines(params: Path) -> list[str]:
    """The params file's `baselines`: a list of known arm names (none when the key is absent)."""
    import yaml

    value = (yaml.safe_load(Path(params).read_text()) or {}).get("baselines") or []
    if not isinstance(value, list) or any(arm not in BASELINES for arm in value):
        raise RecapError(f"{params}: field 'baselines' = {value!r} is invalid: use a list of "
                         f"{', '.join(BASELINES)} (or [] for none)")
    return value


def _arm(ev: dict) -> dict:
    """An eval.json's headline as the summary's columns for one arm."""
    return {c: ev[c] for c in ARM_COLUMNS}


def _row(number: int, name: str, metrics_dir: Path, baselines: list[str]) -> dict:
    d = Path(metrics_dir) / name
    ev, record = _read(d / "eval.json"), _read(d / "eval_record.json")
    value = _read(d / "value.json", required=False)
    row = {"iteration": number, "name": name, **_arm(ev), "success_steps": record["success_steps"],
           "eval_episodes": record["episodes"], "mean_episode_length": record["mean_episode_length"],
           "rollout_policy": None,
           "rollout_success_rate": _read(d / "rollout.json", required=False).get("success_rate"),
           "value_mae": value.get("mae"), "constant_mae": value.get("constant_mae"),
           "positive_fraction": _read(d / "labels.json", required=False).get("positive_fraction"),
           "train_positive_fraction": _read(d / "policy.json", required=False).get("positive_fraction")}
    for arm in baselines:  # row 0: the SFT policy, where RECAP and every baseline start
        arm_ev = ev if number == 0 else _read(d / arm / "eval.json")
        row.update({f"{arm}_{c}": v for c, v in _arm(arm_ev).items()})
    return row


def plot(rows: list[dict], baselines: list[str], path: Path) -> None:
    """Success rate and throughput by iteration, RECAP and each baseline, with their 95% intervals
    as error bars (PNG, written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    x = [r["iteration"] for r in rows]
    for ax, (value, low, high, label) in zip(axes, (("success_rate", "ci_low", "ci_high", "success rate"),
                                                    ("throughput", "throughput_low", "throughput_high",
                                                     "successes per 1,000 steps")), strict=True):
        for offset, (arm, prefix) in enumerate([("RECAP", ""), *((b, f"{b}_") for b in baselines)]):
            y = [r[prefix + value] for r in rows]
            err = [[r[prefix + value] - r[prefix + low] for r in rows], [r[prefix + high] - r[prefix + value]
                                                                         for r in rows]]
            ax.errorbar([i + 0.06 * offset for i in x], y, yerr=err, fmt="o-", capsize=4, label=arm)
        ax.set_xticks(x, [r["name"] for r in rows])
        ax.set_ylim(0, 1 if value == "success_rate" else None)
        ax.set_ylabel(f"{label} (95% CI)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"held-out episodes, {rows[0]['eval_episodes']} per policy", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def summarize(params: Path, metrics_dir: Path, out: Path, png: Path | None = None) -> list[dict]:
    """Write the CSV to `out` (and the plot to `png`) atomically; returns its rows."""
    iterations = read_section(params, "iterations")
    baselines = read_baselines(params)
    rows = [_row(0, "sft", metrics_dir, baselines)]
    for number, (name, spec) in enumerate(iterations.items(), start=1):
        rows.append({**_row(number, name, metrics_dir, baselines), "rollout_policy": spec.get("prev")})
    atomic_write_text(Path(out), csv_text(rows, COLUMNS))
    if png is not None:
        plot(rows, baselines, Path(png))
    return rows
