"""`recap-data make-demo-data`: the embedded base shard, recorded in the embedded world.

The LIBERO demo set cannot be downloaded here, so the default pipeline runs on this. Scripted
demonstrators (recap_data.world.demonstrators) act in the world (recap_data.world.env) from its training
initial states, and every frame is the world's own observation under the demonstrator's action,
so an episode replays exactly. The mix of demonstrators is a named regime (world.demonstrators.
REGIMES: `teleop`, every demonstration succeeds; `mixed`, the default, 70%; `scarce`, 30%) or,
with regime `custom`, five shares given one by one; exact counts, rounded, in an order fixed by
the seed.
Features are LeRobot's LIBERO ones (two cameras, state 8, action 7, fps 20) and the tasks are
the ten LIBERO-10 instructions.
"""

from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from recap_data.config import Choice, Count, FieldError, Fraction, Int, Seed, check_fields, param
from recap_data.errors import RecapError
from recap_data.store.schema import ACTION_KEY, AGENTVIEW_KEY, LIBERO_FPS, STATE_KEY, WRIST_KEY, libero_features
from recap_data.store.store import Manifest, ShardStore, validate_shard_id
from recap_data.store.writer import ShardWriter
from recap_data.world.demonstrators import CUSTOM, KINDS, REGIMES, demonstrate
from recap_data.world.env import MIN_VIDEO_SIZE, TASKS, TRAIN_INIT_STATES, WorldConfig

GENERATOR_VERSION = 3  # 3: recorded in the embedded world by scripted demonstrators
MIN_DEMO_STEPS = 20


