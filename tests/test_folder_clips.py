"""Clip folders built in tmp_path: animated GIFs and frame folders, captions, labels, shapes, and bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from genlab.data import is_clips, load_clips, load_dataset
from genlab.data.folder_clips import load_clip_folder
from genlab.errors import GenlabError


def write_gif(path: Path, colors: list[tuple[int, int, int]], size: tuple[int, int] = (24, 16)) -> Path:
    """An animated GIF with one solid frame per colour (consecutive colours differ: Pillow merges repeats)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.new("RGB", size, c) for c in colors]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write_frames(folder: Path, values: dict[str, int], size: tuple[int, int] = (20, 20)) -> Path:
    """A frame folder of gray PNGs: file name -> gray value."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        Image.new("L", size, value).save(folder / name)
    return folder


def ramp(k: int, n: int) -> list[tuple[int, int, int]]:
    return [(20 * t, 40 * k, 200) for t in range(n)]


def write_metadata(folder: Path, records: list[dict]) -> None:
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def expect_error(spec: str, *fragments: str, **kwargs) -> None:
    with pytest.raises(GenlabError) as info:
        load_clips(spec, "all", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_gif_clips_read_back_frame_by_frame(tmp_path):
    write_gif(tmp_path / "red_ball-2.gif", ramp(0, 10))
    write_gif(tmp_path / "blue_box.gif", ramp(1, 12), size=(16, 24))
    (tmp_path / "notes.txt").write_text("not a clip")  # other files are ignored, as in the image folder
    (tmp_path / "._red_ball-2.gif").write_bytes(b"macOS resource fork")  # hidden: skipped
    assert is_clips(f"folder:{tmp_path}") and is_clips(f"clips:{tmp_path}")
    ds = load_clips(f"folder:{tmp_path}", "all")
    assert ds.name == f"folder:{tmp_path}"
    # Default: 8 frames (both clips are longer), 32 px, RGB; sorted by name.
    assert ds.clips.shape == (2, 8, 3, 32, 32) and ds.clips.dtype == torch.float32
    assert ds.captions == ["blue box", "red ball 2"]
    assert ds.attributes == [{"file": "blue_box.gif", "frames": 12}, {"file": "red_ball-2.gif", "frames": 10}]
    assert ds.labels is None and ds.class_names is None
    for i, k in enumerate([1, 0]):
        expected = torch.tensor(ramp(k, 8), dtype=torch.float32) / 255  # (T, 3)
        assert torch.allclose(ds.clips[i].mean(dim=(2, 3)), expected, atol=1e-6)
        assert ds.clips[i].std(dim=(2, 3)).max() < 1e-6  # solid frames stay solid after crop and resize
    short = load_clip_folder(tmp_path, frames=4, image_size=8)
    assert short.clips.shape == (2, 4, 3, 8, 8)
    assert torch.allclose(short.clips[1, :, 0, 0, 0], torch.tensor([0, 20, 40, 60]) / 255, atol=1e-6)


def test_frame_folders_are_sorted_by_number_and_gray(tmp_path):
    write_frames(tmp_path / "dot_up", {"f1.png": 10, "f10.png": 250, "f2.png": 20, "f3.png": 30})
    write_frames(tmp_path / "dot-down", {"b.png": 200, "a.png": 100, "c.png": 50, ".d.png": 0})
    (tmp_path / "dot-down" / "x.txt").write_text("skipped")
    assert not is_clips(f"folder:{tmp_path}")  # sub-folders are class folders of images there
    assert is_clips(f"clips:{tmp_path}")
    ds = load_clips(f"clips:{tmp_path}", "all")
    # The shortest clip has 3 frames, so the default takes 3; the 4-frame clip is cut.
    assert ds.clips.shape == (2, 3, 1, 32, 32)
    assert ds.captions == ["dot down", "dot up"]
    assert (ds.clips[:, :, 0, 5, 5] * 255).round().tolist() == [[100, 200, 50], [10, 20, 30]]
    assert load_clip_folder(tmp_path, frames=3, image_size=4).clips.shape == (2, 3, 1, 4, 4)
    with pytest.raises(GenlabError, match="dot-down.*3 frames, fewer than the 4"):
        load_clip_folder(tmp_path, frames=4)  # an explicit length refuses shorter clips: no padding


def test_metadata_captions_labels_and_splits(tmp_path):
    for k in range(4):
        write_gif(tmp_path / "gifs" / f"c{k}.gif", ramp(k, 3))
    write_frames(tmp_path / "frames" / "walk", {"0.png": 0, "1.png": 255, "2.png": 0})
    write_gif(tmp_path / "unlisted.gif", ramp(5, 3))
    records = [{"file_name": f"gifs/c{k}.gif", "text": f"clip {k}", "label": "cat"} for k in range(4)]
    write_metadata(
        tmp_path, [*records, {"file_name": "frames/walk", "text": "someone walks", "label": "dog"}]
    )
    # metadata.jsonl names a frame folder: only a clip can be one, so folder: reads clips here.
    assert is_clips(f"folder:{tmp_path}")
    ds = load_clips(f"folder:{tmp_path}", "all")
    assert ds.clips.shape == (5, 3, 3, 32, 32)  # a colour GIF makes every clip RGB
    assert ds.captions == ["clip 0", "clip 1", "clip 2", "clip 3", "someone walks"]
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 0, 1]
    assert ds.attributes[4] == {"file": "frames/walk", "frames": 3, "label": "dog"}
    assert ds.clips[4, :, :, 0, 0].tolist() == [[0.0] * 3, [1.0] * 3, [0.0] * 3]
    train = load_clips(f"folder:{tmp_path}", "train", seed=1, val_fraction=0.4)
    val = load_clips(f"folder:{tmp_path}", "val", seed=1, val_fraction=0.4)
    assert (len(train), len(val)) == (3, 2)
    assert sorted(train.captions + val.captions) == ds.captions


def test_links_and_dot_dot_are_refused(tmp_path):
    outside = write_gif(tmp_path / "elsewhere" / "secret.gif", ramp(0, 3))
    root = tmp_path / "clips"
    write_gif(root / "ok.gif", ramp(1, 3))
    write_metadata(root, [{"file_name": "../elsewhere/secret.gif", "text": "x"}])
    expect_error(f"folder:{root}", "points outside", "'..'")
    (root / "metadata.jsonl").unlink()
    (root / "linked.gif").symlink_to(outside)
    assert not is_clips(f"folder:{root}")
    expect_error(f"folder:{root}", "linked.gif is a link", "outside")
    (root / "linked.gif").unlink()
    frames = write_frames(root / "frames", {"a.png": 1, "b.png": 2})
    Image.new("L", (20, 20), 3).save(tmp_path / "elsewhere" / "c.png")
    (frames / "c.png").symlink_to(tmp_path / "elsewhere" / "c.png")
    expect_error(f"clips:{root}", "c.png is a link", "outside")
    (frames / "c.png").unlink()
    (root / "frames2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    expect_error(f"clips:{root}", "frames2 is a link", "outside")


def test_bad_clips_get_clear_errors(tmp_path, monkeypatch):
    still = tmp_path / "still"
    write_gif(still / "moving.gif", ramp(0, 3))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(still / "one.gif")
    assert not is_clips(f"folder:{still}")
    expect_error(f"folder:{still}", "one.gif has one frame", "animated")
    (still / "one.gif").unlink()
    Image.new("RGB", (8, 8)).save(still / "cover.png")
    expect_error(f"clips:{still}", "cover.png is a still image, not a clip")

    mixed = tmp_path / "mixed"
    write_frames(mixed / "a", {"1.png": 0, "2.png": 9})
    Image.new("L", (30, 20)).save(mixed / "a" / "3.png")
    expect_error(f"clips:{mixed}", "3.png is 30x20 but 1.png is 20x20", "one size")
    (mixed / "a" / "3.png").unlink()
    write_frames(mixed / "a" / "inner", {"1.png": 0})
    expect_error(f"clips:{mixed}", "holds the folder inner/")
    for frame in (mixed / "a" / "inner").iterdir():
        frame.unlink()
    (mixed / "a" / "inner").rmdir()
    write_frames(mixed / "b", {"1.png": 0})
    expect_error(f"clips:{mixed}", "holds 1 frame image;", "at least 2")

    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(f"clips:{empty}", "no clips in")
    expect_error(f"clips:{tmp_path / 'nowhere'}", "not found", "'clips:'")
    expect_error("clips:", "needs a path")
    expect_error("walking-people", "unknown clip data set", "clips:PATH")
    with pytest.raises(GenlabError, match="`frames` must be between 2 and 1024"):
        load_clip_folder(still, frames=1)
    # The pixels are counted before any frame is decoded.
    monkeypatch.setattr("genlab.checks.MAX_PIXELS", 1000)
    write_gif(tmp_path / "big" / "a.gif", ramp(0, 3))
    expect_error(f"folder:{tmp_path / 'big'}", "billion numbers", "`image_size`")


def test_image_folders_stay_image_folders(tmp_path):
    for cls, color in [("cats", (255, 0, 0)), ("dogs", (0, 0, 255))]:
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (10, 10), color).save(tmp_path / cls / f"{i}.png")
    assert not is_clips(f"folder:{tmp_path}")
    images = load_dataset(f"folder:{tmp_path}", "all")
    assert images.images.shape == (6, 3, 32, 32) and images.class_names == ["cats", "dogs"]
    expect_error(f"folder:{tmp_path}", "class folders of images", f"clips:{tmp_path}")
    stills = tmp_path / "gifs"
    stills.mkdir()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(stills / "a.gif")
    assert not is_clips(f"folder:{stills}")  # a GIF of one frame is an image
    assert load_dataset(f"folder:{stills}", "all").images.shape == (1, 1, 32, 32)
    with pytest.raises(GenlabError, match="holds clips, not images"):
        load_dataset(f"clips:{stills}")
    assert not is_clips(f"folder:{tmp_path / 'nowhere'}")


def test_data_show_writes_a_clip_folder(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from genlab.cli import cli

    write_gif(tmp_path / "clips" / "a.gif", ramp(0, 5))
    write_gif(tmp_path / "clips" / "b.gif", ramp(1, 5))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["data", "show", f"folder:{tmp_path / 'clips'}/", "--split", "all"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 clips of 5 frames to clips.gif" in result.output
    with Image.open(tmp_path / "clips.gif") as gif:
        assert gif.n_frames == 5
