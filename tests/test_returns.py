"""Rewards, returns, bins and n-step returns against hand-computed values (docs/value.md)."""

import numpy as np
import pandas as pd
import pytest

from recap_data.errors import RecapError
from recap_data.label_math.bins import bin_centres, bin_edges, decode_medians, decode_values, return_bins
from recap_data.label_math.config import RewardConfig
from recap_data.label_math.tables import compute_returns


def episodes(*specs):
    """specs: (task, length, success) -> a frames table with one row per frame."""
    rows = []
    for e, (task, length, success) in enumerate(specs):
        rows += [{"shard": "s", "episode_index": e, "frame_index": t, "task": task, "success": success}
                 for t in range(length)]
    return pd.DataFrame(rows)


def test_success_and_failure_by_hand_with_global_normalizer():
    cfg = RewardConfig(number_of_bins=5, c_fail=5, normalization="global", reward_normalizer=10)
    out, norms = compute_returns(episodes(("a", 3, True), ("a", 2, False)), cfg, n_steps=2)
    assert norms == {"a": 10.0}
    assert out["reward"].tolist() == [-1, -1, 0, -1, -5]
    assert out["mc_return"].tolist() == [-2, -1, 0, -6, -5]
    np.testing.assert_allclose(out["return_norm"], [-0.2, -0.1, 0.0, -0.6, -0.5])
    # bins over [-1, 0] of width 0.2: [-1,-.8) [-.8,-.6) [-.6,-.4) [-.4,-.2) [-.2,0]
    assert out["return_bin"].tolist() == [4, 4, 4, 2, 2]
    # 2-step return: -2/10 while t+2 < T, else the rest of the episode (the terminal reward included)
    np.testing.assert_allclose(out["nstep_return"], [-0.2, -0.1, 0.0, -0.6, -0.5])


def test_nstep_return_inside_a_long_episode():
    cfg = RewardConfig(number_of_bins=201, c_fail=100, normalization="global", reward_normalizer=200)
    out, _ = compute_returns(episodes(("a", 6, False)), cfg, n_steps=3)
    # t=0..2: t+3 < 6, three rewards of -1; t=3..5: the remaining rewards, -100 on the last frame
    np.testing.assert_allclose(out["nstep_return"] * 200, [-3, -3, -3, -102, -101, -100])
    np.testing.assert_allclose(out["mc_return"], [-105, -104, -103, -102, -101, -100])


def test_per_task_normalizer_is_the_tasks_largest_return_magnitude():
    cfg = RewardConfig(number_of_bins=5, c_fail=5, normalization="per_task")
    out, norms = compute_returns(episodes(("a", 3, True), ("a", 2, False), ("b", 4, True)), cfg, n_steps=50)
    assert norms == {"a": 6.0, "b": 3.0}  # a: failure 1 + 5; b: longest success T-1 = 3
    b = out[out["task"] == "b"]
    np.testing.assert_allclose(b["return_norm"], [-1.0, -2 / 3, -1 / 3, 0.0])
    assert b["return_bin"].tolist() == [0, 1, 3, 4]
    a_fail = out[(out["task"] == "a") & ~out["success"]]
    np.testing.assert_allclose(a_fail["return_norm"], [-1.0, -5 / 6])


def test_extreme_episodes_never_give_an_invalid_bin():
    cfg = RewardConfig(normalization="per_task")
    out, norms = compute_returns(episodes(("one", 1, True), ("fail1", 1, False), ("long", 5000, True),
                                          ("fails", 7, False), ("fails", 3, False)), cfg)
    assert out["return_norm"].between(-1, 0).all()  # (return_bin is clipped to the bins, so it could not tell)
    assert norms["one"] == 1.0 and norms["long"] == 4999.0 and norms["fails"] == 1006.0
    first = out.groupby(["shard", "episode_index"]).head(1).set_index("task")["return_bin"]
    assert first["one"] == 200 and first["fail1"] == 0 and first["long"] == 0
    assert first["fails"].tolist() == [0, 0]  # -1006/1006 and -1002/1006: both within 1/201 of -1


def test_global_normalizer_too_small_names_the_minimum():
    cfg = RewardConfig(normalization="global", reward_normalizer=1600, c_fail=1000)
    out, _ = compute_returns(episodes(("a", 601, False)), cfg)  # return -1600 fits exactly
    assert out["return_norm"].iloc[0] == -1.0 and out["return_bin"].iloc[0] == 0
    with pytest.raises(RecapError, match=r"episode 0 \(700 frames.*return -1699.*reward_normalizer >= 1699"):
        compute_returns(episodes(("a", 700, False)), cfg)


