"""`recap-data make-demo-data`: the embedded, synthetic, LIBERO-shaped base shard.

The LIBERO demo set cannot be downloaded here, so the default pipeline runs on this. It uses
the feature names of LeRobot's LIBERO environment and the ten LIBERO-10 instructions, and it
is learnable: in a successful episode the end effector moves at constant speed from a random
start to the task's goal, then closes the gripper, so the remaining steps follow from the
state (distance to goal) and from the images (both show the effector and the goal). A failed
episode heads for the task's decoy instead and wanders there until the step cap.
"""

from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from recap_data.errors import RecapError
from recap_data.schema import ACTION_KEY, AGENTVIEW_KEY, LIBERO_FPS, STATE_KEY, WRIST_KEY, libero_features
from recap_data.store import Manifest, ShardStore, validate_shard_id
from recap_data.writer import ShardWriter

# LIBERO-10 (libero_10 suite) instructions in benchmark order; index 8 is the moka-pot task.
LIBERO_10_TASKS = [
    "put both the alphabet soup and the tomato sauce in the basket",
    "put both the cream cheese box and the butter in the basket",
    "turn on the stove and put the moka pot on it",
    "put the black bowl in the bottom drawer of the cabinet and close it",
    "put the white mug on the left plate and put the yellow and white mug on the right plate",
    "pick up the book and place it in the back compartment of the caddy",
    "put the white mug on the plate and put the chocolate pudding to the right of the plate",
    "put both the alphabet soup and the cream cheese box in the basket",
    "put both moka pots on the stove",
    "put the yellow and white mug in the microwave and close it",
]
GENERATOR_VERSION = 2
WORKSPACE = 0.4  # the effector stays within [-WORKSPACE, WORKSPACE] in x and y (metres)
HOLD = 5  # frames spent closing the gripper at the goal
GRIPPER_OPEN = 0.04
MIN_VIDEO_SIZE = 32


@dataclass
class DemoDataConfig:
    """Parameters of the synthetic base shard (params.yaml section `base`)."""

    shard_id: str = "base"  # id of the shard to write
    episodes: int = 200  # number of episodes, tasks round-robin (20 per task: enough to learn a value)
    tasks: int = 10  # use the first N LIBERO-10 instructions (1-10)
    success_fraction: float = 0.8  # fraction of episodes that succeed (exact, rounded)
    min_length: int = 30  # shortest successful episode, in frames
    max_length: int = 100  # step cap: failures run to it, successes end before it
    image_size: int = 64  # camera height and width in pixels (LIBERO renders 256)
    use_videos: bool = True  # cameras as mp4 videos (LeRobot's default) or PNG in parquet
    seed: int = 0  # same seed, same data

    def validate(self) -> "DemoDataConfig":
        def bad(field, why):
            raise RecapError(f"make-demo-data: field '{field}' = {getattr(self, field)!r} is invalid: {why}")

        validate_shard_id(self.shard_id)
        if self.episodes < 1:
            bad("episodes", "need at least 1")
        if not 1 <= self.tasks <= len(LIBERO_10_TASKS):
            bad("tasks", f"use 1..{len(LIBERO_10_TASKS)}")
        if not 0.0 <= self.success_fraction <= 1.0:
            bad("success_fraction", "use a fraction in [0, 1]")
        if self.min_length < HOLD + 2:
            bad("min_length", f"use at least {HOLD + 2} frames")
        if self.max_length <= self.min_length:
            bad("max_length", f"must exceed min_length ({self.min_length})")
        if not 16 <= self.image_size <= 512:
            bad("image_size", "use 16..512 pixels")
        if self.use_videos and self.image_size < MIN_VIDEO_SIZE:  # SVT-AV1 dies (SIGFPE) on 16 px
            bad("image_size", f"videos need at least {MIN_VIDEO_SIZE} pixels; use --no-videos for smaller")
        return self


