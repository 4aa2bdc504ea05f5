"""`recap-data rollout`: roll a policy out on one LIBERO task and record the episodes as a new shard.

Step 3.i of the RECAP loop. Episodes cycle through the task's official initial states (a
permutation fixed by the seed, so N <= 50 episodes are N distinct scenes, reproducibly), run
until success (sticky: the episode ends there) or max_steps, and stream into a new immutable
shard through ShardWriter, episode by episode, at full precision, with the base shard's feature
names and image size. With workers > 1, each worker process owns one simulator (and one copy
of the policy) and episodes come back in order. Nothing becomes visible before the commit: a
Ctrl-C or a kill leaves no shard.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recap_data.errors import RecapError
from recap_data.schema import ACTION_KEY, AGENTVIEW_KEY, LIBERO_FPS, STATE_KEY, WRIST_KEY, libero_features
from recap_data.store import ShardStore

RANDOM = "random"


@dataclass
class RolloutConfig:
    """Rollouts in LIBERO (params.yaml section `rollout`)."""

    suite: str = "libero_10"  # LIBERO benchmark suite
    task: str = "8"  # task index or name in the suite (libero_10 8: put both moka pots on the stove)
    episodes: int = 4  # episodes to record
    workers: int = 1  # simulator processes (about 2 GB of memory each)
    max_steps: int = 0  # step cap per episode; 0: the suite's usual cap (520 for libero_10)
    seed: int = 0  # fixes the initial-state order, each episode's seed and the random policy
    guidance: float = 1.0  # classifier-free guidance beta for a trained policy (1: plain conditioning)
    render_size: int = 256  # LIBERO camera render size before resizing to the shard's image size

    def validate(self) -> "RolloutConfig":
        for name in ("episodes", "workers", "render_size"):
            if getattr(self, name) < 1:
                raise RecapError(f"rollout: field '{name}' = {getattr(self, name)} is invalid: use at least 1")
        if self.max_steps < 0:
            raise RecapError(f"rollout: field 'max_steps' = {self.max_steps} is invalid: use 0 (suite cap) or more")
        return self


def plan_episodes(cfg: RolloutConfig, init_states: int) -> list[dict]:
    """Per episode: index, initial-state id (distinct while episodes <= init_states) and seed."""
    order = np.random.default_rng(cfg.seed).permutation(init_states)
    return [{"episode_index": i, "init_state": int(order[i % init_states]), "seed": cfg.seed * 100_003 + i}
            for i in range(cfg.episodes)]


def env_features(image_size: int) -> dict:
    """What the environment gives a policy and takes from it: {feature: shape}."""
    return {AGENTVIEW_KEY: (3, image_size, image_size), WRIST_KEY: (3, image_size, image_size),
            STATE_KEY: (8,), ACTION_KEY: (7,)}


def check_policy(policy: str, image_size: int) -> dict | None:
    """A trained policy's features must match the environment's: refused before the simulator starts.
    Returns the policy's provenance (None for the random policy)."""
    import json

    from recap_data.policy import read_provenance

    if policy == RANDOM:
        return None
    path = Path(policy)
    fix = "pass `random` or a directory written by `recap-data train policy`"
    provenance = read_provenance(path, fix)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise RecapError(f"--policy {policy}: not a policy checkpoint (config.json: {e}); {fix}") from e
    have = {k: tuple(v["shape"]) for k, v in {**config["input_features"], **config["output_features"]}.items()}
    want = env_features(image_size)
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            raise RecapError(f"--policy {policy}: feature {key} is {have.get(key) or 'absent'} in the policy and "
                             f"{want.get(key) or 'absent'} in the environment; train the policy on shards of "
                             "this store's schema")
    return provenance


