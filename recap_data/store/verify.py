"""Verification of shards: digests, parquet footers, counts, and a real LeRobotDataset load."""

import json
from pathlib import Path

import pyarrow.parquet as pq

from recap_data.store import paths
from recap_data.store.store import ShardStore, content_digest, file_digests


def check_parquet_footers(root: Path) -> tuple[list[str], dict[str, int]]:
    """Open every parquet file's footer; returns problems and row counts by relative path."""
    problems, rows = [], {}
    for p in sorted(root.rglob("*.parquet")):
        rel = p.relative_to(root).as_posix()
        try:
            rows[rel] = pq.ParquetFile(p).metadata.num_rows
        except Exception as e:  # pyarrow raises several types for a torn file
            problems.append(f"{rel}: unreadable parquet ({type(e).__name__}: {str(e).splitlines()[0]})")
    return problems, rows


def check_dataset(root: Path, episodes: int, frames: int, decode: bool = True) -> list[str]:
    """Check a LeRobot v3 dataset directory against expected episode and frame counts."""
    problems, rows = check_parquet_footers(root)
    if problems:
        return problems
    data_rows = sum(n for rel, n in rows.items() if rel.startswith("data/"))
    episode_rows = sum(n for rel, n in rows.items() if rel.startswith("meta/episodes/"))
    if data_rows != frames:
        problems.append(f"data/: {data_rows} frame rows, expected {frames}")
    if episode_rows != episodes:
        problems.append(f"meta/episodes/: {episode_rows} episode rows, expected {episodes}")
    try:
        info = json.loads((root / paths.INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        return problems + [f"{paths.INFO_FILE}: unreadable ({e})"]
    if (info.get("total_episodes"), info.get("total_frames")) != (episodes, frames):
        problems.append(f"{paths.INFO_FILE}: total_episodes/total_frames are "
                        f"{info.get('total_episodes')}/{info.get('total_frames')}, expected {episodes}/{frames}")
    if problems:
        return problems
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        ds = LeRobotDataset(f"recap-data/{root.name}", root=root)
        if (ds.num_episodes, ds.num_frames) != (episodes, frames):
            problems.append(f"LeRobotDataset loads {ds.num_episodes} episodes/{ds.num_frames} frames, "
                            f"expected {episodes}/{frames}")
        elif decode and frames:
            ds[0], ds[frames - 1]  # decodes the first and last frame of every camera
    except Exception as e:
        problems.append(f"LeRobotDataset failed to load it: {type(e).__name__}: {str(e).splitlines()[0]}")
    return problems


def verify_shard(store: ShardStore, shard_id: str) -> list[str]:
    """Every problem found with a committed shard; empty when it is intact."""
    manifest = store.manifest(shard_id)
    root = store.shard_path(shard_id)
    problems = []
    actual = file_digests(root)
    for rel in sorted(set(manifest.files) | set(actual)):
        if rel not in actual:
            problems.append(f"{rel}: missing")
        elif rel not in manifest.files:
            problems.append(f"{rel}: not in the manifest (added after commit)")
        elif actual[rel]["sha256"] != manifest.files[rel]["sha256"]:
            problems.append(f"{rel}: content changed (sha256 differs from the manifest)")
    if content_digest(manifest.files) != manifest.digest:
        problems.append(f"{paths.MANIFEST}: field 'digest' does not match its file list")
    problems += check_dataset(root, manifest.episodes, manifest.frames)
    return problems

