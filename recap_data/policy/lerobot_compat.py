"""The one place where recap-data adapts LeRobot 0.6.1: pi0 and pi0.5, their processors and
sampling, and the LIBERO environment's initial-state counter. No other module imports
lerobot.policies or reads or writes a private LeRobot attribute (tests/test_policy_pi05.py checks).

LeRobot's pi0 and pi0.5 accept only the variants gemma_300m and gemma_2b (3.3B parameters with
the expert) and load the PaliGemma tokenizer from the Hugging Face hub. For CPU runs and tests
recap-data adds a variant "gemma_tiny" (pi0 0.27M parameters, pi0.5 0.33M) and
passes tokenizer objects. `install()` makes small, idempotent patches, the same for each family
(pi0.5's modules hold their own copies of pi0's classes, so each is patched on its own):

1. PI0Config / PI05Config.__post_init__ reject unknown variants: "gemma_tiny" is checked as if
   it were gemma_300m, a shallow variant "gemma_2b:1" as gemma_2b (the other checks still run),
   then restored.
2. get_gemma_config("gemma_tiny") returns TINY_GEMMA. Both models hard-code 8 attention heads
   (compute_layer_complete reshapes to 8 * head_dim), and the VLM and the action expert share
   depth, heads and head_dim, so only the width and MLP size are shrunk. A shallow variant
   (`shallow_variant`: the real widths with fewer layers, for shape tests) is the real config
   with its depth cut.
3. PaliGemmaWithExpertModel hard-codes a 257,152-token vocabulary, a 4,304-wide SigLIP MLP and
   projection_dim 2048. While a gemma_tiny model is being built (and only then), the two model
   classes it constructs shrink their configs: TINY_VOCAB tokens, TINY_VISION, and
   projection_dim = the VLM width (the image tokens join the language tokens). While a shallow
   one is built, the vocabulary is the tiny one too and the SigLIP tower gets the cut depth.
4. make_pi0(5)_pre_post_processors build TokenizerProcessorStep(tokenizer_name="google/paligemma-3b-pt-224");
   processors() builds LeRobot's own pipelines with a tokenizer object instead. LeRobot then
   saves no tokenizer name, and load_processors() passes the tokenizer back as an override.

LeRobot's TokenizerProcessorStep cuts a prompt longer than tokenizer_max_length without a word
(truncation=True): for pi0 that drops the indicator, for pi0.5 the state. Every preprocessor
made here carries a hook that measures the final prompt first and calls `too_long` instead.

A tiny checkpoint loads with PI0Policy / PI05Policy.from_pretrained once install() has run.
"""

import contextvars
import importlib
from collections.abc import Callable
from functools import partial

from recap_data.errors import RecapError

TINY_VARIANT = "gemma_tiny"
TINY_VOCAB = 512  # the tiny tokenizer is trained to at most this many tokens
# SigLIP tower of the tiny variant; its patch embedding needs image_resolution % patch_size == 0.
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "patch_size": 8}
# family (LeRobot's config `type`) -> (package, config class, policy class, processor factory)
FAMILIES = {"pi0": ("lerobot.policies.pi0", "PI0Config", "PI0Policy", "make_pi0_pre_post_processors"),
            "pi05": ("lerobot.policies.pi05", "PI05Config", "PI05Policy", "make_pi05_pre_post_processors")}
STATE_BINS = 256  # pi0.5 writes each normalized state dimension into its prompt as a bin in -1..255
_building = contextvars.ContextVar("recap_data_building_variant", default=None)  # the VLM's _VariantConfig
_installed = False


def _module(family: str, name: str):
    return importlib.import_module(f"{FAMILIES[family][0]}.{name}_{family}")


def config_class(family: str, what: str = "policy: field 'type'"):
    """PI0Config or PI05Config; any other family is a one-line error naming `what`."""
    _check_family(family, what)
    install()
    return getattr(_module(family, "configuration"), FAMILIES[family][1])


def policy_class(family: str, what: str = "policy: field 'type'"):
    """PI0Policy or PI05Policy."""
    _check_family(family, what)
    install()
    return getattr(_module(family, "modeling"), FAMILIES[family][2])


def _check_family(family: str, what: str) -> None:
    if family not in FAMILIES:
        raise RecapError(f"{what} = {family!r} is not a policy family recap-data trains; use one of "
                         f"{', '.join(FAMILIES)}")


def install() -> None:
    """Apply the patches to both families (idempotent)."""
    global _installed
    if _installed:
        return
    tiny_gemma = _VariantConfig(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=8, tiny=True)
    for family in FAMILIES:
        _patch_config(getattr(_module(family, "configuration"), FAMILIES[family][1]))
        _patch_model(_module(family, "modeling"), tiny_gemma)
    _installed = True