class _Episodes:
    """Runs episodes in this process: one simulator and one policy, built on first use."""

    def __init__(self, suite: str, task_id: int, image_size: int, render_size: int, policy: str,
                 guidance: float, max_steps: int):
        self.args = (suite, task_id, image_size, render_size)
        self.policy_path, self.guidance, self.max_steps = policy, guidance, max_steps
        self.sim = self.policy = None

    def __call__(self, plan: dict) -> dict:
        import torch

        from recap_data.libero_sim import LiberoTask
        from recap_data.policy import RecapPolicy

        if self.sim is None:
            self.sim = LiberoTask(*self.args)
            if self.policy_path != RANDOM:
                self.policy = RecapPolicy.load(self.policy_path)
        rng = np.random.default_rng(plan["seed"])
        frame = self.sim.reset(plan["init_state"], plan["seed"])
        torch.manual_seed(plan["seed"])  # the policy's flow-matching noise
        if self.policy is not None:
            self.policy.reset()
        frames, success = [], False
        for _ in range(self.max_steps):
            if self.policy is None:
                action = rng.uniform(-1.0, 1.0, 7).astype(np.float32)
            else:
                obs = {k: torch.from_numpy(frame[k]).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
                       for k in (AGENTVIEW_KEY, WRIST_KEY)}
                obs[STATE_KEY] = torch.from_numpy(frame[STATE_KEY])[None]  # (1, 8)
                action = self.policy.select_action(obs, self.sim.language, self.guidance)[0].numpy()
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
            frames.append({**frame, ACTION_KEY: action})
            frame, success = self.sim.step(action)
            if success:  # sticky: the episode ends at success
                break
        return {**plan, "frames": frames, "success": success, "length": len(frames)}

    def close(self) -> None:
        """Free the simulator's GL context now (at interpreter exit, EGL complains noisily)."""
        if self.sim is not None:
            self.sim.close()
            self.sim = None


_worker: _Episodes | None = None


def _init_worker(*args) -> None:
    global _worker
    _worker = _Episodes(*args)


def _run_in_worker(plan: dict) -> dict:
    return _worker(plan)


def rollout(store: ShardStore, shard_id: str, policy: str, cfg: RolloutConfig, metrics_path: Path | None = None,
            progress: bool = True):
    """Record cfg.episodes episodes of `policy` (a checkpoint directory or "random") as shard `shard_id`."""
    import multiprocessing as mp
    from contextlib import ExitStack
    from dataclasses import asdict

    from tqdm import tqdm

    from recap_data import libero_sim
    from recap_data.checkpoint import write_json
    from recap_data.writer import ShardWriter

    cfg.validate()
    manifests = store.manifests()
    features = manifests[0].features if manifests else libero_features(64)
    image_size = int(features[AGENTVIEW_KEY]["shape"][0])
    provenance = check_policy(policy, image_size)  # before the simulator starts
    task_id, language = libero_sim.resolve_task(cfg.suite, cfg.task)
    max_steps = cfg.max_steps or libero_sim.suite_max_steps(cfg.suite)
    plans = plan_episodes(cfg, libero_sim.init_state_count(cfg.suite, task_id))
    digest = None
    if provenance is not None:
        from recap_data.checkpoint import directory_digest

        digest = directory_digest(Path(policy))
    source = {"recorder": "recap_data.rollout", "policy": {"path": policy, "digest": digest,
              "indicator_mode": (provenance or {}).get("indicator_mode")}, "guidance": cfg.guidance,
              "suite": cfg.suite, "task_id": task_id, "task": language, "max_steps": max_steps,
              "config": asdict(cfg), "episodes": []}
    args = (cfg.suite, task_id, image_size, cfg.render_size, policy, cfg.guidance, max_steps)
    started, frames, successes = time.perf_counter(), 0, 0
    with ExitStack() as stack:
        writer = stack.enter_context(ShardWriter(
            store, shard_id, kind="rollout", features=features, fps=LIBERO_FPS, source=source, robot_type="panda",
            use_videos=features[AGENTVIEW_KEY]["dtype"] == "video"))
        if cfg.workers == 1:
            runner = _Episodes(*args)
            stack.callback(runner.close)
            episodes = map(runner, plans)
        else:  # spawn: each worker needs its own GL context, which a fork would share
            pool = stack.enter_context(mp.get_context("spawn").Pool(cfg.workers, _init_worker, args))
            episodes = pool.imap(_run_in_worker, plans)  # in order; workers run ahead
        bar = stack.enter_context(tqdm(total=len(plans), desc=f"rollouts {cfg.suite}/{task_id}", unit="ep",
                                       disable=not progress))
        for episode in episodes:
            for frame in episode.pop("frames"):
                writer.add_frame(frame, task=language)
            writer.save_episode(success=episode["success"])
            source["episodes"].append(episode)  # the manifest is written at commit, with every episode
            frames += episode["length"]
            successes += int(episode["success"])
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{bar.n}", frames=frames)
    wall = time.perf_counter() - started
    metrics = {"episodes": len(plans), "frames": frames, "successes": successes,
               "success_rate": successes / len(plans), "mean_episode_length": frames / len(plans),
               "wall_s": round(wall, 2), "env_steps_per_s": round(frames / wall, 2)}
    if metrics_path:
        write_json(Path(metrics_path), metrics)
    return writer.manifest, metrics
