"""Where and how episodes run, for `rollout` and `eval` alike: the environment a config names
(EnvPlan: the embedded world or a LIBERO suite's task), the plan of episodes (initial state and
seed per episode, fixed before anything runs), and the runners that play a plan: here, or in
`workers` spawn processes that each own one simulator and one copy of the policy, episodes
coming back in plan order. Under `accelerate launch` or torchrun (one node or many) each process
plays its contiguous share of the plan (launch, share): the plan does not depend on the process
count, so neither do the episodes.
"""

import os
from dataclasses import dataclass

import numpy as np

from recap_data.errors import RecapError

RANDOM = "random"  # the policy that draws uniform actions, for smoke runs and a floor
EVAL_SEED_OFFSET = 10**9  # evaluation seeds start here; rollout seeds stay below it


def plan_episodes(cfg, init_states: int, first_state: int = 0, seed_offset: int = 0) -> list[dict]:
    """Per episode: index, initial-state id (distinct while episodes <= init_states, drawn from
    first_state .. first_state + init_states - 1) and seed."""
    order = np.random.default_rng(cfg.seed).permutation(init_states) + first_state
    return [{"episode_index": i, "init_state": int(order[i % init_states]),
             "seed": seed_offset + cfg.seed * 100_003 + i} for i in range(cfg.episodes)]


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


def make_runner(env: EnvPlan, policy: str, guidance: float, keep_frames: bool):
    """A callable running a list of planned episodes, and the batch size to hand it."""
    if env.env == "embedded":
        from recap_data.sim.world_rollout import WorldEpisodes

        world, batch = env.runner_args
        return WorldEpisodes(world, policy, guidance, keep_frames), batch
    from recap_data.sim.libero_rollout import LiberoEpisodes

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


def launch():
    """(rank, world, state): this process's place in an `accelerate launch` / torchrun run, or
    (0, 1, None) when it runs alone (accelerate is not imported then)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state


def share(plans: list[dict], rank: int, world: int) -> list[dict]:
    """Process `rank`'s contiguous share of the episode plan (all of it alone)."""
    return plans[len(plans) * rank // world:len(plans) * (rank + 1) // world]
