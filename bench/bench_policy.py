"""Benchmark of the policy trainer (not a test): prints figures and writes bench/results/policy.json.

1. The label join itself: `load_policy_data` with a label set (frames merged one-to-one with
   the label table's indicator, after the label set's shard digests are checked) against the
   same call without one, median of repeated calls; the difference is what joining labels
   costs, reported in seconds, per frame, and as a share of the timed training run below.
2. Training steps/s of the tiny pi0 (CPU, batch 8), the same model, optimizer and loop, measured
   in one run with three data paths over the same frames:
     a. plain LeRobotDataset: delta_timestamps action chunks, the task string as-is, random frames;
     b. labeled shards, LeRobot decoding: recap-data's PolicyFrames (indicator from the joined
        table), the episode-aware weighted sampler and indicator prompts with dropout, images read
        through LeRobotDataset as in (a);
     c. labeled shards, frames decoded once into memory (the trainer's default when they fit).
   b/a compares whole data paths (sampler, chunking and prompts differ, not only the join).

    .venv/bin/python bench/bench_policy.py [--episodes 40] [--steps 60]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from common import machine_info, write_results
from torch.utils.data import DataLoader, RandomSampler

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.data.frame_dataset import preload_cameras
from recap_data.label_math.config import RewardConfig
from recap_data.labels.infer import label
from recap_data.labels.write import LabelConfig
from recap_data.policy.conditioning import IndicatorPrompts, WeightedEpisodeSampler
from recap_data.policy.data import PolicyFrames, dataset_stats, load_policy_data
from recap_data.policy.model import build_policy, build_tokenizer, processors
from recap_data.policy.train import PolicyTrainConfig, model_inputs
from recap_data.store.schema import camera_keys
from recap_data.store.store import ShardStore
from recap_data.value.train import ValueTrainConfig, train_value

RESULTS = Path(__file__).parent / "results" / "policy.json"


def timed_steps(store, data, loader, conditioned: bool, steps: int, cfg: PolicyTrainConfig) -> float:
    """Steps/s of forward, backward and AdamW step over `loader` (fresh model, same seed)."""
    torch.manual_seed(0)
    features = store.manifest("base").features
    policy = build_policy(cfg, features)
    tokenizer = build_tokenizer(cfg, data.frames["task"].unique(), features["observation.state"]["shape"][0])
    pre, _ = processors(policy.config, dataset_stats(store, data), tokenizer)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    prompts = IndicatorPrompts("use", cfg.indicator_dropout, seed=0)
    policy.train()
    batches = iter(loader)
    next(batches)  # the first batch opens files and warms caches: not timed
    started = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        loss, _ = policy(model_inputs(batch, prompts, pre) if conditioned else pre(batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps / (time.perf_counter() - started)


def time_join(store, repeats: int = 15) -> dict:
    """Median seconds of load_policy_data with and without the label set, calls interleaved."""
    times = {"with_labels": [], "without_labels": []}
    for _ in range(repeats):
        for name, (labels, mode) in {"with_labels": ("bench", "use"), "without_labels": (None, "on")}.items():
            t = time.perf_counter()
            load_policy_data(store, {"base": 1.0}, labels, mode)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cfg = PolicyTrainConfig()
    n = (args.steps + 1) * cfg.batch_size
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        store = ShardStore(Path(work) / "data")
        make_demo_data(store, DemoDataConfig(episodes=args.episodes), progress=False)  # 64 px, two cameras
        train_value(store, {"base": 1.0}, Path(work) / "value", ValueTrainConfig(steps=5), RewardConfig(),
                    progress=False)
        label(store, ["base"], Path(work) / "value", "bench", RewardConfig(), LabelConfig(), progress=False)
        data = load_policy_data(store, {"base": 1.0}, "bench", "use")
        join = time_join(store)
        cams = camera_keys(store.manifest("base").features)
        fps = store.manifest("base").fps
        plain = LeRobotDataset("recap-data/base", root=store.shard_path("base"),
                               delta_timestamps={"action": [i / fps for i in range(cfg.chunk_size)]})
        preloaded = preload_cameras(store, ["base"], cams, cfg.preload_mb, progress=False)

        def loaders():
            sampler = WeightedEpisodeSampler(data.episodes, data.mixture, num_samples=n, seed=0)
            return {
                "plain_lerobot": (DataLoader(plain, batch_size=cfg.batch_size, drop_last=True,
                                             sampler=RandomSampler(plain, replacement=True, num_samples=n)), False),
                "labeled_lerobot_decode": (DataLoader(PolicyFrames(store, data, cams, cfg.chunk_size),
                                                      batch_size=cfg.batch_size, sampler=sampler), True),
                "labeled_in_memory": (DataLoader(PolicyFrames(store, data, cams, cfg.chunk_size, preloaded),
                                                 batch_size=cfg.batch_size, sampler=sampler), True),
            }

        best: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved, so that drift in machine load hits all alike
            for name, (loader, conditioned) in loaders().items():
                rate = timed_steps(store, data, loader, conditioned, args.steps, cfg)
                best[name] = max(best.get(name, 0.0), rate)
    a = best["plain_lerobot"]
    join_s = join["with_labels"] - join["without_labels"]
    run_s = args.steps / best["labeled_in_memory"]  # the timed run of the trainer's default path
    results = {"machine": machine_info(), "frames": len(data.frames), "batch_size": cfg.batch_size,
               "steps": args.steps, "steps_per_s": {k: round(v, 2) for k, v in best.items()},
               "label_join": {"load_with_labels_s": round(join["with_labels"], 4),
                              "load_without_labels_s": round(join["without_labels"], 4),
                              "join_s": round(join_s, 4),
                              "join_us_per_frame": round(join_s / len(data.frames) * 1e6, 2),
                              "share_of_timed_training_run": round(join_s / run_s, 4)},
               "labeled_over_plain_steps_per_s": round(best["labeled_lerobot_decode"] / a, 3),
               "in_memory_speedup": round(best["labeled_in_memory"] / a, 2)}
    j = results["label_join"]
    print(f"label join over {len(data.frames)} frames: {j['join_s'] * 1e3:.1f} ms ({j['join_us_per_frame']} us/frame; "
          f"{j['share_of_timed_training_run']:.2%} of {args.steps} in-memory training steps)")
    print(f"tiny pi0, batch {cfg.batch_size}: plain LeRobotDataset {a:.2f} steps/s, "
          f"labeled shards (LeRobot decoding) {best['labeled_lerobot_decode']:.2f} steps/s "
          f"({results['labeled_over_plain_steps_per_s']}x), labeled shards in memory "
          f"{best['labeled_in_memory']:.2f} steps/s ({results['in_memory_speedup']}x)")
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
