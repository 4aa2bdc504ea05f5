"""What the benchmarks share: machine facts, the work directory and the results file, synthetic episode tables, and the
statistics the RECAP benchmarks report (AUC, a mean's t interval over seeds, the value model's
error beside other predictors of the return)."""

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}
    if "torch" in sys.modules:  # only where the benchmark uses torch
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def git_commit() -> str:
    """The short hash of the checkout the benchmark runs from, recorded beside its figures."""
    return os.popen(f"git -C {Path(__file__).resolve().parents[1]} rev-parse --short HEAD").read().strip()


def parse_resumable(parser: argparse.ArgumentParser, results: Path, prefix: str) -> argparse.Namespace:
    """Add --work (a working directory a rerun resumes from; a temporary one by default) and
    --results to a benchmark's parser, and parse its arguments."""
    parser.add_argument("--work", type=Path, help="working directory, reused to resume (default: a temporary one)")
    parser.add_argument("--results", type=Path, default=results)
    args = parser.parse_args()
    args.work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    return args


def read_results(path: Path) -> dict:
    """A results file kept by regime, as far as it goes: a run of some regimes keeps the others'."""
    return json.loads(path.read_text()) if path.exists() else {"regimes": {}}


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


def synthetic_frames(n_frames: int, rng: np.random.Generator) -> pd.DataFrame:
    """About n_frames frames in episodes of 20-180 frames (mean 100), 10 tasks, 80% successes:
    shard, episode_index, frame_index, index, task (categorical), success."""
    lengths = rng.integers(20, 181, size=n_frames // 100)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    tasks = pd.Categorical.from_codes(episode % 10, [f"task {i}" for i in range(10)])
    return pd.DataFrame({"shard": "base", "episode_index": episode, "frame_index": np.arange(len(episode)) - starts,
                         "index": np.arange(len(episode)), "task": tasks,
                         "success": (rng.random(len(lengths)) < 0.8)[episode]})


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t, df = n - 1


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN with one outcome only."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t interval over seeds, clipped to [0, 1] (a rate's bounds)."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    half = T95.get(len(x) - 1, 1.96) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), max(0.0, float(x.mean() - half)), min(1.0, float(x.mean() + half))


def value_bounds(store, train: pd.DataFrame, held: pd.DataFrame, task: int, seed: int = 0,
                 value_ckpt: Path | None = None) -> dict:
    """MAE on the held-out frames `held` (a label set) of the predictors fitted on the training labels
    `train` (predictor_bounds) and of the value model that labelled `held` (value_model_errors)."""
    return {**predictor_bounds(store, train, held, task, seed), **value_model_errors(store, held, value_ckpt)}


