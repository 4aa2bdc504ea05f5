"""The shard store: manifests, immutability, schema, verification of real LeRobot v3 shards."""

import json

import pytest
from conftest import mix, run_cli, tiny_config

from recap_data import RecapError
from recap_data.data.demo_data import make_demo_data
from recap_data.store.schema import OUTCOME_FEATURES, POLICY_PREFIXES
from recap_data.store.store import ShardStore
from recap_data.store.verify import verify_shard


def test_shard_is_a_loadable_lerobot_v3_dataset_with_manifest(store, make_shard):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    m = make_shard("base", episodes=4, **mix(0.5))
    root = store.shard_path("base")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20
    assert m.kind == "base" and m.synthetic and m.source["seed"] == 0
    assert (m.episodes, m.frames, m.successes) == (4, info["total_frames"], 2)
    assert m.digest.startswith("sha256:") and "data/chunk-000/file-000.parquet" in m.files
    assert not (root / "images").exists()  # LeRobot's temporary PNG folder is gone

    ds = LeRobotDataset("x/base", root=root)
    assert ds.num_frames == m.frames and ds.num_episodes == 4
    frame = ds[0]
    assert frame["observation.images.image"].shape == (3, 32, 32)
    assert frame["observation.images.image2"].shape == (3, 32, 32)
    assert frame["observation.state"].shape == (8,) and frame["action"].shape == (7,)
    assert "success" in frame and "is_intervention" in frame
    # Outcome columns must not look like policy inputs or outputs.
    assert not any(k.startswith(POLICY_PREFIXES) for k in OUTCOME_FEATURES)
    # success is the episode's outcome on each of its frames
    per_episode = {}
    for row in ds.hf_dataset.select_columns(["episode_index", "success"]):
        per_episode.setdefault(int(row["episode_index"]), set()).add(bool(row["success"]))
    assert all(len(v) == 1 for v in per_episode.values())
    assert sum(v == {True} for v in per_episode.values()) == 2


def test_demo_data_is_deterministic_for_a_seed(tmp_path):
    a = make_demo_data(ShardStore(tmp_path / "a"), tiny_config(), progress=False)
    b = make_demo_data(ShardStore(tmp_path / "b"), tiny_config(), progress=False)
    c = make_demo_data(ShardStore(tmp_path / "c"), tiny_config(seed=1), progress=False)
    assert a.digest == b.digest
    assert a.digest != c.digest


def test_demo_data_follows_the_mix_and_records_each_episode(store, make_shard):
    from recap_data.store.db import connect

    m = make_shard("base", episodes=12, max_steps=30, **mix(0.5))
    rows = connect(store.root).sql("SELECT success, length FROM episodes ORDER BY episode_index").fetchall()
    ok = [n for s, n in rows if s]
    assert len(set(ok)) > 1 and all(n < 30 for n in ok)  # successes end before the cap
    assert sum(s for s, _ in rows) == 6
    kinds = [e["kind"] for e in m.source["episodes"]]
    assert sorted(kinds) == ["decoy"] * 3 + ["expert"] * 3 + ["poor"] * 3 + ["release"] * 3
    assert [s for s, _ in rows] == [k in ("expert", "poor") for k in kinds]
    assert all(n == 30 for (s, n), k in zip(rows, kinds, strict=True) if k == "release")  # runs to the cap


def test_existing_id_and_invalid_id_are_refused(store, make_shard):
    first = make_shard("base")
    before = store.manifest("base").digest
    # the same generator config again finds the shard there: nothing is written
    again = make_shard("base")
    assert again.created_at == first.created_at and again.digest == before
    with pytest.raises(RecapError, match="exists"):
        make_shard("base", seed=1)
    with pytest.raises(RecapError, match="invalid"):
        make_shard("Bad/Id")
    assert store.manifest("base").digest == before
    assert list(store.tmp_dir.iterdir()) == []


def test_schema_mismatch_names_the_feature_and_writes_nothing(store, make_shard):
    make_shard("base")
    with pytest.raises(RecapError, match="observation.images.image.*shape"):
        make_shard("other", image_size=48)
    assert store.shard_ids() == ["base"]
    assert list(store.tmp_dir.iterdir()) == []


def test_invalid_generator_parameters_are_one_line_errors(store):
    for field, value in [("episodes", 0), ("expert", 1.5), ("tasks", 11), ("image_size", 8)]:
        res = run_cli("make-demo-data", f"--{field.replace('_', '-')}", str(value), root=store.root)
        assert res.exit_code == 2
        assert res.output.count("\n") == 1 and f"--{field.replace('_', '-')}: {value} is invalid" in res.output
    assert store.shard_ids() == []


