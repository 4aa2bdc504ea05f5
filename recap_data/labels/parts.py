"""Label tables in parts: how label sets are written and streamed (format 2, store/label_sets.py).

A shard's label rows are stored as tables/<shard>/part-NNNNN.parquet, each part whole episodes
of at most PART_ROWS rows (an episode longer than that is a part of its own), in key order. A
reader streams a label set part by part with bounded memory (iter_chunks), and writers encode
and hash several parts at once in threads (PartWriter): parquet encoding and sha256 release
the GIL, so on a machine of C cores C parts are written together.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recap_data.errors import RecapError
from recap_data.store import paths
from recap_data.store.label_sets import LABEL_COLUMNS, LABELS_FIX
from recap_data.store.store import content_digest, file_sha256

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PART_ROWS = 1 << 20  # rows a part holds at most (unless one episode is longer): ~150 MB being built
# Plain encoding for the float columns: a dictionary of ~1M distinct values costs time and saves nothing.
DICTIONARY_COLUMNS = ["shard", "task", "success", "is_intervention", "reward", "return_bin", "epsilon", "indicator"]


def label_schema() -> pa.Schema:
    """The columns of every label table part, in LABEL_COLUMNS order."""
    import pyarrow as pa

    string_dict, f8, i8, b = pa.dictionary(pa.int32(), pa.string()), pa.float64(), pa.int64(), pa.bool_()
    types = {"shard": string_dict, "episode_index": i8, "frame_index": i8, "index": i8, "task": string_dict,
             "success": b, "is_intervention": b, "reward": f8, "mc_return": f8, "return_norm": f8, "return_bin": i8,
             "nstep_return": f8, "value": f8, "value_next": f8, "advantage": f8, "epsilon": f8, "indicator": b}
    return pa.schema([(c, types[c]) for c in LABEL_COLUMNS])


def episode_cuts(episode_index: np.ndarray, max_rows: int | None = None) -> list[tuple[int, int]]:
    """[(lo, hi)] row ranges of whole episodes, each at most max_rows (default PART_ROWS; or one
    longer episode), for rows of one shard sorted by episode."""
    n, max_rows = len(episode_index), max_rows or PART_ROWS
    bounds = np.r_[np.flatnonzero(np.r_[True, episode_index[1:] != episode_index[:-1]]), n]  # (E+1,)
    cuts, lo = [], 0
    while lo < n:
        # the furthest episode boundary within max_rows of lo, else the next one (a long episode)
        hi = bounds[np.searchsorted(bounds, lo + max_rows, side="right") - 1]
        if hi <= lo:
            hi = bounds[np.searchsorted(bounds, lo, side="right")]
        cuts.append((lo, int(hi)))
        lo = int(hi)
    return cuts


def table_of(columns: dict, n: int) -> pa.Table:
    """A label table part from per-column arrays (numpy arrays, or pyarrow/pandas arrays for shard
    and task), cast to label_schema(); string columns are dictionary-encoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = label_schema()
    arrays = []
    for f in schema:
        a = columns[f.name]
        a = a if isinstance(a, pa.Array | pa.ChunkedArray) else pa.array(a)
        if pa.types.is_dictionary(f.type) and not pa.types.is_dictionary(a.type):
            a = pc.dictionary_encode(a)
        arrays.append(a.cast(f.type))
    table = pa.table(arrays, schema=schema)
    if len(table) != n:
        raise ValueError(f"label part of {len(table)} rows, expected {n}")
    return table


def frame_to_table(rows: pd.DataFrame) -> pa.Table:
    """table_of for a DataFrame of label rows (build_labels' output)."""
    import pyarrow as pa

    return table_of({c: pa.Array.from_pandas(rows[c]) for c in LABEL_COLUMNS}, len(rows))


class PartWriter:
    """Writes label table parts under `tables` in a pool of threads and records each part
    (path relative to the label set, shard, rows) and its sha256, as directory_digest would.
    At most 2 x workers parts wait in memory; the caller blocks beyond that."""

    def __init__(self, tables: Path, workers: int | None = None):
        from recap_data.io import pool_size  # one job per free core, as the decoders count them

        self.tables, self.workers = Path(tables), pool_size(workers or 0, reserved=0)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="label-part")
        self.pending: list[Future] = []
        self.parts: list[dict] = []
        self.files: dict[str, dict] = {}
        self.next_part: dict[str, int] = {}

    def submit(self, shard: str, table: pa.Table) -> None:
        number = self.next_part.get(shard, 0)
        self.next_part[shard] = number + 1
        rel = f"{shard}/part-{number:05d}.parquet"
        self.parts.append({"path": f"{paths.LABEL_TABLES_DIR}/{rel}", "shard": shard, "rows": len(table)})
        while len(self.pending) >= 2 * self.workers:
            self._collect(self.pending.pop(0))
        self.pending.append(self.pool.submit(self._write, rel, table))

    def _write(self, rel: str, table: pa.Table) -> tuple[str, str]:
        import pyarrow.parquet as pq

        path = self.tables / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy", use_dictionary=DICTIONARY_COLUMNS,
                       row_group_size=len(table) or 1)
        return rel, file_sha256(path)  # read back from the page cache: the digest of what is on disk

    def _collect(self, future: Future) -> None:
        rel, sha = future.result()
        self.files[rel] = {"sha256": sha}

    def finish(self) -> str:
        """Wait for every part; the digest over the tables (the same as directory_digest's)."""
        try:
            for future in self.pending:
                self._collect(future)
        finally:
            self.pending = []
            self.pool.shutdown(cancel_futures=True)
        return content_digest(self.files)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)


