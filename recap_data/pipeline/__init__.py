"""What the DVC pipeline adds on top of the commands: the per-iteration summary."""
