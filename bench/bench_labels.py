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
2. Decoding alone: iter_episode_frames over every episode of the shard, both cameras, as the
   labeler and the trainers consume it (timestamps demuxed, runs planned, decoder jobs started,
   seeking, decoding, colour conversion, pipes read into arrays, episodes delivered in order;
   the consumer does nothing with them), with a pool of 1 and 2 decoder processes (ffmpeg) and,
   for comparison, PyAV on 1 and 2 threads: wall time and CPU seconds (the process's and its
   ffmpeg children's), best of 3, the settings interleaved. Then the same with ffmpeg on a small
   shard of 224-px cameras (12 episodes), for the per-core rate at a real model's image size.
3. Label math from stored values in memory (what `relabel` runs) for 10M frames: the compiled
   kernels (best of 5 and the first run, whose fresh memory costs page faults), plain numpy
   and the pandas reference, in one run; the three answers are compared.
4. Per-task advantage quantiles in DuckDB over that 10M-row label set.
5. The label math from a plain pandas frame of 4M frames (shard and task as Python strings, one
   object per value or one per row, as DuckDB's .df() gives them) beside the categorical frame:
   the strings are coded once (a compare per row, a hash per run), target 20M frames/s.

    .venv/bin/python bench/bench_labels.py [--frames 10000000] [--episodes 200] [--parts math,strings]
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # label_reference: the pandas oracle

import numpy as np
import pandas as pd
import torch
from common import bare_inference_s, machine_info, synthetic_frames, value_inputs, write_results
from label_reference import reference_labels, threshold

from recap_data.data.demo_data import DemoDataConfig, make_demo_data
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels
from recap_data.labels.infer import label
from recap_data.labels.write import LabelConfig, write_label_set
from recap_data.store.db import connect
from recap_data.store.decode import RUN_BYTES, iter_episode_frames
from recap_data.store.store import ShardStore
from recap_data.value.model import load_value_checkpoint
from recap_data.value.train import ValueTrainConfig, train_value

RESULTS = Path(__file__).parent / "results" / "labels.json"
CORES = os.cpu_count() or 1


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ffmpeg decoders)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def decode_rates(store: ShardStore, shard: str, settings: list[tuple[str, int]], repeats: int) -> dict:
    """Every episode of `shard` through iter_episode_frames under each (decoder, workers) setting."""
    m = store.manifest(shard)
    keys = sorted(k for k, f in m.features.items() if f["dtype"] == "video")
    runs: dict = {s: [] for s in settings}
    for _ in range(repeats):  # interleaved, so that drift in machine load hits every setting alike
        for decoder, workers in settings:
            t0, c0 = time.perf_counter(), cpu_seconds()
            for _ in iter_episode_frames(store.shard_path(shard), m.features, keys, decoder=decoder, workers=workers):
                pass
            runs[decoder, workers].append((time.perf_counter() - t0, cpu_seconds() - c0))
    images = m.frames * len(keys)
    out = {"shard": shard, "episodes": m.episodes, "frames": m.frames, "cameras": len(keys),
           "image_size": int(m.features[keys[0]]["shape"][0]),
           "run_frames": RUN_BYTES // int(np.prod(m.features[keys[0]]["shape"])), "settings": []}
    for (decoder, workers), times in runs.items():
        wall, cpu = min(times)
        out["settings"].append({"decoder": decoder, "workers": workers, "wall_s": round(wall, 3),
                                "cpu_s": round(cpu, 3), "frames_per_s": round(m.frames / wall),
                                "camera_frames_per_s": round(images / wall),
                                "camera_frames_per_cpu_s": round(images / cpu)})
        print(f"decoding {shard}: {m.frames} frames x {len(keys)} cameras of {out['image_size']} px, {decoder}, "
              f"{workers} worker(s): {wall:.2f} s, {cpu:.2f} CPU s, {images / wall:,.0f} camera frames/s, "
              f"{images / cpu:,.0f} per CPU second")
    return out


def bench_decoding(store: ShardStore, work: Path, repeats: int = 3) -> dict:
    """The base shard (64 px) with 1 and 2 ffmpeg processes and PyAV threads; then a small shard of
    224-px cameras (pi0's size; in a store of its own, as a store holds one schema) with 1 and 2
    ffmpeg processes, for the per-core rate at a size that a real value model takes."""
    wide = ShardStore(work / "wide")
    make_demo_data(wide, DemoDataConfig(shard_id="wide", episodes=12, image_size=224), progress=False)
    shards = [decode_rates(store, "base", [("ffmpeg", 1), ("ffmpeg", 2), ("pyav", 1), ("pyav", 2)], repeats),
              decode_rates(wide, "wide", [("ffmpeg", 1), ("ffmpeg", 2)], repeats)]
    return {"repeats": repeats, "shards": shards}


def bench_overhead(store: ShardStore, work: Path, width: int, layers: int, threads: int, setting: str,
                   repeats: int, batch_size: int = 64) -> dict:
    ckpt_dir = work / f"value-{width}x{layers}"
    if not ckpt_dir.exists():
        train_value(store, {"base": 1.0}, ckpt_dir, ValueTrainConfig(steps=5, tiny_width=width, tiny_layers=layers),
                    RewardConfig(), progress=False)
    ckpt = load_value_checkpoint(ckpt_dir)
    m = store.manifest("base")
    # Bare inference: every input already in memory as tensors (on the device label() uses, with
    # the same autocast); only the model runs.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ckpt.model.to(device)
    inputs = value_inputs(ckpt, store, "base", device)
    torch.set_num_threads(threads)
    bare, labelled = [], []
    for r in range(repeats):  # interleaved, so that drift in machine load hits both alike
        bare.append(bare_inference_s(model, inputs, batch_size, device))
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
    """Stored values as a label table holds them: sorted by (shard, episode, frame), shard and
    task dictionary-encoded (categorical), a value per frame, 1% interventions."""
    rng = np.random.default_rng(0)
    frames = synthetic_frames(n_frames, rng)
    return frames.assign(shard=frames["shard"].astype("category"), is_intervention=rng.random(len(frames)) < 0.01,
                         value=rng.uniform(-1, 0, len(frames)))


def numpy_labels(frames: pd.DataFrame, reward: RewardConfig, cfg: AdvantageConfig, normalizers: dict) -> pd.DataFrame:
    """The same formulas in plain numpy on sorted frames (vectorized, one np.partition per task; no
    pandas, no compiled code): the baseline the issue names."""
    shard, episode = frames["shard"].cat.codes.to_numpy(), frames["episode_index"].to_numpy()
    t = frames["frame_index"].to_numpy()
    n = len(t)
    starts = np.flatnonzero(np.r_[True, (shard[1:] != shard[:-1]) | (episode[1:] != episode[:-1])])
    lengths = np.diff(np.r_[starts, n])
    length = np.repeat(lengths, lengths)  # (F,)
    failed = ~frames["success"].to_numpy(bool)
    codes, tasks = pd.factorize(frames["task"], sort=True)
    divisor = np.array([normalizers[task] for task in tasks])[codes]  # (F,)
    mc = -(length - 1 - t) - reward.c_fail * failed
    norm = mc / divisor
    ahead = t + cfg.n_steps < length
    nstep = np.where(ahead, -float(cfg.n_steps), mc) / divisor
    value = frames["value"].to_numpy()
    value_next = np.where(ahead, value[np.minimum(np.arange(n) + cfg.n_steps, n - 1)], 0.0)
    advantage = nstep + value_next - value
    eps = np.array([threshold(advantage[codes == g], cfg.positive_fraction) for g in range(len(tasks))])
    return pd.DataFrame({"reward": np.where(t == length - 1, np.where(failed, -reward.c_fail, 0.0), -1.0),
                         "mc_return": mc, "return_norm": norm,
                         "return_bin": np.clip(np.floor((norm + 1) * reward.number_of_bins).astype(np.int64), 0,
                                               reward.number_of_bins - 1),
                         "nstep_return": nstep, "value_next": value_next, "advantage": advantage,
                         "epsilon": eps[codes], "indicator": (advantage > eps[codes])
                         | frames["is_intervention"].to_numpy(bool)}, copy=False)


def bench_math(n_frames: int, repeats: int = 5) -> dict:
    """Label math from stored values in memory: the compiled kernels (build_labels, what relabel
    runs), plain numpy and today's pandas reference, one run, answers compared."""
    frames = synthetic_labels(n_frames)
    reward, cfg = RewardConfig(normalization="global"), AdvantageConfig()
    normalizers = {t: 1600.0 for t in frames["task"].cat.categories}
    build_labels(frames.head(1000), reward, cfg, normalizers)  # compile (or load numba's cache): not timed
    kernel_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        labels, per_task = build_labels(frames, reward, cfg, normalizers)
        kernel_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    plain = numpy_labels(frames, reward, cfg, normalizers)
    numpy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref, ref_tasks = reference_labels(frames, reward, cfg, normalizers)
    reference_s = time.perf_counter() - t0
    pd.testing.assert_frame_equal(labels, ref, check_exact=True)  # the kernels' answer is the reference's
    assert ref_tasks == per_task
    for c in plain.columns:
        np.testing.assert_array_equal(plain[c].to_numpy(), ref[c].to_numpy())
    rate = {"kernels_best": len(frames) / min(kernel_s), "kernels_first": len(frames) / kernel_s[0],
            "plain_numpy": len(frames) / numpy_s, "reference_pandas": len(frames) / reference_s}
    print(f"label math over {len(frames):,} frames: kernels {min(kernel_s):.3f} s best of {repeats} "
          f"({rate['kernels_best'] / 1e6:.1f}M frames/s; first run {kernel_s[0]:.3f} s), plain numpy {numpy_s:.2f} s "
          f"({rate['plain_numpy'] / 1e6:.1f}M/s), pandas reference {reference_s:.2f} s "
          f"({rate['reference_pandas'] / 1e6:.2f}M/s)")
    return {"frames": len(frames), "kernels_s": [round(x, 4) for x in kernel_s], "plain_numpy_s": round(numpy_s, 3),
            "reference_s": round(reference_s, 3), "frames_per_s": {k: round(v) for k, v in rate.items()},
            "target_frames_per_s": 20_000_000, "labels": labels, "per_task": per_task}


def bench_strings(n_frames: int = 4_000_000, repeats: int = 3) -> dict:
    """build_labels from a plain pandas frame, whose shard and task are Python strings, beside the
    categorical frame a label table reads as: best of `repeats`, answers compared. Strings come one
    object per distinct value (astype(object), as pyarrow's to_pandas shares them) or one object
    per row (astype(str), as DuckDB's .df() makes them)."""
    frames = synthetic_labels(n_frames)
    frames["task"] = frames["task"].cat.rename_categories(lambda t: f"put the moka pot on the stove, variant {t}")
    reward, cfg = RewardConfig(normalization="global"), AdvantageConfig()
    normalizers = {t: 1600.0 for t in frames["task"].cat.categories}
    build_labels(frames.head(1000), reward, cfg, normalizers)  # compile (or load numba's cache): not timed
    inputs = {"categorical": frames,
              "strings_shared": frames.astype({"shard": object, "task": object}),
              "strings_per_row": frames.astype({"shard": str, "task": str})}
    out, want = {"frames": len(frames), "target_frames_per_s": 20_000_000}, None
    for name, table in inputs.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            labels, _ = build_labels(table, reward, cfg, normalizers)
            times.append(time.perf_counter() - t0)
        labels = labels.astype({"shard": str, "task": str})
        if want is None:
            want = labels
        pd.testing.assert_frame_equal(labels, want, check_exact=True)  # the same labels from every input
        out[name] = {"seconds": round(min(times), 4), "frames_per_s": round(len(frames) / min(times))}
        print(f"label math from {name} shard/task over {len(frames):,} frames: {min(times):.3f} s best of "
              f"{repeats} ({len(frames) / min(times) / 1e6:.1f}M frames/s; target 20M)")
    return out


def bench_query(work: Path, math: dict) -> dict:
    labels, per_task, reward = math.pop("labels"), math.pop("per_task"), RewardConfig(normalization="global")
    store = ShardStore(work / "big")
    store.shards_dir.mkdir(parents=True)
    labels["task"] = labels["task"].astype(str)
    write_label_set(store, "big", labels, per_task, value_checkpoint={"path": "-", "digest": "-"},
                    shards=[{"id": "base", "digest": "-", "episodes": int(labels["episode_index"].nunique()),
                             "frames": len(labels)}], reward=reward, advantage=AdvantageConfig(), cfg=LabelConfig(),
                    normalizers={})
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
    return {"frames": len(labels), "duckdb_quantiles_s": round(min(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000_000)
    parser.add_argument("--episodes", type=int, default=200)  # the default base shard: 14k frames
    parser.add_argument("--parts", default="decoding,overhead,math,strings",
                        help="comma-separated parts to run; the others keep their figures in labels.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    every = {"decoding", "overhead", "math", "strings"}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() and parts != every else {}
    results["machine"] = machine_info()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as work:
        if parts & {"decoding", "overhead"}:
            store = ShardStore(Path(work) / "data")
            make_demo_data(store, DemoDataConfig(episodes=args.episodes), progress=False)  # the default, 64 px
        if "decoding" in parts:
            results["decoding"] = bench_decoding(store, Path(work))
        if "overhead" in parts:
            if torch.cuda.is_available():  # the model on the GPU: the CPU cores are the decoder's
                runs = [(64, 2, CORES, "gpu", 5), (256, 4, CORES, "gpu", 2)]
            else:  # the default tiny model, and a wider one
                runs = [(64, 2, CORES, "shared", 5), (256, 4, CORES, "shared", 2)]
                if CORES > 1:
                    runs.insert(0, (64, 2, CORES - 1, "split", 5))
            results["overhead"] = [bench_overhead(store, Path(work), *run) for run in runs]
        if "strings" in parts:
            results["strings"] = bench_strings()
        if "math" in parts:
            results.pop("ten_million", None)  # the figures of the earlier, pandas-only label math
            math = bench_math(args.frames)
            results["query"] = bench_query(Path(work), math)
            results["math"] = math
    write_results(RESULTS, results)

if __name__ == "__main__":
    main()
