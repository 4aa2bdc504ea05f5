"""Decoding of a shard's camera frames, episode by episode in the order asked, by a pool of decoders.

LeRobot decodes one frame at a time (a seek and a decode per frame); reading a run of a video
file front to back is far faster (measured in docs/labels.md). Training on a shard that fits in
memory decodes it once this way; the labeler streams it episode by episode.

The episodes asked for are cut into runs: consecutive episodes in one video file per camera,
spanning at most RUN_BYTES of frames. Each (run, camera) is one job: a decoder seeks to the
run's first frame and decodes to its last (frames in between, of episodes not asked for, are
decoded and dropped). `workers` jobs run at once, each on a pool thread; the runs are handed
out in order and the episodes delivered in order, with at most `ahead` runs (enough to keep
every worker busy, plus one) decoded or decoding beyond the one being delivered, so memory is
bounded by cameras x (ceil(workers / cameras) + 2) x RUN_BYTES, about (workers + 3 x cameras) x
RUN_BYTES, whatever the shard's size.

Two decoders give the same pixels (bit for bit; tests/test_decode.py checks both against
LeRobot's own decoding, with several runs and workers):
  ffmpeg  an ffmpeg process (imageio-ffmpeg's binary) per job writes rgb24 frames to a pipe:
          decoding and colour conversion run outside Python, so they neither take the GIL from
          the model's thread nor pay ~90 us of Python per frame (PyAV's to_ndarray at 64 px);
          the job's thread waits on the pipe without the GIL. `workers` is then the number of
          decoder processes;
  pyav    in-process PyAV on the pool's threads, the fallback where no ffmpeg binary is found
          (it releases the GIL while decoding, so threads overlap only in part).
Frame positions come from the container's packet timestamps (demuxed, not decoded), so an
episode's frames are found by timestamp with either decoder, as LeRobot finds them; a job
seeks to the keyframe before its first frame and drops what comes before it (ffmpeg's
accurate input seek; PyAV checks each frame's timestamp).
"""

import io
import subprocess
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.store import paths

DECODERS = ("auto", "ffmpeg", "pyav")
# Frames one job decodes, per camera: an ffmpeg process costs ~30 ms to start and seek (measured
# at 64 px), about 10% of decoding 32 MiB of frames, and the pool holds a few such runs.
RUN_BYTES = 32 * 2**20


def episode_table(shard_dir: Path) -> pd.DataFrame:
    """LeRobot v3 episode metadata of a shard (meta/episodes/*/*.parquet), sorted by episode."""
    import duckdb

    files = sorted(Path(shard_dir).glob(paths.EPISODES_GLOB))
    if not files:
        raise RecapError(f"{shard_dir}: no episode metadata ({paths.EPISODES_GLOB}); run `recap-data shards verify`")
    con = duckdb.connect()
    return con.execute("SELECT * FROM read_parquet(?, union_by_name=true) ORDER BY episode_index",
                       [[str(f) for f in files]]).df()


