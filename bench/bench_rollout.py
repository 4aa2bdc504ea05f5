"""Benchmark of LIBERO rollouts (not a test): prints figures and writes bench/results/rollout.json.

1. Recording overhead, one process, random actions on libero_10 task 8 (both cameras, 64 px
   frames from a 256-px render): env steps/s bare (step + observation to frame) versus the same
   steps written through ShardWriter (add_frame, and save_episode with its video encoding, per
   episode). Target ratio <= 1.10. The commit (verification, manifest) happens once per shard
   and is reported on its own.
2. Total env steps/s of `rollout()` with 1 and with 2 worker processes (simulator creation and
   resets included), same episodes.

    .venv/bin/python bench/bench_rollout.py [--steps 60] [--episodes 4]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from common import machine_info, write_results

from recap_data.sim.libero import LiberoTask
from recap_data.sim.rollout import RolloutConfig, rollout
from recap_data.store.schema import ACTION_KEY, LIBERO_FPS, libero_features
from recap_data.store.store import ShardStore
from recap_data.store.writer import ShardWriter

RESULTS = Path(__file__).parent / "results" / "rollout.json"


def bench_recording(work: Path, steps: int, repeats: int) -> dict:
    sim = LiberoTask("libero_10", 8, image_size=64)
    rng = np.random.default_rng(0)
    bare, recorded, commit = [], [], []
    for r in range(repeats):  # interleaved, so that drift in machine load hits both alike
        frame = sim.reset(r, r)
        started = time.perf_counter()
        for _ in range(steps):
            frame, _ = sim.step(rng.uniform(-1, 1, 7))
        bare.append(time.perf_counter() - started)

        store = ShardStore(work / f"store{r}")
        frame = sim.reset(r, r)
        with ShardWriter(store, "r", kind="rollout", features=libero_features(64), fps=LIBERO_FPS,
                         source={"bench": True}) as writer:
            started = time.perf_counter()
            for _ in range(steps):
                action = rng.uniform(-1, 1, 7).astype(np.float32)
                writer.add_frame({**frame, ACTION_KEY: action}, task=sim.language)
                frame, _ = sim.step(action)
            writer.save_episode(success=False)
            recorded.append(time.perf_counter() - started)
            started = time.perf_counter()
        commit.append(time.perf_counter() - started)
    sim.close()
    out = {"steps": steps, "bare_steps_per_s": round(steps / min(bare), 2),
           "recorded_steps_per_s": round(steps / min(recorded), 2), "ratio": round(min(recorded) / min(bare), 3),
           "commit_s": round(min(commit), 2)}
    print(f"recording: bare {out['bare_steps_per_s']} steps/s, recorded {out['recorded_steps_per_s']} steps/s, "
          f"ratio {out['ratio']} (target <= 1.10); commit once per shard {out['commit_s']} s")
    return out


def bench_workers(work: Path, steps: int, episodes: int) -> dict:
    out = {}
    for workers in (1, 2):
        store = ShardStore(work / f"workers{workers}")
        cfg = RolloutConfig(env="libero", episodes=episodes, workers=workers, max_steps=steps)
        _, metrics = rollout(store, "r", "random", cfg, progress=False)
        out[f"workers_{workers}"] = {"env_steps_per_s": metrics["env_steps_per_s"], "wall_s": metrics["wall_s"],
                                     "frames": metrics["frames"]}
        print(f"rollout, {workers} worker(s): {metrics['frames']} steps in {metrics['wall_s']} s "
              f"({metrics['env_steps_per_s']} env steps/s, creation and resets included)")
    out["speedup_2_workers"] = round(out["workers_2"]["env_steps_per_s"] / out["workers_1"]["env_steps_per_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        results["recording"] = bench_recording(Path(work), args.steps, args.repeats)
        results["workers"] = bench_workers(Path(work), args.steps, args.episodes)
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