def _patch_config(config_cls) -> None:
    original_post_init = config_cls.__post_init__

    def post_init(self):
        ours = {f: getattr(self, f) for f in ("paligemma_variant", "action_expert_variant")
                if getattr(self, f) == TINY_VARIANT or ":" in getattr(self, f)}
        for field, variant in ours.items():
            setattr(self, field, "gemma_300m" if variant == TINY_VARIANT else variant.split(":")[0])
        try:
            original_post_init(self)
        finally:
            for field, variant in ours.items():
                setattr(self, field, variant)

    config_cls.__post_init__ = post_init


def _patch_model(modeling, tiny_gemma) -> None:
    original_get_config = modeling.get_gemma_config

    def get_gemma_config(variant: str):
        if variant == TINY_VARIANT:
            return tiny_gemma
        if ":" in variant:  # shallow: the real widths, `layers` deep
            base, layers = variant.split(":")
            real = original_get_config(base)
            return _VariantConfig(real.width, int(layers), real.mlp_dim, real.num_heads, real.num_kv_heads,
                                  real.head_dim, tiny=False)
        return original_get_config(variant)

    modeling.get_gemma_config = get_gemma_config

    original_init = modeling.PaliGemmaWithExpertModel.__init__

    def with_expert_init(self, vlm_config, action_expert_config, *args, **kwargs):
        token = _building.set(vlm_config if isinstance(vlm_config, _VariantConfig) else None)
        try:
            original_init(self, vlm_config, action_expert_config, *args, **kwargs)
        finally:
            _building.reset(token)

    modeling.PaliGemmaWithExpertModel.__init__ = with_expert_init

    vlm_class, expert_class = modeling.PaliGemmaForConditionalGenerationWithPiGemma, modeling.PiGemmaForCausalLM

    class TinyAwarePaliGemma(vlm_class):
        def __init__(self, config):
            variant = _building.get()
            if variant is not None:  # ours: the tiny vocabulary, and a tiny or a shallow vision tower
                config._vocab_size = TINY_VOCAB
                config.image_token_index = TINY_VOCAB - 1
                config.text_config.vocab_size = TINY_VOCAB
                if variant.tiny:
                    for key, value in TINY_VISION.items():
                        setattr(config.vision_config, key, value)
                    config.vision_config.projection_dim = config.text_config.hidden_size
                else:
                    config.vision_config.num_hidden_layers = variant.depth
            super().__init__(config)

    class TinyAwareExpert(expert_class):
        def __init__(self, config, **kwargs):
            if _building.get() is not None:
                config.vocab_size = TINY_VOCAB
            super().__init__(config, **kwargs)

    modeling.PaliGemmaForConditionalGenerationWithPiGemma = TinyAwarePaliGemma
    modeling.PiGemmaForCausalLM = TinyAwareExpert


class _VariantConfig:
    """Same fields as modeling_pi0.GemmaConfig; its type marks one of our variants (tiny or shallow)."""

    def __init__(self, width, depth, mlp_dim, num_heads, num_kv_heads, head_dim, tiny: bool):
        self.width, self.depth, self.mlp_dim = width, depth, mlp_dim
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.tiny = tiny


def shallow_variant(variant: str, layers: int) -> str:
    """LeRobot's `variant` (gemma_2b, gemma_300m) at its real widths (hidden, MLP, heads, the
    so400m vision tower) with `layers` transformer layers in the VLM, the action expert and the
    vision tower, and the tiny vocabulary: every layer's shape of the real model, built in seconds
    where the real embedding tables alone take a minute of random initialization on 2 cores
    (tests/test_real_widths.py; bench/bench_real_size.py builds the whole model)."""
    return f"{variant}:{layers}"


def pi05_prompt(task: str, state_bins: str) -> str:
    """The text pi0.5's Pi05PrepareStateTokenizerProcessorStep makes of a task and its state bins
    ("12 255 -1 ..."); used to train the tiny tokenizer and to bound prompt lengths (a test checks
    it against LeRobot's step)."""
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    return f"Task: {cleaned}, State: {state_bins};\nAction: "


def processors(config, dataset_stats: dict | None, tokenizer, too_long: Callable[[str, int, int], None]):
    """LeRobot's (preprocessor, postprocessor) for the config's family, tokenizing with `tokenizer`
    (no hub access); the preprocessor calls too_long(prompt, tokens, limit) before a cut."""
    from unittest import mock

    install()
    module = _module(config.type, "processor")
    step = partial(module.TokenizerProcessorStep, tokenizer=tokenizer)
    with mock.patch.object(module, "TokenizerProcessorStep", step):
        pre, post = getattr(module, FAMILIES[config.type][3])(config, dataset_stats=dataset_stats)
    return _guard(pre, too_long), post


