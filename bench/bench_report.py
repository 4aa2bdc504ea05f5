"""Benchmark of `recap-data report` (not a test): its generation time for label sets the size of
the default pipeline's (`make repro` on params.yaml), with and without the HTML page and its
episode videos; writes bench/results/report.json.

The label sets: `iter1` over the base shard and one iteration's rollouts (200 episodes) and
`iter2` over the base shard and two iterations' rollouts (300 episodes), as the pipeline's index
grows them. The base shard is params.yaml's `base` section (100 episodes, one task, up to 100
steps, two 64-px cameras); each iteration's 100 rollouts are stood in for by another shard of the
same generator and size (seed 1, 2), the value model by a tiny one trained for a few steps: the
report's cost depends on the frames, episodes and tasks, not on the values. Settings, interleaved,
best of --repeats, in-process (`report()`):
  tables     summary, CSV, the two PNG plots (the part DVC reads as plots)
  html       the same and report.html, without videos (--videos 0)
  videos N   the same and the videos of the N best, N worst and N most-wrong episodes (--videos N)
and once the pipeline's command end to end (`recap-data report NAME --out reports/NAME --html-dir
reports/NAME-html --videos 1`, as the `label` stage runs it: a fresh process, its imports included).

    .venv/bin/python bench/bench_report.py [--repeats 3]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml
from common import machine_info, write_results

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.labels.infer import label
from recap_data.labels.write import LabelConfig
from recap_data.reports.report import report
from recap_data.store.store import ShardStore
from recap_data.value.train import ValueTrainConfig, train_value

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "report.json"
SETTINGS = [("tables", False, 0), ("html", True, 0), ("videos 1", True, 1), ("videos 3", True, 3)]


def make_label_sets(store: ShardStore, work: Path, params: dict) -> dict[str, list[str]]:
    base = {k: v for k, v in params["base"].items() if k != "source"}
    shards = {"base": 0, "rollouts-iter1": 1, "rollouts-iter2": 2}
    for shard, seed in shards.items():
        make_demo_data(store, DemoDataConfig(**{**base, "shard_id": shard, "seed": seed}), progress=False)
    reward = RewardConfig(**params["reward"])
    ckpt = work / "value"
    train_value(store, {s: 1.0 for s in shards}, ckpt, ValueTrainConfig(steps=20, batch_size=16, num_workers=0),
                reward, progress=False)
    sets = {"iter1": ["base", "rollouts-iter1"], "iter2": list(shards)}
    for name, ids in sets.items():
        label(store, ids, ckpt, name, reward, LabelConfig(**params["label"]), AdvantageConfig(**params["advantage"]),
              progress=False)
    return sets


def time_report(store: ShardStore, name: str, out: Path, html: bool, videos: int) -> tuple[float, dict]:
    start = time.perf_counter()
    result = report(store, name, out, html=html, videos=videos, force=True, progress=False)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    results = {"machine": machine_info(), "repeats": args.repeats, "label_sets": []}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        work = Path(work)
        store = ShardStore(work / "data")
        sets = make_label_sets(store, work, params)
        for name, ids in sets.items():
            stats = {"name": name, "shards": ids, "episodes": sum(store.manifest(s).episodes for s in ids),
                     "frames": sum(store.manifest(s).frames for s in ids), "settings": []}
            times = {s: [] for s, _, _ in SETTINGS}
            sizes = {}
            for _ in range(args.repeats):
                for setting, html, videos in SETTINGS:
                    out = work / "reports" / name / setting.replace(" ", "-")
                    seconds, result = time_report(store, name, out, html, videos)
                    times[setting].append(seconds)
                    if html:
                        sizes[setting] = {"html_bytes": (out / "report.html").stat().st_size,
                                          "videos": len(result["videos"]),
                                          "video_frames": sum(v["frames"] for v in result["videos"])}
            for setting, html, videos in SETTINGS:
                row = {"setting": setting, "html": html, "videos_per_selection": videos,
                       "seconds": [round(t, 3) for t in times[setting]], "best_s": round(min(times[setting]), 3)}
                stats["settings"].append(row | sizes.get(setting, {}))
                print(f"{name}: {stats['episodes']} episodes, {stats['frames']:,} frames, {setting}: "
                      f"{min(times[setting]):.2f} s best of {args.repeats}")
            # the pipeline's command (dvc.yaml, label stage), end to end: a fresh process, its imports included
            out = work / "reports" / name / "cli"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "recap_data.cli.main", "--root", str(store.root), "report", name,
                            "--out", str(out), "--html-dir", f"{out}-html", "--videos", "1"], check=True,
                           capture_output=True)
            stats["cli_pipeline_s"] = round(time.perf_counter() - start, 3)
            print(f"{name}: the pipeline's `recap-data report {name} --html-dir ... --videos 1` end to end: "
                  f"{stats['cli_pipeline_s']:.2f} s")
            results["label_sets"].append(stats)
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
