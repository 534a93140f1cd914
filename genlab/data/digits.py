"""scikit-learn's 1,797 8x8 handwritten digits: the smallest real dataset, for the quickest experiments."""

from __future__ import annotations

import numpy as np
import torch

from genlab.data._packaged import packaged_file, read_int_csv
from genlab.data.base import ImageDataset
from genlab.data.images import resize_batch

DIGITS_SIZE = 8
DIGITS_COUNT = 1797
DIGITS_MAX = 16  # the pixel values are counts of set bits in 4x4 blocks of the original 32x32 bitmaps

_SKLEARN_CSV = "datasets/data/digits.csv.gz"


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (N, 64) in 0..16, labels (N,)), exactly sklearn.datasets.load_digits()."""
    # Importing scikit-learn takes about two seconds; its CSV parses in milliseconds.
    path = packaged_file("sklearn", _SKLEARN_CSV)
    if path is not None:
        table = read_int_csv(path, DIGITS_SIZE * DIGITS_SIZE + 1)
        return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def load_digits(image_size: int | None = None) -> ImageDataset:
    """All 1,797 digits as 1x8x8 images in [0, 1] (bilinearly resized when ``image_size`` differs)."""
    pixels, labels = _raw_digits()
    images = torch.from_numpy(pixels.astype(np.float32) / DIGITS_MAX).reshape(-1, 1, DIGITS_SIZE, DIGITS_SIZE)
    if image_size is not None and image_size != DIGITS_SIZE:
        images = resize_batch(images, image_size)
    digits = labels.astype(np.int64)
    return ImageDataset(
        name="digits",
        images=images.contiguous(),
        captions=[f"a handwritten {d}" for d in digits.tolist()],
        labels=torch.from_numpy(digits),
        class_names=[str(d) for d in range(10)],
        attributes=[{"digit": d} for d in digits.tolist()],
    )
