"""Benchmarks of the shard store (not tests): prints figures and writes bench/results/store.json.

1. What grows with the store, in stores of 1, 100 and 1,000 shards with 1, 10 and 100 label sets
   (each over every shard of its store), timed in one run, interleaved:
   - the commit of a ready-made 20-episode shard (ShardWriter's open and commit: the store's
     schema check, stale-staging cleanup, verification, digests, manifest, rename and fsync),
     without its video encoding, which costs the same in any store and whose noise would hide
     the store's share; copying the prepared files into staging is not timed;
   - `db.connect` (views over every shard's files, the shards and label_sets tables from every
     manifest) and reading every shard manifest (what `shards list` does);
   - the commands as a user runs them, Python's start included: `recap-data shards list` and
     `recap-data sql "SELECT count(*) FROM frames"`.
   Shards are copies of one tiny shard and label sets copies of one label set (with fake
   values), so that set-up takes seconds.
2. Query: DuckDB over the `frames` view of a store holding 1M frames in 4 shards (state-only
   schema, and shards 2-4 are copies of shard 1 under other ids, so that set-up takes minutes,
   not hours of video encoding; the query reads all four).

    .venv/bin/python bench/bench_store.py [--frames 1000000] [--repeats 5] [--parts growth]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from common import machine_info, write_results
from tqdm import tqdm

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels
from recap_data.labels.write import LabelConfig, write_label_set
from recap_data.store import paths
from recap_data.store.db import connect
from recap_data.store.schema import OUTCOME_FEATURES
from recap_data.store.store import Manifest, ShardStore
from recap_data.store.writer import ShardWriter

RESULTS = Path(__file__).parent / "results" / "store.json"
SMALL = {"tasks": 10, "max_steps": 20, "image_size": 32}


def copy_shard(store: ShardStore, src_id: str, dst_id: str) -> None:
    """Set-up shortcut: the same committed content under another id (digests stay valid)."""
    dst = store.shard_path(dst_id)
    shutil.copytree(store.shard_path(src_id), dst)
    m = Manifest.read(dst / paths.MANIFEST)
    m.shard_id = dst_id
    (dst / paths.MANIFEST).write_text(m.to_json())


def fill_store(root: Path, n_shards: int) -> ShardStore:
    """A store of n tiny committed shards: one written, the rest copies of it under their own ids."""
    store = ShardStore(root)
    make_demo_data(store, DemoDataConfig(shard_id="fill-000", episodes=1, **SMALL), progress=False)
    for i in range(1, n_shards):
        copy_shard(store, "fill-000", f"fill-{i:03d}")
    assert len(store.shard_ids()) == n_shards
    return store


def timed_commit(store: ShardStore, shard_id: str, prepared: Path, m: Manifest) -> float:
    """Seconds of ShardWriter's open and commit around a copy of `prepared` (the copy not timed)."""
    w = ShardWriter(store, shard_id, kind="base", features=m.features, fps=m.fps, source={"generator": "bench"},
                    synthetic=True)
    t0 = time.perf_counter()
    w.__enter__()
    opened = time.perf_counter() - t0
    shutil.copytree(prepared, w.staging_dir, ignore=shutil.ignore_patterns(paths.MANIFEST))
    w.expect(m.episodes, m.frames, m.successes)
    t0 = time.perf_counter()
    w.__exit__(None, None, None)
    return opened + time.perf_counter() - t0


def add_label_sets(store: ShardStore, count: int) -> None:
    """`count` label sets over every shard of the store: one labelled with fake values (the value
    model does not matter here), the others copies of it under their own names."""
    from recap_data.store.label_sets import label_set_path

    con = connect(store.root, label_sets=False)
    frames = con.execute("SELECT shard, episode_index, frame_index, index, task, success, is_intervention "
                         "FROM frames ORDER BY shard, episode_index, frame_index").df().assign(value=-0.5)
    reward = RewardConfig(normalization="global", reward_normalizer=2000.0)
    normalizers = {t: 2000.0 for t in frames["task"].unique()}
    labels, per_task = build_labels(frames, reward, AdvantageConfig(), normalizers)
    shards = [{"id": m.shard_id, "digest": m.digest, "episodes": m.episodes, "frames": m.frames}
              for m in store.manifests()]
    write_label_set(store, "ls-000", labels, per_task, value_checkpoint={"path": "-", "digest": "-"}, shards=shards,
                    reward=reward, advantage=AdvantageConfig(), cfg=LabelConfig(), normalizers=normalizers)
    for i in range(1, count):
        dst = label_set_path(store, f"ls-{i:03d}")
        shutil.copytree(label_set_path(store, "ls-000"), dst)
        manifest = json.loads((dst / paths.MANIFEST).read_text())
        (dst / paths.MANIFEST).write_text(json.dumps({**manifest, "name": f"ls-{i:03d}"}))


