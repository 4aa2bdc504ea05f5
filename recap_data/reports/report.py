"""`recap-data report LABELS`: what a label set says, per task, as tables and plots.

Writes into --out (atomically, replacing an earlier report of the same directory):
  summary.json              per task: epsilon, realised and target positive fraction, advantage
                            quantiles, mean value at episode start for successes and failures
  per_task.csv              the same, one row per task
  advantage_histogram.csv   task, bin_left, bin_right, bin_centre, frames, fraction (dvc plots)
  advantage_histogram.png   one panel per task, epsilon marked
  value_curves.csv          task, episode, success, frame_index, value, return_norm (dvc plots)
  value_curves.png          V(o_t) over time for a few successful and failed episodes
and with --html (recap_data/reports/html_page.py), into --out or its own --html-dir:
  report.html               all of the above and the lineage on one self-contained page, with
  videos/SHARD-epNNNN.mp4   the videos of the selected episodes (recap_data/reports/view.py) embedded
The page may go to a directory of its own because DVC reads a stage's plots directory as plots
only: the pipeline declares reports/k as plots and reports/k-html as a plain output.
An existing --out (or --html-dir) is refused unless force; then each is replaced without a moment
where it is missing.
"""

from contextlib import nullcontext
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.io import atomic_directory, atomic_write_text, refuse_existing, write_json
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
    df["target"] = manifest.advantage["positive_fraction"]
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


WHY = {"best": "best mean advantage", "worst": "worst mean advantage",
       "most wrong": "value most wrong about the outcome", "episode": "asked for"}


def select_videos(con, name: str, n: int) -> list[dict]:
    """The `n` best, `n` worst and `n` most-wrong episodes (recap_data.reports.view), each once, with `why`;
    `con` has the label set's views."""
    if n == 0:
        return []
    from recap_data.reports.view import choose_episodes

    return [{**ep, "why": ", ".join(WHY.get(c, c) for c in ep.get("chosen", []))}
            for ep in choose_episodes(con, name, best=n, worst=n, most_wrong=n)]


def report(store: ShardStore, name: str, out: Path, bins: int = 40, episodes_per_outcome: int = 3,
           html: bool = False, videos: int = 0, force: bool = False, progress: bool = False,
           html_dir: Path | None = None) -> dict:
    """Write the report of label set `name` into `out`; returns the summary. With `html`, also
    report.html with the `videos` best, worst and most-wrong episodes' videos embedded, in `out` or,
    given `html_dir` (which implies `html`), in that directory."""
    html = html or html_dir is not None
    if bins < 1 or episodes_per_outcome < 0 or videos < 0:
        raise RecapError(f"report: bins {bins}, episodes {episodes_per_outcome} and videos {videos} are invalid: "
                         "use --bins 1 or more, --episodes and --videos 0 or more")
    if videos and not html:
        raise RecapError("report: --videos is for the HTML page; add --html (the mp4s alone: `recap-data view`)")
    manifest = read_manifest(store, name)
    check_shards_unchanged(store, manifest)  # labels joined to other frames would be a wrong report
    refuse_existing(Path(out), force, "report")  # before the queries and videos, not after
    if html_dir is not None:
        if Path(html_dir).resolve() == Path(out).resolve():
            raise RecapError(f"report: --html-dir {html_dir} is --out itself; leave --html-dir out to put the page "
                             "in --out, or give it a directory of its own")
        refuse_existing(Path(html_dir), force, "report page")
    con = connect(store.root, labels=name)
    try:  # the views read their files here: a damaged one is a one-line error naming it
        summary = per_task_summary(con, manifest)
        hist = histogram(con, bins)
        curves = value_curves(con, episodes_per_outcome)
    except duckdb.Error as e:
        raise query_error(e) from None
    result = {"label_set": name, "digest": manifest.digest, "frames": manifest.frames,
              "positive_fraction": manifest.positive_fraction, "threshold": manifest.advantage["threshold"],
              "advantage": manifest.advantage,
              "per_task": {r["task"]: {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "task"}
                           for r in summary.to_dict("records")}}
    selected = select_videos(con, name, videos) if html else []
    with atomic_directory(Path(out), force=force, what="report") as tmp:
        write_json(tmp / "summary.json", result)
        atomic_write_text(tmp / "per_task.csv", summary.to_csv(index=False))
        atomic_write_text(tmp / "advantage_histogram.csv", hist.to_csv(index=False))
        atomic_write_text(tmp / "value_curves.csv", curves.to_csv(index=False))
        plot_histograms(hist, summary, tmp / "advantage_histogram.png", f"label set {name}: advantage per task")
        plot_curves(curves, tmp / "value_curves.png", f"label set {name}: value over time")
        if html:
            page_dir = (atomic_directory(Path(html_dir), force=force, what="report page") if html_dir is not None
                        else nullcontext(tmp))
            with page_dir as page_tmp:
                result["videos"] = write_page(store, name, con, result, manifest, tmp, page_tmp, selected, videos,
                                              progress)
    return result


def write_page(store: ShardStore, name: str, con, result: dict, manifest, plots_dir: Path, page_dir: Path,
               selected: list[dict], videos: int, progress: bool) -> list[dict]:
    """report.html and its videos/ into `page_dir`, the plots read from `plots_dir`; the videos' facts, with
    their paths relative to the page."""
    from recap_data.reports.html_page import render_html
    from recap_data.reports.view import render_episodes

    # the selected episodes' videos (named as `recap-data view` names them), one decoding pass per shard
    rendered = [{**f, "mp4": Path(f["mp4"])} for f in
                render_episodes(store, name, con, selected, page_dir / "videos", sheets=False, progress=progress)]
    plots = {"Advantage per task (epsilon marked)": plots_dir / "advantage_histogram.png",
             "Value over time (solid: V(o_t); dashed: the actual normalized return)": plots_dir / "value_curves.png"}
    note = (f"The {videos} episode(s) of best and of worst mean advantage, and the {videos} whose value at "
            "the first frame is furthest from the outcome (videos/ beside this page)." if videos else "")
    policies = {s["id"]: store.manifest(s["id"]).source.get("policy") for s in manifest.shards}
    page = render_html(result, manifest, plots, rendered, note, policies)
    atomic_write_text(page_dir / "report.html", page)
    return [{**{k: v.get(k) for k in ("shard", "episode_index", "why", "frames", "seconds")},
             "mp4": v["mp4"].relative_to(page_dir).as_posix()} for v in rendered]
