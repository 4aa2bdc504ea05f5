"""RECAP rewards, returns and return bins, vectorized over every frame of every episode at once.

Definitions (docs/value.md and docs/labels.md), per episode of T frames, t = 0..T-1:
  reward         r_t = -1 for t < T-1;  r_{T-1} = 0 on success, -c_fail on failure
  return         R_t = sum_{t'>=t} r_t' = -(T-1-t) - c_fail * failed
  normalized     R~_t = R_t / normalizer, in [-1, 0]
  return bin     b_t = index of R~_t among B equal-width bins over [-1, 0]
  n-step return  G_t = sum_{t'=t}^{min(t+N,T)-1} r_t' / normalizer = -N/normalizer if t+N < T else R~_t
The advantage adds V(o_{t+N}) (0 when t+N >= T) and subtracts V(o_t); see labeling.

The normalizer is `reward_normalizer` for every task (`global`), or, for `per_task` (the
paper's choice), the largest return magnitude among the task's episodes: the longest episode
measured in cost, T_max - 1, plus c_fail when it failed. Either way no return may fall below
-1: the data is checked against the config and an episode that does not fit is an error
naming the smallest normalizer that works, never a silently clamped bin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from recap_data.config import Count, Int, NonNegative, Positive, check_fields, param
from recap_data.errors import RecapError
from recap_data.store.schema import EPISODE_KEY

if TYPE_CHECKING:  # pandas is imported where it is used, not with the CLI
    import pandas as pd

NORMALIZATIONS = ("global", "per_task")
# The fields that define a value model's targets; n_steps only shapes the advantage, so a
# checkpoint may label with another n_steps than it was trained with.
TARGET_FIELDS = ("number_of_bins", "c_fail", "normalization", "reward_normalizer")
ROUNDING = 1e-9  # float slack at the ends of [-1, 0]; anything further out is an error


@dataclass(frozen=True)
class RewardConfig:
    """How returns are defined and binned (params.yaml section `reward`)."""

    number_of_bins: Int(2, 100_000) = param(201, "B equal-width bins over [-1, 0] for the distributional value")
    c_fail: NonNegative = param(1000.0, "cost of failing, charged at the last frame of a failed episode")
    normalization: str = param("per_task", "per_task: by each task's largest return magnitude; global")
    reward_normalizer: Positive = param(1600.0, "the divisor for `global` normalization")
    n_steps: Count = param(50, "look-ahead N of the n-step return used by the advantage")

    def __post_init__(self):  # 1000 and 1000.0 are the same config; store and compare floats
        object.__setattr__(self, "c_fail", float(self.c_fail))
        object.__setattr__(self, "reward_normalizer", float(self.reward_normalizer))

    def validate(self) -> RewardConfig:
        check_fields(self, "reward")
        if self.normalization not in NORMALIZATIONS:
            raise RecapError(f"reward: field 'normalization' = {self.normalization!r} is invalid: use one of "
                             f"{', '.join(NORMALIZATIONS)}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def bin_edges(number_of_bins: int) -> np.ndarray:
    """The B+1 edges of the bins over [-1, 0]; bin b is [edge_b, edge_b+1), the last one closed."""
    return np.linspace(-1.0, 0.0, number_of_bins + 1)


def bin_centres(number_of_bins: int) -> np.ndarray:
    """The value each bin stands for when decoding: the midpoint of the same edges the targets use."""
    edges = bin_edges(number_of_bins)
    return (edges[:-1] + edges[1:]) / 2


def return_bins(normalized: np.ndarray, number_of_bins: int) -> np.ndarray:
    """Bin index of normalized returns in [-1, 0]; a value outside (beyond rounding) is an error."""
    normalized = np.asarray(normalized, dtype=np.float64)
    if normalized.size and (normalized.min() < -1 - ROUNDING or normalized.max() > ROUNDING):
        raise RecapError(f"normalized returns must lie in [-1, 0], got [{normalized.min()}, {normalized.max()}]")
    index = np.floor((normalized + 1.0) * number_of_bins).astype(np.int64)
    # Only the two ends are clamped: 0 belongs to the last bin (closed interval), -1-1e-12 to the first.
    return np.clip(index, 0, number_of_bins - 1)


def decode_values(probabilities, number_of_bins: int):
    """Continuous value sum_b p(b) v_b from bin probabilities (..., B); numpy or torch."""
    centres = bin_centres(number_of_bins)
    if hasattr(probabilities, "new_tensor"):  # torch: keep device and dtype
        return probabilities @ probabilities.new_tensor(centres)
    return np.asarray(probabilities) @ centres


def decode_medians(probabilities, number_of_bins: int):
    """The median bin's value (...,) from bin probabilities (..., B); torch. Labels use the mean
    (decode_values: V is an expectation); the median is what minimises absolute error, so held-out
    MAE is reported for both, beside the best constant (a median) and median predictors."""
    centres = probabilities.new_tensor(bin_centres(number_of_bins))
    below = (probabilities.cumsum(-1) < 0.5).sum(-1)  # (...,): bins whose cumulative mass is under half
    return centres[below.clamp(max=number_of_bins - 1)]


def episode_layout(frames: pd.DataFrame) -> pd.DataFrame:
    """Sort frames by episode and frame and add `length`; refuse gaps or duplicate frames.

    Needs columns shard, episode_index, frame_index, task, success.
    """
    missing = [c for c in [*EPISODE_KEY, "frame_index", "task", "success"] if c not in frames.columns]
    if missing:
        raise RecapError(f"frames table lacks column(s) {', '.join(missing)}")
    if frames.empty:
        raise RecapError("no frames to compute returns for: the input shards are empty")
    frames = frames.sort_values([*EPISODE_KEY, "frame_index"], kind="stable").reset_index(drop=True)
    episode = frames.groupby(EPISODE_KEY, sort=False, observed=True).ngroup().to_numpy()  # (F,) episode id per frame
    counts = np.bincount(episode)  # (E,)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (E,) first row of each episode
    position = np.arange(len(frames)) - starts[episode]  # (F,) 0..T-1 within the episode
    bad = frames["frame_index"].to_numpy() != position
    if bad.any():
        row = frames.iloc[int(np.argmax(bad))]
        raise RecapError(f"shard {row['shard']}: episode {row['episode_index']} has missing or duplicate "
                         f"frame_index values (expected 0..T-1); re-import the shard")
    flips = frames.groupby(EPISODE_KEY, sort=False, observed=True)["success"].nunique().to_numpy() > 1
    if flips.any():
        raise RecapError("an episode's `success` column differs between its frames; it must be the episode outcome")
    return frames.assign(length=counts[episode])


def task_normalizers(frames: pd.DataFrame, cfg: RewardConfig) -> dict[str, float]:
    """Per task, the largest return magnitude |R_0| (at least 1), for `per_task` normalization."""
    import pandas as pd
    episodes = frames.drop_duplicates(EPISODE_KEY)
    cost = episodes["length"].to_numpy() - 1 + cfg.c_fail * ~episodes["success"].to_numpy(bool)
    by_task = pd.Series(cost, index=episodes["task"].to_numpy()).groupby(level=0).max()
    return {task: float(max(value, 1.0)) for task, value in by_task.items()}


def compute_returns(frames: pd.DataFrame, cfg: RewardConfig,
                    normalizers: dict[str, float] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Add reward, return, normalizer, return_norm, return_bin and nstep_return to every frame.

    `normalizers` (task -> divisor) reuses the ones a value model was trained with; by default
    they come from `cfg` and the data. Returns the frames (sorted by shard, episode, frame)
    and the normalizers used.
    """
    import pandas as pd
    cfg.validate()
    frames = episode_layout(frames)
    t = frames["frame_index"].to_numpy(np.int64)
    length = frames["length"].to_numpy(np.int64)
    failed = ~frames["success"].to_numpy(bool)
    tasks = frames["task"].to_numpy()
    if normalizers is None:
        normalizers = (task_normalizers(frames, cfg) if cfg.normalization == "per_task"
                       else {task: float(cfg.reward_normalizer) for task in pd.unique(tasks)})
    unknown = sorted(set(pd.unique(tasks)) - set(normalizers))
    if unknown:
        raise RecapError(f"no return normalizer for task {unknown[0]!r}: the value model never saw it; "
                         "train it on data including this task or use reward.normalization: global")
    divisor = pd.Series(tasks).map(normalizers).to_numpy(np.float64)  # (F,)

    last = t == length - 1
    reward = np.where(last, np.where(failed, -cfg.c_fail, 0.0), -1.0)
    mc_return = -(length - 1 - t) - cfg.c_fail * failed  # (F,) float
    _check_fits(frames, mc_return, divisor, cfg)
    normalized = mc_return / divisor
    nstep = np.where(t + cfg.n_steps < length, -float(cfg.n_steps), mc_return) / divisor
    return frames.assign(
        reward=reward, mc_return=mc_return.astype(np.float64), normalizer=divisor,
        return_norm=normalized, return_bin=return_bins(normalized, cfg.number_of_bins),
        nstep_return=nstep), dict(normalizers)


def _check_fits(frames: pd.DataFrame, mc_return: np.ndarray, divisor: np.ndarray, cfg: RewardConfig) -> None:
    """Every return must be >= -normalizer; otherwise name the episode and the smallest normalizer."""
    overflow = -mc_return > divisor * (1 + ROUNDING)
    if not overflow.any():
        return
    worst = int(np.argmax(np.where(overflow, -mc_return / divisor, -np.inf)))
    row = frames.iloc[worst]
    need = float(-mc_return[worst])
    outcome = "failed" if not row["success"] else "successful"
    if cfg.normalization == "global":
        fix = f"set reward.reward_normalizer >= {need:g} or reward.normalization: per_task"
    else:
        fix = "retrain the value model on data that includes this episode (its per-task normalizer is too small)"
    raise RecapError(f"shard {row['shard']}: {outcome} episode {row['episode_index']} ({row['length']} frames, "
                     f"task {row['task']!r}) has return {-need:g}, below -{divisor[worst]:g}; {fix}")
