"""The distributional value model: camera images + task text + robot state -> logits over return bins.

Built from transformers classes, so one code path serves both sizes:
  real  SigLIP vision tower and a Gemma 3 text model (e.g. Gemma 3 270M) loaded from local
        pretrained directories (`vision_path`, `text_path`; never a hub download), with the
        text model's own tokenizer;
  tiny  the same classes from small configurations with random weights, and a byte-level BPE
        tokenizer trained here on the task texts with the `tokenizers` library, so it runs
        offline on a CPU.
Sequence fed to the text model: [task tokens (right-padded to max_text_tokens) | image patches
of every camera | one state token]; the last position (the state token, which attends to all
valid tokens under the causal mask) is read out by a linear head over the bins. With `state_mlp`
the state also takes a short path: an MLP of it is added to the read-out, so what the state alone
tells (how far along the task is) does not have to pass through the towers' attention first
(measured in docs/value.md: lower held-out error on rollouts in both regimes tried). With
`time_input` the frame's index in its episode is one more state input: where episodes are capped,
the return to go depends on the time left, which no single observation shows.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    Gemma3TextConfig,
    Gemma3TextModel,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from recap_data.errors import RecapError
from recap_data.io import read_json, write_json
from recap_data.label_math.bins import decode_medians, decode_values
from recap_data.label_math.config import TARGET_FIELDS, RewardConfig, stored_reward
from recap_data.store.paths import CONFIG_FILE as CONFIG
from recap_data.store.paths import NORMALIZATION_FILE as NORMALIZATION
from recap_data.store.paths import PROVENANCE_FILE as PROVENANCE
from recap_data.store.paths import REWARD_FILE as REWARD
from recap_data.store.paths import TOKENIZER_DIR
from recap_data.store.paths import WEIGHTS_FILE as WEIGHTS
from recap_data.train.checkpoint import directory_digest, weights_errors
from recap_data.train.tokenizer import tiny_tokenizer


@dataclass
class ValueModelConfig:
    """Architecture of the value model (stored as config.json in every checkpoint)."""

    size: str = "tiny"  # tiny: small random-weight transformers for CPU; real: pretrained local paths
    vision_path: str | None = None  # real: local SigLIP directory (e.g. google/siglip-base-patch16-224)
    text_path: str | None = None  # real: local Gemma 3 directory with its tokenizer (e.g. gemma-3-270m)
    camera_keys: list[str] = field(default_factory=list)  # image features, in input order
    state_dim: int = 8  # length of observation.state
    number_of_bins: int = 201  # output bins (= reward.number_of_bins)
    image_size: int = 32  # images are resized to this before the vision tower (real: the tower's size)
    max_text_tokens: int = 48  # the text limit; longer task texts are an error, never truncated
    tiny_width: int = 64  # tiny: hidden size of both towers
    tiny_layers: int = 2  # tiny: transformer layers of each tower
    tiny_patch: int = 8  # tiny: vision patch size in pixels
    tiny_vocab: int = 512  # tiny: BPE vocabulary size trained on the task texts
    state_mlp: bool = False  # an MLP from the state added to the read-out (False in checkpoints made before it)
    time_input: bool = False  # the frame's index in its episode joins the state (False in checkpoints made before it)


def _tiny_configs(cfg: ValueModelConfig, vocab_size: int) -> tuple[SiglipVisionConfig, Gemma3TextConfig]:
    w = cfg.tiny_width
    vision = SiglipVisionConfig(hidden_size=w, intermediate_size=2 * w, num_hidden_layers=cfg.tiny_layers,
                                num_attention_heads=2, image_size=cfg.image_size, patch_size=cfg.tiny_patch,
                                vision_use_head=False)
    text = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=w, intermediate_size=2 * w,
                            num_hidden_layers=cfg.tiny_layers, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=w // 2, query_pre_attn_scalar=w // 2, max_position_embeddings=1024,
                            sliding_window=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return vision, text


class ValueModel(nn.Module):
    """p(return bin | images, task, state); `values()` decodes the expected normalized return."""

    def __init__(self, cfg: ValueModelConfig, vision: SiglipVisionModel, text: Gemma3TextModel):
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.text = text
        width, inputs = text.config.hidden_size, cfg.state_dim + cfg.time_input
        self.image_proj = nn.Linear(vision.config.hidden_size, width)
        self.state_proj = nn.Linear(inputs, width)
        self.head = nn.Linear(width, cfg.number_of_bins)
        self.state_mlp = (nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width))
                          if cfg.state_mlp else None)
        # Normalization of observation.state (and the frame index), set from the training data and saved
        # with the weights.
        self.register_buffer("state_mean", torch.zeros(inputs))
        self.register_buffer("state_std", torch.ones(inputs))

    def fit_normalization(self, state: np.ndarray, frame_index: np.ndarray) -> None:
        """Mean and std of the state inputs from the training frames: state (F, S), frame_index (F,)."""
        inputs = np.column_stack([state, frame_index]) if self.cfg.time_input else state  # (F, S[+1])
        self.state_mean.copy_(torch.from_numpy(inputs.mean(0)))
        self.state_std.copy_(torch.from_numpy(np.maximum(inputs.std(0), 1e-3)))

    def forward(self, images: torch.Tensor, state: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, K, 3, H, W) in [0, 1]; state (B, S); input_ids, attention_mask (B, L); frame_index
        (B,), needed with time_input only -> logits (B, bins)."""
        if self.cfg.time_input:
            if frame_index is None:
                raise ValueError("this value model reads the frame index (time_input): pass frame_index")
            state = torch.cat([state, frame_index[:, None].to(state.dtype)], dim=1)  # (B, S+1)
        b, k = images.shape[:2]
        size = self.vision.config.image_size
        pixels = images.flatten(0, 1)  # (B*K, 3, H, W)
        if pixels.shape[-1] != size or pixels.shape[-2] != size:
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        pixels = (pixels - 0.5) / 0.5  # SigLIP expects [-1, 1]
        patches = self.vision(pixel_values=pixels.to(self.image_proj.weight.dtype)).last_hidden_state  # (B*K, P, Dv)
        patches = self.image_proj(patches).reshape(b, k * patches.shape[1], -1)  # (B, K*P, D)
        norm_state = (state - self.state_mean) / self.state_std  # (B, S)
        state_token = self.state_proj(norm_state.to(self.state_proj.weight.dtype))[:, None, :]  # (B, 1, D)
        text_embeds = self.text.get_input_embeddings()(input_ids)  # (B, L, D), Gemma scales by sqrt(D)
        embeds = torch.cat([text_embeds.to(patches.dtype), patches, state_token], dim=1)  # (B, L+K*P+1, D)
        ones = attention_mask.new_ones(b, patches.shape[1] + 1)
        mask = torch.cat([attention_mask, ones], dim=1)  # (B, L+K*P+1)
        hidden = self.text(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (B, T, D)
        readout = hidden[:, -1]  # (B, D): at the state token
        if self.state_mlp is not None:
            readout = readout + self.state_mlp(norm_state.to(readout.dtype))  # (B, D)
        return self.head(readout).float()  # (B, bins)

    def values(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected normalized return (B,) from logits (B, bins), with the targets' bin centres."""
        return decode_values(logits.float().softmax(-1), self.cfg.number_of_bins)


class TextEncoder:
    """Tokenizes task texts to a fixed length; a text over the limit is an error, not truncated."""

    def __init__(self, tokenizer, max_text_tokens: int):
        self.tokenizer = tokenizer
        self.max_text_tokens = max_text_tokens
        self._cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self._cache:
            ids = self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
            if len(ids) > self.max_text_tokens:
                shown = text if len(text) <= 60 else text[:57] + "..."
                raise RecapError(f"task text {shown!r} is {len(ids)} tokens, over the value model's limit "
                                 f"of {self.max_text_tokens}; raise value.max_text_tokens (before pre-training)")
            self._cache[text] = ids
        return self._cache[text]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both (B, max_text_tokens), right-padded."""
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(texts), self.max_text_tokens), pad, dtype=torch.long)
        mask = torch.zeros((len(texts), self.max_text_tokens), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.ids(text)
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        return ids, mask


def build_value_model(cfg: ValueModelConfig, texts: list[str]) -> tuple[ValueModel, object]:
    """A fresh model and tokenizer: tiny from scratch (tokenizer trained on `texts`), real from local paths."""
    _quiet_transformers()
    if cfg.size == "tiny":
        tokenizer = tiny_tokenizer(texts, cfg.tiny_vocab, cfg.max_text_tokens)
        vision_cfg, text_cfg = _tiny_configs(cfg, len(tokenizer))
        return ValueModel(cfg, SiglipVisionModel(vision_cfg), Gemma3TextModel(text_cfg)), tokenizer
    for name in ("vision_path", "text_path"):
        path = getattr(cfg, name)
        if not path or not Path(path).is_dir():
            raise RecapError(f"value: field '{name}' = {path!r} must be a local pretrained directory for "
                             "size 'real' (download it once, e.g. with `hf download`); or use size: tiny")
    try:
        # Patch tokens are read, not SigLIP's pooling head: leave it out (unused weights break DDP).
        vision = SiglipVisionModel.from_pretrained(cfg.vision_path, local_files_only=True, vision_use_head=False)
        text = Gemma3TextModel.from_pretrained(cfg.text_path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(cfg.text_path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise RecapError(f"value: cannot load pretrained weights ({str(e).splitlines()[0]})") from None
    cfg.image_size = vision.config.image_size
    return ValueModel(cfg, vision, text), tokenizer


# The reference towers of pipelines/params-real.yaml (google/siglip-so400m-patch14-224 and
# google/gemma-3-270m) as their config.json files describe them, so that the real widths can be built
# with random weights where the weights are not at hand (bench/bench_real_size.py, the shape test).
REFERENCE_VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                    "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "vision_use_head": False}
REFERENCE_TEXT = {"vocab_size": 262_144, "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
                  "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
                  "sliding_window": 512, "max_position_embeddings": 32_768, "rope_theta": 1_000_000.0,
                  "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def reference_model(cfg: ValueModelConfig, layers: int | None = None) -> ValueModel:
    """The reference value model's architecture with random weights; `layers` cuts both towers'
    depth (every width and the 224-px image stay real)."""
    _quiet_transformers()
    depth = {} if layers is None else {"num_hidden_layers": layers}
    cfg.image_size = REFERENCE_VISION["image_size"]
    return model_from_configs(cfg, {**REFERENCE_VISION, **depth}, {**REFERENCE_TEXT, **depth})


def model_from_configs(cfg: ValueModelConfig, vision: dict, text: dict) -> ValueModel:
    """An untrained model of a saved architecture (weights are loaded after)."""
    return ValueModel(cfg, SiglipVisionModel(SiglipVisionConfig(**vision)), Gemma3TextModel(Gemma3TextConfig(**text)))


def config_dicts(model: ValueModel) -> dict:
    return {"model": asdict(model.cfg), "vision": model.vision.config.to_diff_dict(),
            "text": model.text.config.to_diff_dict()}


class Collate:
    """Stacks samples and tokenizes their tasks (runs in the DataLoader workers)."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder

    def __call__(self, samples: list[dict]) -> dict:
        batch = {k: torch.stack([s[k] for s in samples])
                 for k in ("images", "state", "frame_index", "return_bin", "return_norm")}
        batch["input_ids"], batch["attention_mask"] = self.encoder([s["task"] for s in samples])
        batch["row"] = torch.tensor([s["row"] for s in samples])
        return batch


def forward(model, batch: dict) -> torch.Tensor:
    return model(batch["images"], batch["state"], batch["input_ids"], batch["attention_mask"], batch.get("frame_index"))


@torch.no_grad()
def evaluate(model, dataset, encoder: TextEncoder, batch_size: int, num_workers: int,
             device, progress: bool = True) -> pd.DataFrame:
    """Per frame of `dataset`: cross-entropy, whether the arg-max bin is right, the decoded value
    (the mean) and the predicted distribution's median."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=Collate(encoder))
    rows = []
    for batch in tqdm(loader, desc="evaluating held-out episodes", unit="batch", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = forward(model, batch)  # (B, bins)
        probabilities = logits.float().softmax(-1)  # (B, bins): decoded twice, computed once
        rows.append(pd.DataFrame({
            "row": batch["row"].cpu().numpy(),
            "cross_entropy": F.cross_entropy(logits, batch["return_bin"], reduction="none").cpu().numpy(),
            "correct": (logits.argmax(-1) == batch["return_bin"]).cpu().numpy(),
            "value": decode_values(probabilities, model.cfg.number_of_bins).cpu().numpy(),
            "median": decode_medians(probabilities, model.cfg.number_of_bins).cpu().numpy()}))
    model.train()
    return pd.concat(rows, ignore_index=True).sort_values("row").reset_index(drop=True)



CHECKPOINT_FORMAT = "recap-data/value-model@1"


@dataclass
class ValueCheckpoint:
    """A loaded value checkpoint: the model and everything needed to use it as it was trained."""

    path: Path
    model: ValueModel
    encoder: TextEncoder
    reward: RewardConfig
    normalizers: dict[str, float]  # task -> return normalizer used for its targets
    provenance: dict
    digest: str


def save_value_checkpoint(directory: Path, model: ValueModel, tokenizer, reward: RewardConfig,
                          normalizers: dict[str, float], provenance: dict) -> None:
    """Write weights (safetensors), config, tokenizer, normalization, reward config and provenance."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": CHECKPOINT_FORMAT})
    write_json(directory / CONFIG, {"format": CHECKPOINT_FORMAT, **config_dicts(model)})
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    write_json(directory / NORMALIZATION, {"state_mean": model.state_mean.tolist(),
                                           "state_std": model.state_std.tolist(),
                                           "return_normalizers": normalizers})
    write_json(directory / REWARD, reward.to_dict())
    write_json(directory / PROVENANCE, provenance)


