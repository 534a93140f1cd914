"""The `genlab` command: thin wrappers that parse options, call the library and print where results are."""

from __future__ import annotations

import sys

import click

from genlab.errors import GenlabError
from genlab.version import __version__


class GenlabGroup(click.Group):
    """Turns GenlabError into a one-line message and exit status 2, with no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GenlabError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(
    cls=GenlabGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="genlab")
def cli() -> None:
    """genlab: train, sample, evaluate and attack generative image models on a laptop CPU.

    \b
    Examples:
      genlab data list
      genlab data show shapes --out shapes.png
      genlab train classifier --data mnist --minutes 3
      genlab predict runs/classifier-mnist digit.png
      genlab demo
    """


def main() -> None:
    cli(prog_name="genlab")


# Importing the command modules registers their commands on `cli`.
from genlab.cli import (  # noqa: E402, F401
    attack,
    bench,
    clip,
    data,
    defend,
    demo,
    diffusion,
    edit,
    evaluate,
    gan,
    img2img,
    predict,
    sample,
    segment,
    serve,
    train,
)
