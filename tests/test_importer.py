"""`recap-data shards import`: existing LeRobot v3 datasets become shards with outcomes."""

import json

from conftest import run_cli

from recap_data.store.db import connect
from recap_data.store.store import ShardStore
from recap_data.store.verify import verify_shard


def episode_outcomes(store: ShardStore, shard: str) -> list[bool]:
    con = connect(store.root)
    return [r[0] for r in con.execute(f"SELECT success FROM episodes WHERE shard = '{shard}' ORDER BY episode_index")
            .fetchall()]


def test_import_with_success_column(store, make_lerobot_dataset):
    src = make_lerobot_dataset(successes=(True, False, True))
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    res = run_cli("shards", "import", str(src), "--id", "demos", "--success-column", "is_success", root=store.root)
    assert res.exit_code == 0, res.output
    m = store.manifest("demos")
    assert (m.kind, m.episodes, m.frames, m.successes) == ("base", 3, 18, 2)
    assert m.source["imported_from"] == str(src) and m.source["outcome"] == "column"
    assert m.source["source_digest"].startswith("sha256:")
    assert episode_outcomes(store, "demos") == [True, False, True]
    assert verify_shard(store, "demos") == []
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # source untouched
    con = connect(store.root)
    assert con.execute("SELECT count(*) FROM frames WHERE is_intervention").fetchone()[0] == 0


def test_import_all_success_and_episode_list(store, make_lerobot_dataset, tmp_path):
    src = make_lerobot_dataset()
    assert run_cli("shards", "import", str(src), "--id", "a", "--all-success", root=store.root).exit_code == 0
    assert episode_outcomes(store, "a") == [True, True, True]
    listing = tmp_path / "ok.json"
    listing.write_text(json.dumps([1]))
    res = run_cli("shards", "import", str(src), "--id", "b", "--success-episodes", str(listing),
                  "--intervention-column", "is_success", root=store.root)
    assert res.exit_code == 0, res.output
    assert episode_outcomes(store, "b") == [False, True, False]
    con = connect(store.root)
    # is_success (true on the last frame of the two successful source episodes) serves as the
    # intervention column here: exactly those two frames are flagged
    rows = con.execute("SELECT episode_index, frame_index FROM frames WHERE shard = 'b' AND is_intervention "
                       "ORDER BY 1").fetchall()
    assert rows == [(0, 4), (2, 5)]


def test_import_of_a_shard_with_outcome_columns_copies_it(store, make_shard, tmp_path):
    make_shard("base")
    other = ShardStore(tmp_path / "other")
    src = store.shard_path("base")
    res = run_cli("shards", "import", str(src), "--id", "copy", "--success-column", "success", root=other.root)
    assert res.exit_code == 0, res.output
    copied = other.manifest("copy")
    assert copied.frames == store.manifest("base").frames
    assert copied.successes == store.manifest("base").successes
    assert verify_shard(other, "copy") == []
    res = run_cli("shards", "import", str(src), "--id", "copy2", "--all-success", root=other.root)
    assert res.exit_code == 2 and "already has a 'success' column" in res.output


def test_import_bad_sources_are_one_line_errors_and_write_nothing(store, make_lerobot_dataset, tmp_path):
    src = make_lerobot_dataset()
    not_lerobot = tmp_path / "plain"
    not_lerobot.mkdir()
    v21 = tmp_path / "old"
    (v21 / "meta").mkdir(parents=True)
    (v21 / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("7\n")
    cases = [
        ([str(tmp_path / "missing"), "--all-success"], "does not exist"),
        ([str(not_lerobot), "--all-success"], "not a LeRobot dataset"),
        ([str(v21), "--all-success"], "convert_dataset_v21_to_v30"),
        ([str(src)], "exactly one of"),
        ([str(src), "--all-success", "--success-column", "is_success"], "exactly one of"),
        ([str(src), "--success-column", "nope"], "no feature 'nope'"),
        ([str(src), "--success-episodes", str(bad_list)], "outside 0..2"),
    ]
    for args, message in cases:
        res = run_cli("shards", "import", *args, "--id", "x", root=store.root)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and res.output.count("\n") == 1, res.output
    assert store.shard_ids() == []


def test_import_refuses_a_schema_that_differs_from_the_store(store, make_shard, make_lerobot_dataset):
    make_shard("base")
    src = make_lerobot_dataset()
    res = run_cli("shards", "import", str(src), "--id", "x", "--all-success", root=store.root)
    assert res.exit_code == 2 and "schema mismatch" in res.output
    assert store.shard_ids() == ["base"]
