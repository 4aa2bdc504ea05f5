"""The label math compiled with numba: returns, n-step returns, value_next, advantages, per-task
thresholds and indicators at tens of millions of frames per second.

per_frame is where each per-frame formula of the package docstring is written, once; the value
model's targets (tables.compute_returns) and the labels (tables.build_labels, relabel) all run
it. tests/label_reference.py writes the same formulas plainly in pandas, and the tests compare
the two bit for bit over randomized episodes. The kernels only compute; they flag what they
cannot label (a frame out of place, an outcome that changes within an episode, a return below
-1, a value that is not finite) and tables.py names the frame in a one-line error.

Frames come sorted by (shard, episode, frame), as label tables store them, so an episode is a
run of rows and o_{t+N} is row + N. Episodes are independent, so the per-frame kernel runs in
parallel over them (numba's prange); the thresholds need one radix selection per task (select)
instead of a sort.
"""

import threading

import numba
import numpy as np

from recap_data.label_math.bins import ROUNDING  # the slack at the ends of [-1, 0]


def _start_numba_threads_elsewhere() -> None:
    """Start numba's threading layer from a thread of its own, before any parallel kernel runs.

    Without TBB, numba's layer is OpenMP on the libgomp that torch also runs on. Starting it calls
    omp_set_num_threads(NUMBA_NUM_THREADS), the CPU count, on whichever thread starts it.
    Started from the first parallel kernel's caller, that would silently raise torch's intra-op
    threads in that thread to the CPU count, whatever OMP_NUM_THREADS, torchrun's one thread per
    rank or torch.set_num_threads had asked for. Two such processes on two cores then slowed each
    other several times over: a value model's training took 147 s instead of 6 s.
    OpenMP's thread count is per thread, so a short-lived thread takes the change with it.
    numba's own kernels pass their thread count explicitly and keep their threads."""
    starter = threading.Thread(target=numba.get_num_threads, name="numba-threads")
    starter.start()
    starter.join()


_start_numba_threads_elsewhere()

# Why a kernel refused its input (tables.py then names the frame).
OK, UNSORTED, BAD_POSITION, OUTCOME_FLIP, OVERFLOW, NOT_FINITE = range(6)


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
def histogram(values, groups, hist):
    """Add each value to its group's histogram (G, 2**KEY_BITS) of the top KEY_BITS bits of its sort key."""
    bits = values.view(np.uint64)  # (F,) the same memory, read as integers
    shift = np.uint64(64 - KEY_BITS)
    for i in range(len(values)):
        hist[groups[i], _sort_key(bits[i]) >> shift] += 1


@numba.njit(cache=True, nogil=True)
def locate(hist, positions):
    """For each group g and wanted ascending position positions[g, j]: (bin holding it, values
    of the group in lower bins, slot (G, bins) -> candidate list or -1)."""
    n_groups, n_bins = hist.shape
    n_wanted = positions.shape[1]
    wanted_bin = np.zeros((n_groups, n_wanted), np.int64)
    below = np.zeros((n_groups, n_wanted), np.int64)
    for g in range(n_groups):
        for j in range(n_wanted):
            seen = 0
            for b in range(n_bins):
                if seen + hist[g, b] > positions[g, j]:
                    wanted_bin[g, j], below[g, j] = b, seen
                    break
                seen += hist[g, b]
    slot = -np.ones((n_groups, n_bins), np.int64)
    n_lists = 0
    for g in range(n_groups):
        for j in range(n_wanted):
            if slot[g, wanted_bin[g, j]] < 0:
                slot[g, wanted_bin[g, j]] = n_lists
                n_lists += 1
    return wanted_bin, below, slot


@numba.njit(cache=True, nogil=True)
def collect(values, groups, slot):
    """(candidates, list): the values that fall in a located bin, and the candidate list of each."""
    bits = values.view(np.uint64)
    shift = np.uint64(64 - KEY_BITS)
    count = 0
    for i in range(len(values)):
        count += slot[groups[i], _sort_key(bits[i]) >> shift] >= 0
    candidates = np.empty(count, values.dtype)
    owner = np.empty(count, np.int64)
    fill = 0
    for i in range(len(values)):
        lst = slot[groups[i], _sort_key(bits[i]) >> shift]
        if lst >= 0:
            candidates[fill], owner[fill] = values[i], lst
            fill += 1
    return candidates, owner


def pick(candidates: np.ndarray, owner: np.ndarray, wanted_bin, below, slot, positions) -> np.ndarray:
    """(G, J): the wanted values, from every part's collected candidates (sorted per list)."""
    order = np.lexsort((candidates, owner))  # by list, then value
    candidates, owner = candidates[order], owner[order]
    starts = np.searchsorted(owner, np.arange(slot.max() + 1))
    out = np.empty(positions.shape)
    for g in range(positions.shape[0]):
        for j in range(positions.shape[1]):
            out[g, j] = candidates[starts[slot[g, wanted_bin[g, j]]] + positions[g, j] - below[g, j]]
    return out


def select(values: np.ndarray, groups: np.ndarray, n_groups: int, positions: np.ndarray) -> np.ndarray:
    """(G, J): the value at ascending position positions[g, j] among group g's values, exactly,
    by a radix selection: a histogram of the top KEY_BITS bits of each value's sort key per group,
    then a sort of only the values in the bins that hold a wanted position. The same steps run
    over parts of a label set too large for memory (labels/relabel.py)."""
    hist = np.zeros((n_groups, 1 << KEY_BITS), np.int64)
    histogram(values, groups, hist)
    wanted_bin, below, slot = locate(hist, positions)
    candidates, owner = collect(values, groups, slot)
    return pick(candidates, owner, wanted_bin, below, slot, positions)


def positions_of(n: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(k, positions (G, 4)): k = round(fraction * n) per group, and the ascending positions of the
    k-th and (k+1)-th largest, the largest and the smallest (clipped where k = 0 or k = n, which
    use only those)."""
    k = np.array([int(round(fraction * m)) for m in n], np.int64)  # Python's round (half to even)
    return k, np.stack([np.clip(n - k, 0, n - 1), np.clip(n - k - 1, 0, n - 1), n - 1, np.zeros_like(n)], axis=1)


def epsilons(k: np.ndarray, n: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """The thresholds from the selected values: the mean of the k-th and (k+1)-th largest;
    the largest for k = 0; just below the smallest for k = n."""
    eps = np.empty(len(n))
    for g in range(len(n)):
        if k[g] == 0:
            eps[g] = picked[g, 2]
        elif k[g] >= n[g]:
            eps[g] = np.nextafter(picked[g, 3], -np.inf)
        else:
            eps[g] = (picked[g, 0] + picked[g, 1]) / 2
    return eps


def thresholds(advantage: np.ndarray, groups: np.ndarray, n_groups: int, fraction: float) -> np.ndarray:
    """epsilon per group (G,): round(fraction * n) advantages strictly above it, by selection, not a sort."""
    n = counts(groups, n_groups)  # (G,)
    k, positions = positions_of(n, fraction)
    return epsilons(k, n, select(advantage, groups, n_groups, positions))


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