@pytest.mark.parametrize("regime", ["teleop", "mixed", "scarce"])
def test_each_regime_records_the_shares_it_names(store, regime):
    """Counted from the manifest: each kind's episodes are the regime's share (rounded), and the
    outcomes follow the kinds (teleop: every demonstration succeeds)."""
    from recap_data.data.demo_data import DemoDataConfig, make_demo_data
    from recap_data.world.demonstrators import KINDS, REGIMES, SUCCESS_KINDS

    m = make_demo_data(store, DemoDataConfig(episodes=20, tasks=1, first_task=8, image_size=32, use_videos=False,
                                             regime=regime), progress=False)
    kinds = [e["kind"] for e in m.source["episodes"]]
    assert {k: kinds.count(k) for k in KINDS} == {k: round(20 * REGIMES[regime][k]) for k in KINDS}
    assert m.source["regime"] == regime and m.source["shares"] == REGIMES[regime]
    assert m.successes == sum(k in SUCCESS_KINDS for k in kinds) == (20 if regime == "teleop" else m.successes)


@pytest.mark.parametrize(("args", "message"), [
    (["--regime", "human"], "option --regime: 'human' is not one of 'teleop', 'mixed', 'scarce', 'custom'"),
    (["--regime", "teleop", "--expert", "0.5"], "field 'expert' must be left out; use regime custom"),
    (["--expert", "1"], "field 'expert' must be left out; use regime custom"),
    (["--regime", "custom", "--expert", "1"], "regime custom needs all five shares; field 'poor' is missing"),
    (["--regime", "custom", "--expert", "0.5", "--poor", "0.4", "--decoy", "0", "--release", "0", "--timeout", "0"],
     "sum to 0.9; make them sum to 1"),
    (["--regime", "teleop", "--max-steps", "19"], "--max-steps: 19 is invalid: use a number in [20, 10000]"),
])
def test_bad_regimes_are_one_line_errors_and_write_nothing(store, args, message):
    res = run_cli("make-demo-data", "--episodes", "6", "--tasks", "1", "--image-size", "32", *args, root=store.root)
    assert res.exit_code == 2 and res.output.count("\n") == 1 and res.output.startswith("error: "), res.output
    assert message in res.output, res.output
    assert store.shard_ids() == [] and (not store.tmp_dir.exists() or not any(store.tmp_dir.iterdir()))


def test_verify_passes_then_finds_corruption(store, make_shard):
    make_shard("base")
    make_shard("second", seed=3)
    assert verify_shard(store, "base") == []
    res = run_cli("shards", "verify", root=store.root)
    assert res.exit_code == 0 and "base: ok" in res.output and "second: ok" in res.output

    data = store.shard_path("base") / "data/chunk-000/file-000.parquet"
    data.write_bytes(data.read_bytes()[:-100])  # torn footer
    problems = verify_shard(store, "base")
    assert any("content changed" in p for p in problems)
    assert any("unreadable parquet" in p for p in problems)
    res = run_cli("shards", "verify", root=store.root)
    assert res.exit_code == 2 and "base: FAILED" in res.output and "second: ok" in res.output


def test_verify_finds_added_and_missing_files(store, make_shard):
    make_shard("base")
    root = store.shard_path("base")
    (root / "meta" / "extra.txt").write_text("x")
    (root / "meta" / "stats.json").unlink()
    problems = verify_shard(store, "base")
    assert "meta/extra.txt: not in the manifest (added after commit)" in problems
    assert "meta/stats.json: missing" in problems


def test_list_and_show(store, make_shard):
    assert "no shards" in run_cli("shards", "list", root=store.root).output
    make_shard("base")
    listed = json.loads(run_cli("shards", "list", "--json", root=store.root).output)
    assert [r["shard"] for r in listed] == ["base"]
    shown = json.loads(run_cli("shards", "show", "base", root=store.root).output)
    assert shown["shard_id"] == "base" and shown["features"]["observation.state"]["shape"] == [8]
    res = run_cli("shards", "show", "nope", root=store.root)
    assert res.exit_code == 2 and "no shard 'nope'" in res.output


def test_root_comes_from_the_environment(store, make_shard, monkeypatch):
    make_shard("base")
    monkeypatch.setenv("RECAP_DATA_ROOT", str(store.root))
    from click.testing import CliRunner

    from recap_data.cli.main import cli

    res = CliRunner().invoke(cli, ["shards", "list", "--json"])
    assert json.loads(res.output)[0]["shard"] == "base"
