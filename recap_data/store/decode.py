"""Sequential decoding of a shard's camera frames, in dataset index order.

LeRobot decodes one frame at a time (a seek and a decode per frame); reading a whole video file
front to back is far faster (measured in docs/labels.md). Training on a shard that fits in
memory decodes it once this way; the labeler streams it episode by episode.

Two decoders give the same pixels (bit for bit; tests/test_decode.py checks both against
LeRobot's own decoding):
  ffmpeg  an ffmpeg process (imageio-ffmpeg's binary) writes rgb24 frames to a pipe: decoding
          and colour conversion run outside Python, so they neither take the GIL from the
          model's thread nor pay ~90 us of Python per frame (PyAV's to_ndarray at 64 px);
  pyav    in-process PyAV, the fallback where no ffmpeg binary is found.
Frame positions come from the container's packet timestamps (demuxed, not decoded), so an
episode's frames are found by timestamp with either decoder, as LeRobot finds them.
"""

import io
import itertools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.store import paths

DECODERS = ("auto", "ffmpeg", "pyav")


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


class _VideoFile:
    """One camera video read front to back; reopened only to go back.

    threads: decoder threads, 0 = the decoder's choice. The labeler decodes with 1 beside a model
    that already keeps every CPU core busy: on 2 cores, more decoder threads only contend (measured).
    """

    def __init__(self, path: Path, threads: int, exe: str | None):
        import av

        self.path, self.threads, self.exe = Path(path), threads, exe
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                fps, base = float(stream.average_rate), stream.time_base
                self.shape = (stream.codec_context.height, stream.codec_context.width, 3)
                pts = [p.pts for p in container.demux(stream) if p.pts is not None]
        except (av.error.FFmpegError, IndexError) as e:
            raise RecapError(f"{path}: unreadable video ({e}); run `recap-data shards verify`") from None
        # Position of each frame in presentation order: round(timestamp * fps), as LeRobot's index.
        self.fps = fps
        self.positions = np.round(np.sort(np.array(pts, dtype=np.float64)) * float(base) * fps).astype(np.int64)
        self.source = None  # the open ffmpeg process or PyAV frame iterator
        self.next = 0  # index (into positions) of the next frame it yields

    def read(self, start: int, length: int) -> np.ndarray:
        """(length, H, W, 3) uint8: the frames at positions start .. start + length - 1."""
        first = int(np.searchsorted(self.positions, start))
        if not np.array_equal(self.positions[first:first + length], np.arange(start, start + length)):
            raise RecapError(f"{self.path}: no frames at every position {start}..{start + length - 1} "
                             "(timestamps missing or out of order); run `recap-data shards verify`")
        if self.source is None or first < self.next:
            self._open()
        if first > self.next:
            self._take(first - self.next)  # skipped: frames of episodes another process labels
        return self._take(length)

    def _open(self) -> None:
        self.close()
        if self.exe is None:
            self.source = _pyav_frames(self.path, self.threads, self.fps)
        else:
            threads = ["-threads", str(self.threads)] if self.threads else []
            self.errors = tempfile.TemporaryFile()
            # -xerror: a damaged frame stops ffmpeg (a short read below) instead of being skipped.
            self.source = subprocess.Popen(
                [self.exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-xerror", *threads, "-i", str(self.path),
                 "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24",
                 "-threads", "1", "pipe:1"],  # one thread converts and writes (more only contend)
                stdout=subprocess.PIPE, stderr=self.errors, stdin=subprocess.DEVNULL)
        self.next = 0

    def _take(self, n: int) -> np.ndarray:
        out = np.empty((n, *self.shape), np.uint8)  # (n, H, W, 3)
        got = 0
        if self.exe is None:
            import av

            damaged = False
            try:
                for position, frame in itertools.islice(self.source, n):
                    if position != self.positions[self.next + got]:  # PyAV skips a frame it cannot decode ...
                        damaged = True
                        break
                    out[got] = frame
                    got += 1
            except av.error.FFmpegError:  # ... or raises, depending on where the damage is
                damaged = True
            if damaged:
                raise RecapError(f"{self.path}: the frame at position {self.positions[self.next + got]} "
                                 "failed to decode; run `recap-data shards verify`")
        else:
            view, filled = memoryview(out).cast("B"), 0
            while filled < len(view) and (k := self.source.stdout.readinto(view[filled:])):
                filled += k
            got = filled // int(np.prod(self.shape))
        if got < n:
            raise RecapError(f"{self.path}: the video ends after {self.next + got} of {len(self.positions)} frames"
                             f"{self._stderr()}; run `recap-data shards verify`")
        self.next += n
        return out

    def _stderr(self) -> str:
        if self.exe is None or self.source.poll() is None:
            return ""
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        return f" (ffmpeg: {lines[-1]})" if lines else ""

    def close(self) -> None:
        if isinstance(self.source, subprocess.Popen):
            self.source.kill()
            self.source.wait()
            self.source.stdout.close()
            self.errors.close()
        elif self.source is not None:
            self.source.close()  # the PyAV generator closes its container
        self.source = None


