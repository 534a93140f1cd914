"""The one exception type users see: a clear, one-line message saying what is wrong and how to fix it.

The library speaks of its own parameters, in backticks as Python's documentation does: "`patch_size` must
be between 1 and 32 (got 0)". A Python user reads the name of the argument they passed; the command line
maps each name to the option that sets it ("--patch-size must be ..."), see genlab.cli.flags.
"""

from __future__ import annotations


class GenlabError(Exception):
    """A problem with the user's input or environment, reported without a traceback by the CLI."""


def param(name: str) -> str:
    """A parameter's name as messages write it: ``param("patch_size")`` -> "`patch_size`"."""
    return f"`{name}`"
