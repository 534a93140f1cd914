"""What the API reads and writes besides numbers: text that must be proper Unicode, names of bounded
length (they are echoed in error messages), and images as PNG data URLs."""

from __future__ import annotations

import base64
import io
from typing import Annotated

import torch
from pydantic import AfterValidator, Field

MAX_NAME_CHARS = 200  # model, sampler and class names: echoed in error messages, so bounded


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

    buffer = io.BytesIO()
    tensor_to_pil(image[None].cpu())[0].save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