def load_value_checkpoint(path: Path, reward: RewardConfig | None = None) -> ValueCheckpoint:
    """Load a checkpoint; if `reward` is given it must equal the one the checkpoint was trained with."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RecapError(f"{path}: not a value checkpoint (no {CONFIG}); train one with `recap-data train value`")
    fix = "write it again with `recap-data train value --force`"
    parts = {name: read_json(path / name, CHECKPOINT_FORMAT if name == CONFIG else None, what="value checkpoint file",
                             fix=fix) for name in (CONFIG, REWARD, NORMALIZATION, PROVENANCE)}
    config, norm, provenance = parts[CONFIG], parts[NORMALIZATION], parts[PROVENANCE]
    try:
        stored = RewardConfig(**stored_reward(parts[REWARD]))
        return_normalizers = {k: float(v) for k, v in norm["return_normalizers"].items()}
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        raise RecapError(f"{path}: unreadable value checkpoint ({type(e).__name__}: {e}); write it again with "
                         "`recap-data train value --force`") from None
    diff = [] if reward is None else [f"{k}: checkpoint {getattr(stored, k)!r}, requested {getattr(reward, k)!r}"
                                      for k in TARGET_FIELDS if getattr(reward, k) != getattr(stored, k)]
    if diff:
        raise RecapError(f"{path / REWARD}: the value model was trained with other reward params ({'; '.join(diff)}); "
                         "use its reward params or train a value model with yours")
    _quiet_transformers()
    try:
        model = model_from_configs(ValueModelConfig(**config["model"]), config["vision"], config["text"])
    except (KeyError, TypeError, ValueError) as e:
        raise RecapError(f"{path / CONFIG}: not a value model config ({type(e).__name__}: {e}); write the checkpoint "
                         "again with `recap-data train value --force`") from None
    with weights_errors(path / WEIGHTS, "train value"):
        model.load_state_dict(load_file(str(path / WEIGHTS)))
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path / TOKENIZER_DIR))
    return ValueCheckpoint(path, model.eval(), TextEncoder(tokenizer, model.cfg.max_text_tokens), stored,
                           return_normalizers, provenance,
                           directory_digest(path))


def checkpoint_reward(path: Path) -> RewardConfig:
    """The reward params a value checkpoint was trained with."""
    data = read_json(Path(path) / REWARD, what="value checkpoint", fix="train one with `recap-data train value`")
    try:
        return RewardConfig(**stored_reward(data))
    except TypeError as e:  # a field missing or unknown
        raise RecapError(f"{Path(path) / REWARD}: not a value checkpoint's reward params ({e}); train one with "
                         "`recap-data train value`") from None


def _quiet_transformers() -> None:
    # Gemma 3's config warns about its own default rope_parameters on every construction.
    from transformers.utils import logging

    logging.set_verbosity_error()
