"""ShardWriter: the one way a shard comes into the store (generator, importer, rollout recorder).

It builds the LeRobot dataset in `<root>/.tmp/<id>.<pid>.<token>/shard`, finalizes it,
verifies it (loads it with LeRobotDataset, checks every parquet footer and the counts),
writes the manifest and then renames the directory into `<root>/shards/<id>`. The rename is
the commit: a writer killed at any earlier moment leaves only a temporary directory, which
readers never look at and the next writer removes. LeRobot's own writer is not crash-safe
(footerless parquet files until finalize()), hence the staging directory.
"""

import datetime as dt
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from recap_data.errors import RecapError
from recap_data.io import atomic_write_text, failpoint, fsync_dir, normal_scheduling, staging_suffix
from recap_data.store.schema import OUTCOME_FEATURES
from recap_data.store.store import (
    SHARD_KINDS,
    Manifest,
    ShardStore,
    content_digest,
    file_digests,
    paths,
    validate_shard_id,
)

# Failpoints (checkpoint.failpoint, for the crash tests): after_episode:N, after_finalize,
# after_verify, after_manifest.


class ShardWriter:
    """Context manager that writes one new shard atomically.

    Frame by frame (generator, rollouts):

        with ShardWriter(store, "base", kind="base", features=f, fps=20, source={...}) as w:
            w.add_frame({"observation.state": ..., ...}, task="put both moka pots on the stove")
            w.save_episode(success=True)

    Or a finished LeRobot v3 dataset built in `w.staging_dir` by the caller (importer), with
    `w.expect(episodes, frames)` giving the counts that verification must find.

    `source` goes into the manifest at commit; a recorder may add to it until then (the
    rollout recorder lists each episode's initial state and seed).
    """

    def __init__(self, store: ShardStore, shard_id: str, *, kind: str, features: dict, fps: int,
                 source: dict, synthetic: bool = False, robot_type: str | None = None,
                 use_videos: bool = True):
        if kind not in SHARD_KINDS:
            raise RecapError(f"shard kind {kind!r} is invalid: use one of {', '.join(SHARD_KINDS)}")
        missing = [k for k in OUTCOME_FEATURES if k not in features]
        if missing:
            raise RecapError(f"shard {shard_id!r}: features lack the outcome column(s) {missing}")
        self.store, self.shard_id, self.kind = store, validate_shard_id(shard_id), kind
        self.features, self.fps, self.source = features, int(fps), source
        self.synthetic, self.robot_type, self.use_videos = synthetic, robot_type, use_videos
        self.recorder: EpisodeRecorder | None = None  # created on the first frame
        self._successes = 0
        self._expected: tuple[int, int] | None = None
        self._tmp: Path | None = None
        self.manifest: Manifest | None = None  # set by a successful commit

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> "ShardWriter":
        self._check_not_exists()
        self.store.check_compatible(self.features, self.fps, f"shard {self.shard_id!r}")
        self.store.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.store.shards_dir.mkdir(parents=True, exist_ok=True)
        self.store.clean_stale_tmp()
        self._tmp = self.store.tmp_dir / f"{self.shard_id}.tmp.{staging_suffix()}"
        self._tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._commit()
        finally:
            if self.recorder is not None and exc_type is not None:
                self.recorder.cancel()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
        return False

    @property
    def staging_dir(self) -> Path:
        """Where the LeRobot dataset is built; does not exist until something writes it."""
        assert self._tmp is not None, "use ShardWriter as a context manager"
        return self._tmp / "shard"

    @property
    def work_dir(self) -> Path:
        """The staging directory around staging_dir: other processes of one rollout record their
        shares beside the shard here (removed with it)."""
        assert self._tmp is not None, "use ShardWriter as a context manager"
        return self._tmp

    # -- frame-by-frame API -----------------------------------------------------
    def add_frame(self, frame: dict, task: str, is_intervention: bool = False) -> None:
        """Append one frame to the current episode (images as HxWx3 uint8 arrays)."""
        if self.recorder is None:
            self.recorder = EpisodeRecorder(self.staging_dir, self.shard_id, self.features, self.fps,
                                            self.robot_type, self.use_videos)
        self.recorder.add_frame(frame, task, is_intervention)

    def save_episode(self, success: bool) -> None:
        """Close the current episode with its outcome; it is streamed to the staging files."""
        if self.recorder is None or not self.recorder.episode_frames:
            raise RecapError(f"shard {self.shard_id!r}: save_episode() called with no frames")
        self.recorder.save_episode(success)
        failpoint(f"after_episode:{self.recorder.episodes}")

    def expect(self, episodes: int, frames: int, successes: int) -> None:
        """Counts of a dataset the caller built in staging_dir itself."""
        self._expected = (episodes, frames)
        self._successes = successes

    def aggregate(self, recorded: list[Path], successes: int) -> None:
        """Build the shard from finalized datasets (EpisodeRecorder's, in order), holding `successes`
        successful episodes: their episodes one after another (LeRobot's aggregate_datasets copies
        the data and the videos)."""
        from lerobot.datasets.aggregate import aggregate_datasets
        from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

        metas = [LeRobotDatasetMetadata(f"recap-data/{self.shard_id}", root=root) for root in recorded]
        aggregate_datasets([m.repo_id for m in metas], f"recap-data/{self.shard_id}", roots=list(recorded),
                           aggr_root=self.staging_dir)
        _tidy_lerobot_output(self.staging_dir)
        self.expect(sum(m.total_episodes for m in metas), sum(m.total_frames for m in metas), successes)

    # -- internals ----------------------------------------------------------------
    def _check_not_exists(self) -> None:
        if self.store.shard_path(self.shard_id).exists():  # committed, or a stray directory in the way
            raise RecapError(f"{self.store.shard_path(self.shard_id)}: shard {self.shard_id!r} exists; "
                             "shards are immutable, choose another id")

    def _commit(self) -> None:
        from recap_data.store.verify import check_dataset

        if self.recorder is not None:
            expected = self.recorder.finish()
            self._successes = self.recorder.successes
        elif self._expected is not None:
            expected = self._expected
        else:
            raise RecapError(f"shard {self.shard_id!r}: nothing was written; a shard needs at least one episode")
        failpoint("after_finalize")
        problems = check_dataset(self.staging_dir, *expected)
        if problems:
            raise RecapError(f"shard {self.shard_id!r} failed verification before commit: {problems[0]}")
        failpoint("after_verify")

        from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

        meta = LeRobotDatasetMetadata(f"recap-data/{self.shard_id}", root=self.staging_dir)
        # Re-check against shards committed while this one was being written.
        self.store.check_compatible(meta.features, meta.fps, f"shard {self.shard_id!r}")
        files = file_digests(self.staging_dir)
        manifest = Manifest(
            shard_id=self.shard_id, kind=self.kind,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            source=self.source, fps=int(meta.fps), features=_jsonable(meta.features),
            episodes=expected[0], frames=expected[1], tasks=sorted(meta.tasks.index.tolist()),
            successes=self._successes, synthetic=self.synthetic,
            digest=content_digest(files), files=files,
        )
        atomic_write_text(self.staging_dir / paths.MANIFEST, manifest.to_json())
        failpoint("after_manifest")
        self._check_not_exists()
        try:
            os.rename(self.staging_dir, self.store.shard_path(self.shard_id))
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise RecapError(f"{self.store.shard_path(self.shard_id)}: shard {self.shard_id!r} was "
                                 "committed by another writer meanwhile; choose another id") from None
            raise
        fsync_dir(self.store.shards_dir)
        self.manifest = manifest


