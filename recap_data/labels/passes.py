"""The label passes, out of core: from table parts of frames with their values (a label set's,
or the value parts `label`'s processes write) to a label set's tables. Memory holds a few parts
at a time (labels/parts.py), never all rows, so a label set of any size is labelled in bounded
memory. Three passes:
  1. scan    read each part's keys, outcomes and values, compute the advantages (kernels.per_frame),
             add them to each group's histogram (kernels.histogram: the top 16 bits of each
             value's sort key), and spill them to a scratch file in the staging directory;
  2. select  locate the histogram bins that hold each group's wanted positions, read the spilled
             advantages back and collect the few in those bins; a sort of those alone gives each
             epsilon exactly (kernels.locate, collect, pick: the steps of kernels.select);
  3. write   read each part again, compute every column and the indicators, write the new parts
             in a pool of threads (PartWriter).
After pass 1 the memory the rest needs is known; beyond `memory_limit_mb` the passes stop with
nothing written. The answer is build_labels' bit for bit (tests/test_relabel.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recap_data.errors import RecapError
from recap_data.io import pool_size, prefetch
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels, frame_columns, task_statistics
from recap_data.store import paths
from recap_data.store.label_sets import LABELS_FIX

SCAN_COLUMNS = ["episode_index", "frame_index", "task", "success", "value"]
WRITE_COLUMNS = [*SCAN_COLUMNS, "index", "is_intervention"]
DEFAULT_MEMORY_LIMIT_MB = 4096
# Bytes a row of a part costs while it is written (inputs, 10 computed columns, the arrow table
# and parquet's encoded pages), and how many parts can be in memory at once (one being read
# ahead, one computed, 2 x writer threads waiting or being written): bench/bench_scale.py checks
# this estimate against the measured peak.
BYTES_PER_ROW, BASE_MB = 260, 400


def label_passes(tmp: Path, parts: list[dict], tasks: list[str], normalizers: dict, reward: RewardConfig,
                 cfg: AdvantageConfig, frames: int, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
                 progress: bool = False) -> tuple[dict, np.ndarray, dict, str, list[dict]]:
    """The three passes over `parts` (frames with their values, in key order) into tmp/tables:
    (per-task statistics, counts (4, tasks), label rows per shard, the tables' digest, the parts
    written). `label` runs them over the value parts its processes wrote, `relabel` over label sets."""
    from recap_data.label_math import kernels
    from recap_data.labels.parts import PartWriter

    math = _Math(reward, cfg, np.array([normalizers[t] for t in tasks], np.float64), tasks)
    scratch = tmp / "advantages.scratch"  # removed with the staging directory
    hist, largest = _scan(parts, tasks, math, scratch, _bar(frames, "labels: scan", progress))
    n = hist.sum(axis=1)  # (G,) frames per group
    k, positions = kernels.positions_of(n, cfg.positive_fraction)
    wanted_bin, below, slot = kernels.locate(hist, positions)
    candidates = int(hist[slot >= 0].sum())
    writers = pool_size(0, reserved=0)  # PartWriter's threads: one per free core
    _check_memory(largest, candidates, memory_limit_mb, writers)
    picked = _select(scratch, slot, wanted_bin, below, positions, math.n_groups)
    scratch.unlink()
    math.epsilon_of = kernels.epsilons(k, n, picked)
    with PartWriter(tmp / paths.LABEL_TABLES_DIR, writers) as writer:
        counts, rows = _write(parts, tasks, math, writer, _bar(frames, "labels: write", progress))
        digest = writer.finish()
    return task_statistics(counts, tasks, math.epsilon_of, cfg), counts, rows, digest, writer.parts


class _Math:
    """The per-chunk label math of build_labels (kernels.per_frame), on the chunks of iter_chunks."""

    def __init__(self, reward: RewardConfig, cfg: AdvantageConfig, divisors: np.ndarray, tasks: list[str]):
        self.reward, self.cfg, self.divisors, self.tasks = reward, cfg, divisors, tasks
        self.n_groups = len(tasks) if cfg.threshold == "per_task" else 1
        self.epsilon_of: np.ndarray | None = None

    def columns(self, part: dict, chunk: dict) -> dict:
        """Every computed column (F,) of a chunk of whole episodes; a chunk the kernels refuse is
        handed to build_labels, whose error names the frame."""
        from recap_data.label_math import kernels

        n = len(chunk["value"])
        shard_code = np.zeros(n, np.int8)
        starts, status = kernels.episode_starts(shard_code, chunk["episode_index"], chunk["frame_index"])
        if status == kernels.OK:
            out, status = frame_columns(starts, chunk["success"], chunk["task"], self.divisors, chunk["value"],
                                        self.reward, self.cfg.n_steps)
        if status != kernels.OK:
            self._refused(part, chunk)
        out["group"] = chunk["task"] if self.cfg.threshold == "per_task" else np.zeros(n, np.int32)
        return out

    def _refused(self, part: dict, chunk: dict) -> None:
        import pandas as pd

        frames = pd.DataFrame({"shard": part["shard"], "index": np.arange(len(chunk["value"])), **chunk,
                               "task": np.array(self.tasks)[chunk["task"]],
                               "is_intervention": chunk.get("is_intervention", False)})
        build_labels(frames, self.reward, self.cfg, dict(zip(self.tasks, self.divisors, strict=True)))
        raise RecapError(f"{part['path']}: label rows out of (episode_index, frame_index) order, or a frame "
                         f"missing or repeated; {LABELS_FIX}")


def _scan(parts: list[dict], tasks: list[str], math: _Math, scratch: Path, bar) -> tuple[np.ndarray, int]:
    """Pass 1: (histogram (G, 2**16) of the advantages per group, rows of the largest chunk);
    advantages (float64) and groups (int32) spilled to `scratch`, chunk after chunk."""
    from recap_data.label_math import kernels
    from recap_data.labels.parts import iter_chunks

    hist = np.zeros((math.n_groups, 1 << kernels.KEY_BITS), np.int64)
    largest = 0
    with open(scratch, "wb") as f:
        for part, chunk in prefetch(iter_chunks(parts, SCAN_COLUMNS, tasks), depth=1):
            out = math.columns(part, chunk)
            kernels.histogram(out["advantage"], out["group"], hist)
            n = len(chunk["value"])
            np.array([n], np.int64).tofile(f)
            out["advantage"].tofile(f)
            out["group"].astype(np.int32).tofile(f)
            largest = max(largest, n)
            bar.update(n)
    bar.close()
    return hist, largest


def _select(scratch: Path, slot, wanted_bin, below, positions, n_groups: int) -> np.ndarray:
    """Pass 2: (G, 4) the advantages at the wanted positions, from the spilled chunks."""
    from recap_data.label_math import kernels

    found, owners = [], []
    with open(scratch, "rb") as f:
        while len(header := np.fromfile(f, np.int64, 1)):
            n = int(header[0])
            advantage, group = np.fromfile(f, np.float64, n), np.fromfile(f, np.int32, n)
            candidates, owner = kernels.collect(advantage, group, slot)
            found.append(candidates)
            owners.append(owner)
    return kernels.pick(np.concatenate(found), np.concatenate(owners), wanted_bin, below, slot, positions)


def _write(parts: list[dict], tasks: list[str], math: _Math, writer, bar) -> tuple[np.ndarray, dict]:
    """Pass 3: every column of every chunk, written as parts; (counts (4, tasks) as
    kernels.task_counts, label rows per shard)."""
    import pyarrow as pa

    from recap_data.label_math import kernels
    from recap_data.labels.parts import iter_chunks, table_of

    counts = np.zeros((4, len(tasks)), np.int64)
    rows: dict[str, int] = {}
    task_dictionary = pa.array(tasks)
    for part, chunk in prefetch(iter_chunks(parts, WRITE_COLUMNS, tasks), depth=1):
        out = math.columns(part, chunk)
        n = len(chunk["value"])
        out["epsilon"], out["indicator"] = np.empty(n, np.float64), np.empty(n, bool)
        kernels.indicators(out["advantage"], out["group"], math.epsilon_of, chunk["is_intervention"],
                           out["epsilon"], out["indicator"])
        counts += kernels.task_counts(chunk["task"], len(tasks), chunk["frame_index"], out["indicator"],
                                      chunk["is_intervention"])
        rows[part["shard"]] = rows.get(part["shard"], 0) + n
        columns = {**chunk, **out,
                   "shard": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([part["shard"]])),
                   "task": pa.DictionaryArray.from_arrays(chunk["task"], task_dictionary)}
        writer.submit(part["shard"], table_of(columns, n))
        bar.update(n)
    bar.close()
    return counts, rows


def _check_memory(largest: int, candidates: int, limit_mb: int, writers: int) -> None:
    """Refuse, before anything is written, a relabel whose estimated peak exceeds the limit."""
    in_flight = 2 + 2 * writers  # read ahead + computed + the writer threads' queue (PartWriter)
    need = BASE_MB + (largest * BYTES_PER_ROW * in_flight + candidates * 16 * 3) / 2**20
    if need > limit_mb:
        raise RecapError(f"relabel: needs about {need:,.0f} MB (parts of up to {largest:,} rows, {candidates:,} "
                         f"threshold candidates), over --memory-limit-mb {limit_mb:,}; raise the limit; nothing "
                         "was written")


def _bar(total: int, desc: str, progress: bool):
    """A progress bar on a terminal (disable=None: none when stderr is not a TTY, e.g. under dvc)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", unit_scale=True, disable=None if progress else True)
