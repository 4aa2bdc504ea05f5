"""The value pass on several processes (not a test): peak memory per process against frames per
process, as the store grows; prints a table and writes bench/results/label_processes.json.

`recap-data label` under torchrun with 1 and 2 processes over stores of 1, 4 and 16 copies of the
default base shard (200 episodes, 64-px cameras, each copy a real shard under its own id, so
every frame is decoded and scored), with the tiny value model: each process's peak RSS (its own
ru_maxrss, printed at exit) and the command's wall time. No process gathers the values: a
process holds one part of them (up to 1M frames) at a time, and the main process's label passes
a few parts, so the peak should stay flat as frames per process grow (io.one_malloc_arena keeps
glibc from fragmenting the frame batches that the decoder threads allocate). The label sets of 1
and 2 processes are checked to be the same (the tables' digest). Then `label` (over at most 4
copies), `rollout` and `eval` (the random policy in the embedded world) as one plain process and
as two nodes of one process each on this machine (two torchrun launchers, a static rendezvous):
wall time, torch and launcher start included.

    .venv/bin/python bench/bench_label_processes.py [--copies 1,4,16]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import machine_info, write_results

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.label_math.config import RewardConfig
from recap_data.store import paths
from recap_data.store.label_sets import read_manifest
from recap_data.store.store import Manifest, ShardStore
from recap_data.value.train import ValueTrainConfig, train_value

RESULTS = Path(__file__).parent / "results" / "label_processes.json"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def copy_shard(store: ShardStore, source: str, shard_id: str) -> None:
    shutil.copytree(store.shard_path(source), store.shard_path(shard_id))
    m = Manifest.read(store.shard_path(shard_id) / paths.MANIFEST)
    m.shard_id = shard_id
    (store.shard_path(shard_id) / paths.MANIFEST).write_text(m.to_json())


def run_label(store: ShardStore, ckpt: Path, shards: list[str], out: str, processes: int) -> dict:
    cmd = [str(TORCHRUN), "--nproc_per_node", str(processes), str(Path(__file__).parent / "peak_rss_cli.py"),
           "--root", str(store.root), "label", "--value-ckpt", str(ckpt), "--shard", ",".join(shards), "--out", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = {int(rank): int(kb) // 1024 for _, rank, kb in
             (line.split() for line in proc.stderr.splitlines() if line.startswith("peak_rss"))}
    return {"wall_s": round(wall, 1), "peak_rss_mb": [peaks[r] for r in sorted(peaks)]}


def run_nodes(root: Path, args: list[str], nodes: int) -> float:
    """`recap-data ARGS` as `nodes` torchrun launchers of one process each on this machine (a static
    rendezvous over TCP, as tests/test_multinode.py runs them), or one plain process: wall seconds."""
    import socket

    if nodes == 1:
        cmds = [[sys.executable, "-m", "recap_data.cli.main", "--root", str(root), *args]]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmds = [[str(TORCHRUN), "--nnodes", str(nodes), "--node_rank", str(rank), "--nproc_per_node", "1",
                 "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "recap_data.cli.main",
                 "--root", str(root), *args] for rank in range(nodes)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for cmd in cmds]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
    return round(time.perf_counter() - t0, 1)


def bench_nodes(store: ShardStore, ckpt: Path, shards: list[str]) -> list[dict]:
    """label, rollout and eval as one process and as two nodes: wall time (the outputs are the same:
    tests/test_multinode.py checks that)."""
    jobs = {"label": lambda out: ["label", "--value-ckpt", str(ckpt), "--shard", ",".join(shards), "--out", out],
            "rollout (random policy, 200 episodes)": lambda out: ["rollout", "--policy", "random", "--out", out,
                                                                  "--episodes", "200"],
            "eval (random policy, 500 episodes)": lambda out: ["eval", "--policy", "random", "--episodes", "500"]}
    rows = []
    for job, args in jobs.items():
        one, two = (run_nodes(store.root, args(f"{job.split()[0]}-n{n}"), n) for n in (1, 2))
        rows.append({"command": job, "one_process_s": one, "two_nodes_s": two})
        print(f"{job}: one process {one} s, two nodes {two} s ({one / two:.2f}x)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,4,16")
    args = parser.parse_args()
    copies = [int(c) for c in args.copies.split(",")]
    results = {"machine": machine_info(), "copies": copies, "runs": []}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        store = ShardStore(Path(work) / "data")
        make_demo_data(store, DemoDataConfig(), progress=False)  # the default base shard
        for i in range(1, max(copies)):
            copy_shard(store, "base", f"copy{i}")
        ckpt = Path(work) / "value"
        train_value(store, {"base": 1.0}, ckpt, ValueTrainConfig(steps=5), RewardConfig(), progress=False)
        print("| frames | processes | frames per process | peak RSS per process (MB) | wall |")
        print("| --- | --- | --- | --- | --- |")
        for n in copies:
            shards = ["base", *(f"copy{i}" for i in range(1, n))]
            frames = sum(store.manifest(s).frames for s in shards)
            digests = set()
            for processes in (1, 2):
                run = run_label(store, ckpt, shards, f"c{n}-p{processes}", processes)
                digests.add(read_manifest(store, f"c{n}-p{processes}").digest)
                results["runs"].append({"frames": frames, "processes": processes,
                                        "frames_per_process": frames // processes, **run})
                print(f"| {frames:,} | {processes} | {frames // processes:,} | "
                      f"{', '.join(f'{mb:,}' for mb in run['peak_rss_mb'])} | {run['wall_s']} s |")
            assert len(digests) == 1, "1 and 2 processes gave different label sets"
        results["nodes"] = bench_nodes(store, ckpt, shards[:4])
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
