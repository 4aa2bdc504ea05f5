"""`recap-data shards import`: an existing LeRobot v3 dataset directory becomes a shard.

The source is never modified. Its files are copied (videos byte for byte) into the writer's
staging directory, with the outcome columns `success` and `is_intervention` added when the
source lacks them, and committed through ShardWriter like every other shard.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recap_data.errors import RecapError, one_line_errors
from recap_data.store import paths
from recap_data.store.schema import OUTCOME_FEATURES
from recap_data.store.store import ShardStore, content_digest, file_digests
from recap_data.store.writer import ShardWriter

OUTCOME_MODES = ("all-success", "column", "episodes")
CONVERT_HINT = ("convert it to v3.0 first: python -m lerobot.scripts.convert_dataset_v21_to_v30 "
                "--repo-id=NAME --root={src} --push-to-hub=false")


def read_source_info(src: Path) -> dict:
    """info.json of a LeRobot v3 dataset directory, or a RecapError saying what is wrong."""
    if not src.is_dir():
        raise RecapError(f"{src}: no such directory; give the root of a LeRobot v3 dataset")
    info_path = src / paths.INFO_FILE
    if not info_path.is_file():
        raise RecapError(f"{src}: not a LeRobot dataset (no {paths.INFO_FILE}); give the dataset's root directory")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise RecapError(f"{info_path}: invalid JSON ({e})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise RecapError(f"{info_path}: field 'codebase_version' is {version!r}, a LeRobot v2 dataset; "
                         + CONVERT_HINT.format(src=src))
    return info


def _data_columns(src: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of every data file, concatenated in the order LeRobot's dataset_tools copies them."""
    files = sorted((src / "data").glob("*/*.parquet"))
    if not files:
        raise RecapError(f"{src}/data: no parquet files; the dataset is empty or incomplete")
    tables = [pq.read_table(f, columns=columns) for f in files]
    return {c: np.concatenate([t.column(c).to_numpy(zero_copy_only=False) for t in tables]) for c in columns}


