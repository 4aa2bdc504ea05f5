"""Benchmarks of the labeler (not tests): prints figures and writes bench/results/labels.json.

1. Labeling overhead: `label()` end to end (decode both cameras, batch, run the value model,
   label math, write the label set) versus bare value-model inference over the same frames,
   already decoded and tokenized in memory, same batch size and torch threads. Target <= 1.15.
   Measured in two settings, because on a small CPU machine the answer depends on who gets
   the cores:
     split   torch runs the model on all cores but one, leaving one free for the decoder
             (ffmpeg processes and a reading thread; not pinned to it: the OS schedules them).
             This shows what decoding costs when it need not take the model's cores; it is not
             a measurement of a GPU machine, where the model's speed, and so the decoder's
             share, are different;
     shared  torch runs on every core, so decoding takes CPU time from the model.
   For the default tiny model, and (shared only) a wider one that costs more per frame.
2. Decoding alone: both cameras of the shard, one decoder thread, ffmpeg versus PyAV: wall
   time and CPU seconds (the process's and its ffmpeg children's).
3. Label math from stored values (what `relabel` runs) for 10M frames.
4. Per-task advantage quantiles in DuckDB over a 10M-row label set.

    .venv/bin/python bench/bench_labels.py [--frames 10000000] [--episodes 200]
"""

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import machine_info, synthetic_frames, write_results  # noqa: E402

from recap_data.data.demo_data import DemoDataConfig, make_demo_data  # noqa: E402
from recap_data.data.frames import load_frames, load_states  # noqa: E402
from recap_data.labels.infer import label  # noqa: E402
from recap_data.labels.labelset import LabelConfig, build_labels, write_label_set  # noqa: E402
from recap_data.store.db import connect  # noqa: E402
from recap_data.store.decode import decode_cameras, iter_episode_frames  # noqa: E402
from recap_data.store.store import ShardStore  # noqa: E402
from recap_data.value.model import load_value_checkpoint  # noqa: E402
from recap_data.value.returns import RewardConfig  # noqa: E402
from recap_data.value.train import ValueTrainConfig, train_value  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "labels.json"
CORES = os.cpu_count() or 1


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ffmpeg decoders)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_decoding(store: ShardStore, keys: list[str], repeats: int = 3) -> dict:
    m = store.manifest("base")
    out = {"frames": m.frames, "cameras": len(keys)}
    for decoder in ("ffmpeg", "pyav"):
        runs = []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), cpu_seconds()
            for _ in iter_episode_frames(store.shard_path("base"), m.features, keys, threads=1, decoder=decoder):
                pass
            runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
        wall, cpu = min(runs)
        out[decoder] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "frames_per_s": round(m.frames / wall)}
        print(f"decoding {m.frames} frames x {len(keys)} cameras with {decoder}: {wall:.2f} s, {cpu:.2f} CPU s")
    return out


def bench_overhead(store: ShardStore, work: Path, width: int, layers: int, threads: int, setting: str,
                   repeats: int, batch_size: int = 64) -> dict:
    ckpt_dir = work / f"value-{width}x{layers}"
    if not ckpt_dir.exists():
        train_value(store, {"base": 1.0}, ckpt_dir, ValueTrainConfig(steps=5, tiny_width=width, tiny_layers=layers),
                    RewardConfig(), progress=False)
    ckpt = load_value_checkpoint(ckpt_dir)
    m = store.manifest("base")
    keys = ckpt.model.cfg.camera_keys
    # Bare inference: every input already in memory as tensors (on the device label() uses, with
    # the same autocast); only the model runs.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ckpt.model.to(device)
    cams = decode_cameras(store.shard_path("base"), m.features, keys, m.frames)
    images = torch.from_numpy(np.stack([cams[k] for k in keys], 1)).to(device)  # (F, K, H, W, 3) uint8
    states = torch.from_numpy(load_states(store, "base")).to(device)
    frames = load_frames(store, ["base"], with_state=False).sort_values("index")
    ids, mask = (t.to(device) for t in ckpt.encoder(frames["task"].tolist()))
    torch.set_num_threads(threads)
    bare, labelled = [], []
    for r in range(repeats):  # interleaved, so that drift in machine load hits both alike
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            for s in range(0, m.frames, batch_size):
                pixels = images[s:s + batch_size].permute(0, 1, 4, 2, 3).float() / 255  # (B, K, 3, H, W)
                model.values(model(pixels, states[s:s + batch_size], ids[s:s + batch_size],
                                   mask[s:s + batch_size])).double().cpu()  # the copy waits for the device
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        label(store, ["base"], ckpt_dir, f"bench-{width}x{layers}-{threads}-{r}", RewardConfig(),
              LabelConfig(batch_size=batch_size), progress=False)
        labelled.append(time.perf_counter() - t0)
    torch.set_num_threads(CORES)
    ratio = min(labelled) / min(bare)
    out = {"model": f"tiny_width {width}, tiny_layers {layers}", "setting": setting, "torch_threads": threads,
           "frames": m.frames, "batch_size": batch_size, "bare_inference_s": round(min(bare), 3),
           "label_end_to_end_s": round(min(labelled), 3), "ratio": round(ratio, 3), "target": 1.15,
           "bare_frames_per_s": round(m.frames / min(bare)), "label_frames_per_s": round(m.frames / min(labelled))}
    print(f"labeling {m.frames} frames, model {width}x{layers}, {setting} ({threads} torch threads): bare inference "
          f"{out['bare_inference_s']} s, label end to end {out['label_end_to_end_s']} s, ratio {out['ratio']} "
          "(target <= 1.15)")
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
    # The query's answer against numpy's on the same labels (a benchmark of a wrong answer is worthless).
    task, quantiles, positive = min(rows)
    mine = labels[labels["task"] == task]
    np.testing.assert_allclose(quantiles, np.quantile(mine["advantage"], [0.05, 0.25, 0.5, 0.75, 0.95]), rtol=1e-9)
    assert abs(positive - mine["indicator"].mean()) < 1e-12 and len(rows) == labels["task"].nunique()
    print(f"DuckDB per-task advantage quantiles over {len(labels):,} labelled frames: {min(times):.2f} s")
    return {"frames": len(frames), "label_math_s": round(math_s, 3),
            "label_math_frames_per_s": round(len(frames) / math_s), "duckdb_quantiles_s": round(min(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000_000)
    parser.add_argument("--episodes", type=int, default=200)  # the default base shard: 14k frames
    args = parser.parse_args()
    results = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        store = ShardStore(Path(work) / "data")
        m = make_demo_data(store, DemoDataConfig(episodes=args.episodes), progress=False)  # the default, 64 px
        results["decoding"] = bench_decoding(store, sorted(k for k, f in m.features.items() if f["dtype"] == "video"))
        if torch.cuda.is_available():  # the model on the GPU: the CPU cores are the decoder's
            runs = [(64, 2, CORES, "gpu", 5), (256, 4, CORES, "gpu", 2)]
        else:  # the default tiny model, and a wider one
            runs = [(64, 2, CORES, "shared", 5), (256, 4, CORES, "shared", 2)]
            if CORES > 1:
                runs.insert(0, (64, 2, CORES - 1, "split", 5))
        results["overhead"] = [bench_overhead(store, Path(work), *run) for run in runs]
        results["ten_million"] = bench_math_and_query(Path(work), args.frames)
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
