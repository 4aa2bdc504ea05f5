"""Episodes of a policy in the real LIBERO simulator, one after another in this process (one
simulator and one policy, built on first use); `workers` processes run several (episodes.py).
Used by `rollout --env libero` (frames kept and recorded) and `eval --env libero` (outcomes only).
"""

import numpy as np

from recap_data.sim.episodes import RANDOM
from recap_data.store.schema import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY


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