def _pyav_frames(path: Path, threads: int, fps: float):
    """(position, frame (H, W, 3) uint8) in presentation order, decoded in-process by PyAV;
    position = round(timestamp * fps)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        for frame in container.decode(stream):
            yield round(float(frame.time) * fps), frame.to_ndarray(format="rgb24")


def decode_cameras(shard_dir: Path, features: dict, keys: list[str], frames: int,
                   decoder: str = "auto") -> dict[str, np.ndarray]:
    """{camera key: (frames, H, W, 3) uint8} for a whole shard, row i = dataset index i: the
    episodes of iter_episode_frames, gathered into one array per camera."""
    out: dict[str, np.ndarray] = {}
    filled = 0
    for episode, cams in iter_episode_frames(shard_dir, features, keys, decoder=decoder):
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


class _SequentialCamera:
    """Reads one camera's frames episode by episode, from its video files (or PNG-in-parquet column)."""

    def __init__(self, shard_dir: Path, key: str, dtype: str, fps: int, threads: int, exe: str | None):
        self.shard_dir, self.key, self.dtype, self.fps, self.threads, self.exe = \
            Path(shard_dir), key, dtype, fps, threads, exe
        self.video: _VideoFile | None = None
        self.png, self.png_position = None, 0

    def read(self, episode: pd.Series) -> np.ndarray:
        """(length, H, W, 3) uint8 frames of one episode (a row of episode_table)."""
        length = int(episode["length"])
        if self.dtype != "video":
            return self._read_png(int(episode["dataset_from_index"]), length, int(episode["episode_index"]))
        p = f"videos/{self.key}/"
        path = self.shard_dir / paths.VIDEO_FILE.format(key=self.key, chunk=int(episode[p + "chunk_index"]),
                                                        file=int(episode[p + "file_index"]))
        if self.video is None or self.video.path != path:
            self.close()
            self.video = _VideoFile(path, self.threads, self.exe)
        return self.video.read(round(float(episode[p + "from_timestamp"]) * self.fps), length)

    def _read_png(self, start: int, length: int, episode_index: int) -> np.ndarray:
        if self.png is None or start < self.png_position:
            self.png, self.png_position = _iter_png_column(self.shard_dir, self.key), 0
        out = []
        for position, image in self.png:
            self.png_position = position + 1
            if position >= start:
                out.append(image)
                if len(out) == length:
                    return np.stack(out)  # (length, H, W, 3)
        raise RecapError(f"{self.shard_dir}: camera {self.key}: episode {episode_index} has "
                         f"{len(out)} of {length} frames; run `recap-data shards verify`")

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        self.video = None


def _iter_png_column(shard_dir: Path, key: str):
    """(dataset index, image) for a PNG-in-parquet camera, in file order."""
    import pyarrow.parquet as pq
    from PIL import Image

    for file in sorted(Path(shard_dir).glob(paths.DATA_GLOB)):
        for batch in pq.ParquetFile(file).iter_batches(columns=["index", key], batch_size=256):
            for index, cell in zip(batch.column("index").to_pylist(), batch.column(key).to_pylist(), strict=True):
                yield index, np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))


def iter_episode_frames(shard_dir: Path, features: dict, keys: list[str], episodes: pd.DataFrame | None = None,
                        threads: int = 0, decoder: str = "auto"):
    """Stream (episode row, {camera: (length, H, W, 3) uint8}) episode by episode in index order.

    Memory holds one episode at a time; `episodes` (rows of episode_table, in order) restricts
    it to some episodes (the share of one process when inference is split); threads: see
    _VideoFile; decoder: one of DECODERS (auto: ffmpeg where a binary is found, else PyAV).
    """
    exe = _resolve_decoder(decoder)
    episodes = episode_table(shard_dir) if episodes is None else episodes
    fps = _fps(shard_dir)
    cameras = {k: _SequentialCamera(shard_dir, k, features[k]["dtype"], fps, threads, exe) for k in keys}
    try:
        for _, episode in episodes.iterrows():
            yield episode, {k: cam.read(episode) for k, cam in cameras.items()}
    finally:  # also when the consumer stops early: no ffmpeg process outlives its reader
        for cam in cameras.values():
            cam.close()
