"""`recap-data label --value-ckpt CKPT`: run the value model once over every frame, then label.

Every process (one, or many under `accelerate launch` / torchrun, on one node or many) scores
its share of each shard. A shard's frames are cut into batches of `batch_size` on one grid
(batch j holds frames jB .. (j+1)B - 1, across episode ends) and each process takes a contiguous
run of those batches, so every frame is scored in the same batch whatever the process count:
the label set is the same, bit for bit. Camera videos are decoded in runs of episodes by a pool
of `decode_workers` decoder processes (store/decode.py). Each process writes its values, with
the frames' keys, as parquet parts of at most PART_ROWS frames into the label set's staging
directory (values/rank-NNNNN/) and then a list of them; after a barrier the main process checks
that the lists cover every frame once, runs the label passes over the parts (passes.py:
returns, advantages, thresholds, indicators, out of core) and commits the label set atomically.
No process holds more than one part in flight. A process that dies leaves nothing committed,
and the next writer's cleaner removes the staging directory. `recap-data relabel` redoes only
the passes.
"""

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.io import (
    atomic_directory,
    failpoint,
    one_malloc_arena,
    prefetch,
    read_json,
    refuse_existing,
    shared_directory,
    write_json,
)
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import check_normalizers
from recap_data.labels.passes import label_passes
from recap_data.labels.write import LabelConfig, check_rows, label_manifest
from recap_data.store import paths
from recap_data.store.label_sets import LabelManifest, label_set_path
from recap_data.store.store import ShardStore, validate_shard_id

VALUES_DIR = "values"  # the processes' value parts, in the label set's staging directory
FRAME_COLUMNS = ["episode_index", "frame_index", "index", "task", "success", "is_intervention"]


