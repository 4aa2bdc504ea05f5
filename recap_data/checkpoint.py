"""Atomic output directories (checkpoints, label sets) and their content digests.

An output is built in a hidden sibling `.<name>.tmp.<pid>`, then renamed into place, so a
reader never sees half of one. An existing output is never overwritten unless `force`: then
the old one is moved aside first and removed only after the new one is in place.
"""

import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

from recap_data.errors import RecapError
from recap_data.store import atomic_write_text, content_digest, file_digests, pid_alive

# Testing hook: RECAP_DATA_FAILPOINT=<name> makes the process SIGKILL itself at that point
# (writer: after_episode:N, after_finalize, after_verify, after_manifest; any atomic
# directory: before_rename), to prove crash safety.
FAILPOINT_ENV = "RECAP_DATA_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def directory_digest(path: Path) -> str:
    """sha256 over every file of a directory (the same digest scheme as shards)."""
    return content_digest(file_digests(Path(path), exclude=()))


def _clean_stale(target: Path) -> None:
    for p in target.parent.glob(f".{target.name}.*.*"):
        pid = p.name.rsplit(".", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


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
    _clean_stale(target)
    tmp = target.parent / f".{target.name}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        failpoint("before_rename")
        old = target.parent / f".{target.name}.old.{os.getpid()}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def write_training_run(out: Path, save, metrics: dict, log: list[dict], *, what: str, force: bool = False,
                       metrics_path: Path | None = None, loss_path: Path | None = None,
                       metrics_copy: dict | None = None) -> None:
    """A trainer's checkpoint directory, atomically: save(tmp) writes the model files, then
    metrics.json and loss.csv (step, train_loss, lr). Copies of both go to metrics_path (
    `metrics_copy` when given, e.g. without per-task detail) and loss_path, for DVC."""
    loss_csv = csv_text(log)
    with atomic_directory(out, force=force, what=what) as tmp:
        save(tmp)
        write_json(tmp / "metrics.json", metrics)
        atomic_write_text(tmp / "loss.csv", loss_csv)
    if metrics_path:
        write_json(Path(metrics_path), metrics if metrics_copy is None else metrics_copy)
    if loss_path:
        atomic_write_text(Path(loss_path), loss_csv)
