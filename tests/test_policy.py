"""The pi0 policy trainer: SFT and advantage-conditioned runs, checkpoints, guidance, refusals."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli, torchrun

from recap_data.errors import RecapError
from recap_data.policy.conditioning import prompt
from recap_data.policy.data import PolicyFrames, load_policy_data
from recap_data.policy.lerobot_compat import sample_chunk
from recap_data.policy.model import RecapPolicy, build_policy, prompt_too_long
from recap_data.policy.train import PolicyTrainConfig, train_policy
from recap_data.store.label_sets import label_set_path, read_manifest
from recap_data.store.store import ShardStore
from recap_data.train.checkpoint import directory_digest

FAST = dict(batch_size=8, log_every=10)


def sft_on(labeled, name: str, **cfg) -> tuple:
    """(store, checkpoint, metrics): an SFT policy (mode on) trained on the `labeled` store's shards
    base and more, beside its value checkpoint; `cfg`: PolicyTrainConfig fields."""
    store, value = labeled
    out = value.parent / name
    metrics = train_policy(store, {"base": 1.0, "more": 1.0}, None, out,
                           PolicyTrainConfig(indicator_mode="on", **cfg), progress=False)
    return store, out, metrics


@pytest.fixture(scope="module")
def world(labeled):
    """The `labeled` store (shards base and more, label set `raw`) and an SFT policy trained on it (mode on)."""
    return sft_on(labeled, "sft", steps=120, **FAST)


def observation(batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"observation.images.image": torch.rand(batch, 3, 32, 32, generator=g),
            "observation.images.image2": torch.rand(batch, 3, 32, 32, generator=g),
            "observation.state": torch.randn(batch, 8, generator=g)}


def test_sft_training_lowers_the_loss_and_records_provenance(world):
    store, sft, metrics = world
    assert metrics["final_loss"] < 0.9 * metrics["first_loss"], metrics
    fractions = metrics["prompt_fractions"]  # 960 samples, dropout 0.3, mode on: no negative prompt
    assert fractions["negative"] == 0 and abs(fractions["none"] - 0.3) < 0.06, fractions
    provenance = json.loads((sft / "provenance.json").read_text())
    assert provenance["indicator_mode"] == "on" and provenance["indicator_dropout"] == 0.3
    assert provenance["steps"] == 120 and provenance["label_set"] is None and provenance["init"] is None
    assert [s["digest"] for s in provenance["shards"]] == [store.manifest(s).digest for s in ("base", "more")]
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
                 "tokenizer/tokenizer.json", "metrics.json", "loss.csv"):
        assert (sft / name).is_file(), name


def test_checkpoint_round_trip_gives_the_same_actions_as_lerobot_loading_it(world):
    from lerobot.policies.pi0 import PI0Policy

    from recap_data.policy.lerobot_compat import load_processors

    _, sft, _ = world
    ours = RecapPolicy.load(sft)
    theirs = PI0Policy.from_pretrained(sft, local_files_only=True)  # LeRobot's own loader
    pre, post = load_processors(sft, ours.tokenizer, prompt_too_long)
    obs, task = observation(), "put both moka pots on the stove"
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, ours.config.chunk_size, ours.config.max_action_dim, generator=g)
    mine = ours.predict_chunk(obs, task, guidance=1.0, noise=noise)
    batch = pre({**obs, "task": [prompt(task, True)] * 2})
    reference = post(theirs.predict_action_chunk(batch, noise=noise))
    assert mine.shape == (2, ours.config.chunk_size, 7)
    torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    again = RecapPolicy.load(sft).predict_chunk(obs, task, guidance=1.0, noise=noise)
    torch.testing.assert_close(mine, again, rtol=0, atol=0)


def assert_guidance_mixes_velocities(p: RecapPolicy) -> None:
    """Guidance through one 2B batch equals LeRobot's own sampler at beta 1 (the positive prompt)
    and beta 0 (the task alone), and differs from both elsewhere."""
    obs, task = observation(), "put both moka pots on the stove"
    pos = p.preprocessor({**obs, "task": [prompt(task, True)] * 2})
    unc = p.preprocessor({**obs, "task": [task] * 2})
    noise = torch.randn(2, p.config.chunk_size, p.config.max_action_dim, generator=torch.Generator().manual_seed(2))

    def guided(beta):
        return sample_chunk(p.policy, pos, unc, noise, beta)

    plain_pos, plain_unc = sample_chunk(p.policy, pos, None, noise, 1.0), sample_chunk(p.policy, unc, None, noise, 1.0)
    torch.testing.assert_close(guided(1.0), plain_pos, atol=1e-5, rtol=0)  # beta 1: the conditional policy
    torch.testing.assert_close(guided(0.0), plain_unc, atol=1e-5, rtol=0)  # beta 0: the unconditional one
    assert (plain_pos - plain_unc).abs().max() > 1e-4  # the prompt matters
    assert (guided(1.5) - plain_pos).abs().max() > 1e-4
    beta2 = p.predict_chunk(obs, task, guidance=2.0, noise=noise)
    assert beta2.shape == (2, p.config.chunk_size, 7) and torch.isfinite(beta2).all()


def test_guidance_mixes_conditional_and_unconditional_velocities(world):
    assert_guidance_mixes_velocities(RecapPolicy.load(world[1]))


def test_use_mode_trains_on_the_label_set_from_the_sft_checkpoint(world, tmp_path):
    store, sft, _ = world
    out = tmp_path / "iter1"
    metrics = train_policy(store, None, "raw", out, PolicyTrainConfig(indicator_mode="use", steps=20, **FAST),
                           init=sft, progress=False)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["label_set"]["name"] == "raw"
    assert provenance["label_set"]["digest"] == read_manifest(store, "raw").digest
    assert provenance["init"]["digest"] == directory_digest(sft)
    assert metrics["prompt_fractions"]["negative"] > 0.2  # ~70% of frames are negative, less the dropped ones
    assert metrics["prompt_fractions"]["positive"] > 0.05


def test_samples_match_lerobot_with_action_chunks(world):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    store, _, _ = world
    data = load_policy_data(store, {"more": 1.0}, "raw", "use")
    chunk = 10
    dataset = PolicyFrames(store, data, ["observation.images.image", "observation.images.image2"], chunk)
    reference = LeRobotDataset("recap-data/more", root=store.shard_path("more"),
                               delta_timestamps={"action": [i / 20 for i in range(chunk)]})
    ends = [lo for _, lo, _ in data.episodes[1:3]]
    for i in [0, 5, ends[0] - 3, ends[0] - 1, ends[1], len(dataset) - 1]:  # chunks that cross episode ends pad
        ours, theirs = dataset[i], reference[i]
        torch.testing.assert_close(ours["action"], theirs["action"])
        assert ours["action_is_pad"].tolist() == theirs["action_is_pad"].tolist()
        torch.testing.assert_close(ours["observation.images.image"], theirs["observation.images.image"])
        assert ours["task"] == theirs["task"]
    assert dataset[len(dataset) - 1]["action_is_pad"][1:].all()
    assert data.frames["indicator"].dtype == bool


def test_refusals(world, tmp_path):
    store, sft, _ = world
    with pytest.raises(RecapError, match="indicator_mode 'use' needs a label set.*raw"):
        train_policy(store, {"base": 1.0}, None, tmp_path / "x", PolicyTrainConfig(indicator_mode="use"),
                     progress=False)
    shutil.copytree(label_set_path(store, "raw"), label_set_path(store, "stale"))
    manifest = label_set_path(store, "stale") / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["name"], doc["shards"][1]["digest"] = "stale", "sha256:" + "0" * 64  # as if `more` had changed since
    manifest.write_text(json.dumps(doc))
    with pytest.raises(RecapError, match="shard more changed since its values were computed"):
        train_policy(store, None, "stale", tmp_path / "x", PolicyTrainConfig(steps=1), progress=False)
    store2 = ShardStore(tmp_path / "other")
    with pytest.raises(RecapError, match="no label set 'raw'"):
        train_policy(store2, None, "raw", tmp_path / "x", PolicyTrainConfig(steps=1), progress=False)
    with pytest.raises(RecapError, match="over policy.tokenizer_max_length=8.*never cut"):
        train_policy(store, {"base": 1.0}, None, tmp_path / "x",
                     PolicyTrainConfig(indicator_mode="on", tokenizer_max_length=8, steps=1), progress=False)
    with pytest.raises(RecapError, match="already exists"):
        train_policy(store, {"base": 1.0}, None, sft, PolicyTrainConfig(indicator_mode="on"), progress=False)
    assert not (tmp_path / "x").exists()
    ignore = tmp_path / "ignore"
    train_policy(store, {"base": 1.0}, None, ignore, PolicyTrainConfig(indicator_mode="ignore", steps=1, **FAST),
                 progress=False)
    with pytest.raises(RecapError, match="guidance 2.0 needs a policy trained with the indicator"):
        RecapPolicy.load(ignore).predict_chunk(observation(), "t", guidance=2.0)


def test_real_size_loads_local_pretrained_weights(world):
    from safetensors.torch import load_file

    store, sft, _ = world
    cfg = PolicyTrainConfig(size="real", pretrained_path=str(sft), tokenizer_path=str(sft / "tokenizer"))
    policy = build_policy(cfg, store.manifest("base").features)
    saved = load_file(str(sft / "model.safetensors"))
    state = policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    with pytest.raises(RecapError, match="pretrained_path.*lerobot/pi0_base"):
        build_policy(PolicyTrainConfig(size="real", pretrained_path=str(sft / "nothing")),
                     store.manifest("base").features)


def test_cli_trains_a_policy_and_reports_errors_in_one_line(world, tmp_path):
    store, sft, _ = world
    out = tmp_path / "cli-policy"
    result = run_cli("train", "policy", "--labels", "raw", "--shard", "base=2", "--out", str(out), "--steps", "2",
                     "--batch-size", "4", "--init", str(sft), root=store.root)
    assert result.exit_code == 0, result.output
    assert "wrote policy checkpoint" in result.output
    shards = json.loads((out / "provenance.json").read_text())["shards"]
    assert shards == [{"id": "base", "digest": store.manifest("base").digest, "weight": 2.0}]
    bad = run_cli("train", "policy", "--shard", "base", "--out", str(tmp_path / "y"), root=store.root)
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "needs a label set" in bad.output
    np.testing.assert_array_equal(sorted(p.name for p in tmp_path.iterdir()), ["cli-policy"])


@pytest.mark.slow
def test_data_parallel_run_with_two_processes(world, tmp_path):
    """torchrun (what `accelerate launch` starts) with 2 CPU processes over gloo: one checkpoint, 2x samples.
    Cold, `python -m` in each process as a user's torchrun starts it (the other torchrun tests fork warm)."""
    store, _, _ = world
    out = tmp_path / "ddp"
    proc = torchrun(2, store.root, "train", "policy", "--labels", "raw", "--out", str(out), "--steps", "3",
                    "--batch-size", "4", "--warmup-steps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote policy checkpoint") == 1  # only the main process reports and writes
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["processes"] == 2 and json.loads((out / "metrics.json").read_text())["samples"] == 3 * 4 * 2
    assert not list(tmp_path.glob(".ddp.*"))
    RecapPolicy.load(out)
