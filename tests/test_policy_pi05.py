"""pi0.5 beside pi0: the tiny pi0.5 trains, saves and loads as LeRobot loads it, guides as pi0 does,
puts the state into a prompt that is never cut, and refuses the other family's checkpoints."""

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_policy import FAST, assert_guidance_mixes_velocities, observation, sft_on

from recap_data.errors import RecapError
from recap_data.policy import lerobot_compat
from recap_data.policy.conditioning import prompt
from recap_data.policy.model import RecapPolicy, build_policy, prompt_too_long
from recap_data.policy.train import PolicyTrainConfig, train_policy

PI05 = dict(type="pi05", tokenizer_max_length=64, **FAST)
TASK = "put both moka pots on the stove"


@pytest.fixture(scope="module")
def pi05(labeled):
    """(store, SFT pi0.5 checkpoint trained with the indicator always on, its metrics)."""
    return sft_on(labeled, "sft-pi05", steps=60, **PI05)


def test_pi05_trains_and_records_its_family(pi05):
    _, sft, metrics = pi05
    assert metrics["final_loss"] < 0.9 * metrics["first_loss"], metrics
    assert json.loads((sft / "provenance.json").read_text())["type"] == "pi05"
    assert json.loads((sft / "config.json").read_text())["type"] == "pi05"
    assert 250_000 < metrics["parameters"] < 500_000  # the tiny variant, not gemma_300m


def test_pi05_round_trip_gives_the_same_actions_as_lerobot_loading_it(pi05):
    from lerobot.policies.pi05 import PI05Policy

    _, sft, _ = pi05
    ours = RecapPolicy.load(sft)
    assert ours.family == "pi05"
    theirs = PI05Policy.from_pretrained(sft, local_files_only=True)
    pre, post = lerobot_compat.load_processors(sft, ours.tokenizer, prompt_too_long)
    obs = observation()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, ours.config.chunk_size, ours.config.max_action_dim, generator=g)
    mine = ours.predict_chunk(obs, TASK, guidance=1.0, noise=noise)
    reference = post(theirs.predict_action_chunk(pre({**obs, "task": [prompt(TASK, True)] * 2}), noise=noise))
    assert mine.shape == (2, ours.config.chunk_size, 7)
    torch.testing.assert_close(mine, reference, rtol=0, atol=0)


def test_pi05_guidance_mixes_conditional_and_unconditional_velocities(pi05):
    assert_guidance_mixes_velocities(RecapPolicy.load(pi05[1]))


def test_pi05_prompt_carries_the_indicator_and_the_state_as_lerobot_writes_them(pi05):
    from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep

    _, sft, _ = pi05
    p = RecapPolicy.load(sft)
    obs = observation()
    tokens = p.preprocessor({**obs, "task": [prompt(TASK, True)] * 2})["observation.language.tokens"]  # (2, L)
    text = p.tokenizer.decode(tokens[0], skip_special_tokens=True)
    assert "Advantage: positive, State: " in text and text.strip().endswith("Action:")
    bins = text.split("State: ")[1].split(";")[0].split()
    assert len(bins) == 8 and all(-1 <= int(b) <= 255 for b in bins)
    # our copy of LeRobot's prompt format, which the tiny tokenizer and the length bound rely on
    step = Pi05PrepareStateTokenizerProcessorStep()
    transition = step({"observation": {"observation.state": torch.zeros(1, 3)},
                       "complementary_data": {"task": [prompt(TASK, False)]}})
    made = transition["complementary_data"]["task"]
    assert made == [lerobot_compat.pi05_prompt(prompt(TASK, False), "128 128 128")]  # a normalized 0 is bin 128


def test_pi05_prompt_over_the_limit_is_refused_before_training_and_at_inference(pi05, tmp_path):
    store, sft, _ = pi05
    with pytest.raises(RecapError, match=r"over policy.tokenizer_max_length=40; raise it \(the indicator text and "
                                         "the state are never cut"):
        train_policy(store, {"base": 1.0}, None, tmp_path / "x",
                     PolicyTrainConfig(indicator_mode="on", steps=1, **{**PI05, "tokenizer_max_length": 40}),
                     progress=False)
    assert not (tmp_path / "x").exists()
    p = RecapPolicy.load(sft)
    with pytest.raises(RecapError, match="over policy.tokenizer_max_length=64"):  # the guard, not a silent cut
        p.predict_chunk(observation(), TASK + " and then every other pot in the kitchen", guidance=1.0)


def test_a_checkpoint_of_the_other_family_is_refused(pi05, tmp_path):
    store, sft, _ = pi05
    with pytest.raises(RecapError, match="a pi05 checkpoint, and policy.type is pi0.*--type pi05"):
        train_policy(store, None, "raw", tmp_path / "x", PolicyTrainConfig(indicator_mode="use", steps=1, **FAST),
                     init=sft, progress=False)
    features = store.manifest("base").features
    with pytest.raises(RecapError, match="holds a 'pi05' checkpoint.*policy.type is 'pi0'.*lerobot/pi0_base"):
        build_policy(PolicyTrainConfig(size="real", pretrained_path=str(sft)), features)
    with pytest.raises(RecapError, match="pretrained_path.*hf download lerobot/pi05_base"):
        build_policy(PolicyTrainConfig(type="pi05", size="real", pretrained_path=str(tmp_path)), features)
    edited = tmp_path / "edited"
    shutil.copytree(sft, edited)
    provenance = json.loads((edited / "provenance.json").read_text())
    (edited / "provenance.json").write_text(json.dumps({**provenance, "type": "pi0"}))
    with pytest.raises(RecapError, match="field 'type' is 'pi05' but provenance.json says 'pi0'"):
        RecapPolicy.load(edited)
    with pytest.raises(RecapError, match="field 'type' = 'pi1' is not a policy family.*pi0, pi05"):
        lerobot_compat.policy_class("pi1")


def test_an_embedded_rollout_of_a_pi05_policy_lands_as_a_shard_that_verifies(pi05):
    from conftest import run_cli

    from recap_data.sim.rollout import RolloutConfig, rollout

    store, sft, _ = pi05
    manifest, metrics = rollout(store, "pi05-roll", str(sft), RolloutConfig(episodes=2, max_steps=0, guidance=1.5),
                                progress=False)
    assert manifest.episodes == 2 and metrics["frames"] == manifest.frames > 0
    assert manifest.source["policy"]["type"] == "pi05" and manifest.source["guidance"] == 1.5
    verified = run_cli("shards", "verify", "pi05-roll", root=store.root)
    assert verified.exit_code == 0 and "pi05-roll: ok" in verified.output, verified.output


def test_no_module_but_the_adapter_touches_lerobot_internals():
    """Outside lerobot_compat, recap_data imports no lerobot.policies module and reads or writes no
    attribute of the form `x._name` other than on self / cls (LeRobot's privates are ours to adapt
    in one place)."""
    package = Path(lerobot_compat.__file__).parents[1]
    allowed = {"libero.py: ._assets_path_cache"}  # LIBERO's own asset cache (the simulator's, not LeRobot's)
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "lerobot_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: imports {n}" for n in names if n.startswith("lerobot.policies")]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offenders.append(f"{path.name}: .{node.attr}")
    assert not set(offenders) - allowed, offenders
