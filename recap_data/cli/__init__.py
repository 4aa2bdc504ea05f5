"""The `recap-data` command line: each command is a few lines over a library function."""
