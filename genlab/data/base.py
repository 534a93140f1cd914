"""The in-memory dataset every model trains on, its catalogue entry, and the train/val split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genlab.checks import MAX_SIDE, check_fraction, check_range
from genlab.errors import GenlabError


@dataclass
class ImageDataset:
    """Images with one caption each, optional class labels and per-image ground truth.

    ``images`` is (N, C, H, W) float32 in [0, 1]; ``labels`` is (N,) int64 or None when the data has no
    classes; ``attributes`` holds JSON-serialisable ground truth per image (possibly empty dicts).
    """

    name: str
    images: torch.Tensor
    captions: list[str]
    labels: torch.Tensor | None
    class_names: list[str] | None
    attributes: list[dict]

    def __post_init__(self) -> None:
        # Catch inconsistent datasets where they are built, not deep inside a training loop.
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if len(self.captions) != n or len(self.attributes) != n:
            raise ValueError(
                f"{self.name}: {n} images, {len(self.captions)} captions, {len(self.attributes)} attributes"
            )
        if self.labels is not None and tuple(self.labels.shape) != (n,):
            raise ValueError(f"{self.name}: labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if (self.labels is None) != (self.class_names is None):
            raise ValueError(f"{self.name}: labels and class_names must be given together")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when the data has no labels)."""
        return len(self.class_names) if self.class_names is not None else 0

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Height of the (square) images in pixels."""
        return self.images.shape[2]

    def spread(self, n: int) -> ImageDataset:
        """``n`` images at evenly spaced positions (the whole set when smaller): a preview that shows
        every class even when the data is stored sorted by label, as mnist is."""
        k = min(n, len(self))
        return self.subset(torch.linspace(0, len(self) - 1, k).round().long())

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """A new dataset holding only ``indices`` (in that order); tensors are copied, not views."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        order = idx.tolist()
        return ImageDataset(
            name=self.name,
            images=self.images.index_select(0, idx).contiguous(),
            captions=[self.captions[i] for i in order],
            labels=None if self.labels is None else self.labels.index_select(0, idx),
            class_names=None if self.class_names is None else list(self.class_names),
            attributes=[self.attributes[i] for i in order],
        )


@dataclass
class DataConfig:
    """Which data a run trains on and how it is split; stored as config.json's ``data`` section."""

    name: str = "mnist"
    split_seed: int = 0
    val_fraction: float = 0.1
    image_size: int | None = None

    def __post_init__(self) -> None:
        check_fraction("val_fraction", self.val_fraction)
        if self.image_size is not None:
            check_range("image_size", self.image_size, 1, MAX_SIDE)


@dataclass(frozen=True)
class DatasetInfo:
    """Catalogue entry for ``genlab data``: what a dataset holds, without loading it.

    ``size`` is the number of images over all splits (0 when it depends on the user's data).
    """

    name: str
    description: str
    channels: int
    image_size: int
    num_classes: int
    size: int


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted (train, val) index tensors, fixed by ``seed``.

    The validation set holds ``round(n * val_fraction)`` items, at least one when ``n >= 2`` and
    ``val_fraction > 0``, and never all of them, so both parts are usable.
    """
    if n < 0:
        raise GenlabError(f"cannot split a dataset of {n} items")
    if not 0.0 <= val_fraction < 1.0:
        raise GenlabError(f"val_fraction must be in [0, 1), got {val_fraction}; e.g. 0.1 keeps 10% for val")
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    val_idx, _ = perm[:n_val].sort()
    train_idx, _ = perm[n_val:].sort()
    return train_idx, val_idx