@dataclass
class DemoDataConfig:
    """Parameters of the embedded base shard."""

    section = "base"  # its params.yaml section (a class attribute, not a field)

    shard_id: str = param("base", "id of the shard to write")
    episodes: Count = param(200, "number of episodes, tasks round-robin")
    tasks: Int(1, 10) = param(10, "number of LIBERO-10 instructions (1-10), counted from first_task")
    first_task: Int(0, 9) = param(0, "index of the first instruction (they wrap around: 8 with tasks 3 is 8, 9, 0)")
    max_steps: Int(20, 10_000) = param(100, "the world's step cap (and its speed limit: 0.4 m / max_steps per step)")
    regime: Choice(*REGIMES, CUSTOM) = param(
        "mixed", "the demonstration mix: teleop (all succeed: experts and poor-but-successful), "
                 "mixed (70% succeed), scarce (30%), or custom (the five shares below)")
    expert: Fraction | None = param(None, "regime custom: share of direct expert demonstrations")
    poor: Fraction | None = param(None, "regime custom: share of successes with a fumble, detour, hesitation, "
                                        "overshoot or crawl")
    decoy: Fraction | None = param(None, "regime custom: share of failures that grasp the decoy")
    release: Fraction | None = param(None, "regime custom: share of failures that let go before the grasp holds")
    timeout: Fraction | None = param(None, "regime custom: share of failures that crawl and wander until the cap")
    image_size: Int(16, 512) = param(64, "camera height and width in pixels (LIBERO renders 256)")
    use_videos: bool = param(True, "cameras as mp4 videos (LeRobot's default) or PNG in parquet")
    seed: Seed = param(0, "same seed, same data")

    def validate(self) -> "DemoDataConfig":
        check_fields(self)

        def bad(field, why):
            raise FieldError(self.section, field, f"= {getattr(self, field)!r} is invalid: {why}")

        validate_shard_id(self.shard_id)
        given = [k for k in KINDS if getattr(self, k) is not None]
        if self.regime != CUSTOM and given:
            bad("regime", f"it sets the shares itself, so field '{given[0]}' must be left out; "
                          f"use regime {CUSTOM} to give the five shares")
        if self.regime == CUSTOM and len(given) < len(KINDS):
            missing = [k for k in KINDS if k not in given]
            raise RecapError(f"make-demo-data: regime {CUSTOM} needs all five shares; field '{missing[0]}' is missing")
        total = sum(self.shares().values())
        if abs(total - 1.0) > 1e-6:
            raise RecapError(f"make-demo-data: fields {', '.join(KINDS)} sum to {total:g}; make them sum to 1")
        if self.use_videos and self.image_size < MIN_VIDEO_SIZE:  # SVT-AV1 dies (SIGFPE) on 16 px
            bad("image_size", f"videos need at least {MIN_VIDEO_SIZE} pixels; use --no-videos for smaller")
        if self.max_steps < MIN_DEMO_STEPS:  # a poor demonstration needs room for its bad segments
            bad("max_steps", f"use at least {MIN_DEMO_STEPS}")
        return self

    def shares(self) -> dict[str, float]:
        """Each demonstrator kind's share of the episodes: the regime's, or the five fields (custom)."""
        return dict(REGIMES[self.regime]) if self.regime in REGIMES else {k: getattr(self, k) for k in KINDS}

    def kinds(self) -> list[str]:
        """The demonstrator of each episode: exact (rounded) counts of the mix, in a seeded order."""
        by_kind = self.shares()
        shares = np.array([by_kind[k] for k in KINDS])
        counts = np.floor(shares * self.episodes).astype(int)
        rest = shares * self.episodes - counts
        counts[np.argsort(-rest, kind="stable")[:self.episodes - counts.sum()]] += 1  # largest remainders
        kinds = np.repeat(np.array(KINDS), counts)
        return [str(k) for k in np.random.default_rng(self.seed).permutation(kinds)]

    def plan(self) -> list[dict]:
        """Per episode: task, training initial state (distinct per task while they last), demonstrator."""
        tasks = [(self.first_task + k) % len(TASKS) for k in range(self.tasks)]
        orders = {t: np.random.default_rng([self.seed, 1, t]).permutation(TRAIN_INIT_STATES) for t in tasks}
        return [{"task": tasks[i % self.tasks], "kind": kind, "seed": [self.seed, i],
                 "init_state": int(orders[tasks[i % self.tasks]][(i // self.tasks) % TRAIN_INIT_STATES])}
                for i, kind in enumerate(self.kinds())]


def make_demo_data(store: ShardStore, cfg: DemoDataConfig, progress: bool = True) -> Manifest:
    """Write the embedded base shard into the store and return its manifest.

    A shard of that id made by this generator with the same config is returned as it is (the
    output is byte-reproducible, so writing it again would change nothing); any other shard of
    that id is an error, since shards are immutable. The manifest's `source.episodes` lists
    each episode's task, initial state, demonstrator and seed (what a replay needs).
    """
    cfg.validate()
    plan = cfg.plan()
    source = {"generator": "recap_data.data.demo_data", "generator_version": GENERATOR_VERSION, "world": "embedded",
              "seed": cfg.seed, "config": asdict(cfg), "regime": cfg.regime, "shares": cfg.shares(),
              "episodes": plan}
    existing = store.manifest(cfg.shard_id) if store.exists(cfg.shard_id) else None
    if existing is not None and existing.source == source:
        return existing
    features = libero_features(cfg.image_size, cfg.use_videos)
    with ShardWriter(store, cfg.shard_id, kind="base", features=features, fps=LIBERO_FPS,
                     source=source, synthetic=True, robot_type="panda", use_videos=cfg.use_videos) as w:
        for episode in tqdm(plan, desc=f"writing shard {cfg.shard_id}", unit="ep", disable=not progress):
            world = WorldConfig(episode["task"], cfg.image_size, cfg.max_steps)
            recorded = demonstrate(episode["kind"], world, episode["init_state"], episode["seed"])
            for frame in recorded["frames"]:
                w.add_frame({k: frame[k] for k in (AGENTVIEW_KEY, WRIST_KEY, STATE_KEY, ACTION_KEY)},
                            task=TASKS[episode["task"]])
            w.save_episode(success=recorded["success"])
    return w.manifest
