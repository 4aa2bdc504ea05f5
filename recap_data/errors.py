"""The one exception type users see: a one-line message naming the file, field and fix."""


class RecapError(Exception):
    """Bad input or a broken invariant. The CLI prints `error: <message>` and exits 2."""