def value_pieces(frames: int, batch_size: int, rank: int, world: int, max_rows: int) -> list[tuple[int, int]]:
    """Process `rank`'s [lo, hi) frame ranges of a shard of `frames` frames: its contiguous run of
    the shard's batches (batch j: frames jB .. (j+1)B - 1), in pieces of about max_rows frames on
    the same grid."""
    batches = -(-frames // batch_size)
    first, end = batches * rank // world, batches * (rank + 1) // world
    step = max(1, max_rows // batch_size)
    return [(j * batch_size, min(min(j + step, end) * batch_size, frames)) for j in range(first, end, step)]


def _batches(episodes, keys: list[str], batch_size: int, lo: int, hi: int):
    """(dataset indices (n,), images (n, K, H, W, 3) uint8) for frames lo .. hi - 1, in batches of
    batch_size from lo that run across episode ends."""
    indices, images, pending = [], [], 0
    for episode, cams in episodes:
        start, stop = int(episode["dataset_from_index"]), int(episode["dataset_to_index"])
        keep = slice(max(lo, start) - start, min(hi, stop) - start)  # the episode's frames in [lo, hi)
        indices.append(np.arange(start, stop)[keep])
        images.append(np.stack([cams[k][keep] for k in keys], axis=1))  # (t, K, H, W, 3)
        pending += len(indices[-1])
        while pending >= batch_size:
            index, image = np.concatenate(indices), np.concatenate(images)
            yield index[:batch_size], image[:batch_size]
            indices, images, pending = [index[batch_size:]], [image[batch_size:]], pending - batch_size
    if pending:
        yield np.concatenate(indices), np.concatenate(images)


def predict_values(ckpt, images: np.ndarray, state, frame_index, ids, mask, device) -> np.ndarray:
    """Expected normalized return (n,) float64 for images (n, K, H, W, 3) uint8, state (n, S),
    frame_index (n,) and tokenized task texts ids, mask (n, max_text_tokens)."""
    import torch

    pixels = torch.from_numpy(images).to(device).permute(0, 1, 4, 2, 3).float() / 255  # (n, K, 3, H, W)
    on_gpu = torch.device(device).type == "cuda"
    with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=on_gpu):
        logits = ckpt.model(pixels, state.to(device), ids.to(device), mask.to(device),
                            frame_index.to(device))  # (n, bins)
    return ckpt.model.values(logits).double().cpu().numpy()


def check_frames(con, store: ShardStore, shard_ids: list[str]) -> None:
    """Read every frame's columns once before scoring starts, so that a damaged file or a count that
    disagrees with a shard's manifest is a one-line error before any progress is shown."""
    from recap_data.store.db import SHARD_FIX, unreadable

    columns = ", ".join(f'count("{c}")' for c in FRAME_COLUMNS)
    with unreadable(str(store.shards_dir), SHARD_FIX):
        counts = {shard: n for shard, n, *_ in con.execute(
            f"SELECT shard, count(*), {columns} FROM frames WHERE shard IN (SELECT unnest(?::VARCHAR[])) "
            "GROUP BY shard", [shard_ids]).fetchall()}
    for shard in shard_ids:
        if counts.get(shard, 0) != (listed := store.manifest(shard).frames):
            raise RecapError(f"shard {shard}: {counts.get(shard, 0)} frames readable, its manifest says {listed}; "
                             f"{SHARD_FIX}")


def frame_rows(con, shard: str, lo: int, hi: int, store: ShardStore) -> pd.DataFrame:
    """The frames lo .. hi - 1 of a shard (FRAME_COLUMNS, in index order), from DuckDB's frames view."""
    from recap_data.store.db import SHARD_FIX, unreadable

    with unreadable(str(store.shard_path(shard)), SHARD_FIX):
        rows = con.execute(f"""SELECT {', '.join(f'"{c}"' for c in FRAME_COLUMNS)} FROM frames
                               WHERE shard = ? AND "index" >= ? AND "index" < ? ORDER BY "index" """,
                           [shard, lo, hi]).df()
    if len(rows) != hi - lo or not np.array_equal(rows["index"].to_numpy(), np.arange(lo, hi)):
        raise RecapError(f"shard {shard}: frames {lo}..{hi - 1} are not each there once (index); run "
                         f"`recap-data shards verify {shard}`")
    return rows


def score_shard(ckpt, store: ShardStore, con, shard: str, pieces: list[tuple[int, int]], batch_size: int,
                device, workers: int, bar):
    """(lo, frame rows with `value`) for each of this process's pieces of `shard`, one at a time."""
    import torch

    from recap_data.data.frames import load_states
    from recap_data.store.decode import episode_table, iter_episode_frames

    keys, features = ckpt.model.cfg.camera_keys, store.manifest(shard).features
    missing = [k for k in keys if k not in features]
    if missing:
        raise RecapError(f"shard {shard} lacks camera {missing[0]} that the value model takes ({keys})")
    episodes, states = episode_table(store.shard_path(shard)), torch.from_numpy(load_states(store, shard))  # (F, S)
    for lo, hi in pieces:
        rows = frame_rows(con, shard, lo, hi, store)
        # Each task text is tokenized once; a frame picks its task's row by code.
        task_codes, task_texts = pd.factorize(rows["task"])
        task_ids, task_mask = ckpt.encoder(list(task_texts))  # (tasks, max_text_tokens) each
        frame_index = torch.from_numpy(rows["frame_index"].to_numpy(np.float32))  # (hi - lo,)
        overlapping = episodes[(episodes["dataset_from_index"] < hi) & (episodes["dataset_to_index"] > lo)]
        stream = iter_episode_frames(store.shard_path(shard), features, keys, overlapping, threads=1,
                                     workers=workers)
        values = np.empty(hi - lo, np.float64)
        for index, images in prefetch(_batches(stream, keys, batch_size, lo, hi)):
            codes = torch.from_numpy(task_codes[index - lo])
            values[index - lo] = predict_values(ckpt, images, states[index], frame_index[index - lo], task_ids[codes],
                                                task_mask[codes], device)
            bar.update(len(index))
        yield lo, rows.assign(value=values)


def write_values(ckpt, store: ShardStore, shard_ids: list[str], folder: Path, batch_size: int, rank: int, world: int,
                 device="cpu", decode_workers: int = 0, progress: bool = True) -> list[dict]:
    """Score this process's share of every shard's frames and write them as value parts under
    `folder` (one per piece: the frames' keys, task, outcome and value); the parts, listed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tqdm import tqdm

    from recap_data.io import pool_size
    from recap_data.labels.parts import PART_ROWS
    from recap_data.store.db import connect

    ckpt.model.to(device).eval()
    one_malloc_arena()  # flat memory however many shards are scored (see io.one_malloc_arena)
    workers = pool_size(decode_workers, torch.get_num_threads() if torch.device(device).type == "cpu" else 1)
    con, listed = connect(store.root, label_sets=False), []
    check_frames(con, store, shard_ids)
    plan = {s: value_pieces(store.manifest(s).frames, batch_size, rank, world, PART_ROWS) for s in shard_ids}
    bar = tqdm(total=sum(hi - lo for pieces in plan.values() for lo, hi in pieces), desc="value inference",
               unit="frame", disable=not progress)
    folder.mkdir(parents=True, exist_ok=True)
    for shard, pieces in plan.items():
        for lo, rows in score_shard(ckpt, store, con, shard, pieces, batch_size, device, workers, bar):
            table = pa.Table.from_pandas(rows, preserve_index=False)
            table = table.append_column("shard", pa.DictionaryArray.from_arrays(
                np.zeros(len(rows), np.int32), pa.array([shard])))
            path = folder / f"{shard}.{lo:012d}.parquet"
            pq.write_table(table.set_column(table.schema.get_field_index("task"), "task",
                                            table.column("task").dictionary_encode()), path)
            listed.append({"path": path.name, "shard": shard, "lo": lo, "rows": len(rows),
                           "tasks": sorted(set(rows["task"]))})
            failpoint(f"value_part:{rank}")  # tests: this process dies with a part written
    bar.close()
    return listed


def collect_parts(folder: Path, world: int, frames_of: dict[str, int]) -> list[dict]:
    """Every process's value parts (their lists), checked to cover each shard's frames exactly once, in
    key order with absolute paths."""
    import pyarrow.parquet as pq

    parts = []
    for rank in range(world):
        listing = read_json(folder / f"rank-{rank:05d}.json", what="list of value parts",
                            fix=f"process {rank} did not finish its share; run `recap-data label` again")
        parts += [{**p, "path": folder / f"rank-{rank:05d}" / p["path"]} for p in listing["parts"]]
    parts.sort(key=lambda p: (p["shard"], p["lo"]))
    covered = {shard: 0 for shard in frames_of}
    for p in parts:
        if covered.get(p["shard"]) != p["lo"] or pq.ParquetFile(p["path"]).metadata.num_rows != p["rows"]:
            raise RecapError(f"{p['path']}: value part of frames {p['lo']}.. does not continue shard {p['shard']}'s "
                             f"values at frame {covered.get(p['shard'])}; run `recap-data label` again")
        covered[p["shard"]] += p["rows"]
    short = [s for s, n in frames_of.items() if covered[s] != n]
    if short:
        raise RecapError(f"label: {covered[short[0]]} values for the {frames_of[short[0]]} frames of shard {short[0]}; "
                         "every frame needs exactly one")
    return parts


def label(store: ShardStore, shard_ids: list[str], value_ckpt: Path, name: str, reward: RewardConfig,
          cfg: LabelConfig, advantage: AdvantageConfig | None = None, force: bool = False,
          progress: bool = True) -> LabelManifest | None:
    """Value inference over every frame of the shards, then a new label set `name` (None on other
    processes); `advantage`: its params (default AdvantageConfig's)."""
    import torch
    from accelerate import PartialState

    from recap_data.data.shard_specs import shard_digests
    from recap_data.value.model import load_value_checkpoint

    cfg.validate()
    advantage = (advantage or AdvantageConfig()).validate()
    if not shard_ids:
        raise RecapError("label: no shards given; pass --shard ID (see `recap-data shards list`)")
    target = label_set_path(store, validate_shard_id(name, "label set name"))
    refuse_existing(target, force, "label set")
    state = PartialState(cpu=not torch.cuda.is_available())
    ckpt = load_value_checkpoint(value_ckpt, reward)
    before = shard_digests(store, shard_ids)
    if state.is_main_process:
        with atomic_directory(target, force=force, what="label set") as staging:
            shared_directory(state, staging)
            values = _score_share(ckpt, store, shard_ids, staging, cfg, state, progress)
            state.wait_for_everyone()  # every process has listed its parts
            return _commit(store, shard_ids, value_ckpt, ckpt, name, reward, cfg, advantage, staging, values,
                           state.num_processes, before, progress)
    staging = shared_directory(state, None)
    _score_share(ckpt, store, shard_ids, staging, cfg, state, progress)
    state.wait_for_everyone()
    return None


def _score_share(ckpt, store, shard_ids, staging: Path, cfg: LabelConfig, state, progress: bool) -> Path:
    """Write this process's value parts and then their list (the sign it finished); the values folder."""
    values = staging / VALUES_DIR
    rank = f"rank-{state.process_index:05d}"
    parts = write_values(ckpt, store, shard_ids, values / rank, cfg.batch_size, state.process_index,
                         state.num_processes, state.device, cfg.decode_workers, progress and state.is_main_process)
    write_json(values / f"{rank}.json", {"parts": parts})
    return values


def _commit(store, shard_ids, value_ckpt, ckpt, name, reward, cfg, advantage, staging: Path, values: Path,
            world: int, before: dict, progress: bool) -> LabelManifest:
    """The main process, once every process listed its parts: label them into the staging directory's tables."""
    from recap_data.data.shard_specs import shard_digests

    manifests = {s: store.manifest(s) for s in shard_ids}
    frames_of = {s: m.frames for s, m in manifests.items()}
    parts = collect_parts(values, world, frames_of)
    tasks = sorted({task for p in parts for task in p["tasks"]})
    check_normalizers(tasks, ckpt.normalizers)
    if shard_digests(store, shard_ids) != before:
        raise RecapError("label: a shard changed while its values were computed; run `recap-data label` again")
    per_task, counts, rows, digest, written = label_passes(staging, parts, tasks, ckpt.normalizers, reward, advantage,
                                                           sum(frames_of.values()), progress=progress)
    shutil.rmtree(values)
    shards = [{"id": s, "digest": before[s], "episodes": m.episodes, "frames": m.frames} for s, m in manifests.items()]
    check_rows(name, rows, shards)
    manifest = label_manifest(name, shards, per_task, value_checkpoint={"path": str(value_ckpt), "digest": ckpt.digest},
                              reward=reward, advantage=advantage, label=asdict(cfg), normalizers=ckpt.normalizers,
                              frames=int(counts[0].sum()), positives=int(counts[1].sum()), parent=None, digest=digest,
                              parts=written)
    write_json(staging / paths.MANIFEST, asdict(manifest))
    return manifest
