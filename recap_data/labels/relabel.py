"""`recap-data relabel LABELS`: a new label set from a label set's stored values, no model run.

Changes the advantage's params (n_steps, positive fraction, per-task or global threshold); the
returns, advantages and thresholds are recomputed from the stored V(o_t) of every frame. The
shards must be unchanged since those values were computed.

Out of core: memory holds a few parts of the label set (labels/parts.py) at a time, never all
of its rows, so a label set of any size relabels in bounded memory. Three passes:
  1. scan    read each part's keys, outcomes and values, compute the advantages (kernels.per_frame),
             add them to each group's histogram (kernels.histogram: the top 16 bits of each
             value's sort key), and spill them to a scratch file in the staging directory;
  2. select  locate the histogram bins that hold each group's wanted positions, read the spilled
             advantages back and collect the few in those bins; a sort of those alone gives each
             epsilon exactly (kernels.locate, collect, pick: the steps of kernels.select);
  3. write   read each part again, compute every column and the indicators, write the new parts
             in a pool of threads (PartWriter).
After pass 1 the memory the rest needs is known; beyond `memory_limit_mb` the relabel stops
with nothing written. The answer is build_labels' bit for bit (tests/test_relabel.py).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from recap_data.config import build_config
from recap_data.errors import RecapError
from recap_data.io import atomic_directory, pool_size, prefetch, write_json
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels, frame_columns, task_statistics
from recap_data.labels.write import check_rows, label_manifest
from recap_data.store import paths
from recap_data.store.label_sets import (
    LABELS_FIX,
    LabelManifest,
    check_shards_unchanged,
    label_set_path,
    read_manifest,
    table_parts,
)
from recap_data.store.store import ShardStore, validate_shard_id

SCAN_COLUMNS = ["episode_index", "frame_index", "task", "success", "value"]
WRITE_COLUMNS = [*SCAN_COLUMNS, "index", "is_intervention"]
DEFAULT_MEMORY_LIMIT_MB = 4096
# Bytes a row of a part costs while it is written (inputs, 10 computed columns, the arrow table
# and parquet's encoded pages), and how many parts can be in memory at once (one being read
# ahead, one computed, 2 x writer threads waiting or being written): bench/bench_scale.py checks
# this estimate against the measured peak.
BYTES_PER_ROW, BASE_MB = 260, 400


def source_advantage(store: ShardStore, source: str, overrides: dict | None = None, where: str = "relabel",
                     options: tuple[str, ...] = ()) -> AdvantageConfig:
    """The advantage params `source` was labelled with, with `overrides` on top, checked; an error
    names `where` the overrides came from (the options among them by their flags)."""
    return build_config(AdvantageConfig, {**read_manifest(store, source).advantage, **(overrides or {})}, where,
                        options)


def relabel(store: ShardStore, sources: str | list[str], name: str, advantage: AdvantageConfig | None = None,
            force: bool = False, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, progress: bool = False,
            mixed_checkpoints: bool = False) -> LabelManifest:
    """Relabel one label set, or several as one, into `name` with the `advantage` params (default:
    the first source's own, as source_advantage gives them with any changes). Several sources get
    one threshold per task over all their frames: the answer of labeling their union at once.
    Their reward params and return normalizers must agree, a shard may be in one source only, and
    their value checkpoints must be one unless `mixed_checkpoints`."""
    from recap_data.label_math import kernels
    from recap_data.labels.parts import PartWriter

    names = [sources] if isinstance(sources, str) else list(sources)
    parents = [read_manifest(store, source) for source in names]
    for parent in parents:
        check_shards_unchanged(store, parent)
    origin = combine(store, names, parents, mixed_checkpoints)
    cfg = (advantage or source_advantage(store, names[0])).validate()
    reward = build_config(RewardConfig, parents[0].reward, "relabel")
    # each shard is in one source: its parts in shard order are the union's parts in key order
    parts = sorted((part for source, parent in zip(names, parents, strict=True)
                    for part in table_parts(store, source, parent)), key=lambda part: part["shard"])
    tasks = sorted({task for parent in parents for task in parent.per_task})
    math = _Math(reward, cfg, np.array([origin["normalizers"][t] for t in tasks], np.float64), tasks)
    frames = sum(parent.frames for parent in parents)
    target = label_set_path(store, validate_shard_id(name, "label set name"))
    with atomic_directory(target, force=force, what="label set") as tmp:
        scratch = tmp / "advantages.scratch"  # removed with the staging directory
        hist, largest = _scan(parts, tasks, math, scratch, _bar(frames, "relabel: scan", progress))
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
            counts, rows = _write(parts, tasks, math, writer, _bar(frames, "relabel: write", progress))
            digest = writer.finish()
        check_rows(name, rows, origin["shards"])
        per_task = task_statistics(counts, tasks, math.epsilon_of, cfg)
        manifest = label_manifest(
            name, origin["shards"], per_task, value_checkpoint=origin["value_checkpoint"], reward=reward,
            advantage=cfg, label=parents[0].label, normalizers=origin["normalizers"], frames=int(counts[0].sum()),
            positives=int(counts[1].sum()), parent=origin["parent"], digest=digest, parts=writer.parts)
        write_json(tmp / paths.MANIFEST, asdict(manifest))
    return manifest


def combine(store: ShardStore, names: list[str], parents: list[LabelManifest], mixed_checkpoints: bool = False) -> dict:
    """What the source label sets `names` (their manifests `parents`) give the one relabelled from
    them, checked: their shards (each in one source, in shard order), return normalizers and value
    checkpoint, and the lineage (`parent`: the name, digest and advantage params of one source;
    `sources` lists every one)."""
    where = ", ".join(names)
    if len(set(names)) < len(names):
        raise RecapError(f"relabel {where}: a source is named twice; name each label set once")
    owner: dict[str, str] = {}
    normalizers: dict[str, float] = {}
    first, first_name = parents[0], names[0]
    for name, p in zip(names, parents, strict=True):
        manifest = label_set_path(store, name) / paths.MANIFEST
        missing = [t for t in sorted(p.per_task) if t not in p.return_normalizers]
        if missing:
            raise RecapError(f"{manifest}: task {missing[0]!r} has no return normalizer; {LABELS_FIX}")
        for s in p.shards:
            if s["id"] in owner:
                raise RecapError(f"relabel: shard {s['id']} is in label sets {owner[s['id']]} and {name}; give "
                                 "each shard's values once (relabel the sets without it, or label it once)")
            owner[s["id"]] = name
        if p.reward != first.reward:
            changed = sorted(k for k in {*p.reward, *first.reward} if p.reward.get(k) != first.reward.get(k))
            raise RecapError(f"relabel: label sets {first_name} and {name} define returns differently (reward field "
                             f"{changed[0]!r}: {first.reward.get(changed[0])!r} and {p.reward.get(changed[0])!r}); "
                             "relabel them apart, or label their shards again with one value model")
        for task, value in p.return_normalizers.items():
            if normalizers.setdefault(task, value) != value:
                raise RecapError(f"relabel: label sets {first_name} and {name} normalize task {task!r}'s returns "
                                 f"by {normalizers[task]:g} and {value:g}; relabel them apart, or label their "
                                 "shards again with one value model")
        if p.value_checkpoint.get("digest") != first.value_checkpoint.get("digest") and not mixed_checkpoints:
            paths_ = f"{first.value_checkpoint.get('path')} and {p.value_checkpoint.get('path')}"
            raise RecapError(f"relabel: label sets {first_name} and {name} hold values of different value "
                             f"checkpoints ({paths_}); their advantages are not comparable: relabel them apart, or "
                             "pass --mixed-checkpoints")
    shards = sorted((s for p in parents for s in p.shards), key=lambda s: s["id"])
    checkpoints = [p.value_checkpoint for p in parents]
    sources = [{"name": name, "digest": p.digest, "advantage": p.advantage, "value_checkpoint": p.value_checkpoint}
               for name, p in zip(names, parents, strict=True)]
    one = len(parents) == 1
    return {"shards": shards, "normalizers": normalizers,
            "value_checkpoint": checkpoints[0] if all(c == checkpoints[0] for c in checkpoints)
            else {"path": "mixed", "digest": "mixed", "sources": checkpoints},
            "parent": {"name": first_name if one else where, "digest": first.digest if one else None,
                       "advantage": first.advantage, "sources": sources}}


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
