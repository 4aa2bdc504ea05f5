"""The shard store: committed shards, their manifests, content digests and the store schema.

A shard is a finalized LeRobot v3 dataset in `<root>/shards/<id>/` plus `manifest.json`.
Shards are immutable: they are only ever created whole (see writer.ShardWriter) and never
modified. Only directories holding a manifest are shards; everything else is ignored.
"""

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recap_data.errors import RecapError
from recap_data.io import clean_stale, read_json
from recap_data.store import paths
from recap_data.store.schema import schema_difference

MANIFEST_FORMAT = "recap-data/shard-manifest@1"
SHARD_KINDS = ("base", "rollout", "import")
SHARD_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,79}$")
# What to do about a shard or label set that a record names but the data root lacks, whole or in
# part: a `dvc pull` that did not finish (DVC checks out nothing of a directory whose remote lost
# a file), a copy of part of the store, or a deletion.
MISSING_FIX = "run `dvc pull` where DVC tracks the store, or re-run the stage that writes it (`dvc repro`)"


@dataclass
class Manifest:
    """What recap-data records about a shard; written once, inside the atomic rename."""

    shard_id: str  # directory name under shards/, unique in the store
    kind: str  # base | rollout | import
    created_at: str  # UTC ISO-8601 time of the commit
    source: dict  # how it was made: generator+seed, simulator task+policy digest, or import path
    fps: int  # frames per second of the recording
    features: dict  # LeRobot feature schema (info.json "features")
    episodes: int  # number of episodes
    frames: int  # number of frames
    tasks: list[str]  # task instructions present in the shard
    successes: int  # number of successful episodes
    synthetic: bool  # True for generated (not recorded or simulated) data
    digest: str  # sha256 over the sorted (path, file sha256) pairs of `files`
    files: dict = field(default_factory=dict)  # relative path -> {"sha256", "bytes"}
    format: str = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        data = read_json(path, MANIFEST_FORMAT, what="shard manifest", fix="run `recap-data shards verify`")
        try:
            return cls(**data)
        except TypeError as e:  # a field missing or unknown
            raise RecapError(f"{path}: not a shard manifest ({e}); run `recap-data shards verify`") from None


def file_digests(directory: Path, exclude: tuple[str, ...] = (paths.MANIFEST,)) -> dict:
    """sha256 and size of every file under `directory`, keyed by POSIX relative path."""
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if not p.is_file() or rel in exclude:
            continue
        out[rel] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return out


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(files: dict) -> str:
    """One digest for a shard's content: sha256 of the sorted 'path sha256' lines."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel} {files[rel]['sha256']}\n".encode())
    return "sha256:" + h.hexdigest()


def validate_shard_id(shard_id: str, what: str = "shard id") -> str:
    """A name that is safe as a directory under the data root (shards, label sets)."""
    if not SHARD_ID_RE.match(shard_id or ""):
        raise RecapError(f"{what} {shard_id!r} is invalid: use 1-80 lowercase letters, digits, '.', '_' or '-'")
    return shard_id


class ShardStore:
    """A data root holding shards. Cheap to create; reads manifests on demand."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = paths.resolve_root(root).absolute()
        self.shards_dir = self.root / paths.SHARDS_DIR
        self.tmp_dir = self.root / paths.TMP_DIR

    def shard_path(self, shard_id: str) -> Path:
        return self.shards_dir / shard_id

    def names_on_disk(self) -> list[str]:
        """Sorted names under shards/ that are valid ids (staging names are not), without a stat."""
        if not self.shards_dir.is_dir():
            return []
        with os.scandir(self.shards_dir) as entries:
            return sorted(e.name for e in entries if SHARD_ID_RE.match(e.name))

    def shard_ids(self) -> list[str]:
        """Ids of committed shards (directories with a manifest), sorted."""
        return [n for n in self.names_on_disk() if self.exists(n)]

    def exists(self, shard_id: str) -> bool:
        return (self.shard_path(shard_id) / paths.MANIFEST).is_file()

    def manifest(self, shard_id: str) -> Manifest:
        if not self.exists(shard_id):
            known = ", ".join(self.shard_ids()) or "none"
            raise RecapError(f"{self.shards_dir}: no shard {shard_id!r} (shards: {known}); "
                             "see `recap-data shards list`")
        return Manifest.read(self.shard_path(shard_id) / paths.MANIFEST)

    def manifests(self) -> list[Manifest]:
        return [self.manifest(i) for i in self.shard_ids()]

    def present_manifest(self, shard_id: str, named_by: str) -> Manifest:
        """The manifest of a shard that `named_by` (an index, a label set) says exists, after a stat
        of each of its files: a shard missing whole or in part is a one-line error with the fix,
        never fewer frames read in silence."""
        if not self.exists(shard_id):
            raise RecapError(self.absent_message(shard_id, named_by))
        manifest = self.manifest(shard_id)
        self.check_files_present(manifest, named_by)
        return manifest

    def absent_message(self, shard_id: str, named_by: str) -> str:
        """Why a shard that `named_by` names cannot be read, with the fix (the store lacks it)."""
        state = "has no manifest.json" if self.shard_path(shard_id).is_dir() else "is missing"
        return f"{named_by} names shard {shard_id!r}, which {state} in {self.shards_dir}; {MISSING_FIX}"

    def check_files_present(self, manifest: Manifest, named_by: str | None = None) -> None:
        """Refuse a committed shard some of whose recorded files are gone (a stat each, no read)."""
        root = self.shard_path(manifest.shard_id)
        prefix = f"{root}{os.sep}"  # os.path on strings: a fifth of pathlib's cost per file
        missing = [rel for rel in sorted(manifest.files) if not os.path.isfile(prefix + rel)]
        if missing:
            by = f" (named by {named_by})" if named_by else ""
            raise RecapError(f"{root / missing[0]}: shard {manifest.shard_id!r}{by} is incomplete, {len(missing)} of "
                             f"its {len(manifest.files)} files are missing; {MISSING_FIX}")

    def first_shard_id(self) -> str | None:
        """shard_ids()[0] without a stat of every shard's manifest (a commit asks this in any store)."""
        return next((n for n in self.names_on_disk() if self.exists(n)), None)

    def check_compatible(self, features: dict, fps: int, what: str) -> None:
        """Refuse a schema or fps that differs from the store's (that of any committed shard)."""
        first = self.first_shard_id()
        if first is None:
            return
        # Every committed shard passed this same check, so one of them stands for all.
        ref = self.manifest(first)
        label = f"shard '{ref.shard_id}'"
        diff = schema_difference(features, ref.features, label)
        if diff:
            raise RecapError(f"{what}: schema mismatch: {diff}; a store holds one schema, use another --root")
        if int(fps) != int(ref.fps):
            raise RecapError(f"{what}: field 'fps' is {fps}, the store's shards ({label}) have {ref.fps}")

    def clean_stale_tmp(self) -> list[Path]:
        """Remove what dead writers left: shard staging under .tmp/, label-set staging under labels/
        (an old label set that a dead writer had moved aside is put back instead)."""
        return clean_stale(self.tmp_dir, hidden_only=False) + clean_stale(self.root / paths.LABELS_DIR)
