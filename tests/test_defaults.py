"""One source of defaults: every option of `genlab train KIND` that sets a field of a config the command
builds defaults to what the library would use without it, so Python and CLI users get the same model.
(The engine's recipes, TrainConfig overrides per task, are the commands' own and not compared here.)"""

from __future__ import annotations

import dataclasses

import click
import pytest

from genlab.cli import cli
from genlab.clip.model import CLIPConfig
from genlab.diffusion.task import DiffusionConfig
from genlab.gan.models import GANConfig
from genlab.img2img.task import IMG2IMG_MODEL, RestorationConfig
from genlab.nn.classifier import ClassifierConfig
from genlab.nn.dit import DiTConfig
from genlab.nn.seg_unet import SegUNetConfig
from genlab.nn.unet import UNetConfig
from genlab.nn.vae import VAEConfig
from genlab.segmentation.task import SEGMENTER_MODEL, SegmentationConfig


def _defaults(config: type, overrides: dict | None = None, rename: dict | None = None) -> dict:
    """option name -> the library's default, for each field of ``config`` (``rename``: field -> option)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[(rename or {}).get(f.name, f.name)] = (overrides or {}).get(f.name, f.default)
    return out


DIT_OPTIONS = {"width": "dit_width", "depth": "dit_depth", "heads": "dit_heads"}
SOURCES = {
    "classifier": [_defaults(ClassifierConfig)],
    "diffusion": [
        _defaults(UNetConfig),
        _defaults(DiffusionConfig),
        _defaults(DiTConfig, rename=DIT_OPTIONS),
    ],
    "vae": [_defaults(VAEConfig)],
    "segmenter": [_defaults(SegUNetConfig, SEGMENTER_MODEL), _defaults(SegmentationConfig)],
    "img2img": [_defaults(SegUNetConfig, IMG2IMG_MODEL), _defaults(RestorationConfig)],
    "gan": [_defaults(GANConfig)],
    "clip": [_defaults(CLIPConfig)],
}


def _as_value(cli_default, library_default):
    """A CLI default as the library spells it: "1,2,2" -> (1, 2, 2)."""
    if isinstance(cli_default, str) and isinstance(library_default, tuple):
        return tuple(type(library_default[0])(v) for v in cli_default.split(",")) if library_default else ()
    return cli_default


def _compared(command: str) -> list[tuple[str, object, object]]:
    ctx = click.Context(cli)  # the commands load lazily: ask the groups for them
    params = cli.get_command(ctx, "train").get_command(ctx, command).params
    options = {p.name: p for p in params if isinstance(p, click.Option)}
    pairs = []
    for source in SOURCES[command]:
        for name, library in source.items():
            option = options.get(name)
            # None: "decided at run time" (the data's image size, a loss-dependent norm): nothing to compare
            if option is None or option.default is None or option.is_flag:
                continue
            pairs.append((name, _as_value(option.default, library), library))
    return pairs


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_cli_defaults_are_the_librarys(command):
    pairs = _compared(command)
    assert pairs, f"train {command}: no option was compared"
    wrong = [f"--{n.replace('_', '-')}: CLI {c!r}, library {lib!r}" for n, c, lib in pairs if c != lib]
    assert not wrong, f"train {command}: " + "; ".join(wrong)


def test_the_drifted_defaults_are_held_together():
    # the two that had drifted apart (issue 20): DiT's patch and the segmenter's depth
    assert dict((n, c) for n, c, _ in _compared("diffusion"))["patch_size"] == DiTConfig().patch_size
    segmenter = dict((n, c) for n, c, _ in _compared("segmenter"))
    assert segmenter["depth"] == SEGMENTER_MODEL["depth"] and segmenter["base_channels"] == 16
