"""Indicator prompts, their dropout, and the episode-aware weighted sampler."""

import numpy as np
import pytest

from recap_data.errors import RecapError
from recap_data.policy.conditioning import IndicatorPrompts, WeightedEpisodeSampler, prompt

TASK = "put both moka pots on the stove"


def test_prompt_text_per_mode():
    assert prompt(TASK, True) == f"{TASK}\nAdvantage: positive"
    assert prompt(TASK, False) == f"{TASK}\nAdvantage: negative"
    assert prompt(TASK, None) == TASK
    tasks = [TASK] * 4
    assert IndicatorPrompts("on", 0.0)(tasks) == [prompt(TASK, True)] * 4
    assert IndicatorPrompts("ignore", 0.0)(tasks, [False] * 4) == tasks
    used = IndicatorPrompts("use", 0.0)(tasks, indicators=[True, False, False, True], interventions=[0, 1, 0, 0])
    assert used == [prompt(TASK, True), prompt(TASK, True), prompt(TASK, False), prompt(TASK, True)]
    with pytest.raises(RecapError, match="needs a label set"):
        IndicatorPrompts("use", 0.0)(tasks)
    with pytest.raises(RecapError, match="indicator_mode"):
        IndicatorPrompts("always", 0.0)
    with pytest.raises(RecapError, match="indicator_dropout"):
        IndicatorPrompts("on", 1.0)


def test_dropout_rate_is_close_to_its_setting():
    make = IndicatorPrompts("use", 0.3, seed=1)
    prompts = make(["t"] * 20000, indicators=np.arange(20000) % 2 == 0)
    assert make.counts == {"positive": sum(p.endswith("positive") for p in prompts),
                           "negative": sum(p.endswith("negative") for p in prompts),
                           "none": sum(p == "t" for p in prompts)}
    dropped = np.mean([p == "t" for p in prompts])
    assert abs(dropped - 0.3) < 0.015
    kept = [p for p in prompts if p != "t"]
    assert abs(np.mean([p.endswith("positive") for p in kept]) - 0.5) < 0.02  # dropout is independent of the label


def episodes():
    # shard a: 3 episodes (lengths 10, 5, 20); shard b: 2 episodes (lengths 4, 6)
    return [("a", 0, 10), ("a", 10, 15), ("a", 15, 35), ("b", 0, 4), ("b", 4, 10)]


def test_sampler_follows_the_mixture_weights_and_skips_the_last_frames():
    sampler = WeightedEpisodeSampler(episodes(), {"a": 1.0, "b": 3.0}, num_samples=40000, drop_n_last_frames=3, seed=0)
    draws = np.array(list(sampler))
    assert len(draws) == 40000
    in_b = draws >= 35
    assert abs(in_b.mean() - 0.75) < 0.01
    usable = set(range(0, 7)) | set(range(10, 12)) | set(range(15, 32)) | {35} | set(range(39, 42))
    assert set(draws.tolist()) == usable  # every usable frame drawn, no frame within 3 of an episode end
    counts = np.bincount(draws[~in_b], minlength=35)[sorted(usable - {35, 39, 40, 41})]
    assert counts.min() > 0.8 * counts.mean()  # uniform over shard a's usable frames


def test_sampler_is_reproducible_per_epoch_and_splits_across_ranks():
    one = WeightedEpisodeSampler(episodes(), {"a": 1.0, "b": 1.0}, num_samples=100, seed=5)
    first, second = list(one), list(one)
    assert first != second  # a new epoch, a new draw
    again = WeightedEpisodeSampler(episodes(), {"a": 1.0, "b": 1.0}, num_samples=100, seed=5)
    assert list(again) == first
    ranks = [WeightedEpisodeSampler(episodes(), {"a": 1.0, "b": 1.0}, num_samples=50, seed=5, rank=r, world=2)
             for r in (0, 1)]
    r0, r1 = list(ranks[0]), list(ranks[1])
    assert len(r0) == len(r1) == 50 and sorted(r0 + r1) == sorted(first)
    with pytest.raises(RecapError, match="no sampling weight for shard 'b'"):
        WeightedEpisodeSampler(episodes(), {"a": 1.0}, num_samples=1)
    with pytest.raises(RecapError, match="no episode is longer"):
        WeightedEpisodeSampler(episodes(), {"a": 1.0, "b": 1.0}, num_samples=1, drop_n_last_frames=30)
