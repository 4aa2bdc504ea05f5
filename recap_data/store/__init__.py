"""The store: shards, their manifests and schema, the writer, verification, import, DuckDB views,
video decoding and shard indexes."""
