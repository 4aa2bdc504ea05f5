"""Rollouts and evaluation in the embedded world: recorded shards, held-out evaluation, Wilson intervals, refusals."""

import json

import numpy as np
import pytest
from conftest import run_cli, torchrun

from recap_data.errors import RecapError
from recap_data.sim.episodes import EVAL_SEED_OFFSET
from recap_data.sim.evaluate import EvalConfig, evaluate, wilson_interval
from recap_data.sim.rollout import RolloutConfig, rollout
from recap_data.store.db import connect
from recap_data.world.env import SPLITS, TASKS, TRAIN_INIT_STATES


def test_wilson_interval_matches_a_hand_computation():
    # 7/10: p = 0.7, z = 1.96: centre (0.7 + 1.9208/10) / 1.38416 = 0.64449,
    # half 1.96 * sqrt(0.021 + 0.009604) / 1.38416 = 0.24772 -> [0.39677, 0.89221]
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.39677, abs=5e-5) and high == pytest.approx(0.89221, abs=5e-5)
    low, high = wilson_interval(0, 100)  # z^2 / (n + z^2) = 3.8415 / 103.8415
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.036994, abs=5e-6)
    assert wilson_interval(100, 100)[1] == 1.0
    with pytest.raises(RecapError, match="no episodes"):
        wilson_interval(0, 0)


def test_embedded_rollout_records_a_shard_that_verifies(store, make_shard, tmp_path):
    make_shard("base")  # 32 px, max_steps 20
    result = run_cli("rollout", "--env", "embedded", "--policy", "random", "--out", "iter1", "--episodes", "4",
                     "--seed", "3", "--task", "1", "--metrics", str(tmp_path / "r.json"), root=store.root)
    assert result.exit_code == 0, result.output
    m = store.manifest("iter1")
    assert m.kind == "rollout" and m.episodes == 4 and m.source["env"] == "embedded"
    assert m.source["task"] == TASKS[1] and m.source["max_steps"] == 20  # the base shard's world
    assert m.source["world"] == {"task": 1, "max_steps": 20, "image_size": 32}
    episodes = m.source["episodes"]
    assert len({e["init_state"] for e in episodes}) == 4 and all(e["init_state"] < TRAIN_INIT_STATES for e in episodes)
    assert all(e["seed"] < EVAL_SEED_OFFSET for e in episodes) and m.source["policy"]["path"] == "random"
    assert m.frames == sum(e["length"] for e in episodes)
    metrics = json.loads((tmp_path / "r.json").read_text())  # the headline only (docs/pipeline.md)
    assert metrics == {"success_rate": sum(e["success"] for e in episodes) / 4}
    verified = run_cli("shards", "verify", "iter1", root=store.root)
    assert verified.exit_code == 0 and "iter1: ok" in verified.output


def tiny_policy(store, path, steps: int = 2):
    """A barely trained SFT policy on the store's base shard (indicator always positive)."""
    from recap_data.policy.train import PolicyTrainConfig, train_policy

    train_policy(store, {"base": 1.0}, None, path, PolicyTrainConfig(steps=steps, batch_size=2, indicator_mode="on"),
                 progress=False)
    return path


@pytest.mark.slow
def test_trained_policy_rollout_with_workers_and_guidance_matches_one_process(store, make_shard, tmp_path):
    make_shard("base")
    policy = tiny_policy(store, tmp_path / "policy")
    two, _ = rollout(store, "two", str(policy), RolloutConfig(episodes=3, workers=2, batch_size=2, guidance=1.5),
                     progress=False)
    one, _ = rollout(store, "one", str(policy), RolloutConfig(episodes=3, guidance=1.5), progress=False)
    assert two.source["policy"]["digest"] == one.source["policy"]["digest"] is not None
    assert two.source["guidance"] == 1.5
    # each episode draws its own noise: the batch it ran in does not change it, so the actions match
    assert [(e["init_state"], e["seed"], e["length"], e["success"]) for e in two.source["episodes"]] == \
        [(e["init_state"], e["seed"], e["length"], e["success"]) for e in one.source["episodes"]]
    con = connect(store.root)
    actions = {shard: np.array(con.execute("SELECT action FROM frames WHERE shard = ? ORDER BY episode_index, "
                                           "frame_index", [shard]).fetchnumpy()["action"].tolist())
               for shard in ("one", "two")}
    assert actions["one"].shape == (sum(e["length"] for e in one.source["episodes"]), 7)
    assert np.abs(actions["one"]).max() > 0.01  # the policy acts: there is something to compare
    np.testing.assert_allclose(actions["two"], actions["one"], atol=1e-4)


