"""The one exception type users see, and the one way to quote another exception in it.

Every problem caused by the user's input (a file, a key, a value) is raised as
:class:`RpgenError` with a one-line message that names the culprit. The CLI prints
it as ``error: <message>`` and exits with status 1; anything else is a bug.
"""


class RpgenError(Exception):
    """A user-facing error whose message names the file, key or value at fault."""


def first_line(exc: BaseException, *, typed: bool = True, limit: int | None = None) -> str:
    """The first line of ``exc``'s message, for one-line errors about code or files that raised:
    ``Type: first line`` (``typed``), or the line alone (the type's name when the message is
    empty); cut to ``limit`` characters (ending in "...") when given."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if limit is not None and len(text) > limit:
        text = text[:limit - 3] + "..."
    if typed:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__