def test_stored_normalizers_must_cover_the_data():
    cfg = RewardConfig(normalization="per_task", c_fail=10)
    with pytest.raises(RecapError, match="no return normalizer for task 'b'"):
        compute_returns(episodes(("b", 3, True)), cfg, normalizers={"a": 20.0})
    with pytest.raises(RecapError, match="has return -21, below -20.*retrain"):
        compute_returns(episodes(("a", 12, False)), cfg, normalizers={"a": 20.0})


def test_matches_a_per_frame_reference_on_random_episodes():
    rng = np.random.default_rng(0)
    specs = [(f"t{rng.integers(3)}", int(rng.integers(1, 80)), bool(rng.random() < 0.6)) for _ in range(40)]
    cfg = RewardConfig(number_of_bins=51, c_fail=30, normalization="per_task")
    frames = episodes(*specs).sample(frac=1, random_state=1)  # any row order in, sorted out
    out, norms = compute_returns(frames, cfg, n_steps=7)
    expected = []
    for e, (task, length, success) in enumerate(specs):
        rewards = [-1.0] * (length - 1) + [0.0 if success else -30.0]
        for t in range(length):
            ret = sum(rewards[t:]) / norms[task]
            nstep = sum(rewards[t:t + 7]) / norms[task]
            expected.append((e, t, sum(rewards[t:]), ret, nstep, min(int((ret + 1) * 51), 50)))
    exp = pd.DataFrame(expected, columns=["episode_index", "frame_index", "mc", "norm", "nstep", "bin"])
    np.testing.assert_allclose(out["mc_return"], exp["mc"])
    np.testing.assert_allclose(out["return_norm"], exp["norm"])
    np.testing.assert_allclose(out["nstep_return"], exp["nstep"])
    assert (out["return_bin"].to_numpy() == exp["bin"].to_numpy()).all()


def test_decoding_a_one_hot_lands_in_the_same_bins_targets_use():
    for bins in (2, 5, 201):
        edges, centres = bin_edges(bins), bin_centres(bins)
        one_hot = np.eye(bins)  # (B, B)
        decoded = decode_values(one_hot, bins)
        np.testing.assert_allclose(decoded, centres)
        assert ((decoded >= edges[:-1]) & (decoded < edges[1:])).all()
        assert (return_bins(decoded, bins) == np.arange(bins)).all()
        assert np.isclose(edges[1] - edges[0], 1 / bins)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(decode_values(torch.eye(201, dtype=torch.float64), 201).numpy(), bin_centres(201))


def test_the_median_decode_against_a_hand_computation():
    torch = pytest.importorskip("torch")
    centres = bin_centres(5)  # -0.9, -0.7, -0.5, -0.3, -0.1
    probabilities = torch.tensor([[0.3, 0.0, 0.0, 0.0, 0.7],    # two outcomes: the mean lies between,
                                  [0.1, 0.2, 0.1, 0.3, 0.3],    # the median at the bigger one
                                  [0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(decode_medians(probabilities, 5).numpy(), centres[[4, 3, 2]])
    np.testing.assert_allclose(decode_values(probabilities, 5).numpy()[0], 0.3 * -0.9 + 0.7 * -0.1)


def test_bad_input_is_refused():
    with pytest.raises(RecapError, match="must lie in"):
        return_bins(np.array([-1.01]), 10)
    with pytest.raises(RecapError, match="field 'normalization'"):
        RewardConfig(normalization="per_episode").validate()
    with pytest.raises(RecapError, match="field 'number_of_bins'"):
        RewardConfig(number_of_bins=1).validate()
    gap = episodes(("a", 4, True)).drop(index=2)
    with pytest.raises(RecapError, match="missing or duplicate frame_index"):
        compute_returns(gap, RewardConfig())
    flip = episodes(("a", 3, True))
    flip.loc[0, "success"] = False
    with pytest.raises(RecapError, match="an episode's `success` column differs between its frames"):
        compute_returns(flip, RewardConfig())
    with pytest.raises(RecapError, match="no frames to compute returns for: the input shards are empty"):
        compute_returns(episodes(("a", 1, True)).iloc[:0], RewardConfig())
