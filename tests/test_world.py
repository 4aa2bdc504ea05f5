"""The embedded world: determinism, replay of recorded base episodes, demonstrators, the gymnasium API."""

import gymnasium
import numpy as np
import pytest

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.errors import RecapError
from recap_data.store.schema import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY
from recap_data.world.demonstrators import KINDS, SUCCESS_KINDS, demonstrate
from recap_data.world.env import ENV_ID, INIT_STATES, TRAIN_INIT_STATES, WorldBatch, WorldConfig, init_state


def replay(cfg: WorldConfig, init: int, actions: np.ndarray) -> tuple[list[dict], bool, bool]:
    """Frames (the observation before each action), success and done after stepping the actions."""
    world = WorldBatch(cfg)
    obs, frames = world.reset([init]), []
    for action in actions:
        assert not world.done[0], "the world ended the episode before its last recorded action"
        frames.append({k: v[0] for k, v in obs.items()})
        obs = world.step(action[None])
    return frames, bool(world.success[0]), bool(world.done[0])


def test_same_initial_state_and_actions_give_the_same_frames():
    cfg = WorldConfig(task=3, image_size=32, max_steps=40)
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 7)).astype(np.float32)
    a, b = replay(cfg, 7, actions), replay(cfg, 7, actions)
    assert a[1:] == b[1:]
    for fa, fb in zip(a[0], b[0], strict=True):
        assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    other, _, _ = replay(cfg, 8, actions)
    assert not np.array_equal(other[0][STATE_KEY], a[0][0][STATE_KEY])  # another initial state, another scene
    assert np.array_equal(init_state(3, 7), init_state(3, 7)) and not np.array_equal(init_state(3, 7), init_state(4, 7))
    with pytest.raises(RecapError, match="init_state"):
        init_state(3, INIT_STATES)


def test_recorded_base_episodes_replay_to_the_same_frames_and_outcome(store):
    """Replaying each stored episode's actions from its initial state gives its frames (PNG cameras,
    lossless) and its outcome: the base shard is a set of world episodes."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    cfg = DemoDataConfig(episodes=5, tasks=2, max_steps=30, image_size=32, use_videos=False,
                         regime="custom", expert=0.2, poor=0.2, decoy=0.2, release=0.2, timeout=0.2)
    m = make_demo_data(store, cfg, progress=False)
    assert sorted(e["kind"] for e in m.source["episodes"]) == sorted(KINDS)
    ds = LeRobotDataset("x/base", root=store.shard_path("base"))
    for e, planned in enumerate(m.source["episodes"]):
        lo, hi = int(ds.meta.episodes["dataset_from_index"][e]), int(ds.meta.episodes["dataset_to_index"][e])
        stored = [ds[i] for i in range(lo, hi)]
        actions = np.stack([f[ACTION_KEY].numpy() for f in stored])
        frames, success, done = replay(WorldConfig(planned["task"], 32, 30), planned["init_state"], actions)
        assert done and success == bool(stored[0]["success"]) == (planned["kind"] in SUCCESS_KINDS), planned
        for f, s in zip(frames, stored, strict=True):
            assert np.array_equal(f[STATE_KEY], s[STATE_KEY].numpy())
            for key in (AGENTVIEW_KEY, WRIST_KEY):
                image = (s[key].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)  # (H, W, 3)
                assert np.array_equal(f[key], image), (e, key)
        assert planned["init_state"] < TRAIN_INIT_STATES  # demonstrations never use held-out states


def test_each_demonstrator_kind_has_its_outcome_and_poor_successes_take_longer():
    lengths, tries = {k: [] for k in KINDS}, []
    for task in (0, 4, 8):
        for init in range(6):
            for kind in KINDS:
                episode = demonstrate(kind, WorldConfig(task), init, [task, init])
                assert episode["success"] == (kind in SUCCESS_KINDS), (kind, task, init)
                lengths[kind].append(len(episode["frames"]))
                tries.append(episode["tries"])
    expert, poor = np.array(lengths["expert"]), np.array(lengths["poor"])
    assert (poor > expert).mean() > 0.9 and poor.mean() > expert.mean() + 15  # bad segments cost time
    assert max(lengths["expert"]) < 100 and min(lengths["timeout"]) == min(lengths["release"]) == 100
    assert np.mean(tries) < 2.5  # a poor demonstration that ran out of time is drawn again; rarely many times


def test_gymnasium_api_and_an_expert_reaches_success():
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(f"recap_data.world.env:{ENV_ID}", task=8, image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"init_state": 5})
    assert info["init_state"] == 5 and obs[AGENTVIEW_KEY].shape == (32, 32, 3) and obs[STATE_KEY].shape == (8,)
    assert env.observation_space.contains(obs)
    actions = [f[ACTION_KEY] for f in demonstrate("expert", WorldConfig(8, 32), 5, 0)["frames"]]
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        assert terminated == (t == len(actions) - 1) and not truncated
    assert reward == 1.0 and info["is_success"]
    _, info = env.reset(seed=3)
    assert 0 <= info["init_state"] < INIT_STATES  # drawn from the seed
    _, info_again = env.reset(seed=3)
    assert info_again["init_state"] == info["init_state"]
