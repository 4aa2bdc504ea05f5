"""`recap-data view LABELS`: episodes of a label set as videos, with their labels under the cameras.

For each chosen episode, into --out (written atomically, refused if it exists unless --force):
  <shard>-ep<NNNN>.mp4   every frame: the title (shard, episode, outcome, length; task), the
                         cameras side by side, and under them V(o_t), the n-step target and the
                         actual return, the advantage with its epsilon, the indicator as a band,
                         and a cursor at the current frame; at the shard's fps
  <shard>-ep<NNNN>.png   a contact sheet: the cameras at a few frames, outlined green (indicator
                         positive) or red, above the same curves with those frames marked
  episodes.json          what was chosen and why, and the facts of each file
Episodes are chosen by --episode SHARD:EP, --best/--worst N (mean advantage) or --most-wrong N
(largest |V(o_0) - actual normalized return from frame 0|: the value model's error about the
episode's outcome); without any, one of each of the last three.

Frames stream through store/decode.py's pool of decoders, all chosen episodes of a shard in one
pass; reports/draw.py draws each episode's curves once and composites the frames in numpy.

Codec: AV1 (libsvtav1) in mp4, yuv420p (even width and height), with the index at the front
(faststart), for the HTML report's page. AV1 plays in every Chromium (its dav1d decoder is
built in; Debian's Chromium 150 was checked to load these files), while H.264 rests on the
proprietary codecs a build may leave out (Debian's has them; others do not), and the shards'
own videos are AV1 already, which LeRobot's visualizer plays in browsers. SVT-AV1 encodes these
frames about as fast as VP9's realtime mode (measured: ~110 against ~130 frames/s at 532x600 on
2 cores, where x264 does ~225) at three quarters of the size; its speed hardly changes between
presets 10 and 13. Where PyAV lacks it, VP9 (libvpx-vp9), also in mp4. Encoding is most of
view's time (docs/labels.md, "Seeing labels").
"""

import os
import re
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from recap_data.errors import RecapError
from recap_data.io import (
    AtomicFile,
    atomic_directory,
    atomic_write_bytes,
    normal_scheduling,
    refuse_existing,
    write_json,
)
from recap_data.reports.draw import Curves, EpisodeFrames
from recap_data.store.db import connect, query_error
from recap_data.store.label_sets import check_shards_unchanged, read_manifest
from recap_data.store.store import ShardStore

