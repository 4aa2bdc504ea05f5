"""Benchmark of `recap-data view` (not a test): rendering speed against decoding alone, in one
run; prints figures and writes bench/results/view.json.

A demo shard (make_demo_data: `--episodes` of the default base data, two 64-px cameras) and a
label set over it whose values are synthetic (the actual normalized return plus noise, through
the real label math and writer: what view costs does not depend on the values, and no value
model need be trained). Every episode of the shard is rendered; timed, best of `--repeats`,
the two interleaved:
  decoding  iter_episode_frames over the same episodes, both cameras, with the decoder workers
            view uses; the consumer does nothing with the frames;
  view      view() end to end, as `recap-data view --episode ...` runs it: episodes chosen by
            DuckDB, decoding, one matplotlib figure per episode, each frame composited in numpy,
            encoded (the codec view picks) and muxed into an mp4, the contact sheet PNG, the
            atomic output directory.
Then where view's time goes, each part alone over the same episodes (frames already decoded
in memory): the figures (one matplotlib draw per episode, and its contact sheet composited and
written as PNG), compositing every video frame, and encoding the composited frames.

    .venv/bin/python bench/bench_view.py [--episodes 20] [--repeats 3]
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from common import machine_info, write_results

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.data.frames import load_frames
from recap_data.io import pool_size
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels, compute_returns
from recap_data.labels.write import LabelConfig, write_label_set
from recap_data.reports import view as view_module
from recap_data.reports.draw import Curves, EpisodeFrames
from recap_data.store.db import connect
from recap_data.store.decode import episode_table, iter_episode_frames
from recap_data.store.store import ShardStore

RESULTS = Path(__file__).parent / "results" / "view.json"


def synthetic_label_set(store: ShardStore, name: str) -> None:
    frames = load_frames(store, ["base"], with_state=False)
    reward, cfg = RewardConfig(), AdvantageConfig()
    returns, normalizers = compute_returns(frames, reward)
    rng = np.random.default_rng(0)
    frames = frames.merge(returns[["shard", "index", "return_norm"]], on=["shard", "index"]).sort_values(
        ["shard", "episode_index", "frame_index"], ignore_index=True)
    frames["value"] = np.clip(frames.pop("return_norm") + rng.normal(0, 0.1, len(frames)), -1, 0)
    labels, per_task = build_labels(frames, reward, cfg, normalizers)
    m = store.manifest("base")
    write_label_set(store, name, labels, per_task, value_checkpoint={"path": "synthetic", "digest": "none"},
                    shards=[{"id": "base", "digest": m.digest, "episodes": m.episodes, "frames": m.frames}],
                    reward=reward, advantage=cfg, cfg=LabelConfig(), normalizers=normalizers)


def parts(store: ShardStore, name: str, work: Path) -> dict:
    """Seconds of each part of view's work alone, over every episode (frames decoded beforehand)."""
    m = store.manifest("base")
    keys = [k for k, f in m.features.items() if f["dtype"] in ("video", "image")]
    con = connect(store.root, labels=name)
    episodes = [(int(e["episode_index"]), [cams[k].copy() for k in keys])
                for e, cams in iter_episode_frames(store.shard_path("base"), m.features, keys)]
    columns = ", ".join(view_module.LABEL_COLUMNS)
    curves = [Curves.of(con.execute(f"SELECT {columns} FROM labels WHERE episode_index = ? ORDER BY frame_index",
                                    [ep]).df()) for ep, _ in episodes]
    title = ("base episode 0 | success | 60 frames | label set x", "a task")
    t0, pictures = time.perf_counter(), {}
    drawn = [EpisodeFrames(title, c, [im.shape[1:] for im in images], pictures)
             for c, (_, images) in zip(curves, episodes, strict=True)]
    for d, (_, images) in zip(drawn, episodes, strict=True):
        key_frames = np.unique(np.linspace(0, len(images[0]) - 1, view_module.SHEET_FRAMES).round().astype(int))
        view_module._png(d.sheet([(int(t), [im[t] for im in images]) for t in key_frames]), work / "sheet.png")
    figures = time.perf_counter() - t0
    compose = encode = 0.0
    for d, (_, images) in zip(drawn, episodes, strict=True):  # one episode's frames in memory at a time
        t0 = time.perf_counter()
        frames = [d.compose(t, [im[t] for im in images]).copy() for t in range(len(images[0]))]
        t1 = time.perf_counter()
        [f.copy() for f in frames]  # the copies, which view does not make, timed to subtract them
        compose += (t1 - t0) - (time.perf_counter() - t1)
        t0 = time.perf_counter()
        video = view_module._Mp4(work / "part.mp4", d.width, d.height, m.fps)
        for f in frames:
            video.write(f)
        video.close(True)
        encode += time.perf_counter() - t0
    return {"figures_s": round(figures, 3), "compose_s": round(compose, 3), "encode_s": round(encode, 3),
            "codec": video.codec, "width": drawn[0].width, "height": drawn[0].height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        work = Path(work)
        store = ShardStore(work / "data")
        make_demo_data(store, DemoDataConfig(episodes=args.episodes), progress=False)  # the default, 64 px
        synthetic_label_set(store, "bench")
        m = store.manifest("base")
        keys = [k for k, f in m.features.items() if f["dtype"] in ("video", "image")]
        table = episode_table(store.shard_path("base"))
        chosen = [f"base:{i}" for i in table["episode_index"]]
        workers = pool_size(0, reserved=1)  # as view decodes
        view_module.view(store, "bench", work / "warm", episodes=chosen[:1], progress=False)  # imports, caches
        decode_s, view_s = [], []
        for _ in range(args.repeats):  # interleaved, so that drift in machine load hits both alike
            t0 = time.perf_counter()
            for _ in iter_episode_frames(store.shard_path("base"), m.features, keys, table, workers=workers):
                pass
            decode_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            facts = view_module.view(store, "bench", work / "out", episodes=chosen, force=True, progress=False)
            view_s.append(time.perf_counter() - t0)
        frames = int(table["length"].sum())
        assert sum(f["frames"] for f in facts) == frames
        split = parts(store, "bench", work)
        shutil.rmtree(work / "data")
    results = {
        "machine": machine_info(), "shard": {"episodes": len(table), "frames": frames, "cameras": len(keys),
                                             "image_size": int(m.features[keys[0]]["shape"][0]), "fps": m.fps},
        "decoder_workers": workers, "repeats": args.repeats, "decoding_s": [round(t, 3) for t in decode_s],
        "view_s": [round(t, 3) for t in view_s],
        "frames_per_s": {"decoding": round(frames / min(decode_s)), "view": round(frames / min(view_s), 1)},
        "video": {"codec": facts[0]["codec"], "width": facts[0]["width"], "height": facts[0]["height"]},
        "parts": split}
    print(f"{frames} frames in {len(table)} episodes: decoding {results['frames_per_s']['decoding']:,} frames/s, "
          f"view {results['frames_per_s']['view']:,} frames/s; parts {split}")
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
