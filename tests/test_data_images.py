"""Image I/O: load_image, make_grid arithmetic and the PNGs save_grid writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import load_image, make_grid, save_grid
from genlab.data.images import MAX_CAPTION_LINES
from genlab.errors import GenlabError

# ------------------------------------------------------------------------------------- make_grid


def test_make_grid_size_and_placement():
    images = torch.rand(5, 3, 4, 6)
    grid = make_grid(images, nrow=3, padding=2, pad_value=0.5)
    assert grid.shape == (3, 2 * (4 + 2) + 2, 3 * (6 + 2) + 2)
    assert torch.equal(grid[:, 2:6, 2:8], images[0])
    assert torch.equal(grid[:, 2:6, 10:16], images[1])
    assert torch.equal(grid[:, 8:12, 2:8], images[3])  # second row
    assert (grid[:, 8:12, 18:24] == 0.5).all()  # the sixth cell is empty
    assert (grid[:, :2] == 0.5).all() and (grid[:, :, -2:] == 0.5).all()


@pytest.mark.parametrize(
    "n, nrow, padding, expected",
    [
        (10, None, 2, (3 * 10 + 2, 4 * 10 + 2)),
        (3, 8, 0, (8, 24)),
        (1, None, 1, (10, 10)),
        (16, 4, 2, (42, 42)),
    ],
)
def test_make_grid_arithmetic(n, nrow, padding, expected):
    grid = make_grid(torch.zeros(n, 1, 8, 8), nrow=nrow, padding=padding)
    assert tuple(grid.shape[1:]) == expected


def test_make_grid_rejects_empty_batch():
    with pytest.raises(GenlabError):
        make_grid(torch.zeros(0, 3, 4, 4))


# ------------------------------------------------------------------------------------- save_grid


def test_save_grid_without_captions(tmp_path):
    images = torch.linspace(0, 1, 6).reshape(6, 1, 1, 1).expand(6, 1, 28, 28).contiguous()
    path = save_grid(tmp_path / "deep" / "dir" / "grid.png", images, nrow=3)
    assert path == tmp_path / "deep" / "dir" / "grid.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        # 28 px images are scaled by ceil(96 / 28) = 4 to 112 px cells.
        assert img.size == (3 * (112 + 2) + 2, 2 * (112 + 2) + 2)
        pixels = np.asarray(img)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels[2 + 50, 2 + 114 + 50, 0] == round(0.2 * 255)  # second image, value 0.2
    assert pixels[0, 0, 0] == 255  # white padding
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left behind


def test_save_grid_explicit_scale_and_rgb(tmp_path):
    images = torch.zeros(4, 3, 10, 10)
    images[:, 0] = 1.0
    path = save_grid(tmp_path / "g.png", images, nrow=4, scale=1)
    with Image.open(path) as img:
        assert img.size == (4 * 12 + 2, 12 + 2)
        assert np.asarray(img)[5, 5].tolist() == [255, 0, 0]


def test_save_grid_with_captions(tmp_path):
    images = torch.zeros(4, 3, 32, 32)
    plain = save_grid(tmp_path / "plain.png", images, nrow=2)
    short = save_grid(tmp_path / "short.png", images, ["a", "b", "c", "d"], nrow=2)
    long_caption = "a very long caption that cannot possibly fit on one line of a small cell " * 5
    long = save_grid(tmp_path / "long.png", images, ["a", long_caption, "c", "d"], nrow=2)
    sizes = {}
    for p in (plain, short, long):
        with Image.open(p) as img:
            sizes[p.name] = img.size
    assert sizes["plain.png"] == (2 * (96 + 2) + 2, 2 * (96 + 2) + 2)
    assert sizes["short.png"][0] == sizes["long.png"][0] == sizes["plain.png"][0]
    short_extra = sizes["short.png"][1] - sizes["plain.png"][1]
    long_extra = sizes["long.png"][1] - sizes["plain.png"][1]
    assert short_extra > 0
    # Every row gets room for the tallest caption, which is capped at MAX_CAPTION_LINES lines.
    line = (short_extra // 2) - 4
    assert long_extra == 2 * (MAX_CAPTION_LINES * line + 4)
    with Image.open(short) as img:
        pixels = np.asarray(img)
    under_first = pixels[2 + 96 : 2 + 96 + short_extra // 2, 2 : 2 + 96]
    assert (under_first < 128).any()  # the caption's text is drawn in dark ink on white
    assert (pixels[2 : 2 + 96, 2 : 2 + 96] == 0).all()  # and never over the image


def test_save_grid_rejects_mismatched_captions(tmp_path):
    with pytest.raises(GenlabError, match="2 captions"):
        save_grid(tmp_path / "g.png", torch.zeros(3, 3, 8, 8), ["a", "b"])


def test_save_grid_reports_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(GenlabError, match="cannot write"):
        save_grid(blocker / "g.png", torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------------------------ load_image


def test_load_image_crops_resizes_and_converts(tmp_path):
    array = np.zeros((10, 30, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)
    array[:, 10:20] = (0, 255, 0)
    array[:, 20:] = (0, 0, 255)
    Image.fromarray(array).save(tmp_path / "stripes.png")
    full = load_image(tmp_path / "stripes.png")
    assert full.shape == (3, 10, 30) and full.dtype == torch.float32
    square = load_image(tmp_path / "stripes.png", size=5)
    assert square.shape == (3, 5, 5)
    assert torch.allclose(square, torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 5, 5), atol=1e-6)
    gray = load_image(tmp_path / "stripes.png", size=5, channels=1)
    # Pillow's L = 0.299 R + 0.587 G + 0.114 B (ITU-R 601), so pure green is 150 / 255.
    assert gray.shape == (1, 5, 5) and gray.mean().item() == pytest.approx(150 / 255, abs=0.01)


def test_load_image_transparency_becomes_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2] = (255, 0, 0, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and x[:, 3, 3].tolist() == [1.0, 1.0, 1.0]


def test_load_image_scales_16_bit_gray(tmp_path):
    array = np.full((4, 4), 32768, dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    x = load_image(tmp_path / "deep.png", channels=3)
    assert x.shape == (3, 4, 4) and x.mean().item() == pytest.approx(0.5, abs=1e-3)


def test_load_image_errors_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(GenlabError, match="junk.png"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(GenlabError, match="missing.png"):
        load_image(tmp_path / "missing.png")
