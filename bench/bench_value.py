"""Benchmarks of the value function (not tests): prints figures and writes bench/results/value.json.

1. Returns: compute_returns over 10M frames (100k episodes, 10 tasks, 20% failures), frames/s.
2. Training throughput of the tiny value model (batch 32, CPU), samples/s, measured in one run:
   a. pre-loaded batch: the same batch over and over (the model alone: forward, backward, step);
   b. in-memory frames: the training loader over frames decoded once (the default when they fit);
   c. LeRobot decoding: the loader over LeRobotDataset, one seek+decode per camera frame
      (what happens when the frames do not fit in value.preload_mb).
   The loader overhead is b/a and c/a.

    .venv/bin/python bench/bench_value.py [--frames 10000000] [--steps 60]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from common import machine_info, synthetic_frames, write_results
from torch.utils.data import DataLoader, RandomSampler

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.data.frame_dataset import ShardFrames, preload_cameras
from recap_data.data.frames import load_frames
from recap_data.label_math.config import RewardConfig
from recap_data.label_math.tables import compute_returns
from recap_data.store.schema import camera_keys
from recap_data.store.store import ShardStore
from recap_data.value.model import Collate, TextEncoder, build_value_model, forward
from recap_data.value.train import ValueTrainConfig

RESULTS = Path(__file__).parent / "results" / "value.json"


def bench_returns(n_frames: int) -> dict:
    frames = synthetic_frames(n_frames, np.random.default_rng(0))
    t0 = time.perf_counter()
    out, _ = compute_returns(frames, RewardConfig())
    seconds = time.perf_counter() - t0
    # A spot check of the answer: each episode's first frame holds its whole return.
    first = out.groupby(["shard", "episode_index"], sort=False).head(1)
    expected = -(first["length"] - 1) - 1000.0 * ~first["success"].astype(bool)
    np.testing.assert_array_equal(first["mc_return"].to_numpy(), expected.to_numpy(np.float64))
    episodes = int(frames["episode_index"].nunique())
    print(f"returns: {len(frames):,} frames, {episodes:,} episodes in {seconds:.2f} s "
          f"({len(frames) / seconds / 1e6:.2f} M frames/s)")
    return {"frames": len(frames), "episodes": episodes, "seconds": round(seconds, 3),
            "frames_per_s": round(len(frames) / seconds)}


def steps_per_s(model, optimizer, batches, steps: int) -> float:
    it = iter(batches)
    next(it)  # warm-up (worker start, first allocation)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        loss = F.cross_entropy(forward(model, batch), batch["return_bin"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps / (time.perf_counter() - t0)


def bench_training(work: Path, steps: int, batch_size: int = 32) -> dict:
    store = ShardStore(work / "data")
    make_demo_data(store, DemoDataConfig(episodes=40, tasks=10), progress=False)  # 64 px, like the default
    manifest = store.manifest("base")
    cams = camera_keys(manifest.features)
    frames, _ = compute_returns(load_frames(store, ["base"]), RewardConfig())
    cfg = ValueTrainConfig()
    model, tokenizer = build_value_model(cfg.model_config(cams, 8, 201), sorted(frames["task"].unique()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    collate = Collate(TextEncoder(tokenizer, cfg.max_text_tokens))
    preloaded = preload_cameras(store, ["base"], cams, cfg.preload_mb, progress=False)

    def loader(dataset, workers):
        sampler = RandomSampler(dataset, replacement=True, num_samples=(steps + 1) * batch_size,
                                generator=torch.Generator().manual_seed(0))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate)

    in_memory = ShardFrames(store, frames, cams, preloaded)
    fixed = collate([in_memory[i] for i in range(batch_size)])
    rates = {"preloaded_batch": steps_per_s(model, optimizer, iter(lambda: fixed, None), steps)}
    for workers in (0, 1):
        rates[f"in_memory_frames_w{workers}"] = steps_per_s(model, optimizer, loader(in_memory, workers), steps)
        rates[f"lerobot_decoding_w{workers}"] = steps_per_s(
            model, optimizer, loader(ShardFrames(store, frames, cams), workers), steps)
    out = {"batch_size": batch_size, "steps": steps, "frames": manifest.frames, "image_size": 64,
           "samples_per_s": {k: round(v * batch_size, 1) for k, v in rates.items()},
           "ratio_to_preloaded_batch": {k: round(v / rates["preloaded_batch"], 3) for k, v in rates.items()}}
    for name, rate in out["samples_per_s"].items():
        print(f"train {name:24s} {rate:8.1f} samples/s  ({out['ratio_to_preloaded_batch'][name]:.2f} of pre-loaded)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    results = {"machine": machine_info(), "returns": bench_returns(args.frames)}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        results["training"] = bench_training(Path(work), args.steps)
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
