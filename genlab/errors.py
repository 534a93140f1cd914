"""The one exception type users see: a clear, one-line message saying what is wrong and how to fix it."""


class GenlabError(Exception):
    """A problem with the user's input or environment, reported without a traceback by the CLI."""
