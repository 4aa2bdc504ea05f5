"""Scripted demonstrators of mixed quality, acting in the embedded world (recap_data.world.env).

Real demonstration sets are not all expert: some operators detour, hesitate or overshoot and
still succeed, some fail. Each kind below is a closed-loop controller that turns the world's
state into actions; the base shard records the world's frames under those actions, so replaying
an episode's actions from its initial state gives the same frames and the same outcome.

  expert   straight to the goal at full speed, close, hold
  poor     succeeds, but with one or two bad segments first: a fumble at the decoy (starts to
           grasp it, lets go in time), a detour towards the decoy or a random point, a hesitation
           (standing still), an overshoot past the goal, a slow crawl
  decoy    fails: heads for the decoy (sometimes after starting towards the goal) and grasps it
  release  fails: reaches the goal and closes, opens again before the grasp holds, drifts away
  timeout  fails: crawls and wanders, never closing the gripper, until the step cap

Poor successes are where per-frame advantages see more than success filtering does: their
good and bad segments share one successful outcome.
"""

import numpy as np

from recap_data.errors import RecapError
from recap_data.world.env import GRIPPER_OPEN, HOLD_STEPS, SUCCESS_RADIUS, WorldBatch, WorldConfig

KINDS = ("expert", "poor", "decoy", "release", "timeout")
SUCCESS_KINDS = ("expert", "poor")
# Named demonstration mixes: each kind's share of the episodes. Fixed on 2026-12-06, before any
# benchmark result on them was seen (docs/world.md); a change made after seeing results is to be
# reported as such.
#   teleop  the reference regime (LIBERO's human teleoperation): every demonstration succeeds, at
#           varying speed and skill; failures enter only through the policy's own rollouts
#   mixed   70% succeed (the embedded default before teleop)
#   scarce  30% succeed
REGIMES = {
    "teleop": {"expert": 0.5, "poor": 0.5, "decoy": 0.0, "release": 0.0, "timeout": 0.0},
    "mixed": {"expert": 0.4, "poor": 0.3, "decoy": 0.15, "release": 0.1, "timeout": 0.05},
    "scarce": {"expert": 0.15, "poor": 0.15, "decoy": 0.35, "release": 0.2, "timeout": 0.15},
}
CUSTOM = "custom"  # the regime whose shares are the five fields given one by one
ACTION_NOISE = 0.05  # std of the noise on the demonstrators' motion commands (hands are not steady)
# The bad segments of a poor success and how often each is drawn. A fumble (reaching the decoy and
# starting to grasp it, letting go in time) is recovered in the demonstration but fails when an
# imitator closes one step too many: the kind of segment that success filtering keeps.
BAD_SEGMENTS = ("fumble", "detour", "hesitate", "overshoot", "slow")
BAD_SEGMENT_P = (0.4, 0.15, 0.15, 0.15, 0.15)


