"""Benchmarks of the labeler (not tests): prints figures and writes bench/results/labels.json.

1. Labeling overhead: `label()` end to end (stream-decode both cameras, batch, run the value
   model, label math, write the label set) versus bare value-model inference over the same
   frames, already decoded and tokenized in memory, same batch size. Target ratio <= 1.15.
   Decoding runs in a background thread; on 2 cores it competes with the model's threads, so
   the ratio depends on how much the model costs per frame: measured for the default tiny
   model and for a wider one.
2. Label math from stored values (what `relabel` runs) for 10M frames.
3. Per-task advantage quantiles in DuckDB over a 10M-row label set.

    .venv/bin/python bench/bench_labels.py [--frames 10000000] [--episodes 60]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import machine_info, synthetic_frames, write_results  # noqa: E402

from recap_data.db import connect  # noqa: E402
from recap_data.decode import decode_cameras  # noqa: E402
from recap_data.demo_data import DemoDataConfig, make_demo_data  # noqa: E402
from recap_data.frames import load_frames, load_states  # noqa: E402
from recap_data.label import label  # noqa: E402
from recap_data.labelset import LabelConfig, build_labels, write_label_set  # noqa: E402
from recap_data.returns import RewardConfig  # noqa: E402
from recap_data.store import ShardStore  # noqa: E402
from recap_data.train_value import ValueTrainConfig, train_value  # noqa: E402
from recap_data.value_model import load_value_checkpoint  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "labels.json"


def bench_overhead(work: Path, episodes: int, width: int, layers: int, batch_size: int = 64,
                   repeats: int = 3) -> dict:
    store = ShardStore(work / "data")
    make_demo_data(store, DemoDataConfig(episodes=episodes), progress=False)  # the default base shard, 64 px
    ckpt_dir = work / f"value-{width}x{layers}"
    train_value(store, {"base": 1.0}, ckpt_dir, ValueTrainConfig(steps=5, tiny_width=width, tiny_layers=layers),
                RewardConfig(), progress=False)
    ckpt = load_value_checkpoint(ckpt_dir)
    m = store.manifest("base")
    keys = ckpt.model.cfg.camera_keys
    # Bare inference: every input already in memory as tensors; only the model runs.
    cams = decode_cameras(store.shard_path("base"), m.features, keys, m.frames)
    images = torch.from_numpy(np.stack([cams[k] for k in keys], 1))  # (F, K, H, W, 3) uint8
    states = torch.from_numpy(load_states(store, "base"))
    frames = load_frames(store, ["base"], with_state=False).sort_values("index")
    ids, mask = ckpt.encoder(frames["task"].tolist())
    bare, labelled = [], []
    for r in range(repeats):  # interleaved, so that drift in machine load hits both alike
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, m.frames, batch_size):
                pixels = images[s:s + batch_size].permute(0, 1, 4, 2, 3).float() / 255  # (B, K, 3, H, W)
                ckpt.model.values(ckpt.model(pixels, states[s:s + batch_size], ids[s:s + batch_size],
                                             mask[s:s + batch_size]))
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        label(store, ["base"], ckpt_dir, f"bench-{width}x{layers}-{r}", RewardConfig(),
              LabelConfig(batch_size=batch_size), progress=False)
        labelled.append(time.perf_counter() - t0)
    out = {"model": f"tiny_width {width}, tiny_layers {layers}", "frames": m.frames, "batch_size": batch_size,
           "bare_inference_s": round(min(bare), 3),
           "label_end_to_end_s": round(min(labelled), 3), "ratio": round(min(labelled) / min(bare), 3),
           "bare_frames_per_s": round(m.frames / min(bare)), "label_frames_per_s": round(m.frames / min(labelled))}
    print(f"labeling {m.frames} frames, model {width}x{layers}: bare inference {out['bare_inference_s']} s, "
          f"label end to end {out['label_end_to_end_s']} s, ratio {out['ratio']} (target <= 1.15)")
    return out


def synthetic_labels(n_frames: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = synthetic_frames(n_frames, rng)
    return frames.assign(is_intervention=False, value=rng.uniform(-1, 0, len(frames)))


def bench_math_and_query(work: Path, n_frames: int) -> dict:
    frames = synthetic_labels(n_frames)
    reward = RewardConfig(normalization="global")
    t0 = time.perf_counter()
    labels, per_task = build_labels(frames, reward, LabelConfig(), {t: 1600.0 for t in frames["task"].cat.categories})
    math_s = time.perf_counter() - t0
    print(f"label math: {len(frames):,} frames in {math_s:.2f} s ({len(frames) / math_s / 1e6:.2f} M frames/s)")
    store = ShardStore(work / "big")
    store.shards_dir.mkdir(parents=True)
    labels["task"] = labels["task"].astype(str)
    write_label_set(store, "big", labels, per_task, value_checkpoint={"path": "-", "digest": "-"},
                    shards=[{"id": "base", "digest": "-", "episodes": int(frames["episode_index"].nunique()),
                             "frames": len(frames)}], reward=reward, cfg=LabelConfig(), normalizers={})
    con = connect(store.root, labels="big")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        rows = con.execute("SELECT task, quantile_cont(advantage, [0.05, 0.25, 0.5, 0.75, 0.95]), "
                           "avg(indicator::INT) FROM labels GROUP BY task").fetchall()
        times.append(time.perf_counter() - t0)
    assert len(rows) == 10
    print(f"DuckDB per-task advantage quantiles over {len(labels):,} labelled frames: {min(times):.2f} s")
    return {"frames": len(frames), "label_math_s": round(math_s, 3),
            "label_math_frames_per_s": round(len(frames) / math_s), "duckdb_quantiles_s": round(min(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000_000)
    parser.add_argument("--episodes", type=int, default=60)
    args = parser.parse_args()
    results = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        # The default tiny model, and a wider one: decoding costs the same per frame, the model more.
        results["overhead"] = [bench_overhead(Path(work), args.episodes, width, layers)
                               for width, layers in ((64, 2), (256, 4))]
        results["ten_million"] = bench_math_and_query(Path(work), args.frames)
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
