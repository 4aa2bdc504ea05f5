"""The one exception type users see: a one-line message naming the file, field and fix."""

from contextlib import contextmanager


class RecapError(Exception):
    """Bad input or a broken invariant. The CLI prints `error: <message>` and exits 2."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message as one short line (its type's name when it has no message)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


@contextmanager
def one_line_errors(where, what: str, fix: str, *kinds: type[BaseException]):
    """A library's exception of `kinds` as `RecapError("<where>: <what> (<its first line>); <fix>")`."""
    try:
        yield
    except kinds as e:
        raise RecapError(f"{where}: {what} ({first_line(e)}); {fix}") from None