def ffmpeg_exe() -> str | None:
    """The ffmpeg binary imageio-ffmpeg finds ($IMAGEIO_FFMPEG_EXE, its bundled one, or PATH's); None if none."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def _resolve_decoder(decoder: str) -> str | None:
    """The ffmpeg binary to use, or None for PyAV."""
    if decoder not in DECODERS:
        raise RecapError(f"decoder {decoder!r} is invalid: use one of {', '.join(DECODERS)}")
    if decoder == "pyav":
        return None
    exe = ffmpeg_exe()
    if exe is None and decoder == "ffmpeg":
        raise RecapError("decoder 'ffmpeg': no ffmpeg binary found; `pip install imageio-ffmpeg` or use 'pyav'")
    return exe


class _Video:
    """One camera video file's frame timestamps (demuxed once, not decoded) and frame shape."""

    def __init__(self, path: Path):
        import av

        self.path = Path(path)
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                self.fps, self.base = float(stream.average_rate), float(stream.time_base)
                self.shape = (stream.codec_context.height, stream.codec_context.width, 3)
                # ffmpeg's -ss counts from the container's start time (microseconds)
                self.start_s = (container.start_time or 0) / 1e6
                self.pts = np.sort(np.array([p.pts for p in container.demux(stream) if p.pts is not None], np.int64))
        except (av.error.FFmpegError, IndexError) as e:
            raise RecapError(f"{path}: unreadable video ({e}); run `recap-data shards verify`") from None
        # Position of each frame in presentation order: round(timestamp * fps), as LeRobot's index.
        self.positions = np.round(self.pts * self.base * self.fps).astype(np.int64)

    def locate(self, start: int, length: int) -> int:
        """Index (presentation order) of the frame at position `start`, followed by every position
        up to start + length - 1."""
        first = int(np.searchsorted(self.positions, start))
        if not np.array_equal(self.positions[first:first + length], np.arange(start, start + length)):
            raise RecapError(f"{self.path}: no frames at every position {start}..{start + length - 1} "
                             "(timestamps missing or out of order); run `recap-data shards verify`")
        return first

    def seek_s(self, first: int) -> float:
        """An input seek time that keeps frame `first` and drops the one before: half a frame early."""
        return float(self.pts[first] * self.base - self.start_s - 0.5 / self.fps)


class _Run:
    """Consecutive episodes that each camera decodes in one job: spans[key] = [video, first frame,
    end frame] in that camera's file; episodes = (episode row, {key: offset of its frames in the span})."""

    def __init__(self, episode: pd.Series, where: dict, length: int):
        self.episodes = [(episode, {k: 0 for k in where})]
        self.spans = {k: [video, first, first + length] for k, (video, first) in where.items()}

    def extend(self, episode: pd.Series, where: dict, length: int, limit: int) -> bool:
        """Add the episode if every camera reads on forward in the same file within `limit` frames."""
        for k, (video, first) in where.items():
            have, start, end = self.spans[k]
            if video is not have or first < end or first + length - start > limit:
                return False
        self.episodes.append((episode, {k: first - self.spans[k][1] for k, (_, first) in where.items()}))
        for k, (_, first) in where.items():
            self.spans[k][2] = first + length
        return True


def _runs(shard_dir: Path, episodes: pd.DataFrame, keys: list[str], fps: int, limit: int):
    """The episodes (rows of episode_table) as _Runs over the video cameras `keys`, in order."""
    videos: dict[Path, _Video] = {}
    run = None
    for _, episode in episodes.iterrows():
        length, where = int(episode["length"]), {}
        for k in keys:
            p = f"videos/{k}/"
            path = Path(shard_dir) / paths.VIDEO_FILE.format(key=k, chunk=int(episode[p + "chunk_index"]),
                                                             file=int(episode[p + "file_index"]))
            if path not in videos:
                videos[path] = _Video(path)
            where[k] = (videos[path], videos[path].locate(round(float(episode[p + "from_timestamp"]) * fps), length))
        if run is None or not run.extend(episode, where, length, limit):
            if run is not None:
                yield run
            run = _Run(episode, where, length)
    if run is not None:
        yield run


