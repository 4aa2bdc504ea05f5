"""The one place where recap-data adapts LeRobot 0.6.1's pi0: a tiny variant and offline tokenizers.

LeRobot's pi0 accepts only the variants gemma_300m and gemma_2b (1.8B / 4.0B parameters) and
loads the PaliGemma tokenizer from the Hugging Face hub. For CPU runs and tests recap-data adds
a variant "gemma_tiny" (about 0.5M parameters) and passes tokenizer objects. `install()` makes
four small, idempotent patches; nothing else in recap-data touches LeRobot's internals:

1. PI0Config.__post_init__ rejects unknown variants: "gemma_tiny" is checked as if it were
   gemma_300m (the other checks still run), then restored.
2. modeling_pi0.get_gemma_config("gemma_tiny") returns TINY_GEMMA. pi0 hard-codes 8 attention
   heads (compute_layer_complete reshapes to 8 * head_dim), and the VLM and the action expert
   share depth, heads and head_dim, so only the width and MLP size are shrunk.
3. PaliGemmaWithExpertModel hard-codes a 257,152-token vocabulary, a 4,304-wide SigLIP MLP and
   projection_dim 2048. While a gemma_tiny pi0 is being built (and only then), the two model
   classes it constructs shrink their configs: TINY_VOCAB tokens, TINY_VISION, and
   projection_dim = the VLM width (the image tokens join the language tokens).
4. make_pi0_pre_post_processors builds TokenizerProcessorStep(tokenizer_name="google/paligemma-3b-pt-224");
   pi0_processors() builds LeRobot's own pipelines with a tokenizer object instead. LeRobot then
   saves no tokenizer name, and load_processors() passes the tokenizer back as an override.

A tiny checkpoint loads with PI0Policy.from_pretrained once install() has run.
"""

import contextvars
from functools import partial

TINY_VARIANT = "gemma_tiny"
TINY_VOCAB = 512  # the tiny tokenizer is trained to at most this many tokens
# SigLIP tower of the tiny variant; its patch embedding needs image_resolution % patch_size == 0.
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "patch_size": 8}
_building_tiny = contextvars.ContextVar("recap_data_building_tiny_pi0", default=False)
_installed = False


def install() -> None:
    """Apply the patches (idempotent)."""
    global _installed
    if _installed:
        return
    from lerobot.policies.pi0 import configuration_pi0, modeling_pi0

    original_post_init = configuration_pi0.PI0Config.__post_init__

    def post_init(self):
        tiny = {f: getattr(self, f) == TINY_VARIANT for f in ("paligemma_variant", "action_expert_variant")}
        for field, is_tiny in tiny.items():
            if is_tiny:
                setattr(self, field, "gemma_300m")
        try:
            original_post_init(self)
        finally:
            for field, is_tiny in tiny.items():
                if is_tiny:
                    setattr(self, field, TINY_VARIANT)

    configuration_pi0.PI0Config.__post_init__ = post_init

    original_get_config = modeling_pi0.get_gemma_config
    tiny_gemma = _TinyGemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=8)

    def get_gemma_config(variant: str):
        return tiny_gemma if variant == TINY_VARIANT else original_get_config(variant)

    modeling_pi0.get_gemma_config = get_gemma_config

    original_init = modeling_pi0.PaliGemmaWithExpertModel.__init__

    def with_expert_init(self, vlm_config, action_expert_config, *args, **kwargs):
        token = _building_tiny.set(isinstance(vlm_config, _TinyGemmaConfig))
        try:
            original_init(self, vlm_config, action_expert_config, *args, **kwargs)
        finally:
            _building_tiny.reset(token)

    modeling_pi0.PaliGemmaWithExpertModel.__init__ = with_expert_init

    vlm_class, expert_class = modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma, modeling_pi0.PiGemmaForCausalLM

    class TinyAwarePaliGemma(vlm_class):
        def __init__(self, config):
            if _building_tiny.get():
                config._vocab_size = TINY_VOCAB
                config.image_token_index = TINY_VOCAB - 1
                config.text_config.vocab_size = TINY_VOCAB
                for key, value in TINY_VISION.items():
                    setattr(config.vision_config, key, value)
                config.vision_config.projection_dim = config.text_config.hidden_size
            super().__init__(config)

    class TinyAwareExpert(expert_class):
        def __init__(self, config, **kwargs):
            if _building_tiny.get():
                config.vocab_size = TINY_VOCAB
            super().__init__(config, **kwargs)

    modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma = TinyAwarePaliGemma
    modeling_pi0.PiGemmaForCausalLM = TinyAwareExpert
    _installed = True


class _TinyGemmaConfig:
    """Same fields as modeling_pi0.GemmaConfig; its type marks a tiny build."""

    def __init__(self, width, depth, mlp_dim, num_heads, num_kv_heads, head_dim):
        self.width, self.depth, self.mlp_dim = width, depth, mlp_dim
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim


def pi0_processors(config, dataset_stats: dict | None, tokenizer):
    """LeRobot's pi0 (preprocessor, postprocessor), tokenizing with `tokenizer` (no hub access)."""
    from unittest import mock

    from lerobot.policies.pi0 import processor_pi0

    install()
    step = partial(processor_pi0.TokenizerProcessorStep, tokenizer=tokenizer)
    with mock.patch.object(processor_pi0, "TokenizerProcessorStep", step):
        return processor_pi0.make_pi0_pre_post_processors(config, dataset_stats=dataset_stats)


def load_processors(path, tokenizer, device: str = "cpu"):
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
    return pre, post