class EpisodeRecorder:
    """Frames and outcomes into a LeRobot v3 dataset at `root`, created on the first frame and
    finalized by finish(). A ShardWriter records through one; each process of a multi-process
    rollout records its share through its own, which the main process aggregates into the shard."""

    def __init__(self, root: Path, shard_id: str, features: dict, fps: int, robot_type: str | None,
                 use_videos: bool):
        self.root, self.shard_id, self.features, self.fps = Path(root), shard_id, features, fps
        self.robot_type, self.use_videos = robot_type, use_videos
        self.dataset = None  # LeRobotDataset in write mode
        self.episodes = self.frames = self.successes = self.episode_frames = 0

    def add_frame(self, frame: dict, task: str, is_intervention: bool = False) -> None:
        if self.dataset is None:
            from lerobot.datasets.lerobot_dataset import LeRobotDataset

            _quiet_lerobot_writer()
            self.dataset = LeRobotDataset.create(
                repo_id=f"recap-data/{self.shard_id}", fps=self.fps, features=self.features, root=self.root,
                robot_type=self.robot_type, use_videos=self.use_videos)
        frame = dict(frame, task=task)
        frame["is_intervention"] = np.array([is_intervention])
        frame["success"] = np.array([False])  # placeholder: the outcome is set in save_episode
        self.dataset.add_frame(frame)
        self.episode_frames += 1

    def save_episode(self, success: bool) -> None:
        buffer = self.dataset.writer.episode_buffer
        buffer["success"] = [np.array([bool(success)])] * buffer["size"]
        with normal_scheduling():  # LeRobot encodes the episode's videos here
            self.dataset.save_episode()
        self.episodes += 1
        self.frames += self.episode_frames
        self.successes += int(bool(success))
        self.episode_frames = 0

    def finish(self) -> tuple[int, int]:
        """Finalize the dataset; (episodes, frames)."""
        if self.episode_frames:
            raise RecapError(f"shard {self.shard_id!r}: last episode has frames but no save_episode()")
        if self.dataset is not None:
            with normal_scheduling():  # and what is left of them here
                self.dataset.finalize()
            _tidy_lerobot_output(self.root)
        return self.episodes, self.frames

    def cancel(self) -> None:
        """Stop the encoder workers of a failed write."""
        if self.dataset is not None and self.dataset.writer is not None:
            self.dataset.writer.cancel_pending_videos()


def _quiet_lerobot_writer() -> None:
    """LeRobot's writer prints a datasets progress bar and libav notes per episode; our own
    progress bar says more. Errors still show."""
    import av
    import datasets

    datasets.disable_progress_bars()
    av.logging.set_level(av.logging.ERROR)
    # LeRobot restores libav's own callback after each video, which prints at libav's level
    # (INFO: "moving the moov atom" twice per episode): raise that level too.
    av.logging.set_libav_level(av.logging.ERROR)


def _tidy_lerobot_output(root: Path) -> None:
    """Make a finalized dataset byte-reproducible and free of LeRobot's temporary leftovers."""
    images = root / "images"  # per-frame PNGs LeRobot wrote before encoding; only empty dirs remain
    if images.is_dir() and not any(p.is_file() for p in images.rglob("*")):
        shutil.rmtree(images)
    stats = root / "meta" / "stats.json"  # its key order follows set iteration order: sort it
    if stats.is_file():
        stats.write_text(json.dumps(json.loads(stats.read_text()), indent=4, sort_keys=True))


def _jsonable(obj):
    """Feature dicts hold tuples; the manifest stores lists (JSON has no tuples)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
