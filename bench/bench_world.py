"""Benchmark of the embedded world (not a test): prints figures and writes bench/results/world.json.

Env steps per second on one core (the process pinned to CPU 0), both cameras rendered at 64 px,
uniformly random actions, no policy (target: at least 2,000):
1. through the gymnasium API (`gymnasium.make`, with its wrappers: order enforcing, passive
   env checker), one env, resets included;
2. WorldBatch, the batched core that rollouts and evaluation use, 50 episodes stepped together
   (steps counted per episode);
3. for scale: rendering alone (both cameras of one state) and the dynamics alone.

    .venv/bin/python bench/bench_world.py [--steps 20000]
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import machine_info, write_results

RESULTS = Path(__file__).parent / "results" / "world.json"


def best_of(repeats: int, fn) -> float:
    """The fastest of `repeats` runs of fn() (seconds): the least disturbed by other load."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    import gymnasium

    from recap_data.store.schema import STATE_KEY
    from recap_data.world.env import ENV_ID, WorldBatch, WorldConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (args.steps, 7)).astype(np.float32)

    env = gymnasium.make(f"recap_data.world.env:{ENV_ID}", task=8, image_size=64)

    def gym_loop():
        env.reset(seed=0)
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    batch = 50
    world = WorldBatch(WorldConfig(8, 64))

    def batch_loop():
        world.reset(list(range(batch)))
        for k in range(args.steps // batch):
            if world.done.all():
                world.reset(list(range(batch)))
            world.step(np.broadcast_to(actions[k], (batch, 7)))

    state = world.reset([0])[STATE_KEY][0].astype(np.float64)

    def render_loop():
        for _ in range(args.steps // 10):
            world.render_one(state)

    gym_s = best_of(args.repeats, gym_loop)
    batch_s = best_of(args.repeats, batch_loop)
    render_s = best_of(args.repeats, render_loop)
    results = {
        "machine": machine_info(), "cores_used": 1, "image_size": 64, "steps": args.steps,
        "gymnasium_env_steps_per_s": round(args.steps / gym_s),
        "world_batch_env_steps_per_s": round(args.steps // batch * batch / batch_s),
        "render_both_cameras_us": round(render_s / (args.steps // 10) * 1e6, 1),
        "target_env_steps_per_s": 2000,
    }
    for key in ("gymnasium_env_steps_per_s", "world_batch_env_steps_per_s", "render_both_cameras_us"):
        print(f"{key}: {results[key]}")
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
