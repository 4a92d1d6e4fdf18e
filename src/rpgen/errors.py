"""The one exception type users see.

Every problem caused by the user's input (a file, a key, a value) is raised as
:class:`RpgenError` with a one-line message that names the culprit. The CLI prints
it as ``error: <message>`` and exits with status 1; anything else is a bug.
"""


class RpgenError(Exception):
    """A user-facing error whose message names the file, key or value at fault."""