def predictor_bounds(store, train: pd.DataFrame, held: pd.DataFrame, task: int, seed: int = 0) -> dict:
    """MAE on the held-out frames `held` of predictors fitted on the training labels `train`; they read
    the frames' states, times, outcomes and returns, never the labels' values:
    outcome_oracle   the training frames' median return for the same outcome and time (5-frame bins)
    state_mlp        an MLP with L1 loss (a median predictor) on state, time and distances to goal and
                     decoy; its step count is chosen on held-out training episodes, not on `held`
    state_mlp_mean   the same MLP with squared loss (a mean predictor)
    state_time_mlp   the L1 MLP on the state and time alone, without the distances: what the value
                     model's inputs other than the cameras tell (the distances need the scene)
    constant         the training frames' median return (the best constant under absolute error)"""
    import torch

    from recap_data.data.frames import load_states
    from recap_data.world.env import task_layout

    goal, decoy, _ = task_layout(task)

    def features(labels):
        shard, index = labels["shard"].astype(str).to_numpy(), labels["index"].to_numpy()
        state = np.zeros((len(labels), 8), np.float32)  # (F, 8)
        for s in np.unique(shard):
            state[shard == s] = load_states(store, s)[index[shard == s]]
        pos = state[:, :3]
        return np.column_stack([state, labels["frame_index"] / 100.0, np.linalg.norm(pos - goal, axis=1),
                                np.linalg.norm(pos - decoy, axis=1)]).astype(np.float32)  # (F, 11)

    def key(d):  # outcome and 5-frame time bin
        return d["success"].astype(str) + ":" + (d["frame_index"] // 5).astype(str)

    y = train["return_norm"].to_numpy(np.float32)
    medians = train.groupby(key(train))["return_norm"].median()
    oracle = key(held).map(medians).fillna(float(np.median(y))).to_numpy()
    x, x_held = features(train), features(held)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, x_held = torch.tensor((x - mean) / std), torch.tensor((x_held - mean) / std)
    episode = (train["shard"].astype(str) + ":" + train["episode_index"].astype(str)).to_numpy()
    val = np.isin(episode, np.random.default_rng(seed).permutation(np.unique(episode))[: len(np.unique(episode)) // 10])

    def mlp(loss, inputs: int = x.shape[1]) -> np.ndarray:  # on the first `inputs` features
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(inputs, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, 1))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        fit, yt = torch.tensor(np.flatnonzero(~val)), torch.tensor(y)
        best = (float("inf"), None)
        for step in range(1, 6001):
            i = fit[torch.randint(0, len(fit), (256,))]
            error = net(x[i, :inputs]).squeeze(-1) - yt[i]  # (256,)
            opt.zero_grad()
            loss(error).mean().backward()
            opt.step()
            if step % 500 == 0:
                with torch.no_grad():
                    val_loss = float(loss(net(x[val, :inputs]).squeeze(-1) - yt[val]).mean())
                    if val_loss < best[0]:
                        best = (val_loss, net(x_held[:, :inputs]).squeeze(-1).numpy())
        return best[1]

    return _maes(held, {"outcome_oracle_mae": oracle, "state_mlp_mae": mlp(torch.abs),
                        "state_mlp_mean_mae": mlp(torch.square),
                        "state_time_mlp_mae": mlp(torch.abs, inputs=9),  # the 8 state dimensions and the time
                        "constant_mae": np.median(y)})


def value_model_errors(store, held: pd.DataFrame, value_ckpt: Path | None = None) -> dict:
    """MAE on the held-out frames `held` of
    value_model      the labels' value: the mean of the value model's distribution
    value_model_median  the median of that distribution (with `value_ckpt`, the checkpoint that
                     labelled `held`): like for like beside the median predictors, since where
                     outcomes split the returns in two, a mean lies between them and pays for it"""
    out = {"value_model_mae": held["value"].to_numpy()}
    if value_ckpt is not None:
        out["value_model_median_mae"] = value_medians(store, value_ckpt, held)
    return _maes(held, out)


def _maes(held: pd.DataFrame, predictions: dict) -> dict:
    """Each prediction's (an array over `held`'s frames, or one number) MAE against their returns."""
    y = held["return_norm"].to_numpy(np.float32)
    return {k: float(np.abs(np.asarray(v) - y).mean()) for k, v in predictions.items()}


def value_medians(store, value_ckpt: Path, held: pd.DataFrame) -> np.ndarray:
    """The median of the checkpoint's predicted return distribution for every frame of `held`, in order."""
    from recap_data.data.frame_dataset import ShardFrames
    from recap_data.data.frames import load_frames
    from recap_data.label_math.tables import compute_returns
    from recap_data.value.model import evaluate, load_value_checkpoint

    ckpt = load_value_checkpoint(value_ckpt)
    frames, _ = compute_returns(load_frames(store, list(pd.unique(held["shard"].astype(str)))), ckpt.reward)
    scored = evaluate(ckpt.model, ShardFrames(store, frames, ckpt.model.cfg.camera_keys), ckpt.encoder, 64, 0, "cpu",
                      progress=False)  # rows in the order of `frames`
    median = pd.Series(scored["median"].to_numpy(), index=pd.MultiIndex.from_arrays(
        [frames["shard"].astype(str).to_numpy(), frames["index"].to_numpy()]))
    return median.loc[list(zip(held["shard"].astype(str), held["index"], strict=True))].to_numpy()


def value_inputs(ckpt, store, shard: str, device) -> tuple:
    """Every frame of `shard` as the value model's inputs, decoded and tokenized in memory on
    `device`: (images (F, K, H, W, 3) uint8, states (F, S), ids, mask), in frame order."""
    import torch

    from recap_data.data.frames import load_frames, load_states
    from recap_data.store.decode import decode_cameras

    m = store.manifest(shard)
    keys = ckpt.model.cfg.camera_keys
    cams = decode_cameras(store.shard_path(shard), m.features, keys, m.frames)
    images = torch.from_numpy(np.stack([cams[k] for k in keys], 1)).to(device)  # (F, K, H, W, 3) uint8
    states = torch.from_numpy(load_states(store, shard)).to(device)
    frames = load_frames(store, [shard], with_state=False).sort_values("index")
    ids, mask = (t.to(device) for t in ckpt.encoder(frames["task"].tolist()))
    return images, states, ids, mask


def bare_inference_s(model, inputs: tuple, batch_size: int, device) -> float:
    """Seconds for the value model alone over `inputs` (value_inputs), with the batches, dtype
    handling and autocast `label` uses on that device, values copied back as `label` does."""
    import time

    import torch

    images, states, ids, mask = inputs
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        for s in range(0, len(images), batch_size):
            pixels = images[s:s + batch_size].permute(0, 1, 4, 2, 3).float() / 255  # (B, K, 3, H, W)
            model.values(model(pixels, states[s:s + batch_size], ids[s:s + batch_size],
                               mask[s:s + batch_size])).double().cpu()  # the copy waits for the device
    return time.perf_counter() - started
