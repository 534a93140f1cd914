"""Clips with ground-truth motion (moving-shapes, moving-mnist) and the reader that scores a clip's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.data.moving import ClipDataset, load_moving_mnist, load_moving_shapes
from genlab.data.moving_read import parse_motion_caption, read_clips, score_clip
from genlab.data.registry import CLIP_COUNT
from genlab.errors import GenlabError

# Written out here rather than imported, so a mix-up in genlab.data.moving cannot hide.
STEPS = {
    "right": (1, 0),
    "left": (-1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up and right": (1, -1),
    "up and left": (-1, -1),
    "down and right": (1, 1),
    "down and left": (-1, 1),
}
NAMES = {step: name for name, step in STEPS.items()}
PIXELS = {"slow": 1.0, "normal": 2.0}  # a frame, on each moving axis, at 32 px


@pytest.fixture(scope="module")
def real() -> ClipDataset:
    return load_moving_shapes(300, seed=7)


@pytest.fixture(scope="module")
def read(real) -> list[dict]:
    return read_clips(real.clips)


def test_shapes_range_and_labels():
    data = load_moving_shapes(6, frames=5, image_size=24, seed=1, two_objects=0.5)
    assert data.clips.shape == (6, 5, 3, 24, 24) and data.clips.dtype == torch.float32
    assert 0.0 <= float(data.clips.min()) and float(data.clips.max()) <= 1.0
    assert (len(data), data.frames, data.channels, data.image_size) == (6, 5, 3, 24)
    assert data.num_classes == 8 and data.labels.tolist() == [
        list(STEPS).index(a["objects"][0]["direction"]) for a in data.attributes
    ]
    mnist = load_moving_mnist(4, frames=3, seed=1)
    assert mnist.clips.shape == (4, 3, 1, 48, 48) and mnist.num_classes == 10
    assert 0.0 <= float(mnist.clips.min()) and float(mnist.clips.max()) <= 1.0
    assert mnist.labels.tolist() == [a["objects"][0]["digit"] for a in mnist.attributes]
    part = data.subset([4, 1])
    assert part.captions == [data.captions[4], data.captions[1]] and torch.equal(part.clips[1], data.clips[1])


@pytest.mark.parametrize("load", [load_moving_shapes, load_moving_mnist])
def test_deterministic(load):
    a, b, c = load(12, seed=3), load(12, seed=3), load(12, seed=4)
    assert a.clips.numpy().tobytes() == b.clips.numpy().tobytes() and a.captions == b.captions
    assert not torch.equal(a.clips, c.clips) and a.captions != c.captions


def test_captions_say_the_metadata():
    data = load_moving_shapes(200, seed=2, two_objects=0.5)
    objects = [len(a["objects"]) for a in data.attributes]
    assert 60 < objects.count(2) < 140  # about half, less the few whose paths always crossed
    for caption, attributes in zip(data.captions, data.attributes, strict=True):
        parsed = parse_motion_caption(caption)["objects"]
        assert len(parsed) == len(attributes["objects"])
        for said, truth in zip(parsed, attributes["objects"], strict=True):
            assert said.items() <= truth.items()
            assert ("size" in said) == (len(parsed) == 1)
        if len(parsed) == 2:
            assert parsed[0]["color"] != parsed[1]["color"]
    assert data.captions[0].startswith("a ")
    slow = [
        c for c, a in zip(data.captions, data.attributes, strict=True) if a["objects"][0]["speed"] == "slow"
    ]
    assert slow and all("slowly" in c for c in slow)
    mnist = load_moving_mnist(20, seed=2)
    for caption, attributes in zip(mnist.captions, mnist.attributes, strict=True):
        o = attributes["objects"][0]
        article = "an" if o["digit"] == 8 else "a"
        pace = " slowly" if o["speed"] == "slow" else ""
        assert caption == f"{article} {o['digit']} moving {o['direction']}{pace}"


def test_tracks_move_as_captioned_and_bounce_inside(real):
    bounced = 0
    for attributes in real.attributes:
        o = attributes["objects"][0]
        track = np.array(o["track"])  # (T, 2)
        step = np.array(STEPS[o["direction"]]) * PIXELS[o["speed"]]
        # The first two steps show the captioned direction and speed: no bounce yet.
        np.testing.assert_allclose(track[1] - track[0], step, atol=2e-3)
        np.testing.assert_allclose(track[2] - track[1], step, atol=2e-3)
        # Inside: the shape's box [c - r, c + r] never leaves the 32 px frame, and the speed never changes.
        assert (track >= o["radius"] - 2e-3).all() and (track <= 32 - o["radius"] + 2e-3).all()
        assert (np.abs(np.diff(track, axis=0)) <= np.abs(step) + 2e-3).all()
        bounced += o["bounces"] > 0
    assert bounced > 50


def test_two_shapes_never_touch():
    data = load_moving_shapes(100, seed=5, two_objects=1.0)
    for attributes in data.attributes:
        if len(attributes["objects"]) == 2:
            a, b = attributes["objects"]
            gap = np.abs(np.array(a["track"]) - np.array(b["track"])) - (a["radius"] + b["radius"])
            assert (gap.max(axis=1) >= 1.0 - 1e-3).all()


def test_mnist_digits_stay_whole_and_move():
    data = load_moving_mnist(30, frames=10, seed=6)
    mass = data.clips.sum(dim=(2, 3, 4))
    torch.testing.assert_close(mass, mass[:, :1].expand_as(mass))  # never cut by the border
    for clip, attributes in zip(data.clips, data.attributes, strict=True):
        o = attributes["objects"][0]
        track = np.array(o["track"])
        assert (track >= 14).all() and (track <= 48 - 14).all()
        np.testing.assert_array_equal(track[1] - track[0], o["velocity"])
        assert np.abs(o["velocity"]).max() == (2 if o["speed"] == "slow" else 4)
        # The ink's centroid moves with the track (the digit is pasted whole, so exactly).
        ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
        w = clip[:, 0]
        centroid = torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], 1) / w.sum((1, 2))[:, None]
        shift = centroid - centroid[:1]
        np.testing.assert_allclose(shift.numpy(), track - track[:1], atol=1e-3)


def test_reader_is_right_on_real_clips(real, read):
    right = [score_clip(r, parse_motion_caption(c))["all"] for r, c in zip(read, real.captions, strict=True)]
    assert np.mean(right) >= 0.99  # the done-when: the reader right on >= 99% of real clips
    for r, attributes, caption in zip(read, real.attributes, real.captions, strict=True):
        truth = attributes["objects"][0]
        assert score_clip(r, attributes) == score_clip(r, parse_motion_caption(caption))
        centres = np.array(r["objects"][0]["track"])
        np.testing.assert_allclose(centres, np.array(truth["track"]), atol=0.25)
        np.testing.assert_allclose(r["objects"][0]["velocity"], truth["velocity"], atol=0.1)


def test_reader_catches_wrong_clips(real):
    data = real.subset(range(90))
    backwards = data.clips.flip(1)
    shuffled = data.clips[:, [0, 3, 6, 1, 4, 7, 2, 5]]
    recoloured = data.clips[:, :, [1, 2, 0]]  # red -> blue, green -> red, ...: every palette colour moves
    read = read_clips(torch.cat([backwards, shuffled, recoloured]))
    straight = 0
    for i, attributes in enumerate(data.attributes):
        truth = attributes["objects"][0]
        back, mixed, paint = read[i], read[90 + i], read[180 + i]
        # Backwards is a bouncing path too: steady, and leaving the way the clip arrived.
        track = np.array(truth["track"])
        last = tuple(int(s) for s in np.sign(np.round(track[-2] - track[-1], 3)))
        assert back["objects"][0]["steady"]
        if truth["bounces"] == 0:
            straight += 1
            assert back["objects"][0]["direction"] == NAMES[last]
            assert not score_clip(back, attributes)["direction"]
        shuffled_score = score_clip(mixed, attributes)
        assert not shuffled_score["direction"] and not shuffled_score["all"]
        paint_score = score_clip(paint, attributes)
        assert not paint_score["color"] and paint_score["shape"] and paint_score["direction"]
    assert straight > 20


def test_reader_counts_objects():
    two = load_moving_shapes(20, seed=8, two_objects=1.0)
    read = read_clips(two.clips)
    for r, attributes in zip(read, two.attributes, strict=True):
        assert r["stable"] and r["counts"][0] == len(attributes["objects"]) == len(r["objects"])
        first = attributes["objects"][0]
        score = score_clip(r, {k: first[k] for k in ("color", "shape", "direction")})
        assert score["color"] and score["direction"] and not score["one_object"] and not score["all"]
    # A frame without the object is flicker: not one object.
    one = load_moving_shapes(3, seed=9)
    flicker = one.clips.clone()
    flicker[:, 4] = flicker[:, 4, :, :1, :1]  # the background only
    for r, attributes in zip(read_clips(flicker), one.attributes, strict=True):
        score = score_clip(r, attributes)
        assert not r["stable"] and not score["one_object"] and not score["all"]


def test_parse_motion_caption():
    assert parse_motion_caption("  A Small red circle moving up and right slowly. ") == {
        "objects": [
            {"size": "small", "color": "red", "shape": "circle", "direction": "up and right", "speed": "slow"}
        ]
    }
    two = parse_motion_caption("a blue square moving up and a green triangle moving down and left")
    assert two["objects"] == [
        {"color": "blue", "shape": "square", "direction": "up", "speed": "normal"},
        {"color": "green", "shape": "triangle", "direction": "down and left", "speed": "normal"},
    ]
    for bad in ("a red circle at the top left", "a red circle moving sideways", "", 3):
        with pytest.raises(GenlabError):
            parse_motion_caption(bad)


def test_one_line_errors(real, read):
    cases = [
        (lambda: load_moving_shapes(0), "`count` must be between 1"),
        (lambda: load_moving_shapes(2, frames=1), "`frames` must be between 2 and 64 (got 1)"),
        (lambda: load_moving_shapes(2, frames=65), "`frames` must be between 2 and 64 (got 65)"),
        (lambda: load_moving_shapes(2, image_size=4), "`image_size` must be between 8 and"),
        (lambda: load_moving_shapes(2, image_size=10**6), "`image_size` must be between 8 and"),
        (lambda: load_moving_shapes(2, two_objects=1.5), "`two_objects` must be in [0, 1]"),
        (lambda: load_moving_shapes(10**6, frames=64, image_size=64), "billion numbers"),
        (lambda: load_moving_mnist(2, image_size=32), "`image_size` must be between 36 and"),
        (lambda: read_clips(torch.zeros(2, 3, 32, 32)), "read_clips needs RGB clips"),
        (lambda: read_clips(torch.zeros(1, 1, 3, 32, 32)), "read_clips needs clips of 2 or more"),
        (lambda: score_clip(read[0], {"color": "purple"}), "unknown color 'purple'"),
        (lambda: score_clip(read[0], {}), "no attribute to check"),
        (lambda: score_clip(read[0], {"objects": [{}, {}]}), "single-object prompts"),
    ]
    for call, message in cases:
        with pytest.raises(GenlabError) as caught:
            call()
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_clip_data_sets_are_listed_split_and_shown(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from genlab.cli import cli
    from genlab.data import is_clips, list_datasets, load_clips, load_dataset

    names = {info.name for info in list_datasets()}
    assert {"moving-shapes", "moving-mnist"} <= names and is_clips("moving-shapes") and not is_clips("shapes")
    train, val = load_clips("moving-mnist", "train"), load_clips("moving-mnist", "val")
    assert len(train) + len(val) == CLIP_COUNT and train.clips.shape[1:] == (8, 1, 48, 48)
    infos = {info.name: info for info in list_datasets()}  # the catalogue says what loads
    clips = load_clips("moving-shapes", "all")
    info = infos["moving-shapes"]
    assert (info.channels, info.image_size, info.num_classes, info.size) == (
        3,
        32,
        clips.num_classes,
        len(clips),
    )
    with pytest.raises(GenlabError, match="holds clips, not images"):
        load_dataset("moving-shapes")
    result = CliRunner().invoke(
        cli, ["data", "show", "moving-shapes", "--n", "4", "--out", str(tmp_path / "c.gif")]
    )
    assert result.exit_code == 0, result.output
    gif = Image.open(tmp_path / "c.gif")
    assert gif.n_frames == 8  # one GIF frame per clip frame
    result = CliRunner().invoke(
        cli, ["data", "show", "moving-mnist", "--n", "2", "--out", str(tmp_path / "c.png")]
    )
    assert result.exit_code == 0 and "wrote 2 clips of 8 frames" in result.output
