"""`recap-data rollout --env libero` in the real LIBERO simulator (headless): random and trained policies, workers,
refusals (the embedded world's rollouts are in test_eval.py)."""

import json
import os
import shutil
import subprocess

import pytest
from conftest import PYTHON, run_cli

from recap_data.errors import RecapError
from recap_data.io import FAILPOINT_ENV
from recap_data.sim.episodes import plan_episodes
from recap_data.sim.libero import resolve_task
from recap_data.sim.rollout import RolloutConfig, rollout
from recap_data.store.db import connect
from recap_data.store.schema import normalize_schema
from recap_data.train.checkpoint import directory_digest

pytestmark = pytest.mark.sim  # LIBERO rollouts (and the episode planning they use)

MOKA = "put both moka pots on the stove"


def test_initial_states_cycle_distinct_and_reproducible():
    plans = plan_episodes(RolloutConfig(env="libero", episodes=60, seed=3), init_states=50)
    states = [p["init_state"] for p in plans]
    assert len(set(states[:50])) == 50 and states[50:] == states[:10]
    assert plans == plan_episodes(RolloutConfig(env="libero", episodes=60, seed=3), init_states=50)
    assert states != [p["init_state"] for p in plan_episodes(RolloutConfig(env="libero", episodes=60, seed=4),
                                                             init_states=50)]
    assert len({p["seed"] for p in plans}) == 60


def test_tasks_by_index_or_name_and_unknown_ones_listed():
    assert resolve_task("libero_10", "8") == (8, MOKA)
    assert resolve_task("libero_10", MOKA) == (8, MOKA)
    with pytest.raises(RecapError, match=f"not a task of libero_10; valid tasks: 0: .*8: {MOKA}"):
        resolve_task("libero_10", "fly to the moon")
    with pytest.raises(RecapError, match="valid suites: .*libero_10"):
        resolve_task("libero_11", "0")


def test_random_rollout_records_a_shard(store, make_shard, tmp_path):
    base = make_shard("base")
    metrics_path = tmp_path / "metrics.json"
    result = run_cli("rollout", "--env", "libero", "--policy", "random", "--out", "iter1", "--episodes", "2",
                     "--max-steps", "4",
                     "--seed", "7", "--metrics", str(metrics_path), root=store.root)
    assert result.exit_code == 0, result.output
    m = store.manifest("iter1")
    assert m.kind == "rollout" and m.fps == 20 and m.episodes == 2 and m.frames == 8
    assert normalize_schema(m.features) == normalize_schema(base.features)  # same names, 32-px cameras
    episodes = m.source["episodes"]
    assert [e["init_state"] for e in episodes] == [p["init_state"] for p in
                                                   plan_episodes(RolloutConfig(env="libero", episodes=2, seed=7), 50)]
    assert len({e["init_state"] for e in episodes}) == 2 and len({e["seed"] for e in episodes}) == 2
    assert m.source["policy"]["path"] == "random" and m.source["suite"] == "libero_10" and m.source["env"] == "libero"
    assert m.source["task"] == MOKA and m.source["max_steps"] == 4
    rows = connect(store.root).execute(
        "SELECT episode_index, length, success, task FROM episodes WHERE shard = 'iter1' ORDER BY 1").fetchall()
    assert rows == [(0, 4, False, MOKA), (1, 4, False, MOKA)]
    assert json.loads(metrics_path.read_text()) == {"success_rate": 0.0}  # the headline; the manifest has the rest

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("recap-data/iter1", root=store.shard_path("iter1"))
    assert ds.fps == 20 and len(ds) == 8
    item = ds[5]
    assert item["observation.images.image"].shape == (3, 32, 32) and item["observation.images.image"].std() > 0.02
    assert item["observation.state"].shape == (8,) and item["action"].abs().max() <= 1.0


def test_trained_policy_rollout_in_two_workers_and_refusals(store, make_shard, tmp_path):
    from recap_data.policy.train import PolicyTrainConfig, train_policy

    make_shard("base")
    policy = tmp_path / "sft"
    train_policy(store, {"base": 1.0}, None, policy, PolicyTrainConfig(indicator_mode="on", steps=2, batch_size=4),
                 progress=False)
    cfg = RolloutConfig(env="libero", episodes=2, workers=2, max_steps=3, guidance=1.5)
    manifest, metrics = rollout(store, "iter1", str(policy), cfg, progress=False)
    assert manifest.episodes == 2 and metrics["frames"] == 6
    assert manifest.source["policy"]["digest"] == directory_digest(policy)
    assert manifest.source["guidance"] == 1.5 and manifest.source["policy"]["indicator_mode"] == "on"
    assert [e["episode_index"] for e in manifest.source["episodes"]] == [0, 1]

    broken = tmp_path / "broken"
    shutil.copytree(policy, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["input_features"]["observation.images.image2"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecapError, match="feature observation.images.image2 is absent in the policy and "
                                         r"\(3, 32, 32\) in the environment"):
        rollout(store, "iter2", str(broken), RolloutConfig(env="libero", episodes=1), progress=False)
    with pytest.raises(RecapError, match="not a policy checkpoint"):
        rollout(store, "iter2", str(tmp_path / "nothing"), RolloutConfig(env="libero", episodes=1), progress=False)
    assert not store.exists("iter2")


def test_killed_rollout_leaves_no_shard(store, make_shard):
    make_shard("base")
    before = sorted(p.name for p in store.shards_dir.iterdir())
    cmd = [PYTHON, "-m", "recap_data.cli.main", "--root", str(store.root), "rollout", "--env", "libero", "--policy",
           "random", "--out", "iter1", "--episodes", "2", "--max-steps", "2"]
    proc = subprocess.run(cmd, env={**os.environ, FAILPOINT_ENV: "after_episode:1"}, capture_output=True,
                          timeout=300)
    assert proc.returncode == -9  # killed after the first episode was saved
    assert sorted(p.name for p in store.shards_dir.iterdir()) == before
    assert not store.exists("iter1")


def test_ctrl_c_leaves_no_shard_and_no_staging(store, make_shard):
    import signal
    import time

    make_shard("base")
    cmd = [PYTHON, "-m", "recap_data.cli.main", "--root", str(store.root), "rollout", "--env", "libero", "--policy",
           "random", "--out", "iter1", "--episodes", "3", "--max-steps", "300"]
    # a shell that starts pytest in the background ignores SIGINT, and children inherit that: restore Ctrl-C
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not list(store.tmp_dir.glob("iter1.tmp.*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # until the recorder has opened its staging directory: the rollout is under way
    assert list(store.tmp_dir.glob("iter1.tmp.*")), "the rollout never started recording"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert b"error: interrupted" in err
    assert not store.exists("iter1")
    assert not any(store.tmp_dir.iterdir())  # the staging directory went with it


def test_params_task_may_be_a_number(tmp_path):
    from recap_data.config import load_config

    params = tmp_path / "params.yaml"
    params.write_text("rollout:\n  task: 8\n  episodes: 3\n")
    assert load_config(RolloutConfig, params).task == "8"
    params.write_text("rollout:\n  episodes: two\n")
    with pytest.raises(RecapError, match="field 'rollout.episodes' = 'two' must be int"):
        load_config(RolloutConfig, params)