def test_eval_uses_held_out_states_and_seeds_and_writes_metrics(store, make_shard, tmp_path):
    make_shard("base")
    out, record = tmp_path / "eval.json", tmp_path / "record" / "eval_record.json"
    result = run_cli("eval", "--policy", "random", "--episodes", "12", "--seed", "2", "--metrics", str(out),
                     "--record", str(record), root=store.root)
    assert result.exit_code == 0, result.output
    assert "success 0/12" in result.output and "95% CI 0.000-0.242" in result.output
    # the metrics: the headline, numbers only; the record: everything
    assert json.loads(out.read_text()) == {"success_rate": 0.0, "ci_low": 0.0, "ci_high": 0.2425, "success_steps": -1,
                                           "throughput": 0.0, "throughput_low": 0.0, "throughput_high": 0.0}
    assert "steps of a success none succeeded, throughput 0.00 successes per 1,000 steps" in result.output
    m = json.loads(record.read_text())
    assert m["episodes"] == 12 and m["success_rate"] == 0.0 and m["mean_episode_length"] == 20
    assert m["success_ci95"] == [0.0, 0.2425] and m["policy"]["path"] == "random"
    assert m["init_states"] == [100, 199] == [SPLITS["validation"][0], SPLITS["validation"][1] - 1]
    assert m["seeds"][0] >= EVAL_SEED_OFFSET and m["split"] == "validation"
    test = evaluate(store, "random", EvalConfig(episodes=3, split="test"), progress=False)
    assert test["init_states"] == [200, 299] and test["split"] == "test"
    assert store.shard_ids() == ["base"]  # nothing recorded
    again = evaluate(store, "random", EvalConfig(episodes=12, seed=2), progress=False)
    assert again["success_ci95"] == m["success_ci95"] and again["mean_episode_length"] == m["mean_episode_length"]


def test_throughput_and_the_steps_of_a_success_by_hand():
    """Successes per 1,000 steps over every episode's steps, with the delta method's interval for
    a ratio of means, computed here by hand for four episodes."""
    from recap_data.sim.evaluate import outcome_metrics, throughput_interval

    outcomes, lengths = [True, False, True, False], [10, 20, 30, 40]
    # R = 2 / 100; residuals s - R l = 0.8, -0.4, 0.4, -0.8; their squares sum to 1.6
    se = (1.6 / (4 * 3)) ** 0.5 / 25  # / mean length
    rate, low, high = throughput_interval(outcomes, lengths)
    assert rate == pytest.approx(20.0) and low == 0.0 and high == pytest.approx(1000 * (0.02 + 1.959963984540054 * se))
    assert high == pytest.approx(48.628, abs=1e-3)
    assert throughput_interval([True] * 3, [5, 5, 5]) == (200.0, 200.0, 200.0)  # no spread: no width
    assert throughput_interval([False] * 3, [9, 9, 9]) == (0.0, 0.0, 0.0)
    m = outcome_metrics(outcomes, lengths)
    assert m["success_steps"] == 20.0 and m["mean_episode_length"] == 25.0 and m["success_rate"] == 0.5
    assert m["throughput"] == 20.0 and m["throughput_ci95"] == [0.0, round(high, 3)]


