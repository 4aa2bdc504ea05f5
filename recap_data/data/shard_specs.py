"""--shard values: IDs, ID=WEIGHT mixtures and @index files, as shard lists and weights."""

import numpy as np

from recap_data.errors import RecapError
from recap_data.store.store import ShardStore


def split_specs(specs: list[str] | tuple[str, ...], store: ShardStore | None = None) -> list[str]:
    """Repeated and comma-separated --shard values, as one list: ['a', 'b,c'] -> ['a', 'b', 'c'].

    `@FILE` stands for the shards of an index file (`recap-data index`), with their weights
    (`id=weight`); with `store`, their content must still match the index.
    """
    from recap_data.store.shard_index import read_index

    out = []
    for item in specs:
        for spec in (s.strip() for s in item.split(",")):
            if spec.startswith("@"):
                out += [f"{e['id']}={e['weight']}" for e in read_index(spec[1:], store)]
            elif spec:
                out.append(spec)
    return out


def shard_ids(specs: list[str] | tuple[str, ...], store: ShardStore | None = None) -> list[str]:
    """The shard ids of --shard values, without weights."""
    return [s.partition("=")[0] for s in split_specs(specs, store)]


def parse_mixture(specs: list[str] | tuple[str, ...], store: ShardStore | None = None) -> dict[str, float]:
    """['base', 'iter1=2'] or ['base,iter1=2'] -> {'base': 1.0, 'iter1': 2.0} (relative shard weights);
    ['@data/index/iter1.json'] -> the index file's shards and weights."""
    mixture: dict[str, float] = {}
    for spec in split_specs(specs, store):
        name, _, weight = spec.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if value <= 0 or not np.isfinite(value):
            raise RecapError(f"shard spec {spec!r}: the weight must be a positive number (ID or ID=WEIGHT)")
        if name in mixture:
            raise RecapError(f"shard {name!r} is listed twice; give each shard once (ID or ID=WEIGHT)")
        mixture[name] = value
    if not mixture:
        raise RecapError("no shards given; pass --shard ID[=WEIGHT] (see `recap-data shards list`)")
    return mixture


def shard_digests(store: ShardStore, shard_ids) -> dict[str, str]:
    """{shard: content digest} from the manifests (an unknown shard is an error naming the known ones)."""
    return {s: store.manifest(s).digest for s in shard_ids}
