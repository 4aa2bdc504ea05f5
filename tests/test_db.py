"""DuckDB views over the store and `recap-data sql`."""

import json

import duckdb
from conftest import run_cli

from recap_data.store.db import connect


def test_views_cover_every_committed_shard(store, make_shard):
    a = make_shard("base", episodes=4)
    b = make_shard("more", episodes=2, seed=7)
    con = connect(store.root)
    assert dict(con.execute("SELECT shard, count(*) FROM frames GROUP BY 1").fetchall()) == {"base": a.frames,
                                                                                             "more": b.frames}
    columns = [r[0] for r in con.execute("DESCRIBE frames").fetchall()]
    assert {"shard", "observation.state", "action", "task", "success", "is_intervention"} <= set(columns)
    eps = con.execute("SELECT shard, count(*), sum(length), sum(success::INT) FROM episodes GROUP BY 1 ORDER BY 1")
    assert eps.fetchall() == [("base", 4, a.frames, a.successes), ("more", 2, b.frames, b.successes)]
    assert con.execute("SELECT kind, frames FROM shards WHERE shard = 'base'").fetchone() == ("base", a.frames)
    # vector columns are queryable; tasks are joined in as text
    assert con.execute('SELECT len("observation.state") FROM frames LIMIT 1').fetchone() == (8,)
    assert con.execute("SELECT count(DISTINCT task) FROM frames").fetchone() == (3,)


def test_frames_view_has_no_image_bytes_when_images_live_in_parquet(store, make_shard):
    m = make_shard("imgs", use_videos=False, image_size=16)
    assert m.features["observation.images.image"]["dtype"] == "image"
    con = connect(store.root)
    columns = [r[0] for r in con.execute("DESCRIBE frames").fetchall()]
    assert "observation.state" in columns
    assert not any(c.startswith("observation.images") for c in columns)
    assert con.execute("SELECT count(*) FROM frames").fetchone() == (m.frames,)


def test_views_ignore_uncommitted_directories(store, make_shard):
    make_shard("base")
    stray = store.shards_dir / "half-written"
    (stray / "data/chunk-000").mkdir(parents=True)
    (stray / "data/chunk-000/file-000.parquet").write_bytes(b"PAR1 torn")
    con = connect(store.root)
    assert con.execute("SELECT DISTINCT shard FROM frames").fetchall() == [("base",)]


def test_empty_store_has_empty_views(store):
    con = connect(store.root)
    assert con.execute("SELECT count(*) FROM frames").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM episodes").fetchone() == (0,)


def test_sql_command_formats_and_errors(store, make_shard, tmp_path):
    m = make_shard("base")
    q = "SELECT shard, count(*) AS n FROM frames GROUP BY shard"
    res = run_cli("sql", q, root=store.root)
    assert res.exit_code == 0 and "base" in res.output and str(m.frames) in res.output
    res = run_cli("sql", q, "--format", "csv", root=store.root)
    assert res.output.splitlines() == ["shard,n", f"base,{m.frames}"]
    res = run_cli("sql", q, "--format", "json", root=store.root)
    assert json.loads(res.output) == {"shard": "base", "n": m.frames}
    out = tmp_path / "out.parquet"
    assert run_cli("sql", q, "--format", "parquet", "--output", str(out), root=store.root).exit_code == 0
    assert duckdb.execute(f"SELECT n FROM '{out}'").fetchone() == (m.frames,)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    res = run_cli("sql", "SELECT nope FROM frames", root=store.root)
    assert res.exit_code == 2 and res.output.startswith("error: SQL error: Binder Error")
    assert res.output.count("\n") == 1
    res = run_cli("sql", q, "--format", "parquet", root=store.root)
    assert res.exit_code == 2 and "--output" in res.output
    # a query that fails while writing --output leaves the old file whole and no temporary sibling
    failing = "SELECT CASE WHEN index > 3 THEN error('stop') ELSE index END AS i FROM frames"
    for fmt in ("parquet", "csv"):
        res = run_cli("sql", failing, "--format", fmt, "--output", str(out), root=store.root)
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert duckdb.execute(f"SELECT n FROM '{out}'").fetchone() == (m.frames,)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], fmt
