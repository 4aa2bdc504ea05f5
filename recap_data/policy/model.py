"""pi0 and pi0.5 policies for RECAP: build (tiny or real), save, load, and choose actions with guidance.

A policy checkpoint directory is LeRobot's save_pretrained layout plus recap-data's files:

  config.json  model.safetensors                     PI0Policy / PI05Policy.save_pretrained
  policy_preprocessor.json  policy_postprocessor.json  (+ normalizer state)   the family's processors
  tokenizer/        the tokenizer the processors use (tiny: built here; real: the PaliGemma one)
  provenance.json   format, family (type), shards and label set with digests, init digest, mode,
                    dropout, steps
  metrics.json  loss.csv

The two families differ for RECAP in one place: pi0 reads the state through a projection, pi0.5
writes the normalized state into its prompt as 256 bins ("Task: <task and indicator>, State: 12
255 ...;\nAction: "), so its prompts are longer and its tokenizer must know the numbers.

Guidance (the paper's classifier-free guidance): beta = 1 conditions on "Advantage: positive";
otherwise every denoising step uses v = v_uncond + beta * (v_pos - v_uncond), the two
velocities from one batch of 2B (the positive prompt and the task alone).
"""

import contextlib
import functools
import io
import json
from pathlib import Path

import torch

from recap_data.errors import RecapError
from recap_data.io import read_json
from recap_data.policy import lerobot_compat
from recap_data.policy.conditioning import prompt
from recap_data.store.paths import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE
from recap_data.store.paths import PROVENANCE_FILE as PROVENANCE
from recap_data.store.schema import ACTION_KEY, STATE_KEY, camera_keys
from recap_data.train.checkpoint import directory_digest, weights_errors

FORMAT = "recap-data/pi0-policy@1"


def policy_features(features: dict) -> tuple[dict, dict]:
    """(input_features, output_features) for pi0 / pi0.5 from a shard's feature dict."""
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {}
    for key in camera_keys(features):
        h, w, c = features[key]["shape"]
        inputs[key] = PolicyFeature(type=FeatureType.VISUAL, shape=(c, h, w))
    inputs[STATE_KEY] = PolicyFeature(type=FeatureType.STATE, shape=tuple(features[STATE_KEY]["shape"]))
    return inputs, {ACTION_KEY: PolicyFeature(type=FeatureType.ACTION, shape=tuple(features[ACTION_KEY]["shape"]))}


