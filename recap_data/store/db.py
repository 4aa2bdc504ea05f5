"""DuckDB over the shard store: `connect(root)` is the one entry point.

TEMP views (created per connection, absolute paths, so nothing stale is ever stored):
  shards    one row per committed shard (from manifests)
  tasks     (shard, task_index, task)
  frames    every scalar and vector column of every frame, plus shard and task; no image bytes
  episodes  (shard, kind, episode_index, task, length, success, interventions, ...)
  label_sets      one row per committed label set (from manifests)
With `labels=NAME`, also:
  labels          the label rows of that label set (columns: labels/write.py; formulas: label_math/)
  labeled_frames  frames joined with those labels on (shard, episode_index, frame_index)
Only committed shards and label sets are read (directories with a manifest), never a
writer's temporary files.
"""

import json
import os
import re
from pathlib import Path

import duckdb

from recap_data.errors import RecapError, first_line, one_line_errors
from recap_data.io import AtomicFile
from recap_data.store import paths
from recap_data.store.label_sets import KEY, LABELS_FIX, label_set_names, label_set_path, read_manifest, table_parts
from recap_data.store.schema import image_columns
from recap_data.store.store import ShardStore

OUTPUT_FORMATS = ("table", "csv", "json", "parquet")
SHARD_FIX = "run `recap-data shards verify` to find the damaged shard"


def unreadable(where: str, fix: str):
    """A damaged parquet file (DuckDB's or Arrow's error) as one line naming it and the fix."""
    import pyarrow

    return one_line_errors(where, "unreadable data", fix, duckdb.Error, pyarrow.ArrowException, OSError)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(_sql_text(s) for s in items) + "]"


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """All rows in one INSERT, as one list parameter per column (executemany costs ~1 ms a row)."""
    columns = [list(c) for c in zip(*rows, strict=True)]
    types = [t for _, t, *_ in con.execute(f"DESCRIBE {table}").fetchall()]
    select = ", ".join(f"unnest(${i + 1})::{t}" for i, t in enumerate(types))
    con.execute(f"INSERT INTO {table} SELECT {select}", columns)


def _shard_of(column: str) -> str:
    # Greedy '.*' takes the last '/shards/<id>/', whatever the data root's own path holds.
    return f"regexp_extract({column}, '.*/{paths.SHARDS_DIR}/([^/]+)/', 1)"


