"""`recap-data rollout`: roll a policy out in the embedded world or in LIBERO and record a new shard.

Step 3.i of the RECAP loop. `env` chooses the simulator:
  embedded  the embedded world (recap_data.world.env): one LIBERO-10 instruction's scene; episodes
            run many at once (world_rollout.py), from the world's training initial states
  libero    the real LIBERO simulator (libero_sim.py), one task of a suite, from its 50 official
            initial states
Episodes cycle through the initial states in a permutation fixed by the seed (N distinct
scenes while N <= their number, reproducibly), run until the environment ends them (success,
sticky; in the embedded world also a grasp of the decoy) or max_steps, and stream into a new
immutable shard through ShardWriter, episode by episode, at full precision, with the store's
feature names and image size. With workers > 1, each worker process owns one simulator (and
one copy of the policy) and episodes come back in order. Nothing becomes visible before the
commit: a Ctrl-C or a kill leaves no shard.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recap_data.config import Choice, Count, Int, Natural, NonNegative, Seed, check_fields, param
from recap_data.errors import RecapError
from recap_data.io import read_json
from recap_data.store import paths
from recap_data.store.schema import ACTION_KEY, AGENTVIEW_KEY, LIBERO_FPS, STATE_KEY, WRIST_KEY, libero_features
from recap_data.store.store import ShardStore

RANDOM = "random"
ENVS = ("embedded", "libero")
EVAL_SEED_OFFSET = 10**9  # evaluation seeds start here; rollout seeds stay below it


@dataclass
class RolloutConfig:
    """Rollouts (params.yaml section `rollout`)."""

    env: Choice(*ENVS) = param("embedded", "embedded: the embedded world; libero: the LIBERO simulator")
    suite: str | None = param(None, "libero only: benchmark suite (default libero_10)")
    task: str = param("8", "task index or instruction (embedded: LIBERO-10's; libero: the suite's), 8: moka pots")
    episodes: Count = param(4, "episodes to record")
    workers: Count = param(1, "simulator processes (LIBERO: about 2 GB of memory each)")
    max_steps: Natural = param(
        0, "step cap per episode; 0: the env's cap (embedded: the base shard's, 100; libero_10: 520)")
    seed: Seed = param(0, "fixes the initial-state order, each episode's seed and the random policy")
    guidance: NonNegative = param(1.0, "classifier-free guidance beta for a trained policy (1: plain conditioning)")
    render_size: Int(16, 1024) | None = param(None, "libero only: camera render size before resizing (default 256)")
    batch_size: Count = param(50, "embedded only: episodes stepped together through one policy call")

    command = "rollout"  # names the command in errors (a class attribute, not a field)

    def validate(self) -> "RolloutConfig":
        check_fields(self, self.command)
        if self.env == "embedded":
            for name in ("suite", "render_size"):
                if getattr(self, name) is not None:
                    raise RecapError(f"{self.command}: field '{name}' (--{name.replace('_', '-')}) is for env libero "
                                     "only; leave it out with env embedded")
        return self


def plan_episodes(cfg: RolloutConfig, init_states: int, first_state: int = 0, seed_offset: int = 0) -> list[dict]:
    """Per episode: index, initial-state id (distinct while episodes <= init_states, drawn from
    first_state .. first_state + init_states - 1) and seed."""
    order = np.random.default_rng(cfg.seed).permutation(init_states) + first_state
    return [{"episode_index": i, "init_state": int(order[i % init_states]),
             "seed": seed_offset + cfg.seed * 100_003 + i} for i in range(cfg.episodes)]


def env_features(image_size: int) -> dict:
    """What the environment gives a policy and takes from it: {feature: shape}."""
    return {AGENTVIEW_KEY: (3, image_size, image_size), WRIST_KEY: (3, image_size, image_size),
            STATE_KEY: (8,), ACTION_KEY: (7,)}


POLICY_FIX = "pass `random` or a directory written by `recap-data train policy`"


def policy_config(policy: str) -> dict:
    """A policy checkpoint's config.json (its input and output features)."""
    return read_json(Path(policy) / paths.CONFIG_FILE, what="policy checkpoint", fix=POLICY_FIX)


def check_policy(policy: str, image_size: int) -> dict | None:
    """A trained policy's features must match the environment's: refused before the simulator starts.
    Returns the policy's provenance (None for the random policy)."""
    from recap_data.policy.model import read_provenance

    if policy == RANDOM:
        return None
    provenance = read_provenance(Path(policy), POLICY_FIX)
    config = policy_config(policy)
    have = {k: tuple(v["shape"]) for k, v in {**config["input_features"], **config["output_features"]}.items()}
    want = env_features(image_size)
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            raise RecapError(f"--policy {policy}: feature {key} is {have.get(key) or 'absent'} in the policy and "
                             f"{want.get(key) or 'absent'} in the environment; train the policy on shards of "
                             "this store's schema")
    return provenance


