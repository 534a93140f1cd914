"""The library's parameters as the command line's options: "`patch_size` must be ..." -> "--patch-size
must be ...".

Library errors name the parameter a Python user passed, in backticks (genlab.errors.param). A command
knows which of its options and arguments sets which parameter: by default the option's own name
(``--patch-size`` sets ``patch_size``); a command whose option sets a differently named parameter says so
with ``flags={"width": "--dit-width"}``. Names the command does not set (a field read from a run's
config.json) stay as they are.
"""

from __future__ import annotations

import re

import click

_NAMED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def flag_names(command: click.Command, renamed: dict[str, str] | None = None) -> dict[str, str]:
    """parameter name -> how the command line writes it: "--patch-size", or "RUN" for an argument."""
    names = {}
    for p in command.params:
        if isinstance(p, click.Option):
            longs = [o for o in p.opts if o.startswith("--")]
            names[p.name] = (longs or p.opts)[0]
        elif isinstance(p, click.Argument):
            names[p.name] = p.human_readable_name
    names.update(renamed or {})
    return names


def as_flags(message: str, names: dict[str, str]) -> str:
    """``message`` with every `parameter` the command sets written as its option."""
    return _NAMED.sub(lambda m: names.get(m.group(1), m.group(0)), message)
