"""Datasets (mnist, digits, shapes, folder:PATH) as in-memory tensors with captions, and image I/O."""

from genlab.data.base import DataConfig, DatasetInfo, ImageDataset, split_indices
from genlab.data.images import load_image, make_grid, render_grid, save_clips, save_gif, save_grid
from genlab.data.registry import is_clips, list_datasets, load_clips, load_dataset, load_splits

__all__ = [
    "DataConfig",
    "DatasetInfo",
    "ImageDataset",
    "is_clips",
    "list_datasets",
    "load_clips",
    "load_dataset",
    "load_image",
    "load_splits",
    "make_grid",
    "render_grid",
    "save_clips",
    "save_gif",
    "save_grid",
    "split_indices",
]
