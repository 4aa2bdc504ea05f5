"""pi0 policies for RECAP: build (tiny or real), save, load, and choose actions with guidance.

A policy checkpoint directory is LeRobot's save_pretrained layout plus recap-data's files:

  config.json  model.safetensors                     PI0Policy.save_pretrained
  policy_preprocessor.json  policy_postprocessor.json  (+ normalizer state)   the pi0 processors
  tokenizer/        the tokenizer the processors use (tiny: built here; real: the PaliGemma one)
  provenance.json   format, shards and label set with digests, init digest, mode, dropout, steps
  metrics.json  loss.csv

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
from recap_data.policy import pi0_compat
from recap_data.policy.conditioning import prompt
from recap_data.store.paths import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE
from recap_data.store.paths import PROVENANCE_FILE as PROVENANCE
from recap_data.store.schema import ACTION_KEY, STATE_KEY, camera_keys
from recap_data.train.checkpoint import directory_digest, weights_errors

FORMAT = "recap-data/pi0-policy@1"


def policy_features(features: dict) -> tuple[dict, dict]:
    """(input_features, output_features) for pi0 from a shard's feature dict."""
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {}
    for key in camera_keys(features):
        h, w, c = features[key]["shape"]
        inputs[key] = PolicyFeature(type=FeatureType.VISUAL, shape=(c, h, w))
    inputs[STATE_KEY] = PolicyFeature(type=FeatureType.STATE, shape=tuple(features[STATE_KEY]["shape"]))
    return inputs, {ACTION_KEY: PolicyFeature(type=FeatureType.ACTION, shape=tuple(features[ACTION_KEY]["shape"]))}


def prompt_texts(tasks) -> list[str]:
    """Every prompt the policy can see for these tasks, as the tokenizer sees it (pi0 appends '\\n')."""
    return [prompt(t, i) + "\n" for t in sorted(set(tasks)) for i in (True, False, None)]


def check_prompt_lengths(tokenizer, tasks, max_length: int) -> None:
    """Every task with its indicator text must fit the tokenizer limit: pi0 would cut it silently."""
    for text in prompt_texts(tasks):
        n = len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        if n > max_length:
            shown = text.strip().replace("\n", " | ")
            raise RecapError(f"prompt {shown[:70]!r} is {n} tokens, over policy.tokenizer_max_length={max_length}; "
                             "raise it (the indicator text is never cut)")


def build_tokenizer(size: str, tasks, tokenizer_path: str | None, max_length: int):
    """tiny: a byte-level BPE tokenizer trained on the prompts; real: the local PaliGemma tokenizer."""
    from transformers import AutoTokenizer

    from recap_data.train.tokenizer import tiny_tokenizer

    if size == "tiny":
        return tiny_tokenizer(prompt_texts(tasks), pi0_compat.TINY_VOCAB, max_length)
    if not tokenizer_path or not Path(tokenizer_path).is_dir():
        raise RecapError(f"policy: field 'tokenizer_path' = {tokenizer_path!r} is not a directory; point it at a "
                         "local copy of the PaliGemma tokenizer (google/paligemma-3b-pt-224)")
    return AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)