def check_finite(src: Path, features: dict) -> None:
    """Refuse NaN or infinity in any float feature (state, action, ...): training would meet them
    unexplained. The error names the file, column, episode and frame."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numeric = [k for k, f in features.items() if str(f.get("dtype", "")).startswith("float")]
    for path in sorted((src / "data").glob("*/*.parquet")) if numeric else ():
        with one_line_errors(path, "unreadable parquet", "repair the source", pa.ArrowException, OSError):
            table = pq.read_table(path, columns=[*numeric, "episode_index", "frame_index"])
        for column in numeric:
            values = table.column(column).combine_chunks()
            if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
                flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(np.float64)
                finite = np.isfinite(flat.reshape(len(values), -1)).all(axis=1)  # (frames,)
            else:
                finite = np.isfinite(values.to_numpy(zero_copy_only=False).astype(np.float64))
            if not finite.all():
                row = int(np.flatnonzero(~finite)[0])
                episode, frame = (int(table.column(c)[row].as_py()) for c in ("episode_index", "frame_index"))
                raise RecapError(f"{path}: column {column!r} has {int((~finite).sum())} frame(s) with NaN or "
                                 f"infinity (first: episode {episode}, frame {frame}); clean or drop them in the "
                                 "source before importing")


def _episode_list(path: Path, n_episodes: int) -> set[int]:
    try:
        text = path.read_text()
    except OSError as e:
        raise RecapError(f"{path}: cannot read the success episode list ({e.strerror})") from None
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else re.split(r"[\s,]+", text.strip())
        indices = {int(i) for i in items if str(i) != ""}
    except (ValueError, json.JSONDecodeError):
        raise RecapError(f"{path}: expected episode indices (a JSON list or one integer per line)") from None
    bad = sorted(i for i in indices if not 0 <= i < n_episodes)
    if bad:
        raise RecapError(f"{path}: episode indices {bad[:5]} are outside 0..{n_episodes - 1}")
    return indices


def import_shard(store: ShardStore, src: Path, shard_id: str, *, outcome: str, success_column: str | None = None,
                 success_episodes: Path | None = None, intervention_column: str | None = None,
                 kind: str = "base") -> ShardWriter:
    """Import `src` as shard `shard_id`; `outcome` says where episode success comes from."""
    src = Path(src).absolute()
    info = read_source_info(src)
    features = info["features"]
    if outcome not in OUTCOME_MODES:
        raise RecapError(f"outcome {outcome!r} is invalid: use one of {', '.join(OUTCOME_MODES)}")
    if (outcome == "column") != bool(success_column) or (outcome == "episodes") != bool(success_episodes):
        raise RecapError("give exactly one of --all-success, --success-column COL, --success-episodes FILE")
    for col in filter(None, (success_column, intervention_column)):
        if col not in features:
            raise RecapError(f"{src / paths.INFO_FILE}: no feature {col!r}; features: {', '.join(features)}")
    for name, want in OUTCOME_FEATURES.items():
        have = features.get(name)
        if have and (have["dtype"], list(have["shape"])) != (want["dtype"], list(want["shape"])):
            raise RecapError(f"{src / paths.INFO_FILE}: feature {name!r} is {have['dtype']}{list(have['shape'])}, "
                             f"recap-data needs {want['dtype']}{list(want['shape'])}; rename it in the source")
    if "success" in features and success_column != "success":
        raise RecapError(f"{src}: the source already has a 'success' column; import with --success-column success")

    check_finite(src, features)
    n_episodes, n_frames = int(info["total_episodes"]), int(info["total_frames"])
    wanted = ["episode_index"] + [c for c in (success_column, intervention_column) if c]
    cols = _data_columns(src, list(dict.fromkeys(wanted)))
    episode_of_frame = cols["episode_index"].astype(np.int64)
    if len(episode_of_frame) != n_frames:
        raise RecapError(f"{src / paths.INFO_FILE}: total_frames is {n_frames} but data/ holds {len(episode_of_frame)}")
    episode_success = np.zeros(n_episodes, bool)
    if outcome == "all-success":
        episode_success[:] = True
    elif outcome == "episodes":
        episode_success[sorted(_episode_list(Path(success_episodes), n_episodes))] = True
    else:  # an episode succeeded if the column is true (non-zero) on any of its frames
        np.logical_or.at(episode_success, episode_of_frame, cols[success_column].astype(float).reshape(-1) != 0)

    add = {}
    if "success" not in features:
        add["success"] = (episode_success[episode_of_frame], dict(OUTCOME_FEATURES["success"]))
    if "is_intervention" not in features:
        flag = (cols[intervention_column].astype(float).reshape(-1) != 0 if intervention_column
                else np.zeros(n_frames, bool))
        add["is_intervention"] = (flag, dict(OUTCOME_FEATURES["is_intervention"]))

    source_files = file_digests(src, exclude=())
    source = {"imported_from": str(src), "source_digest": content_digest(source_files), "outcome": outcome,
              "success_column": success_column,
              "success_episodes": str(Path(success_episodes).absolute()) if success_episodes else None,
              "intervention_column": intervention_column, "repo_id": info.get("repo_id")}
    new_features = {**features, **{k: v[1] for k, v in add.items()}}
    with ShardWriter(store, shard_id, kind=kind, features=new_features, fps=info["fps"], source=source,
                     robot_type=info.get("robot_type"), use_videos=bool(info.get("video_path"))) as w:
        if add:
            from lerobot.datasets.dataset_tools import add_features
            from lerobot.datasets.lerobot_dataset import LeRobotDataset

            try:
                dataset = LeRobotDataset(f"import/{src.name}", root=src)
            except Exception as e:
                raise RecapError(f"{src}: LeRobot cannot load it ({type(e).__name__}: {e})") from None
            add_features(dataset, add, output_dir=w.staging_dir, repo_id=f"recap-data/{shard_id}")
        else:
            for part in ("meta", "data", "videos"):
                if (src / part).is_dir():
                    shutil.copytree(src / part, w.staging_dir / part)
        w.expect(n_episodes, n_frames, int(episode_success.sum()))
    return w