def iter_chunks(parts: list[dict], columns: list[str], tasks: list[str], max_rows: int | None = None):
    """(part, {column: numpy array}) for chunks of whole episodes of about max_rows rows each
    (default PART_ROWS), streamed from table parts in key order (table_parts' list) with bounded
    memory. A shard's rows are one stream, whatever its parts: cut into windows of max_rows rows,
    each window (after the episode carried over from the last) is a chunk but for its last
    episode, carried into the next; a shard's last window goes whole. So the chunks, and the parts
    a relabel writes from them, do not depend on how the input was cut into parts. `part`: the one
    the chunk ends in. `task` comes as codes into `tasks` (int32); `shard` is checked against the
    part's and not returned."""
    from itertools import groupby

    code_of, max_rows = {task: i for i, task in enumerate(tasks)}, max_rows or PART_ROWS
    wanted = list(dict.fromkeys(["shard", "episode_index", *columns]))
    for _, group in groupby(parts, key=lambda part: part["shard"]):
        carry = None
        for part, window, last in _windows(list(group), wanted, code_of, max_rows):
            chunk = window if carry is None else {c: np.concatenate([carry[c], window[c]]) for c in window}
            if last:
                yield part, chunk
                break
            episode = chunk["episode_index"]
            # the start of the last episode: it may go on in the next window
            cut = int(np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])[-1])
            carry = {c: a[cut:] for c, a in chunk.items()}
            if cut:
                yield part, {c: a[:cut] for c, a in chunk.items()}


def _windows(parts: list[dict], wanted: list[str], code_of: dict, max_rows: int):
    """(part, {column: array} of max_rows rows, is_last) over the rows of one shard's parts, in
    order; the last window holds what remains."""
    import pyarrow.parquet as pq

    from recap_data.store.db import unreadable

    buffered: list[dict] = []
    rows = 0
    pending = None  # the window made last, yielded once it is known not to be the last one
    for part in parts:
        with unreadable(str(part["path"]), LABELS_FIX):
            file = pq.ParquetFile(part["path"], read_dictionary=["shard", "task"])
            missing = sorted(set(wanted) - set(file.schema_arrow.names))
            if missing:
                raise RecapError(f"{part['path']}: label table without column {missing[0]!r}; {LABELS_FIX}")
            for batch in file.iter_batches(batch_size=max_rows, columns=wanted):
                _check_shard(batch.column("shard"), part)
                buffered.append({c: _column(batch.column(c), c, part, code_of) for c in wanted if c != "shard"})
                rows += batch.num_rows
                while rows >= max_rows:
                    joined = {c: np.concatenate([b[c] for b in buffered]) for c in buffered[0]}
                    if pending is not None:
                        yield *pending, False
                    pending = part, {c: a[:max_rows] for c, a in joined.items()}
                    buffered, rows = [{c: a[max_rows:] for c, a in joined.items()}], rows - max_rows
    if rows:
        if pending is not None:
            yield *pending, False
        yield parts[-1], {c: np.concatenate([b[c] for b in buffered]) for c in buffered[0]}, True
    elif pending is not None:
        yield *pending, True


def _column(column, name: str, part: dict, code_of: dict) -> np.ndarray:
    """A batch column as numpy: bools unpacked; task as codes into the label set's tasks."""
    import pyarrow as pa

    if not pa.types.is_dictionary(column.type):
        return column.to_numpy(zero_copy_only=False)
    dictionary = column.dictionary.to_pylist()
    unknown = [t for t in dictionary if t not in code_of]
    if unknown:
        raise RecapError(f"{part['path']}: {name} {unknown[0]!r} is not in the label set's manifest; {LABELS_FIX}")
    remap = np.array([code_of[t] for t in dictionary], np.int32)  # (dictionary,) -> task code
    return remap[column.indices.to_numpy(zero_copy_only=False)]


def _check_shard(column, part: dict) -> None:
    """Every row of a part is of the part's shard (the dictionary may hold unused values)."""
    values = [None]
    if column.null_count == 0:
        used = np.flatnonzero(np.bincount(column.indices.to_numpy(zero_copy_only=False)))  # dictionary entries used
        values = [column.dictionary[int(i)].as_py() for i in used]
    if any(v != part["shard"] for v in values):
        raise RecapError(f"{part['path']}: rows of shard {values[0]!r} in a table of shard {part['shard']!r}; "
                         f"{LABELS_FIX}")