def load_processors(path, tokenizer, too_long: Callable[[str, int, int], None], device: str = "cpu"):
    """The (preprocessor, postprocessor) saved beside a policy by save_pretrained, with `tokenizer`."""
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (
        batch_to_transition,
        policy_action_to_transition,
        transition_to_batch,
        transition_to_policy_action,
    )

    install()
    pre = PolicyProcessorPipeline.from_pretrained(
        path, config_filename="policy_preprocessor.json", local_files_only=True,
        overrides={"tokenizer_processor": {"tokenizer": tokenizer}, "device_processor": {"device": device}},
        to_transition=batch_to_transition, to_output=transition_to_batch)
    post = PolicyProcessorPipeline.from_pretrained(
        path, config_filename="policy_postprocessor.json", local_files_only=True,
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    return _guard(pre, too_long), post


def _guard(pre, too_long: Callable[[str, int, int], None]):
    """Measure each prompt as the tokenizer step will see it (after pi0's newline, after pi0.5's
    state) and call too_long rather than let the step cut it. Hooks are not saved with the pipeline."""
    from lerobot.processor import TokenizerProcessorStep, TransitionKey

    def hook(index: int, transition) -> None:
        step = pre.steps[index]
        if not isinstance(step, TokenizerProcessorStep):
            return
        texts = transition[TransitionKey.COMPLEMENTARY_DATA]["task"]
        for text in [texts] if isinstance(texts, str) else texts:
            n = len(step.input_tokenizer(text, truncation=False)["input_ids"])
            if n > step.max_length:
                too_long(text, n, step.max_length)

    pre.register_before_step_hook(hook)
    return pre


def sample_chunk(policy, pos: dict, unc: dict | None, noise, beta: float):
    """Actions (B, chunk, max_action_dim), normalized, for preprocessed batches: `pos` with the
    positive prompt and `unc` with the task alone. unc None: LeRobot's own sample_actions on pos.
    Otherwise classifier-free guidance: the two prefixes run as one batch of 2B and each Euler
    step mixes v_uncond + beta * (v_pos - v_uncond). pi0 also feeds the state to the action
    expert; pi0.5 has it in the prompt only."""
    import torch

    with torch.no_grad():
        return _sample_chunk(policy, pos, unc, noise, beta)


def _sample_chunk(policy, pos: dict, unc: dict | None, noise, beta: float):
    import torch
    from lerobot.policies.common.flow_matching import euler_integrate
    from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    model, config = policy.model, policy.config
    images, img_masks = policy._preprocess_images(pos)  # K x (B, 3, H, W), K x (B,)
    b = img_masks[0].shape[0]
    state = policy.prepare_state(pos) if config.type == "pi0" else None  # (B, max_state_dim)
    if noise is None:
        noise = model.sample_noise((b, config.chunk_size, config.max_action_dim), images[0].device)
    tokens, masks = pos[OBS_LANGUAGE_TOKENS], pos[OBS_LANGUAGE_ATTENTION_MASK]  # (B, L)
    with_state = {} if state is None else {"state": state}
    if unc is None:
        return model.sample_actions(images, img_masks, tokens, masks, *with_state.values(), noise=noise)

    images2 = [torch.cat([im, im]) for im in images]  # K x (2B, 3, H, W)
    img_masks2 = [torch.cat([m, m]) for m in img_masks]  # K x (2B,)
    tokens2 = torch.cat([tokens, unc[OBS_LANGUAGE_TOKENS]])  # (2B, L)
    masks2 = torch.cat([masks, unc[OBS_LANGUAGE_ATTENTION_MASK]])  # (2B, L)
    state2 = {} if state is None else {"state": torch.cat([state, state])}  # (2B, max_state_dim)
    prefix_embs, prefix_pad_masks, prefix_att_masks = model.embed_prefix(images2, img_masks2, tokens2, masks2)
    prefix_att_4d = prepare_attention_masks_4d(make_att_2d_masks(prefix_pad_masks, prefix_att_masks))
    position_ids = torch.cumsum(prefix_pad_masks, dim=1) - 1
    model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
    _, past_key_values = model.paligemma_with_expert.forward(
        attention_mask=prefix_att_4d, position_ids=position_ids, past_key_values=None,
        inputs_embeds=[prefix_embs, None], use_cache=True)

    def velocity(x_t, t):
        v = model.denoise_step(**state2, prefix_pad_masks=prefix_pad_masks, past_key_values=past_key_values,
                               x_t=torch.cat([x_t, x_t]), timestep=torch.cat([t, t]))  # (2B, chunk, D)
        v_pos, v_unc = v[:b], v[b:]
        return v_unc + beta * (v_pos - v_unc)

    return euler_integrate(velocity, noise, config.num_inference_steps)


def reset_libero(env, init_state: int, seed: int):
    """LiberoEnv.reset from official initial state `init_state`: LeRobot's reset loads the state its
    own counter names, then advances the counter, so the counter is set first."""
    env.init_state_id = init_state
    return env.reset(seed=seed)
