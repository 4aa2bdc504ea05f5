"""`recap-data train value`: fit the distributional value model on shards, through accelerate.

Reads shards (a list or a weighted mixture), builds bin targets with `returns`, holds out whole
episodes (per task), trains with cross-entropy, evaluates the held-out episodes and writes an
atomic checkpoint directory:

  model.safetensors  config.json  tokenizer/  normalization.json  reward.json  provenance.json
  metrics.json       held-out cross-entropy, bin accuracy, value MAE (and the best constant's), per task
                     (--metrics copies the headline: mae, constant_mae, loss)
  loss.csv           step, train_loss, lr (for dvc plots)

One process by default; `accelerate launch --config_file pipelines/accelerate/multi_gpu.yaml
-m recap_data.cli.main train value ...` runs data-parallel on many GPUs (bf16 there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recap_data.config import (
    Choice,
    Count,
    FieldError,
    Float,
    Int,
    Natural,
    NonNegative,
    Positive,
    Seed,
    check_fields,
    param,
)
from recap_data.errors import RecapError
from recap_data.label_math.config import RewardConfig
from recap_data.label_math.tables import compute_returns
from recap_data.store.schema import STATE_KEY, camera_keys
from recap_data.store.store import ShardStore
from recap_data.train.checkpoint import write_training_run
from recap_data.train.loop import run_provenance, start_run, train_loop

if TYPE_CHECKING:  # pandas is imported where it is used, not with the CLI
    import pandas as pd

# torch, transformers and LeRobot are imported inside train_value(): the CLI builds its options
# from ValueTrainConfig and must start fast.


@dataclass
class ValueTrainConfig:
    """Value-function model and training."""

    section = "value"  # its params.yaml section (a class attribute, not a field)

    size: Choice("tiny", "real") = param(
        "tiny", "tiny: small random-weight transformers for CPU; real: pretrained local paths")
    vision_path: str | None = param(None, "real: local SigLIP directory")
    text_path: str | None = param(None, "real: local Gemma 3 directory (weights and tokenizer)")
    image_size: Int(8, 1024) = param(32, "tiny: image pixels fed to the vision tower (real: the tower's own size)")
    max_text_tokens: Count = param(48, "task text limit in tokens; a longer task is an error")
    tiny_width: Int(8, 4096) = param(64, "tiny: hidden size of both towers")
    tiny_layers: Count = param(2, "tiny: layers of each tower")
    state_mlp: bool = param(True, "add an MLP of the state to the read-out (a short path for what the state tells)")
    time_input: bool = param(False, "the frame's index in its episode as one more state input (the time left "
                             "sets a capped episode's return)")
    steps: Count = param(500, "optimizer steps")
    batch_size: Count = param(32, "samples per step and process")
    lr: Positive = param(1e-3, "peak AdamW learning rate (linear warm-up, cosine decay)")
    weight_decay: NonNegative = param(0.01, "AdamW weight decay")
    warmup_steps: Natural = param(20, "linear warm-up steps")
    holdout_fraction: Float(0, 1, high_open=True) = param(
        0.1, "fraction of each task's episodes held out for evaluation")
    eval_batch_size: Count = param(64, "samples per batch when evaluating")
    preload_mb: Natural = param(4096, "decode all camera frames into memory once when they fit in this many MB")
    decode_workers: Natural = param(0, "camera decoder processes at once when preloading; 0: one per core")
    num_workers: Natural = param(0, "DataLoader worker processes (0: main process, fastest for in-memory frames)")
    log_every: Count = param(10, "steps per row of loss.csv")
    seed: Seed = param(0, "seeds the model, the held-out split and the sampler")
    bf16: bool = param(True, "bf16 mixed precision on GPU (CPU always trains in float32)")

    def validate(self) -> ValueTrainConfig:
        check_fields(self)
        if self.tiny_width % 2:
            raise FieldError(self.section, "tiny_width", f"= {self.tiny_width} is invalid: use an even number "
                             "(two attention heads)")
        return self

    def model_config(self, camera_keys: list[str], state_dim: int, bins: int):
        from recap_data.value.model import ValueModelConfig

        return ValueModelConfig(size=self.size, vision_path=self.vision_path, text_path=self.text_path,
                                camera_keys=camera_keys, state_dim=state_dim, number_of_bins=bins,
                                image_size=self.image_size, max_text_tokens=self.max_text_tokens,
                                tiny_width=self.tiny_width, tiny_layers=self.tiny_layers,
                                state_mlp=self.state_mlp, time_input=self.time_input)


def holdout_metrics(test: pd.DataFrame, scored: pd.DataFrame, constant: float) -> dict:
    """Held-out metrics overall and per task; `constant` is the best constant predictor (train median).
    value_mae is the labels' value (the predicted mean); value_median_mae the predicted median's,
    the like-for-like figure beside a median constant when outcomes split the returns in two."""
    df = test.reset_index(drop=True).assign(**{c: scored[c].to_numpy()
                                               for c in ("cross_entropy", "correct", "value", "median")})
    df["abs_error"] = (df["value"] - df["return_norm"]).abs()
    df["median_error"] = (df["median"] - df["return_norm"]).abs()
    df["constant_error"] = (constant - df["return_norm"]).abs()

    def summary(g: pd.DataFrame) -> dict:
        return {"episodes": int(g[["shard", "episode_index"]].drop_duplicates().shape[0]), "frames": len(g),
                "cross_entropy": float(g["cross_entropy"].mean()), "bin_accuracy": float(g["correct"].mean()),
                "value_mae": float(g["abs_error"].mean()), "value_median_mae": float(g["median_error"].mean()),
                "constant_mae": float(g["constant_error"].mean())}

    overall = summary(df)
    overall["mae_ratio_to_constant"] = overall["value_mae"] / max(overall["constant_mae"], 1e-12)
    return {**overall, "per_task": {task: summary(g) for task, g in df.groupby("task", sort=True)}}


def train_value(store: ShardStore, mixture: dict[str, float], out: Path, cfg: ValueTrainConfig,
                reward: RewardConfig, init: Path | None = None, metrics_path: Path | None = None,
                loss_path: Path | None = None, force: bool = False, progress: bool = True) -> dict:
    """Train (or fine-tune from `init`) a value model; write the checkpoint to `out`; return its metrics."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, WeightedRandomSampler

    from recap_data.data.frame_dataset import ShardFrames, preload_cameras
    from recap_data.data.frames import holdout_mask, load_frames, mixture_weights, state_matrix
    from recap_data.data.shard_specs import shard_digests
    from recap_data.value.model import (
        Collate,
        TextEncoder,
        build_value_model,
        evaluate,
        forward,
        load_value_checkpoint,
        save_value_checkpoint,
    )

    cfg.validate()
    reward.validate()
    out = Path(out)
    accelerator = start_run(out, force, "value checkpoint", cfg.seed, cfg.bf16)
    digests = shard_digests(store, mixture)
    features = store.manifest(next(iter(mixture))).features
    cameras, state_dim = camera_keys(features), int(features[STATE_KEY]["shape"][0])
    frames, normalizers = compute_returns(load_frames(store, mixture), reward)

    if init is not None:
        ckpt = load_value_checkpoint(init, reward)
        model, tokenizer, init_info = ckpt.model, ckpt.encoder.tokenizer, {"path": str(init), "digest": ckpt.digest}
        if ckpt.model.cfg.camera_keys != cameras or ckpt.model.cfg.state_dim != state_dim:
            raise RecapError(f"{init}: the checkpoint takes cameras {ckpt.model.cfg.camera_keys} and a "
                             f"{ckpt.model.cfg.state_dim}-d state; the shards have {cameras} and {state_dim}")
    else:
        model_cfg = cfg.model_config(cameras, state_dim, reward.number_of_bins)
        model, tokenizer = build_value_model(model_cfg, sorted(frames["task"].unique()))
        init_info = None
    encoder = TextEncoder(tokenizer, model.cfg.max_text_tokens)
    for task in frames["task"].unique():
        encoder.ids(task)  # a task over the text limit fails here, before any training

    held = holdout_mask(frames, cfg.holdout_fraction, cfg.seed)
    train, test = frames[~held].reset_index(drop=True), frames[held].reset_index(drop=True)
    if init is None:  # a fine-tune keeps the statistics its weights were trained with
        model.fit_normalization(state_matrix(train), train["frame_index"].to_numpy(np.float32))

    preloaded = preload_cameras(store, mixture, cameras, cfg.preload_mb, progress and accelerator.is_main_process,
                                cfg.decode_workers)
    sampler = WeightedRandomSampler(mixture_weights(train["shard"].to_numpy(), mixture),
                                    num_samples=cfg.steps * cfg.batch_size * accelerator.num_processes,
                                    replacement=True, generator=torch.Generator().manual_seed(cfg.seed))
    loader = DataLoader(ShardFrames(store, train, cameras, preloaded), batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=Collate(encoder), drop_last=True)
    model, losses, wall = train_loop(model, loader, lambda m, b: F.cross_entropy(forward(m, b), b["return_bin"]),
                                     cfg, accelerator, section="value", desc="training value model", progress=progress)
    if not accelerator.is_main_process:  # the main process evaluates and writes the checkpoint
        return {}
    metrics = {"train": {"steps": cfg.steps, "samples": cfg.steps * cfg.batch_size * accelerator.num_processes,
                         "frames": len(train), "wall_s": round(wall, 2),
                         "samples_per_s": round(cfg.steps * cfg.batch_size * accelerator.num_processes / wall, 1),
                         "final_loss": losses.rows[-1]["train_loss"]}}
    if len(test):
        scored = evaluate(model, ShardFrames(store, test, cameras, preloaded), encoder, cfg.eval_batch_size,
                          cfg.num_workers, accelerator.device, progress)
        metrics["holdout"] = holdout_metrics(test, scored, float(train["return_norm"].median()))
    provenance = {
        **run_provenance(cfg, accelerator),
        "shards": [{"id": s, "digest": digests[s], "weight": w} for s, w in mixture.items()],
        "init": init_info, "holdout_episodes": test[["shard", "episode_index"]].drop_duplicates().values.tolist(),
    }
    write_training_run(out, lambda tmp: save_value_checkpoint(tmp, model, tokenizer, reward, normalizers, provenance),
                       metrics, losses.rows, what="value checkpoint", force=force, metrics_path=metrics_path,
                       loss_path=loss_path, metrics_copy=headline_metrics(metrics))
    return metrics


def headline_metrics(metrics: dict) -> dict:
    """The copy for `dvc metrics show`: held-out value MAE (`mae`), the best constant's, the final training
    loss (short flat keys, so that the table fits a terminal; the checkpoint's metrics.json keeps
    everything, per task too)."""
    held = metrics.get("holdout", {})
    return {**({"mae": held["value_mae"], "constant_mae": held["constant_mae"]} if held else {}),
            "loss": metrics["train"]["final_loss"]}