def connect(root: str | os.PathLike | None = None, database: str = ":memory:",
            labels: str | None = None, label_sets: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views, and a label set's when `labels` names one (see module doc).
    label_sets=False leaves out the label_sets table, so that readers of frames alone never read
    (or fail on) a label set's manifest."""
    store = ShardStore(root)
    con = duckdb.connect(database)
    with unreadable(str(store.shards_dir), SHARD_FIX):
        _store_views(con, store)
    if label_sets or labels:
        with unreadable(f"label set {labels}" if labels else str(store.root / paths.LABELS_DIR), LABELS_FIX):
            _label_views(con, store, labels)
    return con


def _store_views(con: duckdb.DuckDBPyConnection, store: ShardStore) -> None:
    manifests = store.manifests()
    for m in manifests:  # a stat per file: a shard half checked out is an error, not fewer rows
        store.check_files_present(m)
    con.execute("""CREATE TEMP TABLE shards (shard VARCHAR, kind VARCHAR, created_at TIMESTAMPTZ,
        episodes BIGINT, frames BIGINT, successes BIGINT, fps INTEGER, synthetic BOOLEAN,
        digest VARCHAR, source JSON, path VARCHAR)""")
    if not manifests:
        con.execute("CREATE TEMP VIEW tasks AS SELECT NULL::VARCHAR shard, NULL::BIGINT task_index, "
                    "NULL::VARCHAR task WHERE false")
        con.execute("CREATE TEMP VIEW frames AS SELECT NULL::VARCHAR shard, NULL::BIGINT episode_index, "
                    "NULL::BIGINT frame_index, NULL::VARCHAR task, NULL::BOOLEAN success WHERE false")
        con.execute("CREATE TEMP VIEW episodes AS SELECT NULL::VARCHAR shard, NULL::VARCHAR kind, "
                    "NULL::BIGINT episode_index, NULL::VARCHAR task, NULL::BIGINT length, "
                    "NULL::BOOLEAN success WHERE false")
        return
    rows = [(m.shard_id, m.kind, m.created_at, m.episodes, m.frames, m.successes, m.fps, m.synthetic,
             m.digest, json.dumps(m.source), str(store.shard_path(m.shard_id))) for m in manifests]
    _insert(con, "shards", rows)
    dirs = [str(store.shard_path(m.shard_id)) for m in manifests]
    data_files = _sql_list([f"{d}/{paths.DATA_GLOB}" for d in dirs])
    task_files = _sql_list([f"{d}/{paths.TASKS_FILE}" for d in dirs])
    episode_files = _sql_list([f"{d}/{paths.EPISODES_GLOB}" for d in dirs])
    hidden = ["filename", *image_columns(manifests[0].features)]
    exclude = ", ".join(f'"{c}"' for c in hidden)
    con.execute(f"""CREATE TEMP VIEW tasks AS
        SELECT {_shard_of('filename')} AS shard, task_index, task
        FROM read_parquet({task_files}, filename=true)""")
    con.execute(f"""CREATE TEMP VIEW frames AS
        SELECT d.* EXCLUDE ({exclude}), t.task
        FROM (SELECT {_shard_of('filename')} AS shard, *
              FROM read_parquet({data_files}, filename=true)) d
        JOIN tasks t ON t.shard = d.shard AND t.task_index = d.task_index""")
    con.execute(f"""CREATE TEMP VIEW episodes AS
        WITH meta AS (
            SELECT {_shard_of('filename')} AS shard, episode_index, tasks[1] AS task, length,
                   dataset_from_index, dataset_to_index
            FROM read_parquet({episode_files}, filename=true)),
        outcome AS (
            SELECT shard, episode_index, bool_or(success) AS success,
                   count(*) FILTER (WHERE is_intervention) AS interventions
            FROM frames GROUP BY shard, episode_index)
        SELECT m.shard, s.kind, m.episode_index, m.task, m.length, o.success, o.interventions,
               m.dataset_from_index, m.dataset_to_index
        FROM meta m JOIN shards s ON s.shard = m.shard
        LEFT JOIN outcome o ON o.shard = m.shard AND o.episode_index = m.episode_index""")


def _label_views(con: duckdb.DuckDBPyConnection, store: ShardStore, name: str | None) -> None:
    con.execute("""CREATE TEMP TABLE label_sets (label_set VARCHAR, created_at TIMESTAMPTZ, frames BIGINT,
        positive_fraction DOUBLE, threshold VARCHAR, target DOUBLE, n_steps INTEGER, value_checkpoint VARCHAR,
        parent VARCHAR, digest VARCHAR, path VARCHAR)""")
    rows, manifests = [], {}
    for n in label_set_names(store):
        m = manifests[n] = read_manifest(store, n)
        rows.append((n, m.created_at, m.frames, m.positive_fraction, m.advantage["threshold"],
                     m.advantage["positive_fraction"], m.advantage["n_steps"], m.value_checkpoint.get("digest"),
                     (m.parent or {}).get("name"), m.digest, str(label_set_path(store, n))))
    if rows:
        _insert(con, "label_sets", rows)
    if name is None:
        return
    manifest = manifests.get(name) or read_manifest(store, name)  # or an error naming the known ones
    files = _sql_list([str(part["path"]) for part in table_parts(store, name, manifest)])  # or an error
    con.execute(f"CREATE TEMP VIEW labels AS SELECT * FROM read_parquet({files}, union_by_name=true)")
    shared = ", ".join(f"l.{c}" for c in ("index", "task", "success", "is_intervention", *KEY))
    # The labels alone need no shard (a label set can be queried, or relabelled, without them);
    # their join with the frames does: with a labelled shard missing, the join would drop its rows
    # in silence, so the view fails instead, with the fix, when a query reads it.
    missing, label = [s["id"] for s in manifest.shards if not store.exists(s["id"])], f"label set {name!r}"
    guard = "" if not missing else (
        f"CROSS JOIN (SELECT 1 WHERE error({_sql_text(MISSING_LABELED + store.absent_message(missing[0], label))}))")
    con.execute(f"""CREATE TEMP VIEW labeled_frames AS
        SELECT f.*, l.* EXCLUDE ({shared.replace('l.', '')})
        FROM frames f JOIN labels l USING (shard, episode_index, frame_index) {guard}""")


MISSING_LABELED = "labeled_frames: "



_DAMAGED_FILE = re.compile(r"""file ['"]([^'"]+\.parquet)['"]""")


def damaged_file_error(e: duckdb.Error) -> RecapError | None:
    """A store file DuckDB could not read (views read their files only when a query runs) as
    'unreadable data' naming the file and the fix; None for any other error."""
    message = first_line(e)
    damaged = _DAMAGED_FILE.search(message)
    if damaged is None:
        return None
    fix = LABELS_FIX if f"/{paths.LABELS_DIR}/" in damaged[1] else SHARD_FIX
    return RecapError(f"{damaged[1]}: unreadable data ({message}); {fix}")


def query_error(e: duckdb.Error) -> RecapError:
    """DuckDB's message as one line: a damaged store file or a missing shard named with its fix,
    else an SQL error."""
    message = first_line(e, limit=1000)
    if MISSING_LABELED in message:  # labeled_frames' guard (see _label_views)
        return RecapError(message[message.index(MISSING_LABELED):])
    return damaged_file_error(e) or RecapError(f"SQL error: {first_line(e)}")


def run_query(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation:
    """Run SQL; DuckDB's own message becomes a one-line RecapError."""
    try:
        rel = con.sql(query)
    except duckdb.Error as e:
        raise query_error(e) from None
    if rel is None:
        raise RecapError("SQL error: the statement returned no rows to show; use a SELECT")
    return rel


def write_result(rel: duckdb.DuckDBPyRelation, fmt: str, output: Path | None) -> str | None:
    """Render a result: returns text for stdout, or writes `output` atomically and returns None."""
    if fmt not in OUTPUT_FORMATS:
        raise RecapError(f"--format {fmt!r} is invalid: use one of {', '.join(OUTPUT_FORMATS)}")
    if output is None:
        if fmt == "parquet":
            raise RecapError("--format parquet needs --output FILE")
        try:  # the query runs here
            if fmt == "table":
                return str(rel)
            df = rel.df()
        except duckdb.Error as e:
            raise query_error(e) from None
        return df.to_csv(index=False) if fmt == "csv" else df.to_json(orient="records", lines=True)
    output = Path(output)
    try:
        with AtomicFile(output) as out:
            if fmt in ("csv", "table"):
                rel.write_csv(str(out.tmp))
            elif fmt == "json":
                out.tmp.write_text(rel.df().to_json(orient="records", lines=True))
            else:
                rel.write_parquet(str(out.tmp))
    except duckdb.Error as e:
        raise damaged_file_error(e) or RecapError(f"{output}: cannot write ({first_line(e)})") from None
    except OSError as e:
        raise RecapError(f"{output}: cannot write ({first_line(e)})") from None
    return None
