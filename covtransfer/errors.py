"""The one exception type that reaches users: a one-line message naming the file and the problem."""


class CovtransferError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits non-zero."""
