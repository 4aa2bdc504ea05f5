"""`recap-data rollout`: roll a policy out in the embedded world or in LIBERO and record a new shard.

Step 3.i of the RECAP loop. `env` chooses the simulator:
  embedded  the embedded world (recap_data.world.env): one LIBERO-10 instruction's scene; episodes
            run many at once (world_rollout.py), from the world's training initial states
  libero    the real LIBERO simulator (libero.py, libero_rollout.py), one task of a suite, its 50 official
            initial states
Episodes cycle through the initial states in a permutation fixed by the seed (N distinct
scenes while N <= their number, reproducibly), run until the environment ends them (success,
sticky; in the embedded world also a grasp of the decoy) or max_steps, and stream into a new
immutable shard through ShardWriter, episode by episode, at full precision, with the store's
feature names and image size. Where and how the episodes run (the environment, the plan, the
worker processes) is episodes.py's; this module checks the policy against the environment and
records. Nothing becomes visible before the commit: a Ctrl-C or a kill leaves no shard.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from recap_data.config import Choice, Count, FieldError, Int, Natural, NonNegative, Seed, check_fields, param
from recap_data.errors import RecapError
from recap_data.io import failpoint, read_json, shared_directory, write_json
from recap_data.sim.episodes import RANDOM, launch, plan_episodes, resolve_env, run_episodes, share
from recap_data.store import paths
from recap_data.store.schema import ACTION_KEY, AGENTVIEW_KEY, LIBERO_FPS, STATE_KEY, WRIST_KEY, libero_features
from recap_data.store.store import ShardStore

ENVS = ("embedded", "libero")


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

    section = "rollout"  # its params.yaml section (a class attribute, not a field)

    def validate(self) -> "RolloutConfig":
        check_fields(self)
        if self.env == "embedded":
            for name in ("suite", "render_size"):
                if getattr(self, name) is not None:
                    raise FieldError(self.section, name, "is for env libero only; leave it out with env embedded")
        return self




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


def policy_source(policy: str, provenance: dict | None) -> dict:
    """The manifest's record of the policy: path, content digest, family (pi0 / pi05), indicator mode."""
    if provenance is None:
        return {"path": policy, "digest": None, "type": None, "indicator_mode": None}
    from recap_data.train.checkpoint import directory_digest

    return {"path": policy, "digest": directory_digest(Path(policy)), "type": provenance.get("type", "pi0"),
            "indicator_mode": provenance.get("indicator_mode")}


def rollout(store: ShardStore, shard_id: str, policy: str, cfg: RolloutConfig, metrics_path: Path | None = None,
            progress: bool = True):
    """Record cfg.episodes episodes of `policy` (a checkpoint directory or "random") as shard `shard_id`:
    (its manifest, metrics). Under accelerate each process records its share of the plan beside the
    shard's staging directory and the main process builds the one shard from them; the others
    return (None, None)."""
    from contextlib import ExitStack
    from dataclasses import asdict

    from tqdm import tqdm

    from recap_data.store.writer import EpisodeRecorder, ShardWriter

    cfg.validate()
    manifests = store.manifests()
    features = manifests[0].features if manifests else libero_features(64)
    image_size = int(features[AGENTVIEW_KEY]["shape"][0])
    provenance = check_policy(policy, image_size)  # before the simulator starts
    env = resolve_env(cfg, manifests, image_size, "rollout")
    plans = plan_episodes(cfg, env.init_states, env.first_state)
    rank, world, state = launch()
    mine = share(plans, rank, world)
    source = {"recorder": "recap_data.sim.rollout", "env": env.env, "policy": policy_source(policy, provenance),
              "guidance": cfg.guidance, **env.source, "task_id": env.task_id, "task": env.language,
              "max_steps": env.max_steps, "config": asdict(cfg), "episodes": []}
    use_videos = features[AGENTVIEW_KEY]["dtype"] == "video"
    started, frames, successes = time.perf_counter(), 0, 0
    with ExitStack() as stack:
        writer = stack.enter_context(ShardWriter(
            store, shard_id, kind="rollout", features=features, fps=LIBERO_FPS, source=source, robot_type="panda",
            use_videos=use_videos)) if rank == 0 else None
        recorder, ranks = writer, None
        if world > 1:  # each process records its share beside the shard's staging directory
            ranks = shared_directory(state, writer.work_dir if writer else None) / "ranks"
            recorder = EpisodeRecorder(ranks / f"rank-{rank:05d}", shard_id, features, LIBERO_FPS, "panda", use_videos)
        episodes = run_episodes(stack, env, policy, cfg.guidance, mine, cfg.workers)
        bar = stack.enter_context(tqdm(total=len(mine), desc=f"rollouts {env.env}/{env.task_id}", unit="ep",
                                       disable=not progress or rank > 0))
        for episode in episodes:
            for frame in episode.pop("frames"):
                recorder.add_frame(frame, task=env.language)
            recorder.save_episode(success=episode["success"])
            if world > 1:
                failpoint(f"rollout_episode:{rank}")  # tests: this process dies with an episode recorded
            source["episodes"].append(episode)  # the manifest is written at commit, with every episode
            frames += episode["length"]
            successes += int(episode["success"])
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{bar.n}", frames=frames)
        if world > 1:
            recorder.finish()
            write_json(ranks / f"rank-{rank:05d}.json", {"episodes": source["episodes"]})
            state.wait_for_everyone()  # every process has recorded its share
            if rank > 0:
                return None, None
            source["episodes"] = [e for r in range(world)
                                  for e in read_json(ranks / f"rank-{r:05d}.json", what="rollout share",
                                                     fix="run the rollout again")["episodes"]]
            frames = sum(e["length"] for e in source["episodes"])
            successes = sum(bool(e["success"]) for e in source["episodes"])
            writer.aggregate([ranks / f"rank-{r:05d}" for r in range(world) if len(share(plans, r, world))],
                             successes)
    wall = time.perf_counter() - started
    metrics = {"episodes": len(plans), "frames": frames, "successes": successes,
               "success_rate": successes / len(plans), "mean_episode_length": frames / len(plans),
               "wall_s": round(wall, 2), "env_steps_per_s": round(frames / wall, 2)}
    if metrics_path:  # the headline for `dvc metrics show`; the shard's manifest has every episode
        write_json(Path(metrics_path), {"success_rate": metrics["success_rate"]})
    return writer.manifest, metrics

