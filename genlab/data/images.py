"""Image I/O: files to [0, 1] tensors, tensors to grids, and grids (with captions) to PNG files."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from genlab.errors import GenlabError
from genlab.rundir import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
MIN_CELL_WIDTH = 96  # px; below this a 28x28 digit is a smudge on a high-DPI screen
MAX_CAPTION_LINES = 4  # longer captions are cut with "..." so one caption cannot stretch the whole grid


def is_grayscale_file(path: str | os.PathLike) -> bool:
    """Whether the file stores a single gray channel, read from its header without decoding pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode == "P":
                # A palette image is gray when its palette is; the palette is small, so this stays cheap.
                return _palette_is_gray(img)
            return img.mode in GRAYSCALE_MODES
    except Exception as exc:
        raise unreadable_error(path, exc) from exc


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image in the file as load_image sees it (upright, after its EXIF rotation),
    read from its header without decoding pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            turned = img.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations a quarter turn away
    except Exception as exc:
        raise unreadable_error(path, exc) from exc
    return (height, width) if turned else (width, height)


def _palette_is_gray(img: Image.Image) -> bool:
    palette = np.asarray(img.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool((palette == palette[:, :1]).all())


def unreadable_error(path: Path, exc: Exception) -> GenlabError:
    """The one-line error for an image file Pillow cannot open or decode (``exc``), naming ``path``."""
    if isinstance(exc, FileNotFoundError):
        return GenlabError(f"image file not found: {path}")
    # Pillow's own message for an unknown format repeats the path; say what it means instead.
    reason = "not a recognised image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
    reason = reason or type(exc).__name__
    return GenlabError(f"cannot read image {path} ({reason}); replace it with a valid image or remove it")


def _decode(path: Path, channels: int) -> Image.Image:
    """The fully decoded, upright image in convert_mode's modes; truncated or corrupt files fail here."""
    try:
        with Image.open(path) as img:
            img.load()
            return convert_mode(ImageOps.exif_transpose(img), channels)
    except Exception as exc:
        # Pillow reports bad data through many exception types (OSError, SyntaxError, struct.error, ...).
        raise unreadable_error(path, exc) from exc


def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """RGB or "L" with transparency composited on white; 16-bit gray becomes mode "F" in [0, 1].

    The "F" image stays gray whatever ``channels`` is; load_image repeats it to three channels.
    """
    if img.mode.startswith("I") or img.mode == "F":
        # Pillow's own I;16 -> L conversion clips instead of scaling, which turns most 16-bit images white.
        scale = 1.0 if img.mode == "F" else 65535.0
        return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0), mode="F")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def _center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        # Pillow widens the bicubic kernel when shrinking, so downsampling is antialiased.
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return img


def load_image(path: str | os.PathLike, size: int | None = None, channels: int = 3) -> torch.Tensor:
    """Read an image file as a (channels, H, W) float32 tensor in [0, 1].

    With ``size`` the image is center-cropped to a square and resized to ``size`` x ``size``.
    Transparent pixels are composited on white. Raises GenlabError naming the file if it cannot be read.
    """
    _check_request(size, channels)
    return image_tensor(_decode(Path(path), channels), size, channels)


def image_from_bytes(
    data: bytes, size: int | None = None, channels: int = 3, max_side: int = 4096
) -> torch.Tensor:
    """``load_image`` for the bytes of an image file (an upload); images wider or taller than ``max_side``
    are refused before they are decoded."""
    _check_request(size, channels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if max(img.size) > max_side:
                raise GenlabError(f"the image is {img.size[0]}x{img.size[1]}; at most {max_side} a side")
            img.load()
            decoded = convert_mode(ImageOps.exif_transpose(img), channels)
    except GenlabError:
        raise
    except Exception:
        raise GenlabError("the upload is not a readable image (PNG, JPEG, BMP or GIF)") from None
    return image_tensor(decoded, size, channels)


def _check_request(size: int | None, channels: int) -> None:
    if channels not in (1, 3):
        raise GenlabError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
    if size is not None and size < 1:
        raise GenlabError(f"image size must be a positive number of pixels, got {size}")


def image_tensor(img: Image.Image, size: int | None, channels: int) -> torch.Tensor:
    """A decoded image (convert_mode's modes) as a (channels, H, W) float tensor in [0, 1], centre-cropped
    and resized to ``size`` x ``size`` when ``size`` is given."""
    if size is not None:
        img = _center_crop_resize(img, size)
    array = np.asarray(img, dtype=np.float32)
    if img.mode != "F":
        array = array / 255.0
    if array.ndim == 2 and channels == 3:
        array = np.repeat(array[:, :, None], 3, axis=2)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.clamp_(0.0, 1.0).contiguous()


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) images to size x size, bilinear with antialiasing, kept in [0, 1]."""
    resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp_(0.0, 1.0)


def _as_batch(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = torch.stack(list(images))
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise GenlabError(f"expected images shaped (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    return images


def make_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile (N, C, H, W) images into one (C, H', W') image, ``nrow`` images per row.

    ``nrow`` defaults to ceil(sqrt(N)) for a square-ish grid. With ``cols = min(nrow, N)`` and
    ``rows = ceil(N / cols)``: H' = rows * (H + padding) + padding, W' = cols * (W + padding) + padding.
    Unused cells and the padding are filled with ``pad_value``.
    """
    images = _as_batch(images).detach()
    n, c, h, w = images.shape
    if nrow is not None and nrow < 1:
        raise GenlabError(f"nrow must be at least 1, got {nrow}")
    if padding < 0:
        raise GenlabError(f"padding must be >= 0, got {padding}")
    cols = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    grid = images.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(n):
        row, col = divmod(i, cols)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; words wider than a line are broken between characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if current and font.getlength(current + char) > width:
                lines.append(current)
                current = ""
            current += char
    if current:
        lines.append(current)
    if len(lines) > MAX_CAPTION_LINES:
        last = lines[MAX_CAPTION_LINES - 1]
        while last and font.getlength(last + "...") > width:
            last = last[:-1]
        lines = lines[: MAX_CAPTION_LINES - 1] + [last.rstrip() + "..."]
    return lines