def build_policy(cfg, features: dict):
    """A new PI0Policy: tiny (random weights) or real (weights from cfg.pretrained_path). `cfg`: PolicyTrainConfig."""
    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.pi0 import PI0Config, PI0Policy

    pi0_compat.install()
    inputs, outputs = policy_features(features)
    common = {"chunk_size": cfg.chunk_size, "n_action_steps": cfg.n_action_steps, "device": "cpu",
              "tokenizer_max_length": cfg.tokenizer_max_length, "num_inference_steps": cfg.num_inference_steps}
    if cfg.size == "tiny":
        config = PI0Config(paligemma_variant=pi0_compat.TINY_VARIANT, action_expert_variant=pi0_compat.TINY_VARIANT,
                           image_resolution=(cfg.image_size, cfg.image_size), **common)
        config.input_features, config.output_features = inputs, outputs
        return PI0Policy(config)
    path = Path(cfg.pretrained_path or "")
    if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise RecapError(f"policy: field 'pretrained_path' = {cfg.pretrained_path!r} holds no config.json and "
                         "model.safetensors; point it at a local copy of lerobot/pi0_base")
    config = PreTrainedConfig.from_pretrained(path, local_files_only=True)
    for key, value in common.items():
        setattr(config, key, value)
    config.input_features, config.output_features = inputs, outputs
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # from_pretrained prints, and falls back to random weights
        policy = PI0Policy.from_pretrained(path, config=config, local_files_only=True, strict=False)
    log = printed.getvalue()
    if "Could not load" in log or "Missing keys" in log:
        raise RecapError(f"{path}: pi0 weights did not load ({log.strip().splitlines()[-1]}); "
                         "check that it is a lerobot/pi0_base checkpoint")
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
    """A trained policy: pi0 with its processors and tokenizer; actions with guidance beta."""

    def __init__(self, path: Path, policy, preprocessor, postprocessor, tokenizer, provenance: dict):
        self.path, self.policy, self.preprocessor, self.postprocessor = path, policy, preprocessor, postprocessor
        self.tokenizer, self.provenance = tokenizer, provenance
        self.config = policy.config
        self._queue: list[torch.Tensor] = []

    @classmethod
    def load(cls, path, device: str = "cpu") -> "RecapPolicy":
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.pi0 import PI0Policy
        from safetensors.torch import load_model
        from transformers import PreTrainedTokenizerFast

        path = Path(path)
        provenance = read_provenance(path)
        pi0_compat.install()
        config = PreTrainedConfig.from_pretrained(path, local_files_only=True)
        config.device = device
        policy = PI0Policy(config)
        with weights_errors(path / WEIGHTS_FILE, "train policy"):
            load_model(policy, str(path / WEIGHTS_FILE), strict=True)  # our own layout: every key must match
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path / TOKENIZER_DIR))
        policy.to(device).eval()
        pre, post = pi0_compat.load_processors(path, tokenizer, device)
        return cls(path, policy, pre, post, tokenizer, provenance)

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
        state = observation[STATE_KEY]
        tasks = [task] * state.shape[0] if isinstance(task, str) else list(task)
        conditional = self.provenance.get("indicator_mode") != "ignore"
        pos = self._inputs(observation, [prompt(t, True) if conditional else t for t in tasks])
        images, img_masks = self.policy._preprocess_images(pos)
        state = self.policy.prepare_state(pos)  # (B, max_state_dim)
        if noise is None:
            noise = self.policy.model.sample_noise((state.shape[0], self.config.chunk_size, self.config.max_action_dim),
                                                   state.device)
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        tokens, masks = pos[OBS_LANGUAGE_TOKENS], pos[OBS_LANGUAGE_ATTENTION_MASK]
        if guidance == 1.0:
            actions = self.policy.model.sample_actions(images, img_masks, tokens, masks, state, noise=noise)
        else:
            unc = self._inputs(observation, tasks)
            actions = guided_sample(self.policy.model, images, img_masks, tokens, masks, unc[OBS_LANGUAGE_TOKENS],
                                    unc[OBS_LANGUAGE_ATTENTION_MASK], state, noise, guidance)
        actions = actions[:, :, :self.config.output_features[ACTION_KEY].shape[0]]  # (B, chunk, A)
        return self.postprocessor(actions)

    def select_action(self, observation: dict, task: str, guidance: float = 1.0) -> torch.Tensor:
        """The next action (B, A): a new chunk every n_action_steps steps, as LeRobot's select_action."""
        if not self._queue:
            chunk = self.predict_chunk(observation, task, guidance)[:, :self.config.n_action_steps]
            self._queue = list(chunk.transpose(0, 1))  # n_action_steps x (B, A)
        return self._queue.pop(0)


@torch.no_grad()
def guided_sample(model, images, img_masks, tokens_pos, masks_pos, tokens_unc, masks_unc, state, noise,
                  beta: float) -> torch.Tensor:
    """PI0Pytorch.sample_actions with classifier-free guidance: (B, chunk, max_action_dim).

    The prefix (images + prompt) of the positive and the unconditional prompt run as one batch of
    2B; each Euler step denoises both and mixes v_uncond + beta * (v_pos - v_uncond).
    """
    from lerobot.policies.common.flow_matching import euler_integrate
    from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

    b = state.shape[0]
    images2 = [torch.cat([im, im]) for im in images]  # K x (2B, 3, H, W)
    img_masks2 = [torch.cat([m, m]) for m in img_masks]  # K x (2B,)
    tokens = torch.cat([tokens_pos, tokens_unc])  # (2B, L)
    masks = torch.cat([masks_pos, masks_unc])  # (2B, L)
    state2 = torch.cat([state, state])  # (2B, max_state_dim)
    prefix_embs, prefix_pad_masks, prefix_att_masks = model.embed_prefix(images2, img_masks2, tokens, masks)
    prefix_att_4d = prepare_attention_masks_4d(make_att_2d_masks(prefix_pad_masks, prefix_att_masks))
    position_ids = torch.cumsum(prefix_pad_masks, dim=1) - 1
    model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
    _, past_key_values = model.paligemma_with_expert.forward(
        attention_mask=prefix_att_4d, position_ids=position_ids, past_key_values=None,
        inputs_embeds=[prefix_embs, None], use_cache=True)

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = model.denoise_step(state=state2, prefix_pad_masks=prefix_pad_masks, past_key_values=past_key_values,
                               x_t=torch.cat([x_t, x_t]), timestep=torch.cat([t, t]))  # (2B, chunk, D)
        v_pos, v_unc = v[:b], v[b:]
        return v_unc + beta * (v_pos - v_unc)

    return euler_integrate(velocity, noise, model.config.num_inference_steps)