# (PyAV encoder, its options), the first one available is used; see the module doc.
CODECS = (("libsvtav1", {"preset": "10", "crf": "32"}),
          ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"}))
SHEET_FRAMES = 6
EPISODE_SPEC = re.compile(r"^(?P<shard>[^:\s]+):(?P<episode>\d+)$")
LABEL_COLUMNS = ["frame_index", "value", "value_next", "nstep_return", "return_norm", "advantage", "epsilon",
                 "indicator"]


def _episodes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per episode of the label set: shard, episode_index, task, success, length,
    mean_advantage, positive_fraction, start_value, start_return, value_error (start value - return)."""
    try:
        df = con.execute("""
            SELECT shard, episode_index, any_value(task) AS task, bool_or(success) AS success, count(*) AS length,
                   avg(advantage) AS mean_advantage, avg(indicator::INT) AS positive_fraction,
                   arg_min(value, frame_index) AS start_value, arg_min(return_norm, frame_index) AS start_return
            FROM labels GROUP BY shard, episode_index ORDER BY shard, episode_index""").df()
    except duckdb.Error as e:
        raise query_error(e) from None
    df["value_error"] = df["start_value"] - df["start_return"]
    return df


def _parse(spec: str, name: str) -> tuple[str, int]:
    m = EPISODE_SPEC.match(spec.strip())
    if m is None:
        raise RecapError(f"--episode {spec!r} is invalid: use SHARD:EPISODE, e.g. base:3 (label set {name})")
    return m["shard"], int(m["episode"])


def _choose(stats: pd.DataFrame, name: str, episodes, best: int, worst: int, most_wrong: int) -> list[dict]:
    for flag, n in (("--best", best), ("--worst", worst), ("--most-wrong", most_wrong)):
        if n < 0:
            raise RecapError(f"{flag} {n} is invalid: use 0 or more")
    by_key = stats.set_index(["shard", "episode_index"], drop=False)
    picked: dict[tuple, list[str]] = {}
    for spec in episodes:
        key = _parse(spec, name)
        if key not in by_key.index:
            have = stats[stats["shard"] == key[0]]["episode_index"]
            where = (f"shard {key[0]} has episodes {have.min()}..{have.max()}" if len(have) else
                     f"its shards are {', '.join(pd.unique(stats['shard']))}")
            raise RecapError(f"label set {name} has no episode {spec} ({where}); list them with `recap-data sql "
                             f"--labels {name} \"SELECT DISTINCT shard, episode_index FROM labels ORDER BY ALL\"`")
        picked.setdefault(key, []).append("episode")
    key_order = ["shard", "episode_index"]
    err = stats.assign(abs_error=stats["value_error"].abs())
    for why, n, ranked in (
            ("best", best, stats.sort_values(["mean_advantage", *key_order], ascending=[False, True, True])),
            ("worst", worst, stats.sort_values(["mean_advantage", *key_order], ascending=[True, True, True])),
            ("most wrong", most_wrong, err.sort_values(["abs_error", *key_order], ascending=[False, True, True]))):
        for key in zip(ranked["shard"].head(n), ranked["episode_index"].head(n), strict=True):
            picked.setdefault(key, []).append(why)
    out = []
    for key, why in picked.items():
        row = by_key.loc[key]
        out.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()} | {"chosen": why})
    return out


def choose_episodes(con, name: str, episodes: list[str] = (), best: int = 0, worst: int = 0,
                    most_wrong: int = 0) -> list[dict]:
    """The chosen episodes of label set `name`, over `con` (a connection that already has its
    views), each once, in the order asked (--episode first): dicts of shard, episode_index, task,
    success, length, mean_advantage, positive_fraction, start_value, start_return, value_error and
    chosen (why: "episode", "best", "worst", "most wrong")."""
    return _choose(_episodes(con), name, episodes, best, worst, most_wrong)


def _codec() -> tuple[str, dict]:
    import av

    for codec, options in CODECS:
        if codec in av.codecs_available:
            return codec, options
    raise RecapError(f"PyAV {av.__version__} has none of the encoders {', '.join(c for c, _ in CODECS)}; "
                     "install the PyAV wheel from PyPI (`uv sync`), which has them")


class _Mp4:
    """An mp4 written to a temporary sibling and renamed into place on close; removed on an error."""

    def __init__(self, path: Path, width: int, height: int, fps: int):
        import av

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner on stderr unless told errors only
        self.file = AtomicFile(path)
        self.codec, options = _codec()
        self.container = av.open(str(self.file.tmp), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            self.stream = self.container.add_stream(self.codec, rate=fps, options=options)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        except BaseException:
            self.close(ok=False)
            raise

    def write(self, rgb: np.ndarray) -> None:
        import av

        for packet in self.stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.container.mux(packet)

    def close(self, ok: bool) -> None:
        try:
            if ok:
                for packet in self.stream.encode():  # flush the encoder's delayed frames
                    self.container.mux(packet)
            self.container.close()
            if ok:
                self.file.commit()
        finally:
            self.file.discard()


def _png(rgb: np.ndarray, path: Path) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())


def stem(e: dict) -> str:
    """The file name (without suffix) of an episode's video and contact sheet: SHARD-epNNNN."""
    return f"{e['shard']}-ep{int(e['episode_index']):04d}"


def render_episodes(store: ShardStore, name: str, con, chosen: list[dict], folder: Path, sheets: bool,
                    progress: bool) -> list[dict]:
    """The chosen episodes (see choose_episodes) as folder/SHARD-epNNNN.mp4, and .png contact sheets if
    `sheets`, over `con` (a connection with the label set's views); their facts in the order chosen.
    The episodes of a shard are rendered in one decoding pass."""
    from tqdm import tqdm

    from recap_data.io import pool_size
    from recap_data.store.decode import episode_table, iter_episode_frames

    folder = Path(folder)
    jobs = [(e, folder / f"{stem(e)}.mp4", folder / f"{stem(e)}.png" if sheets else None) for e in chosen]
    bar = tqdm(total=sum(e["length"] for e, _, _ in jobs), desc="rendering", unit="frame", disable=not progress)
    facts, pictures = [None] * len(jobs), {}  # one matplotlib figure per frame size, redrawn for each episode
    for shard in pd.unique(pd.Series([e["shard"] for e, _, _ in jobs])):
        manifest = store.manifest(shard)
        keys = [k for k, f in manifest.features.items() if f["dtype"] in ("video", "image")]
        mine = {e["episode_index"]: (i, e, mp4, sheet) for i, (e, mp4, sheet) in enumerate(jobs) if e["shard"] == shard}
        table = episode_table(store.shard_path(shard))
        rows = table[table["episode_index"].isin(list(mine))]  # in episode order: runs read forward
        # The encoder runs on this thread (and threads of its own): the decoders get the other cores.
        for episode, cams in iter_episode_frames(store.shard_path(shard), manifest.features, keys, rows,
                                                 workers=pool_size(0, reserved=1)):
            i, e, mp4, sheet = mine[int(episode["episode_index"])]
            facts[i] = _render_one(con, e, [cams[k] for k in keys], mp4, sheet, manifest.fps, name, bar, pictures)
    bar.close()
    return facts


def _render_one(con, e: dict, cameras: list[np.ndarray], mp4: Path, sheet: Path | None, fps: int, name: str, bar,
                pictures: dict):
    t0 = time.perf_counter()
    try:
        rows = con.execute(f"SELECT {', '.join(LABEL_COLUMNS)} FROM labels WHERE shard = ? AND episode_index = ? "
                           "ORDER BY frame_index", [e["shard"], e["episode_index"]]).df()
    except duckdb.Error as err:
        raise query_error(err) from None
    where = f"label set {name}, episode {e['shard']}:{e['episode_index']}"
    if not np.array_equal(rows["frame_index"].to_numpy(), np.arange(len(cameras[0]))):
        raise RecapError(f"{where}: {len(rows)} label rows for {len(cameras[0])} frames of the shard; "
                         "make the label set again with `recap-data label --force`")
    title = (f"{e['shard']} episode {e['episode_index']} | {'success' if e['success'] else 'failure'} | "
             f"{e['length']} frames | label set {name}", e["task"])
    curves = Curves.of(rows)
    frames = EpisodeFrames(title, curves, [c.shape[1:] for c in cameras], pictures)
    with normal_scheduling():
        video = _Mp4(mp4, frames.width, frames.height, fps)
        ok = False
        try:
            for t in range(len(curves)):
                video.write(frames.compose(t, [c[t] for c in cameras]))
                bar.update(1)
            ok = True
        finally:
            video.close(ok)
    if sheet is not None:
        keys = np.unique(np.linspace(0, len(curves) - 1, min(SHEET_FRAMES, len(curves))).round().astype(int))
        _png(frames.sheet([(int(t), [c[t] for c in cameras]) for t in keys]), sheet)
    return {**e, "frames": len(curves), "seconds": round(time.perf_counter() - t0, 3), "mp4": str(mp4),
            "sheet": None if sheet is None else str(sheet), "codec": video.codec, "width": frames.width,
            "height": frames.height, "fps": fps}


def view(store: ShardStore, name: str, out_dir: Path, *, episodes=(), best: int = 0, worst: int = 0,
         most_wrong: int = 0, force: bool = False, progress: bool = True) -> list[dict]:
    """Write out_dir/<shard>-ep<NNNN>.mp4 and .png for each chosen episode (see the module doc) and
    episodes.json; out_dir is written atomically and refused if it exists, unless `force`."""
    out_dir = Path(out_dir)
    refuse_existing(out_dir, force, "episode videos")  # before any decoding
    check_shards_unchanged(store, read_manifest(store, name))
    if not (episodes or best or worst or most_wrong):
        best = worst = most_wrong = 1
    con = connect(store.root, labels=name)
    chosen = choose_episodes(con, name, episodes, best, worst, most_wrong)
    with atomic_directory(out_dir, force=force, what="episode videos") as tmp:
        facts = [f | {"mp4": f"{stem(f)}.mp4", "sheet": f"{stem(f)}.png"}  # relative to out_dir
                 for f in render_episodes(store, name, con, chosen, tmp, sheets=True, progress=progress)]
        write_json(tmp / "episodes.json", {"label_set": name, "episodes": facts})
    return [f | {"mp4": str(out_dir / f["mp4"]), "sheet": str(out_dir / f["sheet"])} for f in facts]