@pytest.mark.parametrize("args, message", [
    (["--env", "mars"], "option --env: 'mars' is not one of 'embedded', 'libero'"),
    (["--episodes", "0"], "option --episodes: 0 is invalid: use a number >= 1"),
    (["--suite", "libero_10"], "option --suite is for env libero only"),
    (["--render-size", "128"], "option --render-size is for env libero only"),
    (["--task", "fly"], "--task 'fly' is not a task of the embedded world; valid tasks: 0: "),
    (["--max-steps", "50"], "--max-steps 50 differs from the base shard's world (20)"),
])
def test_bad_eval_and_rollout_options_are_one_line_errors(store, make_shard, tmp_path, args, message):
    make_shard("base")
    for command in (["eval", "--metrics", str(tmp_path / "m.json")], ["rollout", "--out", "iter1"]):
        result = run_cli(*command, "--policy", "random", *args, root=store.root)
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: ") and message in result.output, result.output
    assert store.shard_ids() == ["base"] and not (tmp_path / "m.json").exists()


def test_eval_split_must_be_held_out(store, make_shard, tmp_path):
    make_shard("base")
    result = run_cli("eval", "--policy", "random", "--split", "train", root=store.root)
    assert result.exit_code == 2 and "option --split: 'train' is not one of 'validation', 'test'" in result.output
    params = tmp_path / "params.yaml"  # the same choice, from a params file, names the file and the field
    params.write_text("eval: {split: train}\n")
    result = run_cli("eval", "--policy", "random", "--params", str(params), root=store.root)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{params}: eval: field 'split' = 'train' is invalid: use one of validation, test" in result.output


def test_errors_say_where_the_refused_value_came_from(store, make_shard, tmp_path):
    """The same rule, broken in the params file or by an option, names the file's field or the option."""
    make_shard("base")
    params = tmp_path / "params.yaml"
    params.write_text("eval: {suite: libero_10, episodes: 5}\n")
    result = run_cli("eval", "--policy", "random", "--params", str(params), root=store.root)
    assert f"error: {params}: eval: field 'suite' is for env libero only; leave it out" in result.output
    params.write_text("eval: {episodes: 5}\n")
    result = run_cli("eval", "--policy", "random", "--params", str(params), "--render-size", "64", root=store.root)
    assert result.exit_code == 2 and "error: eval: option --render-size is for env libero only" in result.output


def test_policy_whose_features_differ_from_the_world_is_refused(store, make_shard, tmp_path):
    from recap_data.data.demo_data import DemoDataConfig, make_demo_data
    from recap_data.store.store import ShardStore

    make_shard("base")
    policy = tiny_policy(store, tmp_path / "policy", steps=1)
    other = ShardStore(tmp_path / "other")
    make_demo_data(other, DemoDataConfig(episodes=1, tasks=1, max_steps=20, image_size=48), progress=False)
    result = run_cli("eval", "--policy", str(policy), "--episodes", "2", root=other.root)
    assert result.exit_code == 2 and "feature observation.images.image is (3, 32, 32) in the policy" in result.output


@pytest.mark.slow
def test_a_briefly_trained_policy_beats_the_random_one_in_the_world(store):
    """The embedded world is learnable by the tiny pi0: 400 steps of BC on 30 expert demonstrations
    of one task succeed far more often than random actions, on held-out initial states."""
    from recap_data.data.demo_data import DemoDataConfig, make_demo_data
    from recap_data.policy.train import PolicyTrainConfig, train_policy

    make_demo_data(store, DemoDataConfig(episodes=30, tasks=1, first_task=8, image_size=32, use_videos=False,
                                         regime="custom", expert=1.0, poor=0.0, decoy=0.0, release=0.0, timeout=0.0),
                   progress=False)
    policy = store.root.parent / "policy"
    train_policy(store, {"base": 1.0}, None, policy, PolicyTrainConfig(steps=400, batch_size=16,
                                                                        indicator_mode="ignore"), progress=False)
    trained = evaluate(store, str(policy), EvalConfig(episodes=40), progress=False)
    random = evaluate(store, "random", EvalConfig(episodes=40), progress=False)
    print(f"trained {trained['success_rate']:.2f} {trained['success_ci95']}, random {random['success_rate']:.2f}")
    wins = [n for n, ok in zip(trained["lengths"], trained["outcomes"], strict=True) if ok]
    assert len(wins) == trained["successes"] > 0 and trained["success_steps"] == round(sum(wins) / len(wins), 2)
    assert trained["throughput"] == round(1000 * len(wins) / sum(trained["lengths"]), 3) > random["throughput"] == 0
    assert random["success_rate"] == 0.0
    assert trained["success_ci95"][0] > random["success_ci95"][1], trained  # intervals apart


