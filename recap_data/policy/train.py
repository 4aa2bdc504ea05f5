"""`recap-data train policy`: advantage-conditioned fine-tuning of pi0 or pi0.5 (LeRobot 0.6.1) on shards.

The RECAP parts live here and in conditioning.py; the model, its processors and its loss are
LeRobot's. Each sample's task string gets the indicator text ("Advantage: positive/negative")
before pi0's preprocessor runs (it drops unknown keys), under a mode:
  on      every frame positive (the SFT stage)
  use     the label set's indicator (intervention frames always positive)
  ignore  the task alone
and indicator dropout leaves it out for a fraction of samples (the unconditional model that
classifier-free guidance needs). Frames are drawn by an episode-aware weighted sampler over the
shard mixture. `--init CKPT` continues from a checkpoint (RECAP restarts each iteration from the
SFT policy). One process by default; `accelerate launch -m recap_data.cli.main train policy ...`
runs data-parallel (bf16 on GPU). The checkpoint layout is in model.py.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
from recap_data.policy.baselines import BASELINES
from recap_data.policy.conditioning import MODES
from recap_data.policy.lerobot_compat import FAMILIES
from recap_data.store.store import ShardStore
from recap_data.train.checkpoint import write_training_run

if TYPE_CHECKING:
    from recap_data.policy.data import PolicyData

# torch, LeRobot and transformers are imported inside functions: the CLI builds its options from
# PolicyTrainConfig and must start fast (conditioning and lerobot_compat import neither at import).


@dataclass
class PolicyTrainConfig:
    """pi0 / pi0.5 policy model and training."""

    section = "policy"  # its params.yaml section (a class attribute, not a field)

    type: Choice(*FAMILIES) = param(
        "pi0", "policy family: pi0, or pi05 (pi0.5: the discretized state goes into its prompt)")
    size: Choice("tiny", "real") = param(
        "tiny", "tiny: a ~0.3M-parameter model with random weights, for CPU; real: weights from pretrained_path")
    pretrained_path: str | None = param(
        None, "real: local copy of lerobot/pi0_base or lerobot/pi05_base (config.json, model.safetensors)")
    tokenizer_path: str | None = param(None, "real: local PaliGemma tokenizer directory (google/paligemma-3b-pt-224)")
    indicator_mode: Choice(*MODES) = param(
        "use", "on: every frame positive (SFT); use: the label set's indicator; ignore: none")
    indicator_dropout: Float(0, 1, high_open=True) = param(0.3, "share of samples without the indicator (paper: 0.3)")
    successes_only: bool = param(False, "filtered BC: draw training frames from successful episodes only")
    steps: Count = param(200, "optimizer steps")
    batch_size: Count = param(8, "samples per step and process")
    lr: Positive = param(1e-3, "peak AdamW learning rate (tiny; pi0's own fine-tuning uses 2.5e-5)")
    weight_decay: NonNegative = param(0.01, "AdamW weight decay")
    warmup_steps: Natural = param(10, "linear warm-up steps, then cosine decay")
    grad_clip_norm: Positive = param(1.0, "gradient norm clip (pi0's default)")
    chunk_size: Count = param(10, "actions predicted per sample (pi0: 50)")
    n_action_steps: Count = param(10, "actions executed per predicted chunk at inference")
    num_inference_steps: Count = param(10, "Euler denoising steps at inference")
    image_size: Int(8, 1024) = param(
        32, "tiny: pixels fed to the vision tower, a multiple of 8 (real pi0: its own 224)")
    tokenizer_max_length: Count = param(48, "prompt limit in tokens; a longer prompt is an error, never cut")
    train_expert_only: bool = param(
        False, "freeze the VLM (LeRobot's option): train the action expert and projections only")
    freeze_vision_encoder: bool = param(False, "freeze the SigLIP vision tower (LeRobot's option)")
    preload_mb: Natural = param(4096, "decode all camera frames into memory once when they fit in this many MB")
    decode_workers: Natural = param(0, "camera decoder processes at once when preloading; 0: one per core")
    num_workers: Natural = param(0, "DataLoader worker processes")
    log_every: Count = param(10, "steps per row of loss.csv")
    seed: Seed = param(0, "seeds the model, the sampler and the indicator dropout")
    bf16: bool = param(True, "bf16 mixed precision on GPU (CPU trains in float32)")
    baseline: Choice(*BASELINES) | None = param(
        None, "train a baseline arm instead of RECAP: filtered_bc (successful episodes "
              "only, indicator always positive); sets successes_only and indicator_mode")

    def validate(self) -> "PolicyTrainConfig":
        check_fields(self)
        if self.baseline is not None:
            for name, value in BASELINES[self.baseline].items():  # the arm's settings, whatever was given
                setattr(self, name, value)
        if self.n_action_steps > self.chunk_size:
            raise FieldError(self.section, "n_action_steps", f"= {self.n_action_steps} is over chunk_size "
                             f"{self.chunk_size}; lower it")
        if self.size == "tiny" and self.image_size % 8:
            raise FieldError(self.section, "image_size", f"= {self.image_size} is invalid: use a multiple of 8")
        return self


def policy_loader(store: ShardStore, data: "PolicyData", features: dict, cfg: PolicyTrainConfig, chunk_size: int,
                  rank: int = 0, world: int = 1, progress: bool = False):
    """The trainer's data path: the cameras decoded once into memory where they fit (else read
    through LeRobot), action chunks, and episodes drawn by mixture weight, split by rank; batches
    of frames with their task and indicator, before prompts and the preprocessor."""
    from torch.utils.data import DataLoader

    from recap_data.data.frame_dataset import preload_cameras
    from recap_data.policy.conditioning import WeightedEpisodeSampler
    from recap_data.policy.data import PolicyFrames
    from recap_data.store.schema import camera_keys

    cameras = camera_keys(features)
    preloaded = preload_cameras(store, data.mixture, cameras, cfg.preload_mb, progress, cfg.decode_workers)
    dataset = PolicyFrames(store, data, cameras, chunk_size, preloaded)
    episodes = data.successful_episodes() if cfg.successes_only else data.episodes
    sizes = data.frames.groupby("shard", sort=False).size().to_dict()
    sampler = WeightedEpisodeSampler(episodes, data.mixture, num_samples=cfg.steps * cfg.batch_size, seed=cfg.seed,
                                     rank=rank, world=world, sizes=sizes)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=True)


def model_inputs(batch: dict, prompts, pre) -> dict:
    """A policy_loader batch as the policy takes it: the task with its indicator prompt (`prompts`:
    conditioning.IndicatorPrompts), then the preprocessor `pre` (tokens, normalization, device)."""
    batch["task"] = prompts(batch["task"], batch["indicator"].numpy(), batch["is_intervention"].numpy())
    return pre({k: v for k, v in batch.items() if k not in ("indicator", "is_intervention")})


def train_policy(store: ShardStore, mixture: dict[str, float] | None, labels: str | None, out: Path,
                 cfg: PolicyTrainConfig, init: Path | None = None, metrics_path: Path | None = None,
                 loss_path: Path | None = None, force: bool = False, progress: bool = True) -> dict:
    """Train (or continue from `init`) a pi0 / pi0.5 policy; write the checkpoint to `out`; return its metrics."""
    from recap_data.policy.conditioning import IndicatorPrompts
    from recap_data.policy.data import dataset_stats, load_policy_data
    from recap_data.policy.model import (
        RecapPolicy,
        build_policy,
        build_tokenizer,
        check_prompt_lengths,
        policy_features,
        processors,
        save_policy,
    )
    from recap_data.store.schema import STATE_KEY
    from recap_data.train.loop import run_provenance, start_run, train_loop

    cfg.validate()
    out = Path(out)
    # pi0 never uses its lm_heads nor the VLM's last layer after attention (the action expert reads
    # the keys and values only): DDP must be told, as lerobot-train does.
    accelerator = start_run(out, force, "policy checkpoint", cfg.seed, cfg.bf16, find_unused_parameters=True)
    data = load_policy_data(store, mixture, labels, cfg.indicator_mode)
    features = store.manifest(next(iter(data.mixture))).features
    tasks = sorted(data.frames["task"].unique())
    if init is not None:
        ckpt = RecapPolicy.load(init, str(accelerator.device))
        if ckpt.family != cfg.type:
            raise RecapError(f"{init}: a {ckpt.family} checkpoint, and policy.type is {cfg.type}: continue from a "
                             f"checkpoint of the same family or set --type {ckpt.family}")
        policy, tokenizer, pre = ckpt.policy, ckpt.tokenizer, ckpt.preprocessor
        post, init_info = ckpt.postprocessor, {"path": str(init), "digest": ckpt.digest}
        inputs, outputs = policy_features(features)
        have = {k: tuple(v.shape) for k, v in {**policy.config.input_features, **policy.config.output_features}.items()}
        want = {k: tuple(v.shape) for k, v in {**inputs, **outputs}.items()}
        if have != want:
            raise RecapError(f"{init}: the policy takes {have}; the shards have {want}")
    else:
        policy = build_policy(cfg, features)
        policy.config.device = str(accelerator.device)
        tokenizer = build_tokenizer(cfg, tasks, features[STATE_KEY]["shape"][0])
        pre, post = processors(policy.config, dataset_stats(store, data), tokenizer)
        init_info = None
    check_prompt_lengths(tokenizer, tasks, policy.config)  # before any training

    loader = policy_loader(store, data, features, cfg, policy.config.chunk_size, accelerator.process_index,
                           accelerator.num_processes, progress and accelerator.is_main_process)
    prompts = IndicatorPrompts(cfg.indicator_mode, cfg.indicator_dropout,
                               seed=cfg.seed * 7919 + accelerator.process_index)

    def loss_of(model, batch):
        return model(model_inputs(batch, prompts, pre))[0]

    policy, losses, wall = train_loop(policy, loader, loss_of, cfg, accelerator, section="policy",
                                      desc="training policy", progress=progress, prepare_loader=False,
                                      clip_norm=cfg.grad_clip_norm)  # no prepare: the sampler splits draws by rank
    if not accelerator.is_main_process:  # the main process writes the checkpoint
        return {}
    samples = cfg.steps * cfg.batch_size * accelerator.num_processes
    seen = sum(prompts.counts.values())
    metrics = {"steps": cfg.steps, "samples": samples, "frames": len(data.frames), "wall_s": round(wall, 2),
               "steps_per_s": round(cfg.steps / wall, 2), "samples_per_s": round(samples / wall, 1),
               "first_loss": losses.rows[0]["train_loss"], "final_loss": losses.rows[-1]["train_loss"],
               "prompt_fractions": {k: round(v / seen, 4) for k, v in prompts.counts.items()},  # this process's samples
               "parameters": sum(p.numel() for p in policy.parameters())}
    provenance = {
        **run_provenance(cfg, accelerator),
        "shards": [{"id": s, "digest": data.digests[s], "weight": w} for s, w in data.mixture.items()],
        "label_set": data.label_set, "init": init_info, "indicator_mode": cfg.indicator_mode,
        "indicator_dropout": cfg.indicator_dropout, "successes_only": cfg.successes_only, "type": policy.config.type,
        "size": cfg.size,
        "baseline": cfg.baseline,
    }
    policy.config.device = "cpu"  # a checkpoint loads anywhere; RecapPolicy.load sets the device
    write_training_run(out, lambda tmp: save_policy(tmp, policy, pre, post, tokenizer, provenance), metrics,
                       losses.rows, what="policy checkpoint", force=force, metrics_path=metrics_path,
                       loss_path=loss_path, metrics_copy=headline_metrics(metrics))
    return metrics


def headline_metrics(metrics: dict) -> dict:
    """The copy for `dvc metrics show`: the final training `loss` and, when the prompts carried an
    indicator, the positive share of them (beside the label set's positive_fraction); the checkpoint's
    metrics.json keeps everything."""
    prompts = metrics["prompt_fractions"]
    shown = prompts.get("positive", 0) + prompts.get("negative", 0)
    return {"loss": metrics["final_loss"],
            **({"positive_fraction": round(prompts["positive"] / shown, 4)} if shown else {})}
