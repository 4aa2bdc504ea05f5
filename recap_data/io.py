"""Atomic writes: files (JSON and CSV writers too) and output directories (checkpoints, label
sets, exports, reports), one cleaner of what dead writers leave, and the failpoints that test them.

A file is written to a temporary sibling, fsynced and renamed over the target.

An output is built in a hidden sibling `.<name>.tmp.<host>@<pid>.<token>`, then put into place, so a
reader never sees half of one. An existing output is never overwritten unless `force`: then
the new directory and the old one trade places in one renameat2(RENAME_EXCHANGE) (Linux), so
the name always holds a whole output, and the old one, now at the staging name, is removed.
Where the exchange is not available, the old output is renamed aside to `.<name>.old.<host>@
<pid>.<token>` first; if the writer dies between the two renames, the next cleaner of that folder
on its host puts the aside copy back. Readers skip every hidden name, so staging is never listed.
"""

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
from contextlib import contextmanager
from pathlib import Path

from recap_data.errors import RecapError, first_line

# Testing hooks. RECAP_DATA_FAILPOINT=<name> makes the process SIGKILL itself at that point
# (writer: after_episode:N, after_finalize, after_verify, after_manifest; label's process R:
# value_part:R, once it has written a part of its values; rollout's process R of several:
# rollout_episode:R, once it has recorded an episode; any atomic
# directory: before_rename, after_exchange, and without the exchange between_renames and
# after_renames), to prove crash safety. RECAP_DATA_NO_EXCHANGE=1 takes the two-rename path.
FAILPOINT_ENV = "RECAP_DATA_FAILPOINT"
NO_EXCHANGE_ENV = "RECAP_DATA_NO_EXCHANGE"
# What a writer leaves while it runs: .<name>.tmp.<host>@<pid>.<token> (staging) and
# .<name>.old.<host>@<pid>.<token> (an old output moved aside by the two-rename fallback); hidden, except
# inside the store's own .tmp/. The host, because a pid says whether a writer lives only on its own
# node: a cleaner leaves other nodes' staging alone. (Names without a host, from older writers, are local.)
STAGING_RE = re.compile(
    r"^(?P<dot>\.?)(?P<name>.+)\.(?P<kind>tmp|old)\.(?:(?P<host>[A-Za-z0-9_-]+)@)?(?P<pid>\d+)(?:\.[0-9a-f]+)?$")
HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class AtomicFile:
    """A temporary sibling `tmp` of `path` for a writer that wants a file name (a library's
    write_csv, an mp4 muxer): commit() fsyncs it and renames it into place, discard() removes it.
    As a context manager it commits when the block succeeds and discards otherwise, so `path` is
    either the old file or the whole new one, never a part. Parents are made."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def commit(self) -> None:
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self.commit()
        finally:
            self.discard()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through an AtomicFile."""
    with AtomicFile(path) as out:
        out.tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write_bytes for text (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_suffix() -> str:
    """<host>@<pid>.<token>: what ends a staging name (STAGING_RE), unique to this writer."""
    return f"{HOST}@{os.getpid()}.{secrets.token_hex(4)}"


def clean_stale(directory: Path, hidden_only: bool = True) -> list[Path]:
    """Remove what dead writers of this host left in `directory`: staging, which never holds the
    only copy of committed data, and aside copies, which are put back where their name is missing.
    hidden_only: touch only hidden names (a user's folder beside a checkpoint may hold anything;
    only the store's own .tmp/ is cleaned of visible names too)."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for p in Path(directory).iterdir():
        m = STAGING_RE.match(p.name)
        if not m or (hidden_only and not m["dot"]) or m["host"] not in (None, HOST) or pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not (p.parent / m["name"]).exists():
            try:
                os.rename(p, p.parent / m["name"])  # the writer died between its two renames
                continue
            except OSError:
                pass  # another cleaner restored it first
        _remove(p)
        removed.append(p)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    if os.environ.get(NO_EXCHANGE_ENV) == "1":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False  # not glibc/Linux
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system or kernel without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def put_in_place(staging: Path, target: Path, force: bool, what: str, aside: Path) -> None:
    """Make the directory `staging` the one at `target`; with `force` an existing `target` is
    replaced with no moment where the name is missing (see the module doc)."""
    try:
        os.rename(staging, target)  # no output there (an empty directory is replaced too)
        fsync_dir(target.parent)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        if not force:
            raise RecapError(f"{target}: {what} was written by another process meanwhile; choose another path "
                             "or pass --force to replace it") from None
    if _exchange(staging, target):
        fsync_dir(target.parent)
        failpoint("after_exchange")
        _remove(staging)  # the old output
        return
    os.rename(target, aside)
    failpoint("between_renames")
    os.rename(staging, target)
    fsync_dir(target.parent)
    failpoint("after_renames")
    _remove(aside)


def refuse_existing(target: Path, force: bool, what: str = "output") -> None:
    """An existing output is an error unless `force` (call it before long work, too)."""
    if Path(target).exists() and not force:
        raise RecapError(f"{target}: {what} already exists; choose another path or pass --force to replace it")


@contextmanager
def atomic_directory(target: Path, force: bool = False, what: str = "output"):
    """Yield a temporary directory that becomes `target` when the block finishes without error."""
    target = Path(target)
    refuse_existing(target, force, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)
    suffix = staging_suffix()
    tmp = target.parent / f".{target.name}.tmp.{suffix}"
    tmp.mkdir()
    try:
        yield tmp
        failpoint("before_rename")
        put_in_place(tmp, target, force, what, aside=target.parent / f".{target.name}.old.{suffix}")
    finally:
        _remove(tmp)


def write_json(path: Path, data) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text with a header; columns default to the first row's keys."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_json(path: Path, fmt: str | None = None, *, what: str, fix: str) -> dict:
    """The JSON object in `path`; with `fmt`, its `format` field must be `fmt`. A missing or
    unreadable file, another JSON type or another format is one RecapError line naming the
    file, what it should be, and `fix`."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RecapError(f"{path}: not a {what} (the file is missing); {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RecapError(f"{path}: unreadable {what} ({first_line(e)}); {fix}") from None
    if not isinstance(data, dict):
        raise RecapError(f"{path}: not a {what} (a JSON {type(data).__name__}, not an object); {fix}")
    if fmt is not None and data.get("format") != fmt:
        raise RecapError(f"{path}: field 'format' is {data.get('format')!r}, expected {fmt!r}; {fix}")
    return data


def prefetch(items, depth: int = 4):
    """Iterate `items` in a background thread, `depth` items ahead, so that reading the next ones
    overlaps with the work on this one (the thread mostly waits on ffmpeg's pipes or in parquet
    decoding, without the GIL). Exceptions are re-raised in the consumer. When the consumer
    stops early, the thread finishes the item in hand and closes `items` (a generator's cleanup,
    such as killing its decoder processes, runs then, not at exit)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                q.put(item)
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:
            q.put(e)
        finally:
            if hasattr(items, "close"):
                items.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put on a full queue, until the thread has closed `items`
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


def shared_directory(state, directory: Path | None) -> Path:
    """The main process's `directory`, on every process of an accelerate / torchrun run (`state`: its
    PartialState; None or one process: `directory` itself). A process that cannot see it (a node
    without the shared data root) stops with an error naming it."""
    if state is not None and state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        directory = Path(broadcast_object_list([str(directory) if directory else None], from_process=0)[0])
    if not directory.is_dir():
        rank = state.process_index if state is not None else 0
        raise RecapError(f"{directory}: process {rank} cannot see the main process's staging directory; every node "
                         "must see the data root at the same path")
    return directory


def pool_size(requested: int = 0, reserved: int = 1) -> int:
    """Decoder jobs to run at once: `requested`, or (0) one per free core: the cores this process
    may run on, shared with the other processes of its node (LOCAL_WORLD_SIZE under torchrun or
    accelerate), less `reserved` for the model's threads; at least 1."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    return max(1, cores // local - reserved)


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def one_malloc_arena() -> None:
    """Let every thread created from now on allocate from the malloc arenas that already exist,
    instead of a new arena of its own. The value pass starts decoder and prefetch threads for each
    piece it scores; they allocate frame batches of megabytes that other threads free, and with an
    arena per thread glibc left them fragmented: the pass kept about 60 MB per shard scored. With
    one arena its memory stays flat, at the same speed (bench/bench_label_processes.py). Nothing
    off glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_ARENA_MAX, 1)


@contextmanager
def normal_scheduling():
    """Undo what the SVT-AV1 encoder (v3.0, the AV1 encoder of PyAV and so of LeRobot's videos) does
    when it runs as root: it switches the thread that opens an encoder to real-time SCHED_FIFO,
    priority 99, and leaves it there, so every thread and process started from that thread
    afterwards is real-time too. One busy real-time process then owns a core: in the test suite a
    command killed with SIGKILL never got the CPU to exit. Wrap every call that may encode video."""
    if not hasattr(os, "sched_getscheduler"):  # not Linux
        yield
        return
    policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, priority):
            os.sched_setscheduler(0, policy, os.sched_param(priority))
