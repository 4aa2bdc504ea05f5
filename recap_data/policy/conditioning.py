"""RECAP's conditioning of the policy: the indicator text in the prompt, its dropout, and the
episode-aware weighted sampler the policy trainer draws frames with.

Prompt: "<task>\\nAdvantage: positive" or "...negative", after the task (the paper); the pi0
preprocessor then appends its own newline. The text goes into the task string before the
preprocessor runs, because the preprocessor drops batch keys it does not know.
Modes (policy.indicator_mode):
  on      every frame positive: the SFT stage on demonstrations
  use     the label set's indicator (intervention frames are always positive)
  ignore  no indicator text at all
Dropout: with probability `dropout` (0.3, the paper) a sample gets no indicator text, so one
model is conditional and unconditional (needed for classifier-free guidance).
"""

import numpy as np

from recap_data.errors import RecapError

MODES = ("on", "use", "ignore")
POSITIVE, NEGATIVE = "Advantage: positive", "Advantage: negative"


def prompt(task: str, indicator: bool | None) -> str:
    """The task with the indicator text after it; None: the task alone (unconditional)."""
    if indicator is None:
        return task
    return f"{task.rstrip()}\n{POSITIVE if indicator else NEGATIVE}"


class IndicatorPrompts:
    """Task strings for a batch under a mode and dropout, reproducible for a seed."""

    def __init__(self, mode: str, dropout: float, seed: int = 0):
        if mode not in MODES:
            raise RecapError(f"policy: field 'indicator_mode' = {mode!r} is invalid: use one of {', '.join(MODES)}")
        if not 0.0 <= dropout < 1.0:
            raise RecapError(f"policy: field 'indicator_dropout' = {dropout} is invalid: use [0, 1)")
        self.mode, self.dropout = mode, dropout
        self.rng = np.random.default_rng(seed)
        self.counts = {"positive": 0, "negative": 0, "none": 0}  # prompts made so far, by indicator text

    def __call__(self, tasks: list[str], indicators=None, interventions=None) -> list[str]:
        n = len(tasks)
        if self.mode == "ignore":
            self.counts["none"] += n
            return list(tasks)
        if self.mode == "on":
            positive = np.ones(n, bool)
        else:
            if indicators is None:
                raise RecapError("policy: indicator_mode 'use' needs a label set (--labels NAME)")
            positive = np.asarray(indicators, bool).reshape(n)
        if interventions is not None:  # human corrections are always positive
            positive = positive | np.asarray(interventions, bool).reshape(n)
        dropped = self.rng.random(n) < self.dropout
        self.counts["none"] += int(dropped.sum())
        self.counts["positive"] += int((positive & ~dropped).sum())
        self.counts["negative"] += int((~positive & ~dropped).sum())
        return [prompt(t, None if d else bool(p)) for t, p, d in zip(tasks, positive, dropped, strict=True)]


class WeightedEpisodeSampler:
    """Frames drawn with replacement so that shard s gets w_s / sum(w) of the draws, uniformly
    over its usable frames (a frame is usable if at least `drop_n_last_frames` frames follow it
    in its episode, e.g. a full action chunk). Memory is O(episodes): positions map to frames
    through per-shard cumulative counts. Indices are positions in the concatenation of the
    shards in `episodes` order. Each iteration (epoch) is a pure function of (seed, epoch), and
    process `rank` of `world` takes every world-th draw. (A DataLoader takes any sized iterable as
    its sampler: this module imports no torch at import, so the CLI can read MODES from it.)
    """

    def __init__(self, episodes: list[tuple[str, int, int]], weights: dict[str, float], num_samples: int,
                 drop_n_last_frames: int = 0, seed: int = 0, rank: int = 0, world: int = 1,
                 sizes: dict[str, int] | None = None):
        """episodes: (shard, dataset_from_index, dataset_to_index) per episode to draw from, shards
        contiguous and in order; sizes: each shard's frame count (default: its last episode's end),
        needed when some episodes are left out (filtered BC draws from successes only)."""
        self.num_samples, self.seed, self.rank, self.world, self.epoch = num_samples, seed, rank, world, 0
        self.shards = list(dict.fromkeys(s for s, _, _ in episodes))
        missing = [s for s in self.shards if s not in weights]
        if missing:
            raise RecapError(f"no sampling weight for shard {missing[0]!r}")
        offset, self.starts, self.cum, probs = 0, [], [], []
        for shard in self.shards:
            rows = [(a, b) for s, a, b in episodes if s == shard]
            starts = np.array([offset + a for a, _ in rows], np.int64)  # (E,) global first frame
            usable = np.maximum(np.array([b - a for a, b in rows], np.int64) - drop_n_last_frames, 0)  # (E,)
            offset += int(sizes[shard]) if sizes else int(max(b for _, b in rows))
            if usable.sum() == 0:
                raise RecapError(f"shard {shard!r}: no episode is longer than drop_n_last_frames={drop_n_last_frames}")
            self.starts.append(starts)
            self.cum.append(np.cumsum(usable))  # (E,) usable frames up to and including episode e
            probs.append(weights[shard])
        self.probs = np.asarray(probs, np.float64) / sum(probs)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        total = self.num_samples * self.world
        probs = torch.from_numpy(self.probs)
        shard = torch.multinomial(probs, total, replacement=True, generator=g).numpy()  # (N,)
        u = torch.rand(total, generator=g, dtype=torch.float64).numpy()  # (N,)
        out = np.empty(total, np.int64)
        for k in range(len(self.shards)):
            pick = shard == k
            pos = np.floor(u[pick] * self.cum[k][-1]).astype(np.int64)  # usable-frame position in the shard
            episode = np.searchsorted(self.cum[k], pos, side="right")  # (n,) its episode
            before = np.concatenate([[0], self.cum[k][:-1]])[episode]
            out[pick] = self.starts[k][episode] + (pos - before)
        return iter(out[self.rank::self.world].tolist())
