"""Range checks that configs share, and the bounds on what a config may ask a machine to build.

A config comes from the command line or from a run's ``config.json``, which anyone may have edited or
written: ``"base_channels": 1000000000`` or ``"layers": 10**9`` must give a one-line error before a single
tensor is allocated, not a MemoryError after minutes of trying (or a machine brought to its knees). The
bounds are generous: far beyond anything that trains on the hardware genlab targets, and beyond the
Stable Diffusion networks genlab loads; the parameter count of a whole network is bounded separately
(genlab.nn.pretrained sizes every network before building it).
"""

from __future__ import annotations

import math

from genlab.errors import GenlabError, param

MAX_SIDE = 8192  # pixels on a side of an image (or a latent), for data and networks
MAX_WIDTH = 65536  # channels, hidden units, embedding widths, latent sizes
MAX_DEPTH = 64  # layers, blocks, levels, stages; also the length of lists of them
MAX_CLASSES = 100_000  # classes of a classifier or of a class-conditional generator
MAX_VOCAB = 1_000_000  # symbols of a tokenizer
MAX_TOKENS = 8192  # tokens in a prompt
MAX_TIMESTEPS = 100_000  # T of a diffusion process (the lectures: 1000)
MAX_PARAMETERS = 2_000_000_000  # numbers (weights and buffers) in one network: 8 GB in float32
MAX_BATCH = 1_000_000  # images in one batch or one evaluation
MAX_FRAMES = 1024  # frames of one clip, for data and networks
MAX_PIXELS = 2_000_000_000  # numbers in the images of one dataset held in memory: 8 GB in float32


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """Raise a GenlabError unless ``low <= value <= high`` (NaN is never in range). ``name`` is the
    parameter's name ("patch_size", written `patch_size` in the message) or a phrase naming one ("every
    `widths` entry")."""
    name = _named(name)
    if isinstance(value, float) and not math.isfinite(value):
        raise GenlabError(f"{name} must be a finite number (got {value})")
    if value < low or (high is not None and value > high):
        bounds = f"at least {_text(low)}" if high is None else f"between {_text(low)} and {_text(high)}"
        raise GenlabError(f"{name} must be {bounds} (got {_text(value)})")


def _named(name: str) -> str:
    return param(name) if name.isidentifier() else name


def _text(number: float) -> str:
    """A number for a message: 0.001, 65536, and a 400-digit integer cut short."""
    text = f"{number:g}" if isinstance(number, float) else str(number)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"


def check_pixels(images: int, channels: int, side: int) -> None:
    """Raise a GenlabError when ``images`` images of ``channels`` x ``side`` x ``side`` would hold more
    than MAX_PIXELS numbers: said before the tensor that holds them is allocated."""
    numbers = images * channels * side * side
    if numbers > MAX_PIXELS:
        raise GenlabError(
            f"{images} images of {channels}x{side}x{side} pixels are {numbers / 1e9:.1f} billion numbers, "
            f"more than the {MAX_PIXELS / 1e9:g} billion genlab holds in memory; use a smaller `image_size`"
        )


def check_fraction(name: str, value: float, closed: bool = False) -> None:
    """Raise a GenlabError unless ``value`` lies in [0, 1) (or [0, 1] when ``closed``): a probability such
    as dropout, or a decay."""
    name = _named(name)
    if not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise GenlabError(f"{name} must be in [0, 1{']' if closed else ')'} (got {value})")
