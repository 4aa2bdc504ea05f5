"""The label math over frame tables (pandas): lay the frames out for the kernels, run them, and
turn a refusal into a one-line error naming the frame.

  compute_returns  the value model's targets: reward, mc_return, normalizer, return_norm,
                   return_bin and length (and nstep_return, given N), for every frame
  build_labels     every label column (store.label_sets.LABEL_COLUMNS) and per-task statistics,
                   from frames that carry the value model's `value`

Both run kernels.per_frame, so a formula changed there changes the targets and the labels alike.
String columns are coded once (encode) and the frames sorted only when they are not already in
(shard, episode, frame) order, as label tables and LeRobot shards store them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recap_data.errors import RecapError
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.store.label_sets import LABEL_COLUMNS
from recap_data.store.schema import EPISODE_KEY

if TYPE_CHECKING:  # pandas is imported where it is used, not with the CLI
    import pandas as pd

KEY = [*EPISODE_KEY, "frame_index"]
RETURN_COLUMNS = ("reward", "mc_return", "return_norm", "nstep_return")
EMPTY = "no frames to compute returns for: the input shards are empty"


@dataclass
class Layout:
    """Frames in (shard, episode, frame) order, coded for the kernels."""

    frames: pd.DataFrame  # sorted, index 0..F-1
    task_codes: np.ndarray  # (F,) index into `tasks`
    tasks: list[str]  # the tasks present, in sorted order
    starts: np.ndarray  # (E+1,) first row of each episode, then F
    success: np.ndarray  # (F,) bool, the episode's outcome at every frame


def encode(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes (F,), values): pd.factorize(column, sort=True), without hashing every string when the
    column is categorical (as label tables read them), and hashing one value per run when it holds
    Python objects in runs (shard and task are constant over an episode)."""
    import pandas as pd

    from recap_data.label_math import kernels

    if isinstance(column.dtype, pd.CategoricalDtype) and not column.isna().any():
        categories, codes = column.cat.categories, column.cat.codes.to_numpy()
        present = kernels.counts(codes, len(categories)) > 0
        if present.all() and categories.is_monotonic_increasing:
            return codes, categories  # as they are (int8 for a few categories): no copy
        order = np.argsort(categories.to_numpy(), kind="stable")
        order = order[present[order]]  # the categories that occur, in sorted order
        remap = np.full(len(categories), -1, np.int64)
        remap[order] = np.arange(len(order))
        return remap[codes], categories[order]
    if column.dtype == object:
        return _encode_runs(column.to_numpy())
    return pd.factorize(column, sort=True)  # arrow-backed strings: pyarrow hashes their buffers


