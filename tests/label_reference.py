"""The label math written plainly in pandas and numpy, the formulas as recap_data/label_math's
docstring states them: the oracle that the compiled kernels (label_math.kernels, through
label_math.tables) are checked against bit for bit, including the one-line error each bad input
gets. Not used by the package; bench/bench_labels.py times it beside the kernels."""

import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.label_math.bins import ROUNDING, return_bins
from recap_data.label_math.config import RewardConfig
from recap_data.store.label_sets import LABEL_COLUMNS
from recap_data.store.schema import EPISODE_KEY


def episode_layout(frames: pd.DataFrame) -> pd.DataFrame:
    """Sort frames by episode and frame and add `length`; refuse gaps or duplicate frames."""
    missing = [c for c in [*EPISODE_KEY, "frame_index", "task", "success"] if c not in frames.columns]
    if missing:
        raise RecapError(f"frames table lacks column(s) {', '.join(missing)}")
    if frames.empty:
        raise RecapError("no frames to compute returns for: the input shards are empty")
    shard_order = pd.factorize(frames["shard"], sort=True)[0]  # string order, whatever the dtype
    frames = frames.iloc[np.lexsort((frames["frame_index"], frames["episode_index"], shard_order))]
    frames = frames.reset_index(drop=True)
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
    episodes = frames.drop_duplicates(EPISODE_KEY)
    cost = episodes["length"].to_numpy() - 1 + cfg.c_fail * ~episodes["success"].to_numpy(bool)
    by_task = pd.Series(cost, index=episodes["task"].astype(str).to_numpy()).groupby(level=0).max()
    return {task: float(max(value, 1.0)) for task, value in by_task.items()}


def reference_returns(frames: pd.DataFrame, cfg: RewardConfig, normalizers: dict[str, float] | None = None,
                      n_steps: int | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """label_math.tables.compute_returns, as written in its docstring."""
    cfg.validate()
    frames = episode_layout(frames)
    t = frames["frame_index"].to_numpy(np.int64)
    length = frames["length"].to_numpy(np.int64)
    failed = ~frames["success"].to_numpy(bool)
    tasks = frames["task"].astype(str).to_numpy()
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
    out = frames.assign(reward=reward, mc_return=mc_return.astype(np.float64), normalizer=divisor,
                        return_norm=normalized, return_bin=return_bins(normalized, cfg.number_of_bins))
    if n_steps:
        out["nstep_return"] = np.where(t + n_steps < length, -float(n_steps), mc_return) / divisor
    return out, dict(normalizers)


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


def add_advantages(frames: pd.DataFrame, n_steps: int) -> pd.DataFrame:
    """value_next and advantage for frames sorted by episode and frame, with value and nstep_return."""
    t = frames["frame_index"].to_numpy(np.int64)
    ahead = t + n_steps < frames["length"].to_numpy(np.int64)  # o_{t+N} exists in the episode
    value = frames["value"].to_numpy(np.float64)
    rows = np.arange(len(frames))
    # Rows of an episode are contiguous and in frame order, so o_{t+N} is row + N when it exists.
    value_next = np.where(ahead, value[np.minimum(rows + n_steps, len(frames) - 1)], 0.0)
    advantage = frames["nstep_return"].to_numpy(np.float64) + value_next - value
    return frames.assign(value_next=value_next, advantage=advantage)


def threshold(advantages: np.ndarray, fraction: float) -> float:
    """epsilon with round(fraction * n) advantages strictly above it (exactly, unless values tie)."""
    ordered = np.sort(advantages)[::-1]  # descending
    k = int(round(fraction * len(ordered)))
    if k == 0:
        return float(ordered[0])
    if k >= len(ordered):
        return float(np.nextafter(ordered[-1], -np.inf))
    return float((ordered[k - 1] + ordered[k]) / 2)


def reference_labels(frames: pd.DataFrame, reward: RewardConfig, cfg,
                     normalizers: dict[str, float]) -> tuple[pd.DataFrame, dict]:
    """label_math.tables.build_labels, the formulas as written."""
    cfg.validate()
    bad = ~np.isfinite(frames["value"].to_numpy(np.float64))
    if bad.any():
        row = frames[bad].iloc[0]
        raise RecapError(f"shard {row['shard']}: episode {row['episode_index']} frame {row['frame_index']} has value "
                         f"{row['value']}; the value model produced NaN or infinity ({int(bad.sum())} frames)")
    out, _ = reference_returns(frames, reward, normalizers, cfg.n_steps)
    out = add_advantages(out, cfg.n_steps)
    advantage = out["advantage"].to_numpy()
    codes, tasks = pd.factorize(out["task"].astype(str), sort=True)  # (F,) task code per frame
    groups = codes if cfg.threshold == "per_task" else np.zeros(len(out), np.int64)
    # One sort by (group, advantage) instead of a pandas group loop: each group is a slice.
    order = np.lexsort((advantage, groups))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(groups))])
    epsilon_of = np.array([threshold(advantage[order[lo:hi]], cfg.positive_fraction)
                           for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
    eps = epsilon_of[groups]  # (F,)
    intervention = out["is_intervention"].to_numpy(bool)
    indicator = (advantage > eps) | intervention
    out = out.assign(epsilon=eps, indicator=indicator)
    frame_zero = out["frame_index"].to_numpy() == 0  # once per episode
    per_task = {}
    for i, task in enumerate(tasks):
        mine = codes == i
        per_task[str(task)] = {
            "epsilon": float(epsilon_of[i] if cfg.threshold == "per_task" else epsilon_of[0]),
            "positive_fraction": float(indicator[mine].sum() / mine.sum()), "target": cfg.positive_fraction,
            "frames": int(mine.sum()), "episodes": int((mine & frame_zero).sum()),
            "interventions": int(intervention[mine].sum())}
    return out[LABEL_COLUMNS], per_task
