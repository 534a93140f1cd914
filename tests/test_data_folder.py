"""folder:PATH datasets built in tmp_path: metadata.jsonl, class sub-folders, plain images, and bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import load_dataset
from genlab.errors import GenlabError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(
    path: Path, color: tuple[int, ...] | int, size: tuple[int, int] = (40, 20), mode: str = "RGB"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def write_metadata(folder: Path, records: list[dict | str]) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_metadata_captions_and_pixels(tmp_path):
    solid(tmp_path / "r.png", RED)
    solid(tmp_path / "g.jpg", GREEN, size=(20, 50))
    solid(tmp_path / "sub" / "b.BMP", BLUE)
    solid(tmp_path / "unlisted.png", RED)
    write_metadata(
        tmp_path,
        [
            {"file_name": "g.jpg", "text": "a green square"},
            "",
            {"file_name": "r.png", "text": "  a red square "},
            {"file_name": "sub/b.BMP", "text": "a blue square", "extra": 1},
        ],
    )
    ds = load_dataset(f"folder:{tmp_path}", "all", image_size=16)
    assert ds.name == f"folder:{tmp_path}"
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.dtype == torch.float32
    assert ds.captions == ["a green square", "a red square", "a blue square"]
    assert [a["file"] for a in ds.attributes] == ["g.jpg", "r.png", "sub/b.BMP"]
    assert ds.labels is None and ds.class_names is None and ds.num_classes == 0
    means = ds.images.mean(dim=(2, 3))
    assert torch.allclose(means, torch.eye(3)[[1, 0, 2]], atol=0.02)  # JPEG is lossy


@pytest.mark.parametrize(
    "labels, names, indices",
    [(["dog", "cat", "dog"], ["cat", "dog"], [1, 0, 1]), ([2, 0, 2], ["0", "1", "2"], [2, 0, 2])],
)
def test_metadata_labels(tmp_path, labels, names, indices):
    records = []
    for i, label in enumerate(labels):
        solid(tmp_path / f"{i}.png", RED)
        records.append({"file_name": f"{i}.png", "text": f"picture {i}", "label": label})
    write_metadata(tmp_path, records)
    ds = load_dataset(f"folder:{tmp_path}", "all")
    assert ds.class_names == names and ds.labels.tolist() == indices
    assert [a["label"] for a in ds.attributes] == labels


def test_class_subfolders(tmp_path):
    solid(tmp_path / "red_things" / "a.png", RED)
    solid(tmp_path / "red_things" / "nested" / "b.png", RED)
    solid(tmp_path / "blue-ones" / "c.webp", BLUE)
    (tmp_path / "blue-ones" / "._c.png").write_bytes(b"macOS resource fork, not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_dataset(f"folder:{tmp_path}", "all")
    assert ds.images.shape == (3, 3, 32, 32)
    assert ds.class_names == ["blue-ones", "red_things"]
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds.captions == ["blue ones", "red things", "red things"]
    assert torch.allclose(ds.images[0].mean(dim=(1, 2)), torch.tensor([0.0, 0.0, 1.0]), atol=0.02)


def test_plain_images_grayscale_and_splits(tmp_path):
    for i in range(10):
        solid(tmp_path / f"dark_cat-{i}.png", 25 * i, mode="L")
    (tmp_path / "._dark_cat-0.png").write_bytes(b"macOS resource fork, not an image")
    ds = load_dataset(f"folder:{tmp_path}", "all", image_size=8)
    assert ds.images.shape == (10, 1, 8, 8)
    assert ds.captions[0] == "dark cat 0"
    assert ds.images[:, 0, 0, 0].tolist() == pytest.approx([25 * i / 255 for i in range(10)])
    train = load_dataset(f"folder:{tmp_path}", "train", seed=4, image_size=8)
    val = load_dataset(f"folder:{tmp_path}", "val", seed=4, image_size=8)
    assert len(train) == 9 and len(val) == 1
    assert sorted(train.captions + val.captions) == sorted(ds.captions)
    solid(tmp_path / "colour.png", GREEN)
    assert load_dataset(f"folder:{tmp_path}", "all", image_size=8).channels == 3


def test_palette_images_count_as_gray_only_with_a_gray_palette(tmp_path):
    solid(tmp_path / "gray.gif", 100, mode="L")  # GIF stores it as a palette image with a gray palette
    solid(tmp_path / "plain.png", 30, mode="L")
    with Image.open(tmp_path / "gray.gif") as img:
        assert img.mode == "P"
    ds = load_dataset(f"folder:{tmp_path}", "all", image_size=4)
    assert ds.channels == 1 and ds.images[:, 0, 0, 0].tolist() == pytest.approx([100 / 255, 30 / 255])
    solid(tmp_path / "red.gif", RED)
    assert load_dataset(f"folder:{tmp_path}", "all", image_size=4).channels == 3


# --------------------------------------------------------------------------------------- bad data


def expect_error(folder: Path | str, *fragments: str) -> None:
    with pytest.raises(GenlabError) as info:
        load_dataset(f"folder:{folder}", "all")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_missing_folder_and_file_path(tmp_path):
    expect_error(tmp_path / "nowhere", "not found", "nowhere")
    solid(tmp_path / "one.png", RED)
    expect_error(tmp_path / "one.png", "one.png", "not a folder")


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no pictures here")
    (tmp_path / "sub").mkdir()
    expect_error(tmp_path, "no images", str(tmp_path), ".png")


@pytest.mark.parametrize(
    "content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "truncated"]
)
def test_corrupt_image(tmp_path, content):
    solid(tmp_path / "good.png", RED)
    if content == "truncated":
        # Noise does not compress, so cutting the file in half cuts the pixel data, not just trailing chunks.
        noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noisy).save(tmp_path / "broken.png")
        data = (tmp_path / "broken.png").read_bytes()
        (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])
    else:
        (tmp_path / "broken.png").write_bytes(content)
    expect_error(tmp_path, "broken.png", "cannot read image")


def test_loose_images_beside_class_folders(tmp_path):
    solid(tmp_path / "cats" / "a.png", RED)
    solid(tmp_path / "stray.png", RED)
    expect_error(tmp_path, "stray.png", "cats")


@pytest.mark.parametrize(
    "lines, fragments",
    [
        ([], ["metadata.jsonl", "is empty"]),
        (["", "   "], ["metadata.jsonl", "is empty"]),
        (
            [{"file_name": "a.png", "text": "ok"}, '{"file_name": "a.png", "text": '],
            ["metadata.jsonl, line 2", "JSON"],
        ),
        (["[1, 2]"], ["line 1", "not a JSON object"]),
        ([{"text": "no file"}], ["line 1", "file_name"]),
        ([{"file_name": "a.png"}], ["line 1", "text", "a.png"]),
        ([{"file_name": "a.png", "text": "  "}], ["line 1", "text"]),
        (
            [{"file_name": "a.png", "text": "x"}, {"file_name": "gone.png", "text": "y"}],
            ["line 2", "gone.png"],
        ),
        ([{"file_name": "a.png", "text": "x"}, {"file_name": "a.png", "text": "y"}], ["line 2", "line 1"]),
        ([{"file_name": "notes.txt", "text": "x"}], ["line 1", "notes.txt", "not an image"]),
        (
            [{"file_name": "a.png", "text": "x", "label": "cat"}, {"file_name": "b.png", "text": "y"}],
            ["line 2", "label"],
        ),
        (
            [
                {"file_name": "a.png", "text": "x", "label": "cat"},
                {"file_name": "b.png", "text": "y", "label": 1},
            ],
            ["line 2", "labels mix"],
        ),
    ],
)
def test_bad_metadata(tmp_path, lines, fragments):
    solid(tmp_path / "a.png", RED)
    solid(tmp_path / "b.png", BLUE)
    (tmp_path / "notes.txt").write_text("text")
    if lines:
        write_metadata(tmp_path, lines)
    else:
        (tmp_path / "metadata.jsonl").write_text("")
    expect_error(tmp_path, *fragments)


def test_metadata_naming_a_corrupt_image(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    write_metadata(tmp_path, [{"file_name": "bad.jpg", "text": "x"}])
    expect_error(tmp_path, "bad.jpg")


@pytest.mark.parametrize("label", [1_000_000_000, 10**40])
def test_integer_labels_far_beyond_the_images_are_refused(tmp_path, label):
    """A label of a billion would make a billion class names (7.5 GB) before anything else was said."""
    solid(tmp_path / "a.png", RED)
    solid(tmp_path / "b.png", BLUE)
    write_metadata(
        tmp_path,
        [
            {"file_name": "a.png", "text": "x", "label": 0},
            {"file_name": "b.png", "text": "y", "label": label},
        ],
    )
    expect_error(tmp_path, "line 2", str(label), "class indices")


def test_sparse_integer_labels_within_reason_still_load(tmp_path):
    solid(tmp_path / "a.png", RED)
    solid(tmp_path / "b.png", BLUE)
    write_metadata(
        tmp_path,
        [{"file_name": "a.png", "text": "x", "label": 3}, {"file_name": "b.png", "text": "y", "label": 999}],
    )
    ds = load_dataset(f"folder:{tmp_path}", "all")
    assert len(ds.class_names) == 1000 and ds.labels.tolist() == [3, 999]


@pytest.mark.parametrize("label", [-1, True, 1.5, None, [1]])
def test_labels_that_are_not_class_indices_or_names_are_refused(tmp_path, label):
    solid(tmp_path / "a.png", RED)
    line = {"file_name": "a.png", "text": "x", "label": label}
    if label is None:  # "label": null on one line, a label on the other
        solid(tmp_path / "b.png", BLUE)
        write_metadata(tmp_path, [{"file_name": "b.png", "text": "y", "label": 0}, line])
        expect_error(tmp_path, "line 2", "label")
    else:
        write_metadata(tmp_path, [line])
        expect_error(tmp_path, "line 1", "label")


@pytest.mark.parametrize("how", ["dot-dot", "absolute", "link", "link-in-a-folder"])
def test_file_names_out_of_the_folder_are_refused(tmp_path, how):
    """metadata.jsonl may only name files inside the folder: no '..', no absolute path, no link out."""
    data = tmp_path / "data"
    solid(data / "a.png", RED)
    secret = solid(tmp_path / "secret.png", BLUE)
    (data / "sub").mkdir()
    (data / "link.png").symlink_to(secret)
    (data / "sub" / "out").symlink_to(tmp_path, target_is_directory=True)
    name = {
        "dot-dot": "../secret.png",
        "absolute": str(secret),
        "link": "link.png",
        "link-in-a-folder": "sub/out/secret.png",
    }[how]
    write_metadata(data, [{"file_name": "a.png", "text": "x"}, {"file_name": name, "text": "y"}])
    expect_error(data, "metadata.jsonl, line 2", repr(name), "outside")


def test_links_out_of_class_folders_and_loose_images_are_refused(tmp_path):
    secret = solid(tmp_path / "secret.png", BLUE)
    data = tmp_path / "classes"
    solid(data / "cats" / "a.png", RED)
    (data / "cats" / "b.png").symlink_to(secret)
    expect_error(data, "b.png", "outside")
    loose = tmp_path / "loose"
    solid(loose / "a.png", RED)
    (loose / "b.png").symlink_to(secret)
    expect_error(loose, "b.png", "outside")
    (loose / "b.png").unlink()
    (loose / "c.png").symlink_to(loose / "a.png")  # a link inside the folder is fine
    assert len(load_dataset(f"folder:{loose}", "all")) == 2
