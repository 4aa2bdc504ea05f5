"""The real-size path's shapes, in seconds: pi0 and pi0.5 at the reference widths (PaliGemma
gemma_2b with the gemma_300m expert, SigLIP so400m, 224-px images; the policies with the tiny
vocabulary) and the reference value model (SigLIP so400m with Gemma 3 270M), each cut to one
layer, built with random weights, stepped once and sampled with guidance.
bench/bench_real_size.py builds and steps them whole."""

import pytest
import torch

from recap_data.policy.conditioning import prompt
from recap_data.policy.model import build_tokenizer, processors, reference_policy
from recap_data.policy.train import PolicyTrainConfig
from recap_data.store.schema import ACTION_KEY, STATE_KEY
from recap_data.value.model import ValueModelConfig, reference_model

pytestmark = pytest.mark.slow  # the real widths, one layer: about a minute

CAMERAS = ("observation.images.image", "observation.images.image2")
TASK = "put both moka pots on the stove"
FEATURES = {**{c: {"dtype": "video", "shape": [224, 224, 3]} for c in CAMERAS},
            STATE_KEY: {"dtype": "float32", "shape": [8]}, ACTION_KEY: {"dtype": "float32", "shape": [7]}}


def stats() -> dict:
    return {key: {"mean": torch.zeros(n), "std": torch.ones(n), "min": -torch.ones(n), "max": torch.ones(n),
                  "q01": -torch.ones(n), "q99": torch.ones(n)} for key, n in ((STATE_KEY, 8), (ACTION_KEY, 7))}


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_policy_at_the_reference_widths_steps_and_guides(family):
    torch.manual_seed(0)
    cfg = PolicyTrainConfig(type=family, chunk_size=50, n_action_steps=50, tokenizer_max_length=64,
                            num_inference_steps=2, train_expert_only=True, freeze_vision_encoder=True)
    policy = reference_policy(cfg, FEATURES, layers=1)
    vlm = policy.model.paligemma_with_expert.paligemma
    assert vlm.config.text_config.hidden_size == 2048 and vlm.config.text_config.intermediate_size == 16_384
    assert vlm.config.vision_config.hidden_size == 1152 and vlm.config.vision_config.num_hidden_layers == 1
    assert policy.model.paligemma_with_expert.gemma_expert.config.hidden_size == 1024
    tokenizer = build_tokenizer(cfg, [TASK], 8)  # the project's tokenizer: its ids lie inside PaliGemma's vocabulary
    pre, _ = processors(policy.config, stats(), tokenizer)
    b = 2
    frames = {c: torch.rand(b, 3, 224, 224) for c in CAMERAS}
    batch = pre({**frames, STATE_KEY: torch.randn(b, 8), ACTION_KEY: torch.randn(b, 50, 7),
                 "task": [prompt(TASK, True), prompt(TASK, False)]})
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    policy.train()
    loss, _ = policy(batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not any(p.requires_grad for p in vlm.parameters())  # train_expert_only: the VLM stays frozen
    expert = policy.model.paligemma_with_expert.gemma_expert.model  # its lm_head is never used
    assert all(p.grad is not None for p in expert.parameters())
    policy.eval()
    pos = pre({**frames, STATE_KEY: torch.randn(b, 8), "task": [prompt(TASK, True)] * b})
    unc = pre({**frames, STATE_KEY: pos[STATE_KEY], "task": [TASK] * b})
    from recap_data.policy.lerobot_compat import sample_chunk

    chunk = sample_chunk(policy, pos, unc, None, 1.5)  # (B, chunk, max_action_dim)
    assert chunk.shape == (b, 50, policy.config.max_action_dim) and torch.isfinite(chunk).all()


def test_value_model_at_the_reference_widths_steps():
    torch.manual_seed(0)
    model = reference_model(ValueModelConfig(size="real", camera_keys=list(CAMERAS), state_mlp=True), layers=1)
    assert model.vision.config.hidden_size == 1152 and model.text.config.hidden_size == 640
    assert model.text.config.vocab_size == 262_144 and model.cfg.image_size == 224
    b = 2
    ids = torch.randint(0, 512, (b, 12))  # the project's tokenizer's ids, inside Gemma's vocabulary
    logits = model(torch.rand(b, 2, 3, 224, 224), torch.randn(b, 8), ids, torch.ones_like(ids))
    assert logits.shape == (b, 201) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.vision.parameters())  # the whole model trains