@dataclass
class EnvPlan:
    """A resolved environment: what the manifest records and how episodes run."""

    env: str
    task_id: int
    language: str
    max_steps: int
    init_states: int  # how many initial states episodes draw from ...
    first_state: int  # ... starting at this index
    source: dict  # env fields of the manifest (suite, world config)
    runner_args: tuple


def embedded_world(manifests: list, task: str, max_steps: int, image_size: int, option: str):
    """(task id, WorldConfig) for the embedded world; max_steps 0 takes the base shard's cap (from the
    store's manifests).
    The speed limit follows the cap, so a cap other than the base data's is a different world: refused."""
    from recap_data.world.env import TASKS, WorldConfig

    text = str(task).strip()
    if text.isdigit() and int(text) < len(TASKS):
        task_id = int(text)
    elif text in TASKS:
        task_id = TASKS.index(text)
    else:
        listing = "; ".join(f"{i}: {t}" for i, t in enumerate(TASKS))
        raise RecapError(f"{option}: --task {text!r} is not a task of the embedded world; valid tasks: {listing}")
    recorded = None
    for m in manifests:
        if m.source.get("world") == "embedded" and m.kind == "base":
            recorded = int(m.source["config"]["max_steps"])
    if max_steps and recorded and max_steps != recorded:
        raise RecapError(f"{option}: --max-steps {max_steps} differs from the base shard's world ({recorded}); the "
                         f"speed limit follows the step cap, so use {recorded} (or 0)")
    return task_id, WorldConfig(task_id, image_size, max_steps or recorded or 100).validate()


def resolve_env(cfg, manifests: list, image_size: int, option: str, split: str = "train") -> EnvPlan:
    """The environment of a rollout or eval config (manifests: the store's shards); split: which of
    the embedded world's initial states."""
    if cfg.env == "embedded":
        from recap_data.world.env import SPLITS, TASKS

        task_id, world = embedded_world(manifests, cfg.task, cfg.max_steps, image_size, option)
        first, end = SPLITS[split]
        source = {"world": {"task": task_id, "max_steps": world.max_steps, "image_size": image_size},
                  "split": split}
        return EnvPlan("embedded", task_id, TASKS[task_id], world.max_steps, end - first, first, source,
                       (world, cfg.batch_size))
    from recap_data.sim import libero as libero_sim

    suite = cfg.suite or "libero_10"
    task_id, language = libero_sim.resolve_task(suite, cfg.task)
    max_steps = cfg.max_steps or libero_sim.suite_max_steps(suite)
    # LIBERO has 50 official states per task: rollouts and evaluation share them (seeds differ)
    return EnvPlan("libero", task_id, language, max_steps, libero_sim.init_state_count(suite, task_id), 0,
                   {"suite": suite}, (suite, task_id, image_size, cfg.render_size or 256))


class LiberoEpisodes:
    """Runs LIBERO episodes in this process, one after another: one simulator and one policy, built on first use."""

    def __init__(self, suite: str, task_id: int, image_size: int, render_size: int, policy: str,
                 guidance: float, max_steps: int, keep_frames: bool = True):
        self.args = (suite, task_id, image_size, render_size)
        self.policy_path, self.guidance, self.max_steps, self.keep_frames = policy, guidance, max_steps, keep_frames
        self.sim = self.policy = None

    def __call__(self, plans: list[dict]) -> list[dict]:
        return [self.episode(plan) for plan in plans]

    def episode(self, plan: dict) -> dict:
        import torch

        from recap_data.policy.model import RecapPolicy
        from recap_data.sim.libero import LiberoTask

        if self.sim is None:
            self.sim = LiberoTask(*self.args)
            if self.policy_path != RANDOM:
                self.policy = RecapPolicy.load(self.policy_path)
        rng = np.random.default_rng(plan["seed"])
        frame = self.sim.reset(plan["init_state"], plan["seed"])
        torch.manual_seed(plan["seed"])  # the policy's flow-matching noise
        if self.policy is not None:
            self.policy.reset()
        frames, success, length = [], False, 0
        for _ in range(self.max_steps):
            if self.policy is None:
                action = rng.uniform(-1.0, 1.0, 7).astype(np.float32)
            else:
                obs = {k: torch.from_numpy(frame[k]).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
                       for k in (AGENTVIEW_KEY, WRIST_KEY)}
                obs[STATE_KEY] = torch.from_numpy(frame[STATE_KEY])[None]  # (1, 8)
                action = self.policy.select_action(obs, self.sim.language, self.guidance)[0].numpy()
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
            if self.keep_frames:
                frames.append({**frame, ACTION_KEY: action})
            length += 1
            frame, success = self.sim.step(action)
            if success:  # sticky: the episode ends at success
                break
        return {**plan, "frames": frames if self.keep_frames else None, "success": success, "length": length}

    def close(self) -> None:
        """Free the simulator's GL context now (at interpreter exit, EGL complains noisily)."""
        if self.sim is not None:
            self.sim.close()
            self.sim = None


