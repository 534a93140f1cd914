"""What the API reads and writes besides numbers: text that must be proper Unicode, names of bounded
length (they are echoed in error messages), images as PNG data URLs, and clips as animated GIF data URLs
and PNG frame strips."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import AfterValidator, Field

if TYPE_CHECKING:
    from PIL import Image

MAX_NAME_CHARS = 200  # model, sampler and class names: echoed in error messages, so bounded
FRAME_MS = 120  # a frame of a clip on the page: about 8 a second, as the GIFs of genlab sample (save_gif)
HOLD_LAST_MS = 1500  # the last frame stays a moment before the clip loops, so its end is seen


def _proper_unicode(text: str) -> str:
    """JSON may carry a lone surrogate ("\\ud800"), which Python decodes into a str that cannot be
    encoded again: refuse it up front, before any work, rather than fail when the answer is written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate such as \\ud800)") from None
    return text


Text = Annotated[str, AfterValidator(_proper_unicode)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(_proper_unicode)]


def png_data_url(image: torch.Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a data: URL of a PNG."""
    from genlab.pipelines.diffusion import tensor_to_pil

    return _data_url(tensor_to_pil(image[None].cpu())[0], "PNG")


def _data_url(picture: Image.Image, fmt: str, **options: Any) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def gif_data_url(clip: torch.Tensor) -> str:
    """A (T, C, H, W) clip in [0, 1] as a data: URL of an animated GIF that loops (an <img> plays it)."""
    from PIL import Image

    from genlab.pipelines.diffusion import tensor_to_pil

    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in tensor_to_pil(clip.cpu())]
    durations = [FRAME_MS] * (len(frames) - 1) + [HOLD_LAST_MS]
    return _data_url(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)


def strip_data_url(clip: torch.Tensor) -> str:
    """A (T, C, H, W) clip in [0, 1] as a data: URL of a PNG of its frames in one row, one pixel apart
    (genlab sample's frame strip, at the frames' own size)."""
    from genlab.data.images import make_grid

    return png_data_url(make_grid(clip.cpu(), nrow=len(clip), padding=1))
