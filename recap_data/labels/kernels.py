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
    (keys not increasing) or BAD_POSITION (a frame_index that is not its position 0..T-1).
    Two passes over the keys, so that only E+1 starts are allocated, not F."""
    n = len(frame_index)
    n_episodes = 0
    for i in range(n):
        if i == 0 or shard_code[i] != shard_code[i - 1] or episode_index[i] != episode_index[i - 1]:
            if i > 0 and (shard_code[i] < shard_code[i - 1]
                          or (shard_code[i] == shard_code[i - 1] and episode_index[i] < episode_index[i - 1])):
                return np.zeros(1, np.int64), UNSORTED
            n_episodes += 1
    starts = np.empty(n_episodes + 1, np.int64)
    e = 0
    for i in range(n):
        if i == 0 or shard_code[i] != shard_code[i - 1] or episode_index[i] != episode_index[i - 1]:
            starts[e] = i
            e += 1
        if frame_index[i] != i - starts[e - 1]:
            return starts[:1], BAD_POSITION
    starts[n_episodes] = n
    return starts, OK


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
def counts(codes, n):
    """(n,) occurrences of each code 0..n-1 (np.bincount without converting the codes to intp)."""
    out = np.zeros(n, np.int64)
    for c in codes:
        out[c] += 1
    return out


KEY_BITS = 16  # the selection's histogram has 2**16 bins per group


@numba.njit(cache=True, nogil=True)
def _sort_key(bits):
    """From a float64's bits, a uint64 whose unsigned order is the floats' order (finite floats):
    negatives have every bit flipped, positives only the sign bit."""
    flip = np.uint64(0x8000000000000000) if bits >> np.uint64(63) == 0 else np.uint64(0xFFFFFFFFFFFFFFFF)
    return bits ^ flip


@numba.njit(cache=True, nogil=True)
def select(values, groups, n_groups, positions):
    """(G, J): the value at ascending position positions[g, j] among group g's values, exactly,
    by a radix selection: one pass builds each group's histogram of the top KEY_BITS bits of the
    sort key, a second collects only the values in the bins holding a wanted position, which
    are then sorted. Memory is the histogram and those candidates, never a copy of every value."""
    bits = values.view(np.uint64)  # (F,) the same memory, read as integers
    shift = np.uint64(64 - KEY_BITS)
    n_bins = 1 << KEY_BITS
    hist = np.zeros((n_groups, n_bins), np.int64)
    for i in range(len(values)):
        hist[groups[i], _sort_key(bits[i]) >> shift] += 1
    n_wanted = positions.shape[1]
    wanted_bin = np.zeros((n_groups, n_wanted), np.int64)  # the bin of each wanted position
    below = np.zeros((n_groups, n_wanted), np.int64)  # how many of the group's values lie in lower bins
    for g in range(n_groups):
        for j in range(n_wanted):
            seen = 0
            for b in range(n_bins):
                if seen + hist[g, b] > positions[g, j]:
                    wanted_bin[g, j], below[g, j] = b, seen
                    break
                seen += hist[g, b]
    slot = -np.ones((n_groups, n_bins), np.int64)  # (group, bin) -> its candidate list, or -1
    n_lists = 0
    for g in range(n_groups):
        for j in range(n_wanted):
            if slot[g, wanted_bin[g, j]] < 0:
                slot[g, wanted_bin[g, j]] = n_lists
                n_lists += 1
    sizes = np.zeros(n_lists + 1, np.int64)
    for g in range(n_groups):
        for b in range(n_bins):
            if slot[g, b] >= 0:
                sizes[slot[g, b] + 1] = hist[g, b]
    offsets = np.cumsum(sizes)
    fill = offsets[:-1].copy()
    candidates = np.empty(offsets[-1], values.dtype)
    for i in range(len(values)):
        owner = slot[groups[i], _sort_key(bits[i]) >> shift]
        if owner >= 0:
            candidates[fill[owner]] = values[i]
            fill[owner] += 1
    for lst in range(n_lists):
        candidates[offsets[lst]:offsets[lst + 1]].sort()
    out = np.empty((n_groups, n_wanted), values.dtype)
    for g in range(n_groups):
        for j in range(n_wanted):
            lst = slot[g, wanted_bin[g, j]]
            out[g, j] = candidates[offsets[lst] + positions[g, j] - below[g, j]]
    return out


def thresholds(advantage: np.ndarray, groups: np.ndarray, n_groups: int, fraction: float) -> np.ndarray:
    """labelset.threshold for every group at once, the same epsilon: the mean of the k-th and
    (k+1)-th largest advantage, k = round(fraction * n); the largest for k = 0; just below the
    smallest for k = n. By selection (select) instead of a sort."""
    n = counts(groups, n_groups)  # (G,)
    k = np.array([int(round(fraction * m)) for m in n], np.int64)  # Python's round, as the reference's
    # ascending positions of the reference's descending ordered[k-1] and ordered[k], then the
    # largest and the smallest (clipped where k = 0 or k = n, which use only those)
    positions = np.stack([np.clip(n - k, 0, n - 1), np.clip(n - k - 1, 0, n - 1), n - 1, np.zeros_like(n)], axis=1)
    picked = select(advantage, groups, n_groups, positions)  # (G, 4)
    eps = np.empty(n_groups)
    for g in range(n_groups):
        if k[g] == 0:
            eps[g] = picked[g, 2]
        elif k[g] >= n[g]:
            eps[g] = np.nextafter(picked[g, 3], -np.inf)
        else:
            eps[g] = (picked[g, 0] + picked[g, 1]) / 2
    return eps


@numba.njit(cache=True, nogil=True)
def task_counts(codes, n_tasks, frame_index, indicator, intervention):
    """(4, tasks): frames, positive frames, episodes (their frame 0) and interventions per task."""
    out = np.zeros((4, n_tasks), np.int64)
    for i in range(len(codes)):
        c = codes[i]
        out[0, c] += 1
        out[1, c] += indicator[i]
        out[2, c] += frame_index[i] == 0
        out[3, c] += intervention[i]
    return out


@numba.njit(parallel=True, cache=True)
def indicators(advantage, groups, epsilon_of, intervention, epsilon, indicator):
    """epsilon = the frame's group threshold; indicator = A_t > epsilon or an intervention."""
    for i in numba.prange(len(advantage)):
        eps = epsilon_of[groups[i]]
        epsilon[i] = eps
        indicator[i] = advantage[i] > eps or intervention[i]