def _to_pil(grid: torch.Tensor) -> Image.Image:
    array = (grid.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def save_grid(
    path: str | os.PathLike,
    images: torch.Tensor | Sequence[torch.Tensor],
    captions: list[str] | None = None,
    nrow: int | None = None,
    scale: int | None = None,
) -> Path:
    """Write images in [0, 1] as one RGB PNG grid, optionally with a caption under each cell.

    ``scale`` is the nearest-neighbour upscaling factor; by default small images are enlarged until a
    cell is at least MIN_CELL_WIDTH pixels wide. Gray images are saved as gray-looking RGB. The file is
    written atomically (temporary file, then rename), so a crash never leaves a half-written PNG.
    """
    return _write_atomic(render_grid(images, captions, nrow, scale), Path(path), "PNG")


def save_gif(
    path: str | os.PathLike,
    frames: Sequence[torch.Tensor],
    nrow: int | None = None,
    scale: int | None = None,
    duration_ms: int = 120,
    hold_last_ms: int = 1500,
) -> Path:
    """Write an animated GIF whose frames are grids (as save_grid draws them) of the batches in ``frames``."""
    if not frames:
        raise GenlabError("save_gif needs at least one frame")
    pictures = [
        render_grid(f, None, nrow, scale).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames
    ]
    durations = [duration_ms] * (len(pictures) - 1) + [hold_last_ms]
    options = {"save_all": True, "append_images": pictures[1:], "duration": durations, "loop": 0}
    return _write_atomic(pictures[0], Path(path), "GIF", **options)


def save_clips(
    path: str | os.PathLike, clips: torch.Tensor, captions: list[str] | None = None, nrow: int | None = None
) -> Path:
    """Write clips (N, T, C, H, W) in [0, 1]: a ``.gif`` plays them side by side (``nrow`` to a row), any
    other path is a PNG with one row of frames per clip and its caption under the first frame."""
    if clips.ndim != 5:
        raise GenlabError(f"clips must be (N, T, C, H, W), got a tensor of shape {tuple(clips.shape)}")
    n, frames = clips.shape[:2]
    if str(path).lower().endswith(".gif"):
        return save_gif(path, [clips[:, t] for t in range(frames)], nrow=min(nrow or 8, n))
    labels = [c if t == 0 else "" for c in captions for t in range(frames)] if captions else None
    return save_grid(path, clips.flatten(0, 1), labels, nrow=frames)


def render_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    captions: list[str] | None = None,
    nrow: int | None = None,
    scale: int | None = None,
) -> Image.Image:
    """The picture save_grid writes, as a Pillow image."""
    batch = _as_batch(images).detach().to("cpu", torch.float32)
    n, c, h, w = batch.shape
    if c not in (1, 3):
        raise GenlabError(f"save_grid needs 1- or 3-channel images, got {c} channels")
    if captions is not None and len(captions) != n:
        raise GenlabError(f"save_grid got {n} images but {len(captions)} captions; give one per image")
    if scale is None:
        scale = max(1, math.ceil(MIN_CELL_WIDTH / w))
    if scale < 1:
        raise GenlabError(f"scale must be a positive integer, got {scale}")
    batch = batch.clamp(0.0, 1.0).repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    batch = batch.expand(-1, 3, -1, -1)
    padding = 2

    if captions is None:
        canvas = _to_pil(make_grid(batch, nrow=nrow, padding=padding))
    else:
        font = ImageFont.load_default()
        cell_w = w * scale
        wrapped = [_wrap(str(caption), font, cell_w - 2) for caption in captions]
        _, top, _, bottom = font.getbbox("Ag|")
        line_h = bottom - min(top, 0) + 2
        caption_h = max(len(lines) for lines in wrapped) * line_h + 4
        # Captions go into white space added under each image, so make_grid's layout holds for both.
        blank = torch.ones(n, 3, caption_h, cell_w)
        canvas = _to_pil(make_grid(torch.cat([batch, blank], dim=2), nrow=nrow, padding=padding))
        draw = ImageDraw.Draw(canvas)
        cols = min(nrow or math.ceil(math.sqrt(n)), n)
        for i, lines in enumerate(wrapped):
            row, col = divmod(i, cols)
            x = padding + col * (cell_w + padding) + 1
            y = padding + row * (h * scale + caption_h + padding) + h * scale + 2
            for k, line in enumerate(lines):
                draw.text((x, y + k * line_h), line, fill=(0, 0, 0), font=font)
    return canvas


def _write_atomic(image: Image.Image, path: Path, fmt: str, **options: Any) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    try:
        return atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise GenlabError(
            f"cannot write {path} ({exc.strerror or exc}); check that its directory is writable"
        ) from exc