class _Pool:
    """Threads that run decoding jobs, `workers` at once. close() kills every live ffmpeg process
    and waits for the threads, so no decoder outlives its reader (also on an early stop)."""

    def __init__(self, workers: int):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self.lock = threading.Lock()
        self.live: set[subprocess.Popen] = set()
        self.stopping = False

    def submit(self, *args):
        return self.executor.submit(_decode_span, self, *args)

    def popen(self, cmd: list[str], errors) -> subprocess.Popen:
        with self.lock:  # a job never starts a process after close() has killed the live ones
            if self.stopping:
                raise RecapError("decoding stopped")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
            self.live.add(proc)
        return proc

    def release(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.live.discard(proc)
        proc.kill()
        proc.wait()
        proc.stdout.close()

    def close(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.live:
                proc.kill()  # its job's read ends; the job reaps it
        self.executor.shutdown(wait=True, cancel_futures=True)


def _decode_span(pool: _Pool, video: _Video, first: int, end: int, threads: int, exe: str | None) -> np.ndarray:
    """(end - first, H, W, 3) uint8: the frames first .. end - 1 (presentation order) of a video file."""
    out = np.empty((end - first, *video.shape), np.uint8)
    if exe is None:
        return _pyav_span(pool, video, first, out, threads)
    seek = ["-ss", f"{video.seek_s(first):.6f}"] if first else []
    with tempfile.TemporaryFile() as errors:
        # -xerror: a damaged frame stops ffmpeg (a short read below) instead of being skipped;
        # -ss before -i seeks to the keyframe before and decodes and drops frames up to the time.
        proc = pool.popen(
            [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-xerror", "-threads", str(threads), *seek,
             "-i", str(video.path), "-map", "0:v:0", "-fps_mode", "passthrough", "-frames:v", str(len(out)),
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-threads", "1", "pipe:1"],  # one thread converts and writes
            errors)
        view, filled = memoryview(out).cast("B"), 0
        try:
            while filled < len(view) and (k := proc.stdout.readinto(view[filled:])):
                filled += k
            if filled < len(view):
                proc.wait()  # the pipe closed: ffmpeg is exiting, its error written
        finally:
            pool.release(proc)
        got = filled // int(np.prod(video.shape))
        if got < len(out):
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            raise RecapError(f"{video.path}: the video ends after {first + got} of {len(video.positions)} frames"
                             f"{f' (ffmpeg: {lines[-1]})' if lines else ''}; run `recap-data shards verify`")
    return out


def _pyav_span(pool: _Pool, video: _Video, first: int, out: np.ndarray, threads: int) -> np.ndarray:
    """_decode_span in-process by PyAV; position = round(timestamp * fps)."""
    import av

    got, damaged, want = 0, False, video.positions[first:first + len(out)]
    try:
        with av.open(str(video.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = "AUTO", threads
            if first:
                container.seek(int(video.pts[first]), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                position = round(float(frame.time) * video.fps)
                if pool.stopping:
                    break
                if position < want[0]:  # decoded from the keyframe before the run
                    continue
                if position != want[got]:  # PyAV skips a frame it cannot decode ...
                    damaged = True
                    break
                out[got] = frame.to_ndarray(format="rgb24")
                got += 1
                if got == len(out):
                    break
    except av.error.FFmpegError:  # ... or raises, depending on where the damage is
        damaged = True
    if damaged:
        raise RecapError(f"{video.path}: the frame at position {want[got]} failed to decode; "
                         "run `recap-data shards verify`")
    if got < len(out):
        raise RecapError(f"{video.path}: the video ends after {first + got} of {len(video.positions)} frames; "
                         "run `recap-data shards verify`")
    return out


def decode_cameras(shard_dir: Path, features: dict, keys: list[str], frames: int, decoder: str = "auto",
                   workers: int = 1, run_frames: int | None = None) -> dict[str, np.ndarray]:
    """{camera key: (frames, H, W, 3) uint8} for a whole shard, row i = dataset index i: the
    episodes of iter_episode_frames, gathered into one array per camera."""
    out: dict[str, np.ndarray] = {}
    filled = 0
    for episode, cams in iter_episode_frames(shard_dir, features, keys, decoder=decoder, workers=workers,
                                             run_frames=run_frames):
        start, end = int(episode["dataset_from_index"]), int(episode["dataset_to_index"])
        for key, images in cams.items():
            if key not in out:
                out[key] = np.empty((frames, *images.shape[1:]), np.uint8)
            out[key][start:end] = images
        filled += end - start
    if filled != frames:
        raise RecapError(f"{shard_dir}: the episodes hold {filled} frames, the manifest {frames}; "
                         "run `recap-data shards verify`")
    return out


def camera_bytes(features: dict, keys: list[str], frames: int) -> int:
    """Bytes that decode_cameras would hold for `frames` frames."""
    return frames * sum(int(np.prod(features[k]["shape"])) for k in keys)


def _fps(shard_dir: Path) -> int:
    import json

    return int(json.loads((Path(shard_dir) / paths.INFO_FILE).read_text())["fps"])


class _PngCamera:
    """A PNG-in-parquet camera column, read episode by episode in the reader's thread (no pool:
    such shards are the small ones, written without videos)."""

    def __init__(self, shard_dir: Path, key: str):
        self.shard_dir, self.key = Path(shard_dir), key
        self.png, self.position = None, 0

    def read(self, episode: pd.Series) -> np.ndarray:
        """(length, H, W, 3) uint8 frames of one episode (a row of episode_table)."""
        start, length = int(episode["dataset_from_index"]), int(episode["length"])
        if self.png is None or start < self.position:
            self.png, self.position = _iter_png_column(self.shard_dir, self.key), 0
        out = []
        for position, image in self.png:
            self.position = position + 1
            if position >= start:
                out.append(image)
                if len(out) == length:
                    return np.stack(out)  # (length, H, W, 3)
        raise RecapError(f"{self.shard_dir}: camera {self.key}: episode {int(episode['episode_index'])} has "
                         f"{len(out)} of {length} frames; run `recap-data shards verify`")


def _iter_png_column(shard_dir: Path, key: str):
    """(dataset index, image) for a PNG-in-parquet camera, in file order."""
    import pyarrow.parquet as pq
    from PIL import Image

    for file in sorted(Path(shard_dir).glob(paths.DATA_GLOB)):
        for batch in pq.ParquetFile(file).iter_batches(columns=["index", key], batch_size=256):
            for index, cell in zip(batch.column("index").to_pylist(), batch.column(key).to_pylist(), strict=True):
                yield index, np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))


def iter_episode_frames(shard_dir: Path, features: dict, keys: list[str], episodes: pd.DataFrame | None = None,
                        threads: int = 1, decoder: str = "auto", workers: int = 1, run_frames: int | None = None):
    """Stream (episode row, {camera: (length, H, W, 3) uint8}) episode by episode, in the order of
    `episodes` (rows of episode_table; default: every episode of the shard).

    workers: decoder jobs at once (see recap_data.io.pool_size); threads: each decoder's own threads (1: the
    pool is the parallelism; 0: the decoder's choice); decoder: one of DECODERS (auto: ffmpeg
    where a binary is found, else PyAV); run_frames: frames per job and camera (default from
    RUN_BYTES). Arrays may be views of a run's buffer: copy what is kept for long.
    """
    exe = _resolve_decoder(decoder)
    if workers < 1:
        raise RecapError(f"decoder workers = {workers} is invalid: use a number >= 1")
    episodes = episode_table(shard_dir) if episodes is None else episodes
    videos = [k for k in keys if features[k]["dtype"] == "video"]
    pngs = {k: _PngCamera(shard_dir, k) for k in keys if k not in videos}
    limit = run_frames or max(1, RUN_BYTES // max((int(np.prod(features[k]["shape"])) for k in videos), default=1))
    runs = _runs(shard_dir, episodes, videos, _fps(shard_dir), limit)
    ahead = -(-workers // max(1, len(videos))) + 1  # runs submitted: every worker busy, and one more
    pending: deque = deque()  # (run, {camera: future}), or (error, None) where planning failed

    def submit() -> None:
        while len(pending) < ahead:
            try:
                run = next(runs)
            except StopIteration:
                return
            except RecapError as e:  # raised when its episode is reached, after the ones before it
                pending.append((e, None))
                return
            pending.append((run, {k: pool.submit(*run.spans[k], threads, exe) for k in videos}))

    pool = _Pool(workers)
    try:
        submit()
        while pending:
            run, jobs = pending.popleft()
            if jobs is None:
                raise run
            frames = {k: job.result() for k, job in jobs.items()}
            submit()
            for episode, offsets in run.episodes:
                length = int(episode["length"])
                yield episode, {k: frames[k][offsets[k]:offsets[k] + length] if k in frames else pngs[k].read(episode)
                                for k in keys}
    finally:  # also when the consumer stops early: no ffmpeg process outlives its reader
        pool.close()