def _task_layout(task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed goal, decoy and colour of a task (the same for every seed, like a LIBERO scene)."""
    rng = np.random.default_rng(10_000 + task)
    goal = np.array([*rng.uniform(-0.15, 0.15, 2), 0.05])
    angle = rng.uniform(0, 2 * np.pi)
    decoy = goal + np.array([0.2 * np.cos(angle), 0.2 * np.sin(angle), 0.0])
    color = rng.integers(60, 256, 3)
    return goal, decoy, color


def _episode(cfg: DemoDataConfig, index: int, success: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """Task id, states (T, 8) and actions (T, 7) of one episode."""
    rng = np.random.default_rng([cfg.seed, index])
    task = index % cfg.tasks
    goal, decoy, _ = _task_layout(task)
    # Constant speed for every episode, so that remaining steps = distance to goal / speed.
    # The longest approach (0.5 * WORKSPACE) from any goal (|x|, |y| <= 0.15) stays in the workspace.
    speed = 0.5 * WORKSPACE / cfg.max_length  # metres per step
    if success:
        length = int(rng.integers(cfg.min_length, cfg.max_length))
        moving = length - HOLD
        target = goal
    else:
        length = cfg.max_length
        moving = int(rng.integers(cfg.min_length // 2, cfg.max_length // 2 + 1))
        target = decoy
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2])  # start above the goal's height, never below the table
    direction /= np.linalg.norm(direction)
    start = goal + direction * speed * (length - HOLD if success else moving)

    t = np.arange(length)[:, None]
    progress = np.minimum(t / moving, 1.0)  # (T, 1)
    pos = start + (target - start) * progress + rng.normal(0, 0.002, (length, 3))
    if not success:  # wander around the decoy once there
        wander = np.cumsum(rng.normal(0, 0.004, (length, 3)), axis=0) * (t >= moving)
        pos = pos + wander
    rot0 = rng.normal(0, 0.3, 3)
    rot = rot0 * (1.0 - progress)  # (T, 3) axis-angle, aligning with the goal orientation
    closing = np.clip((t - moving + 1) / HOLD, 0.0, 1.0) if success else np.zeros_like(t, dtype=float)
    opening = GRIPPER_OPEN * (1.0 - closing)  # (T, 1)
    state = np.concatenate([pos, rot, opening, -opening], axis=1).astype(np.float32)  # (T, 8)

    delta = np.diff(pos, axis=0, append=pos[-1:])  # (T, 3): next position minus this one
    action = np.concatenate([
        np.clip(delta / (2 * speed), -1, 1),
        np.clip(-rot0 / max(moving, 1) / 0.05, -1, 1) * (t < moving),
        np.where(closing > 0, 1.0, -1.0),  # gripper command: -1 open, +1 close
    ], axis=1).astype(np.float32)  # (T, 7)
    return task, state, action


def _pixel(xy: np.ndarray, size: int) -> np.ndarray:
    return ((xy + WORKSPACE) / (2 * WORKSPACE) * (size - 1)).round().astype(int)


def _square(img: np.ndarray, center: np.ndarray, half: int, color) -> None:
    y0, x0 = np.clip(center[::-1] - half, 0, img.shape[0])
    y1, x1 = np.clip(center[::-1] + half + 1, 0, img.shape[0])
    img[y0:y1, x0:x1] = color


def render(task: int, state: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Agentview and wrist images (size, size, 3) uint8 for one state."""
    goal, decoy, color = _task_layout(task)
    pos, opening = state[:3], float(state[6])
    agent = np.full((size, size, 3), 40, np.uint8)
    agent[:] = (agent * 0.5 + color * 0.25).astype(np.uint8)  # task-tinted table
    half = max(1, size // 20)
    _square(agent, _pixel(goal[:2], size), half, color)
    _square(agent, _pixel(decoy[:2], size), half, color // 3)
    eef = _pixel(pos[:2], size)
    yy, xx = np.mgrid[:size, :size]
    radius = max(1.5, size / 40 * (1 + 4 * float(pos[2])))  # higher effector, bigger disc
    grip = 1.0 - opening / GRIPPER_OPEN
    agent[(xx - eef[0]) ** 2 + (yy - eef[1]) ** 2 <= radius**2] = (255, 255, int(255 * (1 - grip)))

    wrist = np.full((size, size, 3), 90, np.uint8)
    zoom = 3.0  # the wrist camera sees the goal three times closer ...
    rel = _pixel(np.clip((goal[:2] - pos[:2]) * zoom, -WORKSPACE, WORKSPACE), size)
    distance = float(np.linalg.norm(goal - pos))  # ... and bigger as the effector approaches it
    _square(wrist, rel, max(1, int(size / 2 * 0.03 / (distance + 0.03))), color)
    gap = int(opening / GRIPPER_OPEN * size / 4)  # finger gap shrinks as the gripper closes
    finger = max(1, size // 16)
    c = size // 2
    wrist[-size // 4:, max(0, c - gap - finger):c - gap] = 230
    wrist[-size // 4:, c + gap:c + gap + finger] = 230
    return agent, wrist


def make_demo_data(store: ShardStore, cfg: DemoDataConfig, progress: bool = True) -> Manifest:
    """Write the synthetic base shard into the store and return its manifest.

    A shard of that id made by this generator with the same config is returned as it is (the
    output is byte-reproducible, so writing it again would change nothing); any other shard of
    that id is an error, since shards are immutable.
    """
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    n_success = round(cfg.success_fraction * cfg.episodes)
    outcomes = np.zeros(cfg.episodes, bool)
    outcomes[rng.permutation(cfg.episodes)[:n_success]] = True
    source = {"generator": "recap_data.demo_data", "generator_version": GENERATOR_VERSION,
              "seed": cfg.seed, "config": asdict(cfg)}
    existing = store.manifest(cfg.shard_id) if store.exists(cfg.shard_id) else None
    if existing is not None and existing.source == source:
        return existing
    features = libero_features(cfg.image_size, cfg.use_videos)
    with ShardWriter(store, cfg.shard_id, kind="base", features=features, fps=LIBERO_FPS,
                     source=source, synthetic=True, robot_type="panda", use_videos=cfg.use_videos) as w:
        for index in tqdm(range(cfg.episodes), desc=f"writing shard {cfg.shard_id}", unit="ep",
                          disable=not progress):
            task, states, actions = _episode(cfg, index, bool(outcomes[index]))
            for state, action in zip(states, actions, strict=True):
                agent, wrist = render(task, state, cfg.image_size)
                w.add_frame({AGENTVIEW_KEY: agent, WRIST_KEY: wrist, STATE_KEY: state, ACTION_KEY: action},
                            task=LIBERO_10_TASKS[task])
            w.save_episode(success=bool(outcomes[index]))
    return w.manifest
