"""One exception type for every mistake a user can fix; the CLI prints it without a traceback."""


class MvkitError(Exception):
    """A user-facing error whose message says what went wrong and what to do about it."""