def state_strings(state_dim: int) -> list[str]:
    """Space-joined pi0.5 state bins that together hold every bin -1..255 at least once."""
    bins = list(range(-1, lerobot_compat.STATE_BINS))
    rows = -(-len(bins) // state_dim)
    return [" ".join(str(bins[(r * state_dim + j) % len(bins)]) for j in range(state_dim)) for r in range(rows)]


def prompt_texts(tasks, family: str = "pi0", state_dim: int = 0) -> list[str]:
    """Every prompt the policy can see for these tasks, as its tokenizer sees it: pi0 appends '\\n';
    pi0.5 writes 'Task: ..., State: <bins>;\\nAction: ' (here with every bin, to train the tiny tokenizer)."""
    texts = [prompt(t, i) for t in sorted(set(tasks)) for i in (True, False, None)]
    if family == "pi05":
        return [lerobot_compat.pi05_prompt(t, s) for t in texts for s in state_strings(state_dim)]
    return [t + "\n" for t in texts]


def prompt_too_long(text: str, n: int, max_length: int) -> None:
    """The one error for a prompt over the limit, from the static check and the preprocessor's guard."""
    shown = text.strip().replace("\n", " | ")
    raise RecapError(f"prompt {shown[:70]!r} is {n} tokens, over policy.tokenizer_max_length={max_length}; "
                     "raise it (the indicator text and the state are never cut)")


def check_prompt_lengths(tokenizer, tasks, config) -> None:
    """Every task with its indicator text (and for pi0.5 the state at its longest in tokens) must
    fit the tokenizer limit before any training: LeRobot would cut it silently."""
    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    texts = prompt_texts(tasks)
    if config.type == "pi05":  # byte-level BPE splits at spaces: the longest number, S times, is the worst state
        state_dim = config.input_features[STATE_KEY].shape[0]
        widest = max(range(-1, lerobot_compat.STATE_BINS), key=lambda b: length(f" {b}"))
        texts = [lerobot_compat.pi05_prompt(t, " ".join([str(widest)] * state_dim)) for t in texts]
    for text in texts:
        n = length(text)
        if n > config.tokenizer_max_length:
            prompt_too_long(text, n, config.tokenizer_max_length)


def build_tokenizer(cfg, tasks, state_dim: int):
    """tiny: a byte-level BPE tokenizer trained on the prompts; real: the local PaliGemma tokenizer.
    `cfg`: PolicyTrainConfig."""
    from transformers import AutoTokenizer

    from recap_data.train.tokenizer import tiny_tokenizer

    if cfg.size == "tiny":
        return tiny_tokenizer(prompt_texts(tasks, cfg.type, state_dim), lerobot_compat.TINY_VOCAB,
                              cfg.tokenizer_max_length)
    if not cfg.tokenizer_path or not Path(cfg.tokenizer_path).is_dir():
        raise RecapError(f"policy: field 'tokenizer_path' = {cfg.tokenizer_path!r} is not a directory; point it at "
                         "a local copy of the PaliGemma tokenizer (hf download google/paligemma-3b-pt-224 "
                         "--include 'tokenizer*' --local-dir weights/paligemma)")
    return AutoTokenizer.from_pretrained(cfg.tokenizer_path, local_files_only=True)


def processors(config, dataset_stats: dict | None, tokenizer):
    """LeRobot's processors for the policy's family, guarded against prompts over the limit."""
    return lerobot_compat.processors(config, dataset_stats, tokenizer, prompt_too_long)


BASE_CHECKPOINTS = {"pi0": "lerobot/pi0_base", "pi05": "lerobot/pi05_base"}


def _common_fields(cfg) -> dict:
    return {"chunk_size": cfg.chunk_size, "n_action_steps": cfg.n_action_steps, "device": "cpu",
            "tokenizer_max_length": cfg.tokenizer_max_length, "num_inference_steps": cfg.num_inference_steps,
            "train_expert_only": cfg.train_expert_only, "freeze_vision_encoder": cfg.freeze_vision_encoder}


def _new_config(cfg, features: dict, vlm: str, expert: str, image_size: int, dtype: str = "float32"):
    config = lerobot_compat.config_class(cfg.type)(paligemma_variant=vlm, action_expert_variant=expert,
                                                   image_resolution=(image_size, image_size), dtype=dtype,
                                                   **_common_fields(cfg))
    config.input_features, config.output_features = policy_features(features)
    return config


REFERENCE_VARIANTS = ("gemma_2b", "gemma_300m")  # pi0_base / pi05_base: PaliGemma's Gemma 2B, the 300M expert
REFERENCE_IMAGE_SIZE = 224


def reference_policy(cfg, features: dict, layers: int | None = None, dtype: str = "float32"):
    """pi0 or pi0.5 (cfg.type) at the reference widths (PaliGemma gemma_2b with the gemma_300m
    action expert, 224-px images) with random weights, where the weights are not at hand;
    `layers` cuts the depth of the VLM, the expert and the vision tower; `dtype`: LeRobot's
    (bfloat16 keeps the parts it keeps in float32)."""
    vlm, expert = (v if layers is None else lerobot_compat.shallow_variant(v, layers) for v in REFERENCE_VARIANTS)
    config = _new_config(cfg, features, vlm, expert, REFERENCE_IMAGE_SIZE, dtype)
    return lerobot_compat.policy_class(cfg.type)(config)


def build_policy(cfg, features: dict):
    """A new pi0 or pi0.5 policy (cfg.type): tiny (random weights) or real (weights from
    cfg.pretrained_path). `cfg`: PolicyTrainConfig."""
    from lerobot.configs import PreTrainedConfig

    policy_class = lerobot_compat.policy_class(cfg.type)
    if cfg.size == "tiny":
        tiny = lerobot_compat.TINY_VARIANT
        return policy_class(_new_config(cfg, features, tiny, tiny, cfg.image_size))
    path, base = Path(cfg.pretrained_path or ""), BASE_CHECKPOINTS[cfg.type]
    if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise RecapError(f"policy: field 'pretrained_path' = {cfg.pretrained_path!r} holds no config.json and "
                         f"model.safetensors; point it at a local copy of {base} "
                         f"(hf download {base} --local-dir weights/{base.split('/')[1]})")
    held = read_json(path / CONFIG_FILE, what="LeRobot policy config", fix=f"point it at a local copy of {base}").get(
        "type")
    if held not in lerobot_compat.FAMILIES:
        raise RecapError(f"policy: field 'pretrained_path' = {cfg.pretrained_path!r}: its config.json (type {held!r}) "
                         f"is not a LeRobot pi0 or pi05 config; point it at a local copy of {base}")
    if held != cfg.type:
        raise RecapError(f"policy: field 'pretrained_path' = {cfg.pretrained_path!r} holds a {held!r} checkpoint "
                         f"(config.json), and policy.type is {cfg.type!r}: point it at {base} or set type {held}")
    config = PreTrainedConfig.from_pretrained(path, local_files_only=True)
    for key, value in _common_fields(cfg).items():
        setattr(config, key, value)
    config.input_features, config.output_features = policy_features(features)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # from_pretrained prints, and falls back to random weights
        policy = policy_class.from_pretrained(path, config=config, local_files_only=True, strict=False)
    log = printed.getvalue()
    if "Could not load" in log or "Missing keys" in log:
        raise RecapError(f"{path}: {cfg.type} weights did not load ({log.strip().splitlines()[-1]}); "
                         f"check that it is a {base} checkpoint")
    return policy


def save_policy(directory: Path, policy, preprocessor, postprocessor, tokenizer, provenance: dict) -> None:
    directory = Path(directory)
    policy.save_pretrained(directory)
    preprocessor.save_pretrained(directory)
    postprocessor.save_pretrained(directory)
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    (directory / PROVENANCE).write_text(json.dumps({"format": FORMAT, **provenance}, indent=2, default=str))


def read_provenance(path: Path, fix: str = "train one with `recap-data train policy`") -> dict:
    """A policy checkpoint's provenance.json, checked to be recap-data's format; `fix` ends the error."""
    path = Path(path)
    return read_json(path / PROVENANCE, FORMAT, what="policy checkpoint", fix=fix)


class RecapPolicy:
    """A trained policy: pi0 or pi0.5 with its processors and tokenizer; actions with guidance beta."""

    def __init__(self, path: Path, policy, preprocessor, postprocessor, tokenizer, provenance: dict):
        self.path, self.policy, self.preprocessor, self.postprocessor = path, policy, preprocessor, postprocessor
        self.tokenizer, self.provenance = tokenizer, provenance
        self.config = policy.config
        self._queue: list[torch.Tensor] = []

    @classmethod
    def load(cls, path, device: str = "cpu") -> "RecapPolicy":
        from lerobot.configs import PreTrainedConfig
        from safetensors.torch import load_model
        from transformers import PreTrainedTokenizerFast

        path = Path(path)
        provenance = read_provenance(path)
        lerobot_compat.install()
        config = PreTrainedConfig.from_pretrained(path, local_files_only=True)
        family = provenance.get("type", "pi0")  # checkpoints from before pi0.5 carry no type
        if config.type != family:
            raise RecapError(f"{path / CONFIG_FILE}: field 'type' is {config.type!r} but provenance.json says "
                             f"{family!r}: the checkpoint was edited; train it again")
        config.device = device
        policy = lerobot_compat.policy_class(family, f"{path / CONFIG_FILE}: field 'type'")(config)
        with weights_errors(path / WEIGHTS_FILE, "train policy"):
            load_model(policy, str(path / WEIGHTS_FILE), strict=True)  # our own layout: every key must match
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path / TOKENIZER_DIR))
        policy.to(device).eval()
        pre, post = lerobot_compat.load_processors(path, tokenizer, prompt_too_long, device)
        return cls(path, policy, pre, post, tokenizer, provenance)

    @property
    def family(self) -> str:
        """pi0 or pi05 (LeRobot's config type)."""
        return self.config.type

    @functools.cached_property
    def digest(self) -> str:
        """Content digest of the checkpoint directory; hashed on first use (a real pi0 is gigabytes,
        and the rollout workers that load it never need it)."""
        return directory_digest(self.path)

    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self._queue = []

    def _check_guidance(self, guidance: float) -> None:
        if guidance == 1.0:
            return
        if self.provenance.get("indicator_mode") == "ignore" or not self.provenance.get("indicator_dropout"):
            raise RecapError(f"{self.path}: guidance {guidance} needs a policy trained with the indicator and "
                             "indicator dropout > 0 (no unconditional model otherwise); use guidance 1")

    def _inputs(self, observation: dict, tasks: list[str]) -> dict:
        return self.preprocessor({**observation, "task": tasks})

    @torch.no_grad()
    def predict_chunk(self, observation: dict, task: str | list[str], guidance: float = 1.0,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
        """Actions (B, chunk_size, action_dim) in the data's units for a batch of observations
        ({camera key: (B, 3, H, W) in [0, 1], observation.state: (B, S)}) and its task(s)."""
        self._check_guidance(guidance)
        tasks = [task] * observation[STATE_KEY].shape[0] if isinstance(task, str) else list(task)
        conditional = self.provenance.get("indicator_mode") != "ignore"
        pos = self._inputs(observation, [prompt(t, True) if conditional else t for t in tasks])
        unc = None if guidance == 1.0 else self._inputs(observation, tasks)
        actions = lerobot_compat.sample_chunk(self.policy, pos, unc, noise, guidance)  # (B, chunk, max_action_dim)
        actions = actions[:, :, :self.config.output_features[ACTION_KEY].shape[0]]  # (B, chunk, A)
        return self.postprocessor(actions)

    def select_action(self, observation: dict, task: str, guidance: float = 1.0) -> torch.Tensor:
        """The next action (B, A): a new chunk every n_action_steps steps, as LeRobot's select_action."""
        if not self._queue:
            chunk = self.predict_chunk(observation, task, guidance)[:, :self.config.n_action_steps]
            self._queue = list(chunk.transpose(0, 1))  # n_action_steps x (B, A)
        return self._queue.pop(0)
