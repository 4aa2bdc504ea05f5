"""The label math (label_math: compiled kernels driven over frame tables) against the pandas
oracle (label_reference.py), bit for bit, errors included."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from label_reference import reference_labels, reference_returns, threshold

from recap_data.errors import RecapError
from recap_data.label_math import kernels
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels, compute_returns


def random_frames(rng: np.random.Generator, n_episodes: int, categorical: bool) -> pd.DataFrame:
    """Episodes of 1 to 120 frames over 3 shards and 4 tasks, sorted as label tables are; values on a
    coarse grid so that advantages tie; a few interventions."""
    rows = []
    for shard in ("a", "b", "c"):
        for episode in range(n_episodes):
            length = int(rng.choice([1, 2, 3, int(rng.integers(4, 60)), int(rng.integers(60, 121))]))
            rows.append(pd.DataFrame({
                "shard": shard, "episode_index": episode, "frame_index": np.arange(length),
                "task": f"task {rng.integers(4)}", "success": bool(rng.random() < 0.6),
                "is_intervention": rng.random(length) < 0.05,
                "value": np.round(rng.uniform(-1, 0, length) * 8) / 8}))
    frames = pd.concat(rows, ignore_index=True)
    frames["index"] = frames.groupby("shard").cumcount()
    if categorical:
        frames["shard"] = frames["shard"].astype("category")
        frames["task"] = frames["task"].astype("category")
    return frames


def normalizers_for(frames: pd.DataFrame, reward: RewardConfig) -> dict:
    return reference_returns(frames, reward)[1]


@pytest.mark.parametrize("seed", range(6))
def test_kernels_match_the_reference_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    frames = random_frames(rng, n_episodes=40, categorical=seed % 2 == 0)
    n = int(rng.choice([1, 5, 50]))
    reward = RewardConfig(normalization=["per_task", "global"][seed % 2], reward_normalizer=2000.0)
    normalizers = normalizers_for(frames, reward)
    for cfg in (AdvantageConfig(n, threshold="per_task", positive_fraction=float(rng.uniform(0.05, 0.95))),
                AdvantageConfig(n, threshold="global", positive_fraction=0.3),  # below: k = 0 and k = n
                AdvantageConfig(n, positive_fraction=1e-6), AdvantageConfig(n, positive_fraction=0.999999)):
        fast, fast_tasks = build_labels(frames, reward, cfg, normalizers)
        ref, ref_tasks = reference_labels(frames, reward, cfg, normalizers)
        pd.testing.assert_frame_equal(fast, ref, check_exact=True)
        assert fast_tasks == ref_tasks
        assert fast["indicator"].any() and not fast["indicator"].all() or cfg.positive_fraction in (1e-6, 0.999999)


@pytest.mark.parametrize("normalization", ["per_task", "global"])
def test_value_targets_match_the_reference_bit_for_bit(normalization):
    """compute_returns (the value model's targets) runs the same kernel as the labels."""
    frames = random_frames(np.random.default_rng(9), n_episodes=30, categorical=normalization == "global")
    reward = RewardConfig(c_fail=50.0, normalization=normalization, reward_normalizer=500.0)
    got, got_norms = compute_returns(frames.sample(frac=1.0, random_state=2), reward, n_steps=7)  # any order in
    want, want_norms = reference_returns(frames, reward, n_steps=7)
    assert got_norms == want_norms and list(got_norms) == list(want_norms)
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=True)


def test_unsorted_frames_give_the_reference_result():
    frames = random_frames(np.random.default_rng(7), n_episodes=10, categorical=False)
    shuffled = frames.sample(frac=1.0, random_state=0)
    reward, cfg = RewardConfig(), AdvantageConfig(n_steps=5)
    normalizers = normalizers_for(frames, reward)
    fast, _ = build_labels(shuffled, reward, cfg, normalizers)
    pd.testing.assert_frame_equal(fast, reference_labels(frames, reward, cfg, normalizers)[0], check_exact=True)


