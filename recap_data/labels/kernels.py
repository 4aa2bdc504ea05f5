"""The label math over plain arrays, compiled with numba: returns, n-step returns, value_next,
advantages, per-task thresholds and indicators at tens of millions of frames per second.

The formulas are those of value/returns.py and labels/labelset.py, which stay the reference:
tests compare these kernels with them bit for bit over randomized episodes. The kernels only
compute; they flag what they cannot label (a frame out of place, an outcome that changes
within an episode, a return below -1, a value that is not finite) and the caller lets the
reference implementation raise its one-line error for it.

Frames come sorted by (shard, episode, frame), as label tables store them, so an episode is a
run of rows and o_{t+N} is row + N. Episodes are independent, so the per-frame kernel runs in
parallel over them (numba's prange); the thresholds need one selection per task (np.partition,
linear time) instead of a sort.
"""

import numba
import numpy as np

# Why a kernel refused its input (the reference implementation then names the frame).
OK, UNSORTED, BAD_POSITION, OUTCOME_FLIP, OVERFLOW, NOT_FINITE = range(6)
ROUNDING = 1e-9  # the same slack as value.returns.ROUNDING


@numba.njit(cache=True, nogil=True)
def episode_starts(shard_code, episode_index, frame_index):
    """(starts (E+1,), status): the first row of each episode and the end; status is OK, UNSORTED
    (keys not increasing) or BAD_POSITION (a frame_index that is not its position 0..T-1)."""
    n = len(frame_index)
    starts = np.empty(n + 1, np.int64)
    e = 0
    for i in range(n):
        new = i == 0 or shard_code[i] != shard_code[i - 1] or episode_index[i] != episode_index[i - 1]
        if new:
            if i > 0 and (shard_code[i] < shard_code[i - 1]
                          or (shard_code[i] == shard_code[i - 1] and episode_index[i] < episode_index[i - 1])):
                return starts[:1], UNSORTED
            starts[e] = i
            e += 1
        if frame_index[i] != i - starts[e - 1]:
            return starts[:1], BAD_POSITION
    starts[e] = n
    return starts[:e + 1], OK


@numba.njit(parallel=True, cache=True)
def per_frame(starts, success, task_code, divisors, value, c_fail, n_steps, number_of_bins,
              reward, mc_return, return_norm, return_bin, nstep_return, value_next, advantage):
    """Fill the per-frame outputs (each (F,)) for episodes [starts[e], starts[e+1]); returns a status."""
    n_episodes = len(starts) - 1
    status = np.zeros(n_episodes, np.int64)  # (E,) per episode: no shared writes between threads
    for e in numba.prange(n_episodes):
        lo, hi = starts[e], starts[e + 1]
        length = hi - lo
        failed = not success[lo]
        for i in range(lo, hi):
            if success[i] != success[lo]:
                status[e] = OUTCOME_FLIP
            if not np.isfinite(value[i]):
                status[e] = NOT_FINITE
            t = i - lo
            divisor = divisors[task_code[i]]
            last = t == length - 1
            reward[i] = (-c_fail if failed else 0.0) if last else -1.0
            mc = float(-(length - 1 - t)) - (c_fail if failed else 0.0)
            mc_return[i] = mc
            if -mc > divisor * (1 + ROUNDING):
                status[e] = OVERFLOW
            norm = mc / divisor
            return_norm[i] = norm
            b = np.int64(np.floor((norm + 1.0) * number_of_bins))
            return_bin[i] = min(max(b, 0), number_of_bins - 1)  # only the two ends: see returns.return_bins
            ahead = t + n_steps < length
            g = (-float(n_steps) if ahead else mc) / divisor
            nstep_return[i] = g
            v_next = value[i + n_steps] if ahead else 0.0
            value_next[i] = v_next
            advantage[i] = g + v_next - value[i]
    return status.max() if n_episodes else OK


@numba.njit(cache=True, nogil=True)
def group_slices(groups, n_groups):
    """(order (F,), bounds (G+1,)): rows grouped by group, each group's rows a slice of order."""
    counts = np.zeros(n_groups + 1, np.int64)
    for g in groups:
        counts[g + 1] += 1
    bounds = np.cumsum(counts)
    fill = bounds[:-1].copy()
    order = np.empty(len(groups), np.int64)
    for i in range(len(groups)):
        g = groups[i]
        order[fill[g]] = i
        fill[g] += 1
    return order, bounds


def threshold(advantages: np.ndarray, fraction: float) -> float:
    """labelset.threshold by selection instead of a sort: the same epsilon, in linear time."""
    n = len(advantages)
    k = int(round(fraction * n))
    if k == 0:
        return float(advantages.max())
    if k >= n:
        return float(np.nextafter(advantages.min(), -np.inf))
    # ascending s: the reference's descending ordered[k-1] is s[n-k], ordered[k] is s[n-k-1]
    s = np.partition(advantages, (n - k - 1, n - k))
    return float((s[n - k] + s[n - k - 1]) / 2)


@numba.njit(parallel=True, cache=True)
def indicators(advantage, groups, epsilon_of, intervention, epsilon, indicator):
    """epsilon = the frame's group threshold; indicator = A_t > epsilon or an intervention."""
    for i in numba.prange(len(advantage)):
        eps = epsilon_of[groups[i]]
        epsilon[i] = eps
        indicator[i] = advantage[i] > eps or intervention[i]
