"""Trainer checkpoints: their content digest, the atomic checkpoint directory a run writes, and
one-line errors for damaged weights."""

from pathlib import Path

from recap_data.errors import one_line_errors
from recap_data.io import atomic_directory, atomic_write_text, csv_text, write_json
from recap_data.store import paths
from recap_data.store.store import content_digest, file_digests


def directory_digest(path: Path) -> str:
    """sha256 over every file of a directory (the same digest scheme as shards)."""
    return content_digest(file_digests(Path(path), exclude=()))


def write_training_run(out: Path, save, metrics: dict, log: list[dict], *, what: str, force: bool = False,
                       metrics_path: Path | None = None, loss_path: Path | None = None,
                       metrics_copy: dict | None = None) -> None:
    """A trainer's checkpoint directory, atomically: save(tmp) writes the model files, then
    metrics.json and loss.csv (step, train_loss, lr). Copies of both go to metrics_path (
    `metrics_copy` when given, e.g. without per-task detail) and loss_path, for DVC."""
    loss_csv = csv_text(log)
    with atomic_directory(out, force=force, what=what) as tmp:
        save(tmp)
        write_json(tmp / paths.METRICS_FILE, metrics)
        atomic_write_text(tmp / paths.LOSS_FILE, loss_csv)
    if metrics_path:
        write_json(Path(metrics_path), metrics if metrics_copy is None else metrics_copy)
    if loss_path:
        atomic_write_text(Path(loss_path), loss_csv)


def weights_errors(weights: Path, trainer: str):
    """A missing, truncated or mismatched weights file (or tokenizer) as one line naming the file."""
    from safetensors import SafetensorError

    return one_line_errors(weights, "unreadable checkpoint", f"write it again with `recap-data {trainer} --force`",
                           OSError, RuntimeError, ValueError, SafetensorError)