def test_inputs_the_kernels_refuse_get_the_reference_error():
    frames = random_frames(np.random.default_rng(8), n_episodes=10, categorical=True)
    reward, cfg = RewardConfig(), AdvantageConfig()
    normalizers = normalizers_for(frames, reward)
    nan = frames.copy()
    nan.loc[5, "value"] = np.nan
    gap = frames.drop(index=3).reset_index(drop=True)
    long = frames[frames["frame_index"] >= 1].copy()  # every episode starts at frame 1: positions are off
    flip = frames.copy()
    row = flip.index[flip["frame_index"] > 0][-1]  # inside an episode of at least two frames
    flip.loc[row, "success"] = not flip.loc[row, "success"]
    small = {task: 1.0 for task in normalizers}  # every return below -1
    for bad, norms in ((nan, normalizers), (gap, normalizers), (long, normalizers), (flip, normalizers),
                       (frames, small), (frames, {})):
        with pytest.raises(RecapError) as fast:
            build_labels(bad, reward, cfg, norms)
        with pytest.raises(RecapError) as ref:
            reference_labels(bad, reward, cfg, norms)
        assert str(fast.value) == str(ref.value)


@pytest.mark.parametrize("kind", ["ties", "one value", "wide range", "signed zeros", "one frame"])
def test_selected_thresholds_equal_the_sorted_reference(kind):
    rng = np.random.default_rng(len(kind))
    n = 1 if kind == "one frame" else 5000
    values = {"ties": np.round(rng.normal(size=n) * 4) / 4, "one value": np.full(n, 0.25),
              "wide range": rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, n),
              "signed zeros": rng.choice([-0.0, 0.0, 1e-300, -1e-300, 2.0], n), "one frame": np.array([-0.5])}[kind]
    groups = rng.integers(0, 3, n).astype(np.int8) if n > 1 else np.zeros(1, np.int8)
    n_groups = int(groups.max()) + 1
    for fraction in (1e-9, 0.3, 0.5, 0.999999999):
        got = kernels.thresholds(values, groups, n_groups, fraction)
        want = [threshold(values[groups == g], fraction) for g in range(n_groups)]
        assert got.tolist() == want, (kind, fraction)


@pytest.mark.parametrize("values", [
    ["b", "b", "a", "a", "a", None, None, "c", "a", "a"] * 30,  # runs, missing values, a value coming back
    [float("nan")] * 40 + ["x"] * 40,
    ["a", pd.NA] * 30,  # pd.NA answers a compare with NA: everything is hashed
    list("abcdefgh") * 20,  # no runs: everything is hashed
    ["only"],
    [f"shard {i // 10}" for i in range(200)],  # runs of equal values, an object per row (as DuckDB's .df())
    [f"shard {i // 10}" for i in range(200)][::-1] + ["shard 3"] * 50])  # a value coming back, shared objects
def test_string_columns_are_coded_as_factorize_codes_them(values):
    """encode hashes one value per run of a Python-object column; its answer is pd.factorize's."""
    from recap_data.label_math.tables import encode

    column = pd.Series([v if v is None or not isinstance(v, str) else "".join(v) for v in values], dtype=object)
    codes, uniques = encode(column)
    want_codes, want_uniques = pd.factorize(column, sort=True)
    np.testing.assert_array_equal(codes, want_codes)
    assert list(uniques) == list(want_uniques)


def test_the_label_math_leaves_torchs_thread_count_as_it_was():
    """numba's OpenMP layer sets the thread count of the thread that starts it, on the libgomp torch
    runs on: started from a caller, it raised torch's threads from the one asked for to
    NUMBA_NUM_THREADS (kernels._start_numba_threads_elsewhere). A fresh process: in this one numba
    may have started already."""
    script = (
        "import torch\n"
        "torch.set_num_threads(1)\n"  # what OMP_NUM_THREADS=1 or torchrun's default for a rank asks for
        "assert torch.get_num_threads() == 1\n"  # (torch settles its thread count for this thread here)
        "import pandas as pd\n"
        "from recap_data.label_math.config import RewardConfig\n"
        "from recap_data.label_math.tables import compute_returns\n"
        "frames = pd.DataFrame({'shard': 's', 'episode_index': [0] * 40 + [1] * 30, 'task': 'a',\n"
        "                       'frame_index': [*range(40), *range(30)], 'success': [True] * 40 + [False] * 30})\n"
        "compute_returns(frames, RewardConfig(), n_steps=5)\n"
        "import numba\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n")
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # two, even on a one-core machine
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "2"]  # torch as asked; numba's kernels still on two threads
