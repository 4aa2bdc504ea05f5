"""The embedded world: a reach-and-grasp task that decides success itself, fast enough for a laptop.

One LIBERO-10 instruction = one scene: a goal object and a decoy on a table (fixed per task,
like a LIBERO scene) and a gripper. Observations and actions have the base shard's features:
two cameras (`observation.images.image` from above, `observation.images.image2` at the wrist),
`observation.state` (8: effector position, axis-angle, the two finger positions) and `action`
(7: delta position, delta rotation, gripper command), at 20 fps.

Dynamics (deterministic: the same initial state and actions give the same frames):
- position moves by action[:3] * max_speed, the norm of action[:3] clipped to 1 (speed limit),
  and stays inside the workspace; rotation moves by action[3:6] * ROT_SPEED, within +-pi;
- action[6] > 0 closes the gripper, otherwise it opens, GRIPPER_OPEN / CLOSE_STEPS per step;
- success: the effector within SUCCESS_RADIUS of the instructed goal with the gripper fully
  closed for HOLD_STEPS consecutive frames; grasping the decoy (fully closed within the radius)
  ends the episode as a failure; otherwise the episode ends at the step cap (truncated).

Each task has INIT_STATES (300) fixed initial states (start position, rotation, open gripper),
as LIBERO tasks have 50, in three splits (SPLITS): 0-99 for demonstrations and rollouts,
100-199 held out for evaluation (the pipeline's), 200-299 held out for the benchmark alone.
`reset(options={"init_state": i})` picks one, `reset(seed=s)` alone draws one from the seed.
`WorldBatch` steps many episodes at once (the same arrays, one row per episode);
`ReachGraspEnv` is one of them behind the gymnasium API, registered as `recap_data/ReachGrasp-v0`
(`gymnasium.make("recap_data.world.env:recap_data/ReachGrasp-v0")` imports and makes it).
"""

from dataclasses import dataclass

import gymnasium
import numpy as np

from recap_data.errors import RecapError
from recap_data.store.schema import AGENTVIEW_KEY, STATE_KEY, WRIST_KEY

