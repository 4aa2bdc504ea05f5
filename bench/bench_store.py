"""Benchmarks of the shard store (not tests): prints figures and writes bench/results/store.json.

1. What grows with the store, in stores of 1, 50 and 200 shards, timed in one run, interleaved:
   - the commit of a ready-made 20-episode shard (ShardWriter's open and commit: the store's
     schema check, stale-staging cleanup, verification, digests, manifest, rename and fsync),
     without its video encoding, which costs the same in any store and whose noise would hide
     the store's share; copying the prepared files into staging is not timed;
   - `db.connect` (one view over every shard's files) and `shards list` (every manifest read).
   The commit should not grow with the store; connect and list read every shard, so they do.
2. Query: DuckDB over the `frames` view of a store holding 1M frames in 4 shards (state-only
   schema, and shards 2-4 are copies of shard 1 under other ids, so that set-up takes minutes,
   not hours of video encoding; the query reads all four).

    .venv/bin/python bench/bench_store.py [--frames 1000000] [--repeats 5]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from common import machine_info, write_results  # noqa: E402
from tqdm import tqdm  # noqa: E402

from recap_data.data.demo_data import DemoDataConfig, make_demo_data  # noqa: E402
from recap_data.store import paths  # noqa: E402
from recap_data.store.db import connect  # noqa: E402
from recap_data.store.schema import OUTCOME_FEATURES  # noqa: E402
from recap_data.store.store import Manifest, ShardStore  # noqa: E402
from recap_data.store.writer import ShardWriter  # noqa: E402

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


def bench_growth(work: Path, repeats: int, sizes=(1, 50, 200)) -> dict:
    scratch = ShardStore(work / "prepared")
    m = make_demo_data(scratch, DemoDataConfig(shard_id="prepared", episodes=20, **SMALL), progress=False)
    stores = {n: fill_store(work / f"store-{n}", n) for n in sizes}
    times = {n: {"commit": [], "connect": [], "list": []} for n in sizes}
    for r in range(repeats):
        for n, store in (stores.items() if r % 2 == 0 else reversed(stores.items())):
            times[n]["commit"].append(timed_commit(store, "new", scratch.shard_path("prepared"), m))
            shutil.rmtree(store.shard_path("new"))  # so that every commit lands in a store of exactly n shards
            t = time.perf_counter()
            connect(store.root).close()
            times[n]["connect"].append(time.perf_counter() - t)
            t = time.perf_counter()
            store.manifests()
            times[n]["list"].append(time.perf_counter() - t)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    small, large = min(sizes), max(sizes)
    return {"shard_episodes": 20, "shard_frames": m.frames, "repeats": repeats, "store_shards": list(sizes),
            "median_s": {str(n): {k: round(v, 4) for k, v in t.items()} for n, t in med.items()},
            f"commit_ratio_{large}_over_{small}": round(med[large]["commit"] / med[small]["commit"], 3),
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="recap-bench-") as tmp:
        work = Path(tmp)
        results = {"machine": machine_info(),
                   "growth": bench_growth(work, args.repeats),
                   "query": bench_query(work, args.frames)}
    write_results(RESULTS, results)
    g, q = results["growth"], results["query"]
    for n, t in g["median_s"].items():
        print(f"store of {n:>3} shards: commit of a ready {g['shard_frames']}-frame shard {t['commit']:.3f} s, "
              f"connect {t['connect']:.3f} s, shards list {t['list']:.3f} s")
    print(f"frames query over {q['frames']} frames: count {q['count_seconds_median']} s, grouped "
          f"{q['per_task_success_and_state_mean_seconds_median']} s ({q['frames_per_second_grouped_query']} frames/s)")


if __name__ == "__main__":
    main()