class Demonstrator:
    """One episode's controller: a list of phases, each (kind, target, speed, steps), run in order."""

    def __init__(self, kind: str, world: WorldBatch, start: np.ndarray, rng: np.random.Generator):
        if kind not in KINDS:
            raise RecapError(f"unknown demonstrator kind {kind!r}; use one of {', '.join(KINDS)}")
        self.kind, self.rng, self.world = kind, rng, world
        goal, decoy = world.goal, world.decoy
        self.phases: list[tuple[str, np.ndarray | None, float, int]] = []
        if kind == "poor":
            for bad in rng.choice(BAD_SEGMENTS, size=int(rng.integers(1, 3)), p=BAD_SEGMENT_P):
                self.phases += self._bad_segment(str(bad), start, goal, decoy)
        if kind in ("expert", "poor", "release"):
            self.phases += [("reach", goal, 1.0, 0), ("close", goal, 0.0, 0)]
        if kind == "release":
            self.phases += [("open", None, 0.0, 0), ("drift", self._away(goal), 0.6, 0), ("wander", None, 0.2, 0)]
        elif kind == "decoy":
            if rng.random() < 0.5:  # a start towards the goal, then the wrong object
                self.phases.append(("reach", start + (goal - start) * rng.uniform(0.2, 0.6), 1.0, 0))
            self.phases += [("reach", decoy, 1.0, 0), ("close", decoy, 0.0, 0)]
        elif kind == "timeout":
            self.phases += [("reach", self._away(goal), rng.uniform(0.1, 0.2), 0), ("wander", None, 0.2, 0)]
        self.phase, self.elapsed = 0, 0

    def _away(self, goal: np.ndarray) -> np.ndarray:
        """A point 0.1-0.2 m from the goal in a random horizontal direction."""
        angle = self.rng.uniform(0, 2 * np.pi)
        return goal + np.array([np.cos(angle), np.sin(angle), 0.5]) * self.rng.uniform(0.1, 0.2)

    def _bad_segment(self, bad: str, start, goal, decoy) -> list:
        rng = self.rng
        if bad == "fumble":  # two of the CLOSE_STEPS closing steps: half closed, never a grasp
            return [("reach", decoy, 1.0, 0), ("pinch", decoy, 0.0, 2), ("open", None, 0.0, 0)]
        if bad == "detour":
            towards = decoy if rng.random() < 0.5 else goal + rng.uniform(-0.15, 0.15, 3) * [1, 1, 0.3]
            return [("reach", start + (towards - start) * rng.uniform(0.4, 0.8), 1.0, 0)]
        if bad == "hesitate":
            return [("wait", None, 0.0, max(1, round(rng.uniform(0.05, 0.12) * self.world.cfg.max_steps)))]
        if bad == "overshoot":
            direction = (goal - start) / max(np.linalg.norm(goal - start), 1e-9)
            return [("reach", goal + direction * rng.uniform(0.04, 0.08), 1.0, 0)]
        return [("reach", start + (goal - start) * rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.5), 0)]  # slow

    def __call__(self, state: np.ndarray) -> np.ndarray:
        """The action (7,) for the current state (8,)."""
        pos, rot, opening = state[:3], state[3:6], float(state[6])
        while True:
            kind, target, speed, steps = self.phases[min(self.phase, len(self.phases) - 1)]
            if self.phase >= len(self.phases) - 1 or not self._finished(kind, target, steps, pos, opening):
                break
            self.phase, self.elapsed = self.phase + 1, 0
        self.elapsed += 1
        move, grip = np.zeros(3), -1.0
        if kind in ("reach", "drift"):
            move = self._towards(target, pos, speed)
        elif kind in ("close", "pinch"):
            move, grip = self._towards(target, pos, 1.0), 1.0
        elif kind == "wander":
            move = self.rng.normal(0, speed, 3)
        elif kind == "wait":
            move = self.rng.normal(0, 0.02, 3)
        if kind not in ("close", "pinch", "wait"):
            move = move + self.rng.normal(0, ACTION_NOISE, 3) * (np.linalg.norm(move) > 0)
        turn = np.clip(-rot / 0.05, -1, 1) * 0.5  # align the wrist on the way
        return np.concatenate([np.clip(move, -1, 1), turn, [grip]]).astype(np.float32)

    def _towards(self, target: np.ndarray, pos: np.ndarray, speed: float) -> np.ndarray:
        delta = (target - pos) / self.world.cfg.max_speed  # in full-speed steps
        norm = np.linalg.norm(delta)
        return delta if norm <= speed else delta / norm * speed

    def _finished(self, kind: str, target, steps: int, pos, opening: float) -> bool:
        if kind in ("reach", "drift"):
            return bool(np.linalg.norm(target - pos) < SUCCESS_RADIUS / 4)
        if kind in ("wait", "pinch"):
            return self.elapsed >= steps
        if kind == "close":  # the release demonstrator lets go one frame before the grasp would hold
            return self.kind == "release" and int(self.world.held[0]) >= HOLD_STEPS - 1
        if kind == "open":
            return opening >= GRIPPER_OPEN
        return False


def demonstrate(kind: str, cfg: WorldConfig, init_index: int, seed, max_tries: int = 20) -> dict:
    """Record one episode of demonstrator `kind` from initial state `init_index`: frames
    (observation dicts with the action taken), success, and the number of tries it took.

    A poor demonstration that ran out of time (or a failing one that succeeded by chance) is
    drawn again with the next random stream, so every episode is of the kind asked for."""
    from recap_data.store.schema import ACTION_KEY

    world = WorldBatch(cfg)
    for attempt in range(max_tries):
        rng = np.random.default_rng([*np.atleast_1d(seed), attempt])
        obs = world.reset([init_index])
        actor = Demonstrator(kind, world, world.state[0, :3].copy(), rng)
        frames = []
        while not world.done[0]:
            frame = {k: v[0] for k, v in obs.items()}
            action = actor(world.state[0])
            frames.append({**frame, ACTION_KEY: action})
            obs = world.step(action[None])
        success = bool(world.success[0])
        if success == (kind in SUCCESS_KINDS):
            return {"frames": frames, "success": success, "tries": attempt + 1}
    raise RecapError(f"make-demo-data: field 'max_steps' = {cfg.max_steps} is too small: demonstrator {kind!r} "
                     f"gave the wrong outcome {max_tries} times from initial state {init_index}; raise max_steps")

