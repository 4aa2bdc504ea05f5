"""Episodes of a policy in the embedded world, many at once.

The embedded world steps thousands of times per second, so the policy is the cost: episodes run
in lockstep batches (one WorldBatch, one policy call per action chunk for the whole batch).
Each episode still has its own noise stream (its seed), so an episode's actions do not depend
on which batch it ran in. Used by `rollout --env embedded` (frames kept and recorded) and by
`eval --env embedded` (outcomes only).
"""

import numpy as np

from recap_data.sim.episodes import RANDOM
from recap_data.store.schema import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY
from recap_data.world.env import WorldBatch, WorldConfig


def observation_batch(obs: dict):
    """World observations -> policy inputs: {camera: (B, 3, H, W) float in [0, 1], state: (B, 8)}."""
    import torch

    out = {k: torch.from_numpy(obs[k]).permute(0, 3, 1, 2).float() / 255 for k in (AGENTVIEW_KEY, WRIST_KEY)}
    out[STATE_KEY] = torch.from_numpy(obs[STATE_KEY])  # (B, 8)
    return out


class WorldEpisodes:
    """Runs batches of planned episodes ({episode_index, init_state, seed}) of one policy."""

    def __init__(self, world: WorldConfig, policy: str, guidance: float, keep_frames: bool = True):
        self.world_cfg, self.policy_path, self.guidance, self.keep_frames = world, policy, guidance, keep_frames
        self.policy = None

    def _load(self):
        if self.policy is None and self.policy_path != RANDOM:
            from recap_data.policy.model import RecapPolicy

            self.policy = RecapPolicy.load(self.policy_path)
        return self.policy

    def _chunks(self, obs: dict, generators: list) -> np.ndarray:
        """Action chunks (B, n_action_steps, 7) for the batch, each episode from its own noise stream."""
        import torch

        policy = self._load()
        if policy is None:
            return np.stack([g.uniform(-1.0, 1.0, (1, 7)) for g in generators]).astype(np.float32)
        c = policy.config
        noise = torch.stack([torch.randn(c.chunk_size, c.max_action_dim, generator=g) for g in generators])
        chunk = policy.predict_chunk(observation_batch(obs), self.world.language, self.guidance, noise=noise)
        return np.clip(chunk[:, :c.n_action_steps].numpy(), -1.0, 1.0).astype(np.float32)  # (B, n, 7)

    def __call__(self, plans: list[dict]) -> list[dict]:
        import torch

        self.world = WorldBatch(self.world_cfg)
        obs = self.world.reset([p["init_state"] for p in plans])
        if self.policy_path == RANDOM:
            generators = [np.random.default_rng(p["seed"]) for p in plans]
        else:
            generators = [torch.Generator().manual_seed(int(p["seed"])) for p in plans]
        frames: list[list[dict]] = [[] for _ in plans]
        lengths = np.zeros(len(plans), np.int64)
        while not self.world.done.all():
            chunk = self._chunks(obs, generators)  # (B, n, 7)
            for k in range(chunk.shape[1]):
                live = ~self.world.done
                if not live.any():
                    break
                if self.keep_frames:
                    for b in np.flatnonzero(live):
                        frames[b].append({AGENTVIEW_KEY: obs[AGENTVIEW_KEY][b], WRIST_KEY: obs[WRIST_KEY][b],
                                          STATE_KEY: obs[STATE_KEY][b], ACTION_KEY: chunk[b, k]})
                lengths += live
                obs = self.world.step(chunk[:, k])
        return [{**plan, "frames": frames[b] if self.keep_frames else None, "success": bool(self.world.success[b]),
                 "length": int(lengths[b])} for b, plan in enumerate(plans)]

    def close(self) -> None:
        self.policy = None