def make_runner(env: EnvPlan, policy: str, guidance: float, keep_frames: bool):
    """A callable running a list of planned episodes, and the batch size to hand it."""
    if env.env == "embedded":
        from recap_data.sim.world_rollout import WorldEpisodes

        world, batch = env.runner_args
        return WorldEpisodes(world, policy, guidance, keep_frames), batch
    return LiberoEpisodes(*env.runner_args, policy, guidance, env.max_steps, keep_frames), 1


_worker = None


def _init_worker(*args) -> None:
    global _worker
    _worker, _ = make_runner(*args)


def _run_in_worker(plans: list[dict]) -> list[dict]:
    return _worker(plans)


def run_episodes(stack, env: EnvPlan, policy: str, guidance: float, plans: list[dict], workers: int,
                 keep_frames: bool = True):
    """Episodes in plan order (an iterator), run here or in `workers` spawn processes."""
    import multiprocessing as mp

    runner, batch = make_runner(env, policy, guidance, keep_frames)
    batch = min(batch, -(-len(plans) // workers))  # every worker gets work
    batches = [plans[i:i + batch] for i in range(0, len(plans), batch)]
    if workers == 1:
        if hasattr(runner, "close"):
            stack.callback(runner.close)
        groups = map(runner, batches)
    else:  # spawn: each LIBERO worker needs its own GL context, which a fork would share
        pool = stack.enter_context(mp.get_context("spawn").Pool(workers, _init_worker,
                                                                (env, policy, guidance, keep_frames)))
        groups = pool.imap(_run_in_worker, batches)  # in order; workers run ahead
    return (episode for group in groups for episode in group)


def policy_source(policy: str, provenance: dict | None) -> dict:
    """The manifest's record of the policy: path, content digest, family (pi0 / pi05), indicator mode."""
    if provenance is None:
        return {"path": policy, "digest": None, "type": None, "indicator_mode": None}
    from recap_data.train.checkpoint import directory_digest

    return {"path": policy, "digest": directory_digest(Path(policy)), "type": provenance.get("type", "pi0"),
            "indicator_mode": provenance.get("indicator_mode")}


def rollout(store: ShardStore, shard_id: str, policy: str, cfg: RolloutConfig, metrics_path: Path | None = None,
            progress: bool = True):
    """Record cfg.episodes episodes of `policy` (a checkpoint directory or "random") as shard `shard_id`."""
    from contextlib import ExitStack
    from dataclasses import asdict

    from tqdm import tqdm

    from recap_data.io import write_json
    from recap_data.store.writer import ShardWriter

    cfg.validate()
    manifests = store.manifests()
    features = manifests[0].features if manifests else libero_features(64)
    image_size = int(features[AGENTVIEW_KEY]["shape"][0])
    provenance = check_policy(policy, image_size)  # before the simulator starts
    env = resolve_env(cfg, manifests, image_size, "rollout")
    plans = plan_episodes(cfg, env.init_states, env.first_state)
    source = {"recorder": "recap_data.sim.rollout", "env": env.env, "policy": policy_source(policy, provenance),
              "guidance": cfg.guidance, **env.source, "task_id": env.task_id, "task": env.language,
              "max_steps": env.max_steps, "config": asdict(cfg), "episodes": []}
    started, frames, successes = time.perf_counter(), 0, 0
    with ExitStack() as stack:
        writer = stack.enter_context(ShardWriter(
            store, shard_id, kind="rollout", features=features, fps=LIBERO_FPS, source=source, robot_type="panda",
            use_videos=features[AGENTVIEW_KEY]["dtype"] == "video"))
        episodes = run_episodes(stack, env, policy, cfg.guidance, plans, cfg.workers)
        bar = stack.enter_context(tqdm(total=len(plans), desc=f"rollouts {env.env}/{env.task_id}", unit="ep",
                                       disable=not progress))
        for episode in episodes:
            for frame in episode.pop("frames"):
                writer.add_frame(frame, task=env.language)
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
    if metrics_path:  # the headline for `dvc metrics show`; the shard's manifest has every episode
        write_json(Path(metrics_path), {"success_rate": metrics["success_rate"]})
    return writer.manifest, metrics
