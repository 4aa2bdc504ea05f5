"""The value model and `recap-data train value` on real shards made by the embedded generator."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import mix, run_cli, torchrun

from recap_data.data.frames import holdout_mask, load_frames, mixture_weights
from recap_data.data.shard_specs import parse_mixture
from recap_data.errors import RecapError
from recap_data.label_math.config import RewardConfig
from recap_data.train.tokenizer import tiny_tokenizer
from recap_data.value.model import (
    TextEncoder,
    ValueModelConfig,
    build_value_model,
    load_value_checkpoint,
)
from recap_data.value.train import ValueTrainConfig, train_value

QUICK = ValueTrainConfig(steps=4, batch_size=8, warmup_steps=1, log_every=2, num_workers=0, holdout_fraction=0.3)


@pytest.fixture
def two_shards(make_shard):
    make_shard("base", episodes=6, tasks=2)
    make_shard("more", episodes=4, tasks=2, seed=1)
    return ["base", "more"]


def test_checkpoint_round_trip_and_provenance(store, two_shards, tmp_path):
    out = tmp_path / "value"
    reward = RewardConfig(number_of_bins=21, c_fail=50)
    metrics = train_value(store, {"base": 1.0, "more": 3.0}, out, QUICK, reward, progress=False)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "tokenizer", "normalization.json",
                                               "reward.json", "provenance.json", "metrics.json", "loss.csv"}
    prov = json.loads((out / "provenance.json").read_text())
    assert [s["id"] for s in prov["shards"]] == two_shards and prov["init"] is None and prov["steps"] == 4
    assert prov["shards"][0]["digest"] == store.manifest("base").digest and prov["shards"][1]["weight"] == 3.0
    assert metrics["holdout"]["frames"] > 0 and set(metrics["holdout"]["per_task"]) <= set(store.manifest("base").tasks)
    assert pd.read_csv(out / "loss.csv")["step"].tolist() == [2, 4]

    ckpt = load_value_checkpoint(out, reward)
    assert ckpt.reward == reward and ckpt.digest.startswith("sha256:")
    images, state = torch.rand(3, 2, 3, 32, 32), torch.randn(3, 8)
    ids, mask = ckpt.encoder(["put both moka pots on the stove"] * 3)
    again = load_value_checkpoint(out)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(images, state, ids, mask), again.model(images, state, ids, mask))
    values = ckpt.model.values(ckpt.model(images, state, ids, mask))
    assert values.shape == (3,) and ((values >= -1) & (values <= 0)).all()

    with pytest.raises(RecapError, match=r"other reward params \(c_fail: checkpoint 50.0, requested 1000.0"):
        load_value_checkpoint(out, RewardConfig(number_of_bins=21))
    load_value_checkpoint(out, RewardConfig(number_of_bins=21, c_fail=50))
    reward_json, saved = out / "reward.json", (out / "reward.json").read_text()
    reward_json.write_text(json.dumps({**json.loads(saved), "n_steps": 7}))  # as stored before the advantage section
    assert load_value_checkpoint(out, RewardConfig(number_of_bins=21, c_fail=50)).reward == ckpt.reward
    reward_json.write_text(saved)

    # --init fine-tunes: the weights start from the checkpoint and provenance names it
    tuned = tmp_path / "tuned"
    train_value(store, {"base": 1.0}, tuned, QUICK, reward, init=out, progress=False)
    prov = json.loads((tuned / "provenance.json").read_text())
    assert prov["init"] == {"path": str(out), "digest": ckpt.digest}
    assert (tuned / "tokenizer" / "tokenizer.json").read_bytes() == (out / "tokenizer" / "tokenizer.json").read_bytes()
    with pytest.raises(RecapError, match="other reward params"):
        train_value(store, {"base": 1.0}, tmp_path / "x", QUICK, RewardConfig(), init=out, progress=False)
    with pytest.raises(RecapError, match="already exists"):
        train_value(store, {"base": 1.0}, tuned, QUICK, reward, progress=False)
    assert not (tmp_path / "x").exists()


def test_time_input_reads_the_frame_index_in_training_evaluation_and_labels(store, two_shards, tmp_path):
    """With time_input the frame index is one more state input: normalized with the state, saved in
    the checkpoint, and fed the same way where training evaluates and where `label` scores."""
    from dataclasses import replace

    from recap_data.data.frame_dataset import ShardFrames
    from recap_data.labels.infer import label
    from recap_data.labels.write import LabelConfig
    from recap_data.store.label_sets import read_labels
    from recap_data.value.model import evaluate

    out, reward = tmp_path / "value", RewardConfig(number_of_bins=21, c_fail=50)
    train_value(store, {"base": 1.0, "more": 1.0}, out, replace(QUICK, time_input=True), reward, progress=False)
    ckpt = load_value_checkpoint(out, reward)
    frames = load_frames(store, ["base"])
    assert ckpt.model.cfg.time_input and ckpt.model.state_mean.shape == (9,)  # 8 state dimensions and the index
    assert 0 < ckpt.model.state_mean[-1] < frames["frame_index"].max()
    images, state = torch.rand(2, 2, 3, 32, 32), torch.randn(1, 8).repeat(2, 1)
    ids, mask = ckpt.encoder(["put both moka pots on the stove"] * 2)
    with torch.no_grad():
        logits = ckpt.model(images[:1].repeat(2, 1, 1, 1, 1), state, ids, mask, torch.tensor([0.0, 15.0]))
    assert not torch.allclose(logits[0], logits[1])  # the same observation at another time
    with pytest.raises(ValueError, match="pass frame_index"):
        ckpt.model(images, state, ids, mask)

    label(store, ["base"], out, "timed", reward, LabelConfig(batch_size=7), progress=False)
    labels = read_labels(store, "timed")
    scored = evaluate(ckpt.model, ShardFrames(store, frames.assign(return_bin=0, return_norm=0.0),
                                              ckpt.model.cfg.camera_keys), ckpt.encoder, 16, 0, "cpu", progress=False)
    assert labels["index"].tolist() == frames["index"].tolist()  # both in episode, frame order
    np.testing.assert_allclose(labels["value"].to_numpy(), scored["value"].to_numpy(), atol=1e-5)


def test_holdout_is_whole_episodes_per_task_and_reproducible(store, make_shard):
    make_shard("base", episodes=20, tasks=2, **mix(0.5))
    frames = load_frames(store, ["base"])
    held = holdout_mask(frames, 0.2, seed=3)
    assert (held == holdout_mask(frames, 0.2, seed=3)).all()
    per_episode = pd.Series(held).groupby([frames["shard"], frames["episode_index"]]).agg(["min", "max"])
    assert (per_episode["min"] == per_episode["max"]).all()  # never part of an episode
    held_eps = frames[held].drop_duplicates("episode_index")
    assert held_eps.groupby("task").size().tolist() == [2, 2]  # 20% of each task's 10 episodes
    assert held_eps["success"].mean() == 0.5  # failures held out at their overall rate


def test_mixture_weights_and_specs():
    shards = np.array(["a"] * 100 + ["b"] * 10)
    p = mixture_weights(shards, {"a": 1.0, "b": 3.0})
    assert np.isclose(p[:100].sum(), 0.25) and np.isclose(p[100:].sum(), 0.75)
    draws = torch.multinomial(torch.from_numpy(p), 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs((draws >= 100).float().mean().item() - 0.75) < 0.02
    assert parse_mixture(["a", "b=3,c=0.5"]) == {"a": 1.0, "b": 3.0, "c": 0.5}
    for bad, message in ((["a=0"], "'a=0': the weight must be a positive number"),
                         (["a=x"], "'a=x': the weight must be a positive number"),
                         (["a", "a=2"], "shard 'a' is listed twice"), ([""], "no shards given")):
        with pytest.raises(RecapError, match=message):
            parse_mixture(bad)


def test_text_over_the_limit_is_an_error_not_truncated():
    tokenizer = tiny_tokenizer(["put both moka pots on the stove"], 300, 8)
    encoder = TextEncoder(tokenizer, 8)
    ids, mask = encoder(["put both moka pots on the stove"])
    assert ids.shape == (1, 8) and mask.sum() == len(encoder.ids("put both moka pots on the stove"))
    assert len(TextEncoder(tokenizer, 64).ids("a zebra word never seen")) > 5  # byte-level: unseen words encode
    with pytest.raises(RecapError, match="over the value model's limit of 8"):
        encoder(["put both moka pots on the stove and then open the microwave door"])


def test_real_size_loads_from_local_pretrained_directories(tmp_path):
    """The `real` path (SigLIP + Gemma 3 from local directories), exercised with small saved weights."""
    tiny, tokenizer = build_value_model(ValueModelConfig(camera_keys=["cam"], number_of_bins=11), ["open the drawer"])
    tiny.vision.save_pretrained(tmp_path / "siglip")
    tiny.text.save_pretrained(tmp_path / "gemma")
    tokenizer.save_pretrained(tmp_path / "gemma")
    cfg = ValueModelConfig(size="real", vision_path=str(tmp_path / "siglip"), text_path=str(tmp_path / "gemma"),
                           camera_keys=["cam"], number_of_bins=11, image_size=999)
    model, tok = build_value_model(cfg, [])
    assert model.cfg.image_size == 32  # taken from the pretrained vision tower
    torch.testing.assert_close(model.text.embed_tokens.weight, tiny.text.embed_tokens.weight)
    assert tok("open the drawer")["input_ids"] == tokenizer("open the drawer")["input_ids"]
    with pytest.raises(RecapError, match="field 'vision_path'.*local pretrained directory"):
        build_value_model(ValueModelConfig(size="real", vision_path=str(tmp_path / "nope")), [])


def test_cli_train_value_with_params_file(store, two_shards, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("reward:\n  number_of_bins: 11\n  c_fail: 20\nvalue:\n  steps: 2\n  batch_size: 4\n"
                      "  num_workers: 0\n  warmup_steps: 1\n")
    out, metrics = tmp_path / "v", tmp_path / "m" / "value.json"
    result = run_cli("train", "value", "--shard", "base,more=2", "--out", str(out), "--params", str(params),
                     "--steps", "3", "--metrics", str(metrics), root=store.root)
    assert result.exit_code == 0, result.output
    assert "wrote value checkpoint" in result.output
    full = json.loads((out / "metrics.json").read_text())
    assert full["train"]["steps"] == 3  # the option overrides the file
    # the copy for DVC: the headline alone, flat (the checkpoint's metrics.json has everything)
    assert json.loads(metrics.read_text()) == {"mae": full["holdout"]["value_mae"],
                                               "constant_mae": full["holdout"]["constant_mae"],
                                               "loss": full["train"]["final_loss"]}
    assert json.loads((out / "reward.json").read_text())["number_of_bins"] == 11
    again = run_cli("train", "value", "--shard", "base", "--out", str(out), "--params", str(params), root=store.root)
    assert again.exit_code == 2 and "already exists" in again.output
    params.write_text("value:\n  stepz: 3\nreward: {}\n")
    bad = run_cli("train", "value", "--shard", "base", "--out", str(tmp_path / "w"), "--params", str(params),
                  root=store.root)
    assert bad.exit_code == 2 and "unknown field 'stepz'" in bad.output
    unknown = run_cli("train", "value", "--shard", "nope", "--out", str(tmp_path / "w"), root=store.root)
    assert unknown.exit_code == 2 and "no shard 'nope'" in unknown.output


@pytest.mark.slow
def test_tiny_value_model_learns_the_embedded_data(tmp_path):
    """A short CPU run: held-out value MAE well below the best constant predictor's (the train median).

    Expert demonstrations of 2 tasks x 30 episodes at 32 px: their remaining steps follow from
    the frames (distance to the goal). With failures in the mix the outcome is mostly hidden until
    late, and no model beats the constant by much (README, "Does RECAP work?").
    """
    from recap_data.data.demo_data import DemoDataConfig, make_demo_data
    from recap_data.store.store import ShardStore

    store = ShardStore(tmp_path / "data")
    # frames stored as images, not video: learning is the point here, and other tests decode video
    make_demo_data(store, DemoDataConfig(episodes=60, tasks=2, max_steps=60, image_size=32, use_videos=False,
                                         regime="custom", expert=1.0, poor=0.0, decoy=0.0, release=0.0, timeout=0.0),
                   progress=False)
    cfg = ValueTrainConfig(steps=400, holdout_fraction=0.2, num_workers=0)
    metrics = train_value(store, {"base": 1.0}, tmp_path / "value", cfg, RewardConfig(), progress=False)
    held = metrics["holdout"]
    assert held["episodes"] == 12 and len(held["per_task"]) == 2
    print(f"held-out value MAE {held['value_mae']:.4f}, best constant {held['constant_mae']:.4f}")
    assert held["value_mae"] < 0.6 * held["constant_mae"], held
    first, last = pd.read_csv(tmp_path / "value" / "loss.csv")["train_loss"].iloc[[0, -1]]
    assert last < 0.7 * first


@pytest.mark.slow
def test_data_parallel_run_with_two_processes(store, two_shards, tmp_path, warm_cli_bin):
    """torchrun (what `accelerate launch` starts) with 2 CPU processes over gloo: one checkpoint, 2x samples."""
    out = tmp_path / "ddp"
    proc = torchrun(2, store.root, "train", "value", "--shard", "base,more", "--out", str(out), "--steps", "3",
                    "--batch-size", "4", "--warmup-steps", "1", warm=warm_cli_bin)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote value checkpoint") == 1  # only the main process reports and writes
    prov = json.loads((out / "provenance.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert prov["processes"] == 2 and metrics["train"]["samples"] == 3 * 4 * 2
    assert not list(tmp_path.glob(".ddp.*"))  # no temporary directory left behind
    load_value_checkpoint(out)
