"""Data on its way into training: the base shard (embedded demonstrators or an import) and frames read from shards."""
