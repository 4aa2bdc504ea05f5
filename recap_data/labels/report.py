"""`recap-data report LABELS`: what a label set says, per task, as tables and plots.

Writes into --out (atomically, replacing an earlier report of the same directory):
  summary.json              per task: epsilon, realised and target positive fraction, advantage
                            quantiles, mean value at episode start for successes and failures
  per_task.csv              the same, one row per task
  advantage_histogram.csv   task, bin_left, bin_right, bin_centre, frames, fraction (dvc plots)
  advantage_histogram.png   one panel per task, epsilon marked
  value_curves.csv          task, episode, success, frame_index, value, return_norm (dvc plots)
  value_curves.png          V(o_t) over time for a few successful and failed episodes
"""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.io import atomic_directory, atomic_write_text, write_json
from recap_data.store.db import connect, query_error
from recap_data.store.label_sets import check_shards_unchanged, read_manifest
from recap_data.store.store import ShardStore

QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95]


def per_task_summary(con, manifest) -> pd.DataFrame:
    q = ", ".join(str(x) for x in QUANTILES)
    df = con.execute(f"""
        SELECT task, count(*) AS frames, count(DISTINCT (shard, episode_index)) AS episodes,
               avg(indicator::INT) AS positive_fraction, any_value(epsilon) AS epsilon,
               quantile_cont(advantage, [{q}]) AS advantage_quantiles,
               avg(value) FILTER (WHERE frame_index = 0 AND success) AS start_value_success,
               avg(value) FILTER (WHERE frame_index = 0 AND NOT success) AS start_value_failure
        FROM labels GROUP BY task ORDER BY task""").df()
    df["target"] = manifest.label["positive_fraction"]
    for i, qv in enumerate(QUANTILES):
        df[f"advantage_q{int(qv * 100):02d}"] = df["advantage_quantiles"].map(lambda a, i=i: float(a[i]))
    return df.drop(columns="advantage_quantiles")


def histogram(con, bins: int) -> pd.DataFrame:
    lo, hi = con.execute("SELECT min(advantage), max(advantage) FROM labels").fetchone()
    width = max(hi - lo, 1e-12) / bins
    df = con.execute(f"""
        SELECT task, least(floor((advantage - {lo}) / {width}), {bins - 1})::INT AS bin, count(*) AS frames
        FROM labels GROUP BY ALL""").df()
    grid = pd.MultiIndex.from_product([sorted(df["task"].unique()), range(bins)], names=["task", "bin"])
    df = df.set_index(["task", "bin"]).reindex(grid, fill_value=0).reset_index()
    df["bin_left"] = lo + df["bin"] * width
    df["bin_right"] = df["bin_left"] + width
    df["bin_centre"] = df["bin_left"] + width / 2
    df["fraction"] = df["frames"] / df.groupby("task")["frames"].transform("sum")
    return df[["task", "bin", "bin_left", "bin_right", "bin_centre", "frames", "fraction"]]


def value_curves(con, episodes_per_outcome: int) -> pd.DataFrame:
    """The first few successful and failed episodes (by shard, episode), frame by frame."""
    return con.execute(f"""
        WITH chosen AS (
            SELECT shard, episode_index, success FROM (
                SELECT DISTINCT shard, episode_index, success FROM labels)
            QUALIFY row_number() OVER (PARTITION BY success ORDER BY shard, episode_index) <= {episodes_per_outcome})
        SELECT l.task, l.shard || '/' || l.episode_index AS episode, l.success, l.frame_index, l.value,
               l.return_norm
        FROM labels l JOIN chosen USING (shard, episode_index)
        ORDER BY l.shard, l.episode_index, l.frame_index""").df()


def plot_histograms(hist: pd.DataFrame, summary: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["task"])
    cols = min(len(tasks), 2)
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.2 * rows), squeeze=False, sharex=True)
    for ax, (_, row) in zip(axes.flat, summary.iterrows(), strict=False):
        h = hist[hist["task"] == row["task"]]
        ax.bar(h["bin_centre"], h["fraction"], width=(h["bin_right"] - h["bin_left"]).iloc[0], color="#4477aa")
        ax.axvline(row["epsilon"], color="#cc3311", lw=1.5, label=f"epsilon {row['epsilon']:.3f}")
        ax.set_title(f"{row['task'][:60]} ({row['positive_fraction']:.0%} positive)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.supxlabel("advantage")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for episode, g in curves.groupby("episode", sort=False):
        color = "#228833" if g["success"].iloc[0] else "#cc3311"
        ax.plot(g["frame_index"], g["value"], color=color, lw=1.5, label=f"{episode} V(o_t)")
        ax.plot(g["frame_index"], g["return_norm"], color=color, lw=0.8, ls="--")
    ax.set_xlabel("frame")
    ax.set_ylabel("normalized return (dashed: actual)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(store: ShardStore, name: str, out: Path, bins: int = 40, episodes_per_outcome: int = 3) -> dict:
    """Write the report of label set `name` into `out`; returns the summary."""
    if bins < 1 or episodes_per_outcome < 0:
        raise RecapError(f"report: bins {bins} and episodes {episodes_per_outcome} are invalid: use --bins 1 or more "
                         "and --episodes 0 or more")
    manifest = read_manifest(store, name)
    check_shards_unchanged(store, manifest)  # labels joined to other frames would be a wrong report
    con = connect(store.root, labels=name)
    try:  # the views read their files here: a damaged one is a one-line error naming it
        summary = per_task_summary(con, manifest)
        hist = histogram(con, bins)
        curves = value_curves(con, episodes_per_outcome)
    except duckdb.Error as e:
        raise query_error(e) from None
    result = {"label_set": name, "digest": manifest.digest, "frames": manifest.frames,
              "positive_fraction": manifest.positive_fraction, "threshold": manifest.label["threshold"],
              "per_task": {r["task"]: {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "task"}
                           for r in summary.to_dict("records")}}
    with atomic_directory(Path(out), force=True, what="report") as tmp:
        write_json(tmp / "summary.json", result)
        atomic_write_text(tmp / "per_task.csv", summary.to_csv(index=False))
        atomic_write_text(tmp / "advantage_histogram.csv", hist.to_csv(index=False))
        atomic_write_text(tmp / "value_curves.csv", curves.to_csv(index=False))
        plot_histograms(hist, summary, tmp / "advantage_histogram.png", f"label set {name}: advantage per task")
        plot_curves(curves, tmp / "value_curves.png", f"label set {name}: value over time")
    return result
