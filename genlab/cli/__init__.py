"""The `genlab` command: thin wrappers that parse options, call the library and print where results are."""

from __future__ import annotations

import importlib
import sys

import click

from genlab.errors import GenlabError
from genlab.version import __version__


class GenlabCommand(click.Command):
    """A command whose library errors name its options: "`patch_size` must be ..." becomes "--patch-size
    must be ..." (genlab.cli.flags). ``flags`` maps a parameter to the option that sets it where their
    names differ."""

    def __init__(self, *args, flags: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.flags = dict(flags or {})

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GenlabError as e:
            from genlab.cli.flags import as_flags, flag_names

            raise GenlabError(as_flags(str(e), flag_names(self, self.flags))) from None


class LazyGroup(click.Group):
    """A group whose commands live in modules imported only when a command is asked for (click's lazy
    group pattern): ``lazy`` maps a command name to the module that registers it, so `genlab sample`
    imports the sample command's module and not the fifteen others. Its commands and groups are genlab's
    own, whose errors name their options."""

    command_class = GenlabCommand
    group_class = type  # a group's groups are of its own class

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            importlib.import_module(self.lazy[name])  # registers the command on this group
        return self.commands.get(name)


class GenlabGroup(LazyGroup):
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


# command -> the module that defines it
COMMANDS = {
    "attack": "attack",
    "bench": "bench",
    "clip": "clip",
    "data": "data",
    "defend": "defend",
    "demo": "demo",
    "diffusion": "diffusion",
    "edit": "edit",
    "eval": "evaluate",
    "gan": "gan",
    "img2img": "img2img",
    "predict": "predict",
    "sample": "sample",
    "segment": "segment",
    "serve": "serve",
    "train": "train",
}


@click.group(
    cls=GenlabGroup,
    lazy={name: f"genlab.cli.{module}" for name, module in COMMANDS.items()},
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
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
