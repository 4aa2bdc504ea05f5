"""Labeling across nodes: two torchrun launchers with --nnodes 2 on this machine stand for two
nodes (a static rendezvous over TCP, as `accelerate launch --num_machines 2` uses): each node's
process scores its run of every shard's batches and writes its value parts, the main process on
node 0 labels them, and the label set equals the one-process label set bit for bit; rollout and eval split their episode
plans the same way and give the one-process episodes."""

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import TORCHRUN, free_port, per_process
from test_labels import torchrun_label

from recap_data.store.label_sets import read_labels, read_manifest

pytestmark = pytest.mark.slow  # two torchrun launchers


def two_nodes(root, warm, *args: str) -> list[str]:
    """`recap-data ARGS` as two one-process nodes (each process forked warm); their stdouts (each must exit 0)."""
    port = free_port()
    nodes = [subprocess.Popen(
        [TORCHRUN, "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1", "--master_addr",
         "127.0.0.1", "--master_port", str(port), *per_process(warm), "--root", str(root), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def test_two_nodes_label_like_one_process(labeled, warm_cli_bin):
    store, ckpt = labeled
    outputs = two_nodes(store.root, warm_cli_bin, "label", "--value-ckpt", str(ckpt), "--shard", "base,more",
                        "--out", "two-nodes", "--batch-size", "6")
    assert outputs[0].count("wrote label set two-nodes") == 1 and "wrote" not in outputs[1]
    assert torchrun_label(store, ckpt, "one-node", 1, batch_size=6, warm=warm_cli_bin).returncode == 0
    assert read_manifest(store, "two-nodes").digest == read_manifest(store, "one-node").digest  # the tables' bytes
    one, two = read_labels(store, "raw"), read_labels(store, "two-nodes")
    np.testing.assert_allclose(two["value"], one["value"], atol=1e-6)  # in-process: other torch threads
    assert (two["indicator"] == one["indicator"]).all()


def test_two_nodes_roll_out_and_evaluate_like_one_process(store, make_shard, tmp_path, warm_cli_bin):
    from recap_data.sim.evaluate import EvalConfig, evaluate
    from recap_data.sim.rollout import RolloutConfig, rollout

    make_shard("base")
    outputs = two_nodes(store.root, warm_cli_bin, "rollout", "--policy", "random", "--out", "two", "--episodes", "5",
                        "--seed", "3")
    assert outputs[0].count("wrote shard two") == 1 and not outputs[1]
    one, _ = rollout(store, "one", "random", RolloutConfig(episodes=5, seed=3), progress=False)
    two = store.manifest("two")
    assert two.source["episodes"] == one.source["episodes"] and two.frames == one.frames
    outputs = two_nodes(store.root, warm_cli_bin, "eval", "--policy", "random", "--episodes", "6", "--record",
                        str(tmp_path / "two.json"))
    assert outputs[0].count("random: success") == 1 and not outputs[1]
    alone = evaluate(store, "random", EvalConfig(episodes=6), progress=False)
    record = json.loads((tmp_path / "two.json").read_text())
    assert (record["outcomes"], record["lengths"]) == (alone["outcomes"], alone["lengths"])