def cli_seconds(root: Path, *args: str) -> float:
    """Wall seconds of one `recap-data` command in a fresh process (Python's start included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recap_data.cli.main", "--root", str(root), *args], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t


def bench_growth(work: Path, repeats: int, sizes=((1, 1), (100, 10), (1000, 100))) -> dict:
    scratch = ShardStore(work / "prepared")
    m = make_demo_data(scratch, DemoDataConfig(shard_id="prepared", episodes=20, **SMALL), progress=False)
    stores = {}
    for n, label_sets in tqdm(sizes, desc="filling stores"):
        stores[n] = fill_store(work / f"store-{n}", n)
        add_label_sets(stores[n], label_sets)
    timed = ("commit", "connect", "manifests", "cli_shards_list", "cli_sql_count")
    times = {n: {k: [] for k in timed} for n in stores}
    for r in range(repeats):
        for n, store in (stores.items() if r % 2 == 0 else reversed(stores.items())):
            times[n]["commit"].append(timed_commit(store, "new", scratch.shard_path("prepared"), m))
            shutil.rmtree(store.shard_path("new"))  # so that every commit lands in a store of exactly n shards
            t = time.perf_counter()
            connect(store.root).close()
            times[n]["connect"].append(time.perf_counter() - t)
            t = time.perf_counter()
            store.manifests()
            times[n]["manifests"].append(time.perf_counter() - t)
            times[n]["cli_shards_list"].append(cli_seconds(store.root, "shards", "list"))
            times[n]["cli_sql_count"].append(cli_seconds(store.root, "sql", "SELECT count(*) FROM frames"))
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    small, large = min(stores), max(stores)
    return {"shard_episodes": 20, "shard_frames": m.frames, "repeats": repeats,
            "stores": [{"shards": n, "label_sets": ls} for n, ls in sizes],
            "median_s": {str(n): {k: round(v, 4) for k, v in t.items()} for n, t in med.items()},
            f"commit_ratio_{large}_over_{small}": round(med[large]["commit"] / med[small]["commit"], 3),
            "target_s": 1.0, "target_commit_ratio": 1.1,
            "commit_s_all": {str(n): [round(x, 4) for x in t["commit"]] for n, t in times.items()}}


def bench_query(work: Path, total_frames: int) -> dict:
    store = ShardStore(work / "store-1m")
    features = {"observation.state": {"dtype": "float32", "shape": (8,), "names": None},
                "action": {"dtype": "float32", "shape": (7,), "names": None}, **OUTCOME_FEATURES}
    rng = np.random.default_rng(0)
    length, n_shards = 500, 4
    per_shard = total_frames // n_shards // length
    t0 = time.perf_counter()
    # Writing is slow next to copying (write_frames_per_second in the results), so one shard is
    # written and the others are copies.
    with ShardWriter(store, "big-0", kind="base", features=features, fps=20,
                     source={"generator": "bench_store"}, synthetic=True) as w:
        for e in tqdm(range(per_shard), desc="writing big-0", unit="ep"):
            states = rng.normal(size=(length, 8)).astype(np.float32)
            actions = rng.normal(size=(length, 7)).astype(np.float32)
            for t in range(length):
                w.add_frame({"observation.state": states[t], "action": actions[t]}, task=f"task {e % 10}")
            w.save_episode(success=bool(e % 3))
    write_s = time.perf_counter() - t0
    for s in range(1, n_shards):
        copy_shard(store, "big-0", f"big-{s}")
    frames = sum(m.frames for m in store.manifests())
    queries = {
        "count": "SELECT count(*) FROM frames",
        "per_task_success_and_state_mean": 'SELECT task, count(*), avg(success::INT), avg("observation.state"[1]) '
                                           "FROM frames GROUP BY task",
        "episodes_per_shard": "SELECT shard, count(*), avg(length) FROM episodes GROUP BY shard",
    }
    out = {"frames": frames, "shards": n_shards, "write_seconds_first_shard": round(write_s, 1),
           "write_frames_per_second": round(frames / n_shards / write_s)}
    t = time.perf_counter()
    con = connect(store.root)
    out["connect_seconds"] = round(time.perf_counter() - t, 4)
    for name, q in queries.items():
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            con.execute(q).fetchall()
            runs.append(time.perf_counter() - t)
        out[f"{name}_seconds_median"] = round(statistics.median(runs), 4)
    out["frames_per_second_grouped_query"] = round(frames / out["per_task_success_and_state_mean_seconds_median"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--parts", default="growth,query",
                    help="comma-separated parts to run; the others keep their figures in store.json")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() and parts != {"growth", "query"} else {}
    results["machine"] = machine_info()
    with tempfile.TemporaryDirectory(prefix="recap-bench-") as tmp:
        work = Path(tmp)
        if "growth" in parts:
            results["growth"] = bench_growth(work, args.repeats)
        if "query" in parts:
            results["query"] = bench_query(work, args.frames)
    write_results(RESULTS, results)
    g, q = results["growth"], results["query"]
    for n, t in g["median_s"].items():
        print(f"store of {n:>4} shards: commit of a ready {g['shard_frames']}-frame shard {t['commit']:.3f} s, "
              f"connect {t['connect']:.3f} s, manifests {t['manifests']:.3f} s; commands: shards list "
              f"{t['cli_shards_list']:.2f} s, sql count {t['cli_sql_count']:.2f} s")
    print(f"frames query over {q['frames']} frames: count {q['count_seconds_median']} s, grouped "
          f"{q['per_task_success_and_state_mean_seconds_median']} s ({q['frames_per_second_grouped_query']} frames/s)")


if __name__ == "__main__":
    main()
