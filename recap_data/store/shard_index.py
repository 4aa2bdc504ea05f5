"""`recap-data index`: the growing list of shards an iteration trains on, as a small JSON file.

DVC cannot interpolate lists into a command, and a stage may not depend on the shards folder
(later iterations write into it), so "base plus every rollout so far" is a chain of index files:
iteration k's index is iteration k-1's plus its own rollout shard. A shard's weight is its
kind's (`mixture.base` or `mixture.rollouts`), times its frame count with `per: frame`: then
the policy draws frames as often as they occur, which is the distribution the labeler's
threshold counts its positive fraction over (with `per: shard`, a small rollout shard sampled
like the base shard shows the policy another positive fraction than the 30% labelled). Each entry records the
shard's content digest, so a changed shard changes every index after it, and readers (any
`--shard @FILE`) refuse a shard whose content no longer matches.

    {"format": "recap-data/shard-index@1",
     "shards": [{"id": "base", "kind": "base", "digest": "sha256:...", "weight": 1.0, "episodes": 200, "frames": ...}]}
"""

import math
from dataclasses import dataclass
from pathlib import Path

from recap_data.config import Choice, Positive, check_fields, param
from recap_data.errors import RecapError
from recap_data.io import read_json
from recap_data.store.store import ShardStore

INDEX_FORMAT = "recap-data/shard-index@1"


@dataclass
class MixtureConfig:
    """Sampling weights of the shards an iteration trains on."""

    section = "mixture"  # its params.yaml section (a class attribute, not a field)

    base: Positive = param(1.0, "relative weight of each base (and imported) shard")
    rollouts: Positive = param(1.0, "relative weight of each rollout shard")
    per: Choice("shard", "frame") = param(
        "shard", "shard: a shard's draws follow its weight; frame: weight x frames (draws follow the frames)")

    def validate(self) -> "MixtureConfig":
        check_fields(self)
        return self


def read_index(path: Path, store: ShardStore | None = None) -> list[dict]:
    """The entries of an index file; with `store`, each shard must still hold the recorded content."""
    path = Path(path)
    fix = "write it again with `recap-data index`, or `dvc pull` it where DVC tracks it"
    data = read_json(path, INDEX_FORMAT, what="shard index", fix=fix)
    entries = data.get("shards")
    if not isinstance(entries, list) or not entries:
        raise RecapError(f"{path}: field 'shards' must be a non-empty list of shard entries; {fix}")
    for i, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("digest"), str)
              and isinstance(entry.get("weight"), (int, float)) and not isinstance(entry.get("weight"), bool)
              and math.isfinite(entry["weight"]) and entry["weight"] > 0)
        if not ok:
            raise RecapError(f"{path}: shards[{i}] needs 'id', 'digest' and a positive 'weight'; {fix}")
    for entry in entries if store is not None else ():
        now = store.present_manifest(entry["id"], named_by=str(path)).digest
        if now != entry["digest"]:
            raise RecapError(f"{path}: shard {entry['id']} changed since the index was written "
                             f"({entry['digest'][:19]} then, {now[:19]} now); write the index again")
    return entries


def write_index(store: ShardStore, out: Path, add: list[str], cfg: MixtureConfig,
                prev: Path | None = None) -> list[dict]:
    """Write `prev`'s shards plus `add` (weights by shard kind) to `out` atomically; returns the entries."""
    from recap_data.io import write_json

    cfg.validate()
    entries = list(read_index(prev, store)) if prev else []
    for shard in add:
        if any(e["id"] == shard for e in entries):
            raise RecapError(f"index: shard {shard!r} is already in {prev}; each shard is listed once")
        m = store.manifest(shard)
        weight = cfg.rollouts if m.kind == "rollout" else cfg.base
        entries.append({"id": shard, "kind": m.kind, "digest": m.digest, "episodes": m.episodes, "frames": m.frames,
                        "weight": weight * m.frames if cfg.per == "frame" else weight})
    if not entries:
        raise RecapError("index: no shards; pass --add SHARD")
    write_json(Path(out), {"format": INDEX_FORMAT, "shards": entries})
    return entries