@pytest.mark.slow
def test_rollout_and_eval_split_over_processes_equal_one_process(store, make_shard, tmp_path, warm_cli_bin):
    """torchrun with 2 processes: each plays its share of the plan, records it beside the shard's
    staging directory, and the main process commits one shard with the one-process episodes (keys,
    states, actions, outcomes, decoded cameras); eval reduces the outcomes to the same record."""
    from recap_data.store.decode import iter_episode_frames

    make_shard("base")
    for out, processes in (("one", 1), ("two", 2)):
        proc = torchrun(processes, store.root, "rollout", "--policy", "random", "--out", out, "--episodes", "5",
                        "--seed", "3", "--batch-size", "2", warm=warm_cli_bin)
        assert proc.returncode == 0 and proc.stdout.count(f"wrote shard {out}") == 1, proc.stderr[-3000:]
        proc = torchrun(processes, store.root, "eval", "--policy", "random", "--episodes", "7", "--record",
                        str(tmp_path / f"{out}.json"), warm=warm_cli_bin)
        assert proc.returncode == 0 and proc.stdout.count("random: success") == 1, proc.stderr[-3000:]
    one, two = store.manifest("one"), store.manifest("two")
    assert two.source["episodes"] == one.source["episodes"] and len(one.source["episodes"]) == 5
    assert (two.episodes, two.frames, two.successes) == (one.episodes, one.frames, one.successes)
    con = connect(store.root)
    query = ('SELECT episode_index, frame_index, "observation.state", action, success FROM frames WHERE shard = ? '
             "ORDER BY episode_index, frame_index")
    rows = {s: con.execute(query, [s]).fetchall() for s in ("one", "two")}
    assert rows["two"] == rows["one"] and len(rows["one"]) == one.frames
    keys = [k for k in one.features if k.startswith("observation.images")]
    for (_, a), (_, b) in zip(*(iter_episode_frames(store.shard_path(s), store.manifest(s).features, keys)
                                for s in ("one", "two")), strict=True):
        for k in keys:
            np.testing.assert_array_equal(a[k], b[k])
    records = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in ("one", "two")}
    for key in ("outcomes", "lengths", "success_rate", "throughput", "seeds", "episodes"):
        assert records["two"][key] == records["one"][key], key
    assert not list(store.tmp_dir.iterdir())  # the processes' recordings went with the staging directory


@pytest.mark.slow
@pytest.mark.parametrize("dead", [0, 1])
def test_a_rollout_process_that_dies_leaves_no_shard(store, make_shard, warm_cli_bin, dead):
    """Process `dead` of 2 is killed once it has recorded an episode: every process exits non-zero and
    no shard is committed. A killed main process leaves its staging directory, which the next writer
    removes; when the other process dies, the main one may be stopped by torchrun before or after it
    sees the lost peer and cleans up itself (a race), so only the next writer's result is checked."""
    from recap_data.io import FAILPOINT_ENV

    make_shard("base")
    proc = torchrun(2, store.root, "rollout", "--policy", "random", "--out", "lost", "--episodes", "4",
                    "--batch-size", "1", env={FAILPOINT_ENV: f"rollout_episode:{dead}"}, warm=warm_cli_bin)
    assert proc.returncode != 0
    assert not store.exists("lost") and store.shard_ids() == ["base"]
    if dead == 0:
        assert list(store.tmp_dir.glob("lost.tmp.*"))  # SIGKILL: the main process's staging is left
    rollout(store, "lost", "random", RolloutConfig(episodes=2), progress=False)  # its writer cleans it first
    assert not list(store.tmp_dir.glob("lost.tmp.*")) and store.exists("lost")


def test_a_process_that_cannot_see_the_staging_directory_stops(tmp_path):
    """What a node without the shared data root meets: the main process's directory is not there."""
    from recap_data.io import shared_directory

    with pytest.raises(RecapError, match="nowhere: process 0 cannot see the main process's staging directory; "
                                         "every node must see the data root at the same path"):
        shared_directory(None, tmp_path / "nowhere")
    assert shared_directory(None, tmp_path) == tmp_path