def _encode_runs(values: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """pd.factorize(values, sort=True) for an object array, hashing only the first value of each
    run of equal values. Runs are found by identity first, an integer compare of the object
    pointers (pyarrow's to_pandas and astype(object) share one object per distinct value), then by
    value where the identity changes (DuckDB's .df() makes an object per row); the runs are few
    where it matters (a shard or task per episode). Without long runs it hashes everything."""
    import ctypes

    import pandas as pd

    values = np.ascontiguousarray(values)
    if len(values) < 2:
        return pd.factorize(values, sort=True)
    # numpy will not view references as integers: read the PyObject* slots in place (values stays alive)
    pointers = np.frombuffer((ctypes.c_void_p * len(values)).from_address(values.ctypes.data), np.uintp)  # (F,)
    moved = np.flatnonzero(pointers[1:] != pointers[:-1])  # rows whose next row holds another object
    try:
        if len(moved) > len(values) // 4:  # mostly distinct objects: compare every neighbour (views, no copy)
            changed = np.flatnonzero(np.asarray(values[1:] != values[:-1], bool))
        else:
            changed = moved[np.asarray(values[moved] != values[moved + 1], bool)]
    except TypeError:  # pd.NA compares to NA: hash everything, as pd.factorize does
        return pd.factorize(values, sort=True)
    heads = np.concatenate(([0], changed + 1))  # (runs,) first row of each run
    if len(heads) > len(values) // 4:  # short runs: hashing every row costs less than this detour
        return pd.factorize(values, sort=True)
    codes, uniques = pd.factorize(values[heads], sort=True)  # (runs,)
    return np.repeat(codes, np.diff(np.append(heads, len(values)))), uniques  # (F,)


def layout(frames: pd.DataFrame, needed: list[str]) -> Layout:
    """Check the columns, sort the frames if they are not in order, and find the episodes; a
    frame_index that is not its position 0..T-1 in its episode is an error naming the episode."""
    import pandas as pd

    from recap_data.label_math import kernels

    missing = [c for c in needed if c not in frames.columns]
    if missing:
        raise RecapError(f"frames table lacks column(s) {', '.join(missing)}")
    if frames.empty:
        raise RecapError(EMPTY)
    shard_codes, _ = encode(frames["shard"])
    episode, frame = frames["episode_index"].to_numpy(np.int64), frames["frame_index"].to_numpy(np.int64)
    starts, status = kernels.episode_starts(shard_codes, episode, frame)
    if status != kernels.OK:  # out of order (or a bad frame_index, which sorting cannot mend)
        order = np.lexsort((frame, episode, shard_codes))  # shard order = the codes' (string) order
        frames, shard_codes, episode, frame = frames.iloc[order], shard_codes[order], episode[order], frame[order]
        starts, status = kernels.episode_starts(shard_codes, episode, frame)
        if status != kernels.OK:
            _refuse_positions(frames, shard_codes, episode, frame)
    rows = pd.RangeIndex(len(frames))
    if not frames.index.equals(rows):
        frames = frames.set_axis(rows, axis=0, copy=False)  # not reset_index: its copy costs more than the math
    task_codes, tasks = encode(frames["task"])
    return Layout(frames, task_codes, [str(t) for t in tasks], starts, frames["success"].to_numpy(bool))


def task_normalizers(lay: Layout, cfg: RewardConfig) -> dict[str, float]:
    """The divisor Z of each task: `reward_normalizer` (global), or (per_task) the largest return
    magnitude among the task's episodes, T_max - 1 plus c_fail when it failed, at least 1."""
    if cfg.normalization == "global":  # in the order tasks first occur, as a manifest lists them
        first = np.unique(lay.task_codes, return_index=True)[1]
        return {lay.tasks[int(lay.task_codes[i])]: float(cfg.reward_normalizer) for i in np.sort(first)}
    heads = lay.starts[:-1]  # (E,) first row of each episode
    cost = np.diff(lay.starts) - 1 + cfg.c_fail * ~lay.success[heads]  # (E,) |R_0|
    largest = np.zeros(len(lay.tasks))
    np.maximum.at(largest, lay.task_codes[heads], cost)
    return {task: float(max(largest[i], 1.0)) for i, task in enumerate(lay.tasks)}


def check_normalizers(tasks, normalizers: dict[str, float]) -> None:
    """Every task needs the return normalizer of the value model that scored it."""
    unknown = [task for task in tasks if task not in normalizers]
    if unknown:
        raise RecapError(f"no return normalizer for task {unknown[0]!r}: the value model never saw it; "
                         "train it on data including this task or use reward.normalization: global")


def per_frame(lay: Layout, value: np.ndarray, reward: RewardConfig, normalizers: dict[str, float],
              n_steps: int) -> dict:
    """kernels.per_frame over the laid-out frames: every per-frame column (F,) and `normalizer`."""
    from recap_data.label_math import kernels

    try:
        check_normalizers(lay.tasks, normalizers)
    except RecapError:
        _refuse_outcomes(lay)  # an episode's outcome flipping is named first, as the reference does
        raise
    divisors = np.array([normalizers[task] for task in lay.tasks], np.float64)  # (tasks,)
    out, status = frame_columns(lay.starts, lay.success, lay.task_codes, divisors, value, reward, n_steps)
    out["normalizer"] = divisors[lay.task_codes]  # (F,)
    if status != kernels.OK:
        _refuse_outcomes(lay)
        _refuse_overflow(lay, out["mc_return"], out["normalizer"], reward)
        raise RecapError(f"the label math refused its input (kernel status {status}) and no check names a frame; "
                         "please report this with the shards")
    return out


def frame_columns(starts: np.ndarray, success: np.ndarray, task_codes: np.ndarray, divisors: np.ndarray,
                  value: np.ndarray, reward: RewardConfig, n_steps: int) -> tuple[dict, int]:
    """(every per-frame column (F,), kernel status) for frames laid out as episodes [starts[e],
    starts[e+1]); divisors (tasks,) is Z per task code. Also relabel's, chunk by chunk."""
    from recap_data.label_math import kernels

    n = len(value)
    out = {name: np.empty(n, np.float64) for name in (*RETURN_COLUMNS, "value_next", "advantage")}
    out["return_bin"] = np.empty(n, np.int64)
    status = kernels.per_frame(starts, success, task_codes, divisors, value, float(reward.c_fail), n_steps,
                               reward.number_of_bins, out["reward"], out["mc_return"], out["return_norm"],
                               out["return_bin"], out["nstep_return"], out["value_next"], out["advantage"])
    return out, status


def compute_returns(frames: pd.DataFrame, cfg: RewardConfig, normalizers: dict[str, float] | None = None,
                    n_steps: int | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """The frames, sorted by shard, episode and frame, with reward, mc_return, normalizer,
    return_norm, return_bin and length added (and nstep_return, over `n_steps`, when it is
    given: the value model's targets do not need it); and the normalizers used.

    `normalizers` (task -> divisor) reuses the ones a value model was trained with; by default
    they come from `cfg` and the data (task_normalizers). No return may fall below -1: an episode
    that does not fit is an error naming the smallest normalizer that works, never a clamped bin.
    """
    cfg.validate()
    lay = layout(frames, [*KEY, "task", "success"])
    normalizers = task_normalizers(lay, cfg) if normalizers is None else normalizers
    out = per_frame(lay, np.zeros(len(lay.frames)), cfg, normalizers, n_steps or 1)
    names = ("reward", "mc_return", "normalizer", "return_norm", "return_bin", *(("nstep_return",) if n_steps else ()))
    columns = {c: out[c] for c in names}
    return lay.frames.assign(**columns, length=_lengths(lay)), dict(normalizers)


def build_labels(frames: pd.DataFrame, reward: RewardConfig, cfg: AdvantageConfig,
                 normalizers: dict[str, float]) -> tuple[pd.DataFrame, dict]:
    """Label rows (LABEL_COLUMNS, sorted by shard, episode and frame) and per-task statistics from
    frames with keys, index, task, success, is_intervention and value."""
    import pandas as pd

    from recap_data.label_math import kernels

    reward.validate()
    cfg.validate()
    lay = layout(frames, [*LABEL_COLUMNS[:7], "value"])
    value = lay.frames["value"].to_numpy(np.float64)
    bad = ~np.isfinite(value)
    if bad.any():
        row = lay.frames[bad].iloc[0]
        raise RecapError(f"shard {row['shard']}: episode {row['episode_index']} frame {row['frame_index']} has value "
                         f"{row['value']}; the value model produced NaN or infinity ({int(bad.sum())} frames)")
    out = per_frame(lay, value, reward, normalizers, cfg.n_steps)
    n = len(lay.frames)
    groups = lay.task_codes if cfg.threshold == "per_task" else np.zeros(n, np.int8)
    epsilon_of = kernels.thresholds(out["advantage"], groups, int(groups.max()) + 1, cfg.positive_fraction)
    intervention = lay.frames["is_intervention"].to_numpy(bool)
    out["epsilon"], out["indicator"] = np.empty(n, np.float64), np.empty(n, bool)
    kernels.indicators(out["advantage"], groups, epsilon_of, intervention, out["epsilon"], out["indicator"])
    counts = kernels.task_counts(lay.task_codes, len(lay.tasks), lay.frames["frame_index"].to_numpy(np.int64),
                                 out["indicator"], intervention)
    per_task = task_statistics(counts, lay.tasks, epsilon_of, cfg)
    # the computed columns, and the input's own as Series (their dtypes kept, object columns not re-inferred)
    columns = {c: out[c] if c in out else lay.frames[c] for c in LABEL_COLUMNS}
    return pd.DataFrame(columns, copy=False), per_task


def task_statistics(counts: np.ndarray, tasks, epsilon_of: np.ndarray, cfg: AdvantageConfig) -> dict:
    """Per task: epsilon, realised and target positive fraction, frames, episodes, interventions,
    from counts (4, tasks) of frames, positive frames, episodes and interventions."""
    frames_per, positives, episodes_per, interventions = counts
    task_eps = epsilon_of if cfg.threshold == "per_task" else np.full(len(tasks), epsilon_of[0])
    return {str(task): {"epsilon": float(task_eps[i]), "positive_fraction": float(positives[i] / frames_per[i]),
                        "target": cfg.positive_fraction, "frames": int(frames_per[i]),
                        "episodes": int(episodes_per[i]), "interventions": int(interventions[i])}
            for i, task in enumerate(tasks)}


def _lengths(lay: Layout) -> np.ndarray:
    """(F,) the length T of each frame's episode."""
    return np.repeat(np.diff(lay.starts), np.diff(lay.starts))


# The checks below run only when the kernels refuse an input: each raises the error that names it.

def _refuse_positions(frames: pd.DataFrame, shard_codes, episode, frame) -> None:
    new = np.ones(len(frame), bool)  # (F,) the first row of an episode
    new[1:] = (shard_codes[1:] != shard_codes[:-1]) | (episode[1:] != episode[:-1])
    heads = np.flatnonzero(new)
    position = np.arange(len(frame)) - heads[np.cumsum(new) - 1]  # (F,) 0..T-1 within the episode
    row = frames.iloc[int(np.argmax(frame != position))]
    raise RecapError(f"shard {row['shard']}: episode {row['episode_index']} has missing or duplicate "
                     f"frame_index values (expected 0..T-1); re-import the shard")


def _refuse_outcomes(lay: Layout) -> None:
    success = lay.success
    heads = np.repeat(lay.starts[:-1], np.diff(lay.starts))  # (F,) each frame's episode head
    if (success != success[heads]).any():
        raise RecapError("an episode's `success` column differs between its frames; it must be the episode outcome")


def _refuse_overflow(lay: Layout, mc_return: np.ndarray, divisor: np.ndarray, cfg: RewardConfig) -> None:
    """Every return must be >= -normalizer; otherwise name the episode and the smallest normalizer."""
    from recap_data.label_math.bins import ROUNDING

    overflow = -mc_return > divisor * (1 + ROUNDING)
    if not overflow.any():
        return
    worst = int(np.argmax(np.where(overflow, -mc_return / divisor, -np.inf)))
    row = lay.frames.iloc[worst]
    need = float(-mc_return[worst])
    outcome = "failed" if not row["success"] else "successful"
    if cfg.normalization == "global":
        fix = f"set reward.reward_normalizer >= {need:g} or reward.normalization: per_task"
    else:
        fix = "retrain the value model on data that includes this episode (its per-task normalizer is too small)"
    raise RecapError(f"shard {row['shard']}: {outcome} episode {row['episode_index']} ({_lengths(lay)[worst]} frames, "
                     f"task {row['task']!r}) has return {-need:g}, below -{divisor[worst]:g}; {fix}")