ENV_ID = "recap_data/ReachGrasp-v0"
# LIBERO-10 (libero_10 suite) instructions in benchmark order; index 8 is the moka-pot task.
TASKS = [
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
WORKSPACE = 0.4  # the effector stays within [-WORKSPACE, WORKSPACE] in x and y (metres)
Z_MAX = 0.3  # ... and within [0, Z_MAX] in height
GRIPPER_OPEN = 0.04  # finger position when open (metres); 0 is closed
CLOSE_STEPS = 4  # steps from open to closed (and back)
HOLD_STEPS = 3  # frames the closed gripper must stay at the goal
SUCCESS_RADIUS = 0.02  # metres between effector and object centre for a grasp
ROT_SPEED = 0.05  # radians per step at |action| = 1
INIT_STATES = 300  # fixed initial states per task, in three splits (first, last + 1):
SPLITS = {"train": (0, 100),  # demonstrations and rollouts
          "validation": (100, 200),  # evaluation in the pipeline and while developing
          "test": (200, 300)}  # evaluation in bench/bench_recap.py only: nothing is tuned on them
TRAIN_INIT_STATES = SPLITS["train"][1]
INIT_DISTANCE = (0.25, 0.5)  # start distance from the goal, as a fraction of WORKSPACE
MIN_VIDEO_SIZE = 32
# observation.state bounds: position in the workspace, rotation within +-pi, finger positions
STATE_LOW = np.array([-WORKSPACE, -WORKSPACE, 0.0, -np.pi, -np.pi, -np.pi, 0.0, -GRIPPER_OPEN], np.float32)
STATE_HIGH = np.array([WORKSPACE, WORKSPACE, Z_MAX, np.pi, np.pi, np.pi, GRIPPER_OPEN, 0.0], np.float32)


@dataclass
class WorldConfig:
    """The embedded world (the `world` part of a rollout or eval; base data records in it too)."""

    task: int = 8  # LIBERO-10 instruction index (8: put both moka pots on the stove)
    image_size: int = 64  # camera height and width in pixels
    max_steps: int = 100  # step cap; the speed limit is WORKSPACE / max_steps metres per step

    def validate(self) -> "WorldConfig":
        if not 0 <= self.task < len(TASKS):
            raise RecapError(f"world: task {self.task} is invalid: use 0..{len(TASKS) - 1}")
        if not 16 <= self.image_size <= 512:
            raise RecapError(f"world: image_size {self.image_size} is invalid: use 16..512 pixels")
        if self.max_steps < CLOSE_STEPS + HOLD_STEPS + 4:
            raise RecapError(f"world: max_steps {self.max_steps} is invalid: use at least "
                             f"{CLOSE_STEPS + HOLD_STEPS + 4}")
        return self

    @property
    def max_speed(self) -> float:
        """Metres per step at full action: a straight reach from the farthest start takes half the cap."""
        return WORKSPACE / self.max_steps


def task_layout(task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed goal (3,), decoy (3,) and colour (3,) of a task (the same for every seed, like a LIBERO scene)."""
    rng = np.random.default_rng(10_000 + task)
    goal = np.array([*rng.uniform(-0.15, 0.15, 2), 0.05])
    angle = rng.uniform(0, 2 * np.pi)
    decoy = goal + np.array([0.2 * np.cos(angle), 0.2 * np.sin(angle), 0.0])
    color = rng.integers(60, 256, 3)
    return goal, decoy, color


def init_state(task: int, index: int) -> np.ndarray:
    """Initial state `index` (0..INIT_STATES-1) of a task: (8,) float32, gripper open."""
    if not 0 <= index < INIT_STATES:
        raise RecapError(f"world: init_state {index} is invalid: use 0..{INIT_STATES - 1}")
    goal, _, _ = task_layout(task)
    rng = np.random.default_rng([20_000 + task, index])
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2]) * 0.5  # start above the goal's height, never below the table
    direction /= np.linalg.norm(direction)
    start = goal + direction * rng.uniform(*INIT_DISTANCE) * WORKSPACE
    start = np.clip(start, [-WORKSPACE, -WORKSPACE, 0.0], [WORKSPACE, WORKSPACE, Z_MAX])
    rot = np.clip(rng.normal(0, 0.3, 3), -np.pi, np.pi)
    return np.concatenate([start, rot, [GRIPPER_OPEN, -GRIPPER_OPEN]]).astype(np.float32)


class Renderer:
    """Both cameras of one task at one size; the static background is drawn once."""

    def __init__(self, task: int, size: int):
        self.size = size
        self.goal, self.decoy, self.color = task_layout(task)
        background = np.full((size, size, 3), 40, np.uint8)
        background[:] = (background * 0.5 + self.color * 0.25).astype(np.uint8)  # task-tinted table
        half = max(1, size // 20)
        _square(background, self._pixel(self.goal[:2]), half, self.color)
        _square(background, self._pixel(self.decoy[:2]), half, self.color // 3)
        self.background = background
        self.yy, self.xx = np.mgrid[:size, :size]

    def _pixel(self, xy: np.ndarray) -> np.ndarray:
        return ((xy + WORKSPACE) / (2 * WORKSPACE) * (self.size - 1)).round().astype(int)

    def __call__(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Agentview and wrist images (size, size, 3) uint8 for one state (8,)."""
        size = self.size
        pos, opening = state[:3], float(state[6])
        grip = 1.0 - opening / GRIPPER_OPEN
        agent = self.background.copy()
        x, y = self._pixel(pos[:2])
        radius = max(1.5, size / 40 * (1 + 4 * float(pos[2])))  # higher effector, bigger disc
        r = int(np.ceil(radius))
        y0, y1, x0, x1 = max(0, y - r), min(size, y + r + 1), max(0, x - r), min(size, x + r + 1)
        disc = (self.xx[y0:y1, x0:x1] - x) ** 2 + (self.yy[y0:y1, x0:x1] - y) ** 2 <= radius**2
        agent[y0:y1, x0:x1][disc] = (255, 255, int(255 * (1 - grip)))

        wrist = np.full((size, size, 3), 90, np.uint8)
        zoom = 3.0  # the wrist camera sees the goal three times closer ...
        rel = self._pixel(np.clip((self.goal[:2] - pos[:2]) * zoom, -WORKSPACE, WORKSPACE))
        distance = float(np.linalg.norm(self.goal - pos))  # ... and bigger as the effector approaches it
        _square(wrist, rel, max(1, int(size / 2 * 0.03 / (distance + 0.03))), self.color)
        gap = int(opening / GRIPPER_OPEN * size / 4)  # finger gap shrinks as the gripper closes
        finger = max(1, size // 16)
        c = size // 2
        wrist[-size // 4:, max(0, c - gap - finger):c - gap] = 230
        wrist[-size // 4:, c + gap:c + gap + finger] = 230
        return agent, wrist


def _square(img: np.ndarray, center: np.ndarray, half: int, color) -> None:
    y0, x0 = np.clip(center[::-1] - half, 0, img.shape[0])
    y1, x1 = np.clip(center[::-1] + half + 1, 0, img.shape[0])
    img[y0:y1, x0:x1] = color


class WorldBatch:
    """B episodes of one task stepped together: state (B, 8), per-episode hold counter and status."""

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg.validate()
        self.language = TASKS[cfg.task]
        self.goal, self.decoy, _ = task_layout(cfg.task)
        self.render_one = Renderer(cfg.task, cfg.image_size)
        self.low = np.array([-WORKSPACE, -WORKSPACE, 0.0])
        self.high = np.array([WORKSPACE, WORKSPACE, Z_MAX])

    def reset(self, init_states: list[int]) -> dict:
        """Start one episode per initial-state index; returns the observations (batched)."""
        self.state = np.stack([init_state(self.cfg.task, i) for i in init_states]).astype(np.float64)  # (B, 8)
        b = len(init_states)
        self.held = np.zeros(b, np.int64)  # consecutive frames closed at the goal
        self.steps = np.zeros(b, np.int64)
        self.success = np.zeros(b, bool)
        self.failed = np.zeros(b, bool)  # grasped the decoy
        return self.observe()

    def step(self, action: np.ndarray) -> dict:
        """Apply actions (B, 7); episodes already over are left as they are."""
        action = np.asarray(action, np.float64).reshape(len(self.state), 7)
        live = ~(self.success | self.failed | (self.steps >= self.cfg.max_steps))  # (B,)
        move = np.clip(action[:, :3], -1.0, 1.0)
        norm = np.maximum(np.linalg.norm(move, axis=1, keepdims=True), 1.0)  # (B, 1)
        s = self.state
        pos = np.clip(s[:, :3] + move / norm * self.cfg.max_speed, self.low, self.high)
        rot = np.clip(s[:, 3:6] + np.clip(action[:, 3:6], -1.0, 1.0) * ROT_SPEED, -np.pi, np.pi)
        target = np.where(action[:, 6] > 0, 0.0, GRIPPER_OPEN)  # (B,)
        opening = s[:, 6] + np.clip(target - s[:, 6], -GRIPPER_OPEN / CLOSE_STEPS, GRIPPER_OPEN / CLOSE_STEPS)
        new = np.concatenate([pos, rot, opening[:, None], -opening[:, None]], axis=1)  # (B, 8)
        self.state = np.where(live[:, None], new, s)
        closed = self.state[:, 6] <= 1e-9
        at_goal = np.linalg.norm(self.state[:, :3] - self.goal, axis=1) < SUCCESS_RADIUS
        at_decoy = np.linalg.norm(self.state[:, :3] - self.decoy, axis=1) < SUCCESS_RADIUS
        self.held = np.where(live, np.where(closed & at_goal, self.held + 1, 0), self.held)
        self.success |= live & (self.held >= HOLD_STEPS)
        self.failed |= live & closed & at_decoy & ~self.success
        self.steps += live
        return self.observe()

    @property
    def done(self) -> np.ndarray:
        """(B,) episode over: success, decoy grasped, or step cap reached."""
        return self.success | self.failed | (self.steps >= self.cfg.max_steps)

    def observe(self) -> dict:
        """{camera: (B, S, S, 3) uint8, observation.state: (B, 8) float32}."""
        images = [self.render_one(s) for s in self.state]
        return {AGENTVIEW_KEY: np.stack([a for a, _ in images]), WRIST_KEY: np.stack([w for _, w in images]),
                STATE_KEY: self.state.astype(np.float32)}


class ReachGraspEnv(gymnasium.Env):
    """One episode of the embedded world behind the gymnasium API (obs dict keyed by feature name)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: int = 8, image_size: int = 64, max_steps: int = 100, render_mode: str | None = None):
        self.world = WorldBatch(WorldConfig(task, image_size, max_steps))
        self.task, self.render_mode = self.world.language, render_mode
        image = gymnasium.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gymnasium.spaces.Dict({
            AGENTVIEW_KEY: image, WRIST_KEY: image,
            STATE_KEY: gymnasium.spaces.Box(STATE_LOW, STATE_HIGH, (8,), np.float32)})
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._last: dict | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        index = (options or {}).get("init_state")
        if index is None:
            index = int(self.np_random.integers(INIT_STATES))
        self._last = self._one(self.world.reset([int(index)]))
        return self._last, self._info(int(index))

    def step(self, action):
        if self._last is None:
            raise RecapError("ReachGraspEnv: call reset() before step()")
        self._last = self._one(self.world.step(np.asarray(action)[None]))
        w = self.world
        success, failed = bool(w.success[0]), bool(w.failed[0])
        truncated = not (success or failed) and w.steps[0] >= w.cfg.max_steps
        return self._last, float(success), success or failed, bool(truncated), self._info()

    def _info(self, index: int | None = None) -> dict:
        info = {"is_success": bool(self.world.success[0]), "task": self.task}
        if index is not None:
            info["init_state"] = index
        return info

    @staticmethod
    def _one(batch: dict) -> dict:
        return {k: v[0] for k, v in batch.items()}

    def render(self):
        return None if self._last is None else self._last[AGENTVIEW_KEY]


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="recap_data.world.env:ReachGraspEnv", max_episode_steps=None)
