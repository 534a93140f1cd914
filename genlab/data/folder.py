"""A dataset from the user's own folder of images, captioned the way Hugging Face imagefolder does it.

Captions come from the first of these that the folder has:
1. ``metadata.jsonl``: one JSON object per line, ``{"file_name": "a.png", "text": "a caption"}``, with an
   optional ``"label"`` (a class name, or a class index 0..N-1) on every line. Images the file does not
   name are left out.
2. Class sub-folders (``cats/``, ``dogs/``): the label is the index of the sorted folder name and the
   caption is the folder name with ``_`` and ``-`` read as spaces.
3. Plain images: the caption is the file name without extension, ``_`` and ``-`` read as spaces.
Hidden files and folders (names starting with ".") are ignored: macOS writes ``._photo.png`` files that
carry an image extension but hold no image.

The folder is all that is read: a file name with ``..``, an absolute path, or a link to a file elsewhere
is refused, so a dataset downloaded from anywhere cannot make genlab (or the web app serving its images)
read other files of the machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.checks import MAX_SIDE, check_pixels, check_range
from genlab.data.base import ImageDataset
from genlab.data.images import IMAGE_EXTENSIONS, is_grayscale_file, load_image
from genlab.errors import GenlabError

METADATA_FILE = "metadata.jsonl"
FOLDER_IMAGE_SIZE = 32
# Integer labels are class indices, and the class list runs from 0 to the largest; it may be longer than
# the folder has images (a few samples of a 1000-class set), but not arbitrarily: "label": 1000000000
# would make a billion class names and exhaust the memory before anything else could be said.
MAX_SPARSE_CLASSES = 1000
_EXAMPLE_LINE = '{"file_name": "a.png", "text": "a caption"}'


@dataclass
class FolderEntry:
    """One sample a folder holds (an image, or a clip for genlab.data.folder_clips) with its caption and
    class label."""

    path: Path
    caption: str
    label: int | str | None = None
    line: int = 0  # line in metadata.jsonl, for error messages


def is_visible(path: Path) -> bool:
    """False for hidden files and folders (a leading dot)."""
    return not path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """A file with one of IMAGE_EXTENSIONS."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def is_outside(root: Path, path: Path) -> bool:
    """True when ``path``, with ``..`` and symbolic links followed, is not inside ``root``."""
    return not path.resolve().is_relative_to(root.resolve())


def words_from_name(name: str) -> str:
    """A file or folder name as caption words: "golden_retriever-2" -> "golden retriever 2"."""
    words = " ".join(name.replace("_", " ").replace("-", " ").split())
    return words or name


def _image_problem(root: Path, path: Path) -> str | None:
    """Why ``path``, named by metadata.jsonl, cannot be an image sample (None when it can)."""
    if not path.is_file():
        return f"does not exist in {root}; file names are relative to that folder"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"is not an image ({', '.join(IMAGE_EXTENSIONS)})"
    return None


def metadata_entries(
    root: Path,
    metadata: Path,
    problem: Callable[[Path, Path], str | None] = _image_problem,
    example: str = _EXAMPLE_LINE,
    noun: str = "image",
) -> list[FolderEntry]:
    """The samples metadata.jsonl names; ``problem`` says why a named path cannot be one (the clip
    folder, genlab.data.folder_clips, lets it name frame folders too)."""

    def fail(lineno: int, problem: str) -> GenlabError:
        return GenlabError(f"{metadata}, line {lineno}: {problem}")

    def malformed(lineno: int, what: str) -> GenlabError:
        return fail(lineno, f"{what}; each line must look like {example}")

    try:
        lines = metadata.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GenlabError(f"cannot read {metadata} ({exc}); save it as UTF-8 text") from exc
    entries: list[FolderEntry] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise malformed(lineno, f"not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise malformed(lineno, "not a JSON object")
        file_name, text = record.get("file_name"), record.get("text")
        if not isinstance(file_name, str) or not file_name.strip():
            raise malformed(lineno, 'missing "file_name" (a file name relative to the folder)')
        if not isinstance(text, str) or not text.strip():
            raise malformed(lineno, f'missing or empty "text" for {file_name!r}')
        image = root / file_name
        if Path(file_name).is_absolute() or is_outside(root, image):
            raise fail(
                lineno,
                f"{file_name!r} points outside {root}; name files inside the folder, relative to it "
                "(no '..', no absolute paths, no links to files elsewhere)",
            )
        wrong = problem(root, image)
        if wrong is not None:
            raise fail(lineno, f"{file_name!r} {wrong}")
        if file_name in seen:
            raise fail(lineno, f"{file_name!r} is already listed on line {seen[file_name]}")
        seen[file_name] = lineno
        label = record.get("label")
        if label is not None:
            if (
                isinstance(label, bool)
                or not isinstance(label, (int, str))
                or (isinstance(label, int) and label < 0)
            ):
                raise fail(lineno, f'"label" must be a class name or an index >= 0, got {label!r}')
        entries.append(FolderEntry(image, text.strip(), label, lineno))
    if not entries:
        raise GenlabError(
            f"{metadata} is empty; add one line per {noun} like {example}, "
            f"or delete it to caption {noun}s by their file names"
        )
    kinds = {type(e.label) for e in entries}
    if type(None) in kinds and len(kinds) > 1:
        first = next(e for e in entries if e.label is None)
        raise fail(first.line, 'no "label" although other lines have one; give every line a label or none')
    if len(kinds) > 1:
        first = next(e for e in entries if type(e.label) is not type(entries[0].label))
        raise fail(first.line, "labels mix numbers and names; use one kind for all lines")
    if kinds == {int}:
        largest = max(entries, key=lambda e: e.label)
        limit = max(len(entries), MAX_SPARSE_CLASSES)
        if largest.label >= limit:
            raise fail(
                largest.line,
                f'"label" {largest.label} is too large: integer labels are class indices 0..N-1, and '
                f"{len(entries)} {noun}s have at most {limit} classes; renumber them, or use class names",
            )
    return entries


def _class_folder_entries(root: Path, folders: list[Path]) -> list[FolderEntry]:
    entries = []
    for folder in folders:
        for image in sorted(p for p in folder.rglob("*") if is_image_file(p) and _visible_below(p, folder)):
            entries.append(FolderEntry(image, words_from_name(folder.name), folder.name))
    return entries


def _visible_below(path: Path, top: Path) -> bool:
    return all(is_visible(Path(part)) for part in path.relative_to(top).parts)


def _find_entries(root: Path) -> list[FolderEntry]:
    metadata = root / METADATA_FILE
    if metadata.is_file():
        return metadata_entries(root, metadata)
    children = sorted(p for p in root.iterdir() if is_visible(p))
    loose = [p for p in children if is_image_file(p)]
    class_folders = [
        d
        for d in children
        if d.is_dir() and any(is_image_file(p) and _visible_below(p, d) for p in d.rglob("*"))
    ]
    if class_folders and loose:
        raise GenlabError(
            f"{root} has both class sub-folders ({class_folders[0].name}/, ...) and loose images "
            f"({loose[0].name}, ...); move the loose images into a class folder, or add {METADATA_FILE}"
        )
    if class_folders:
        return _class_folder_entries(root, class_folders)
    if loose:
        return [FolderEntry(p, words_from_name(p.stem)) for p in loose]
    raise GenlabError(
        f"no images in {root}; put {', '.join(IMAGE_EXTENSIONS)} files in it or in class sub-folders"
    )


def entry_labels(entries: list[FolderEntry]) -> tuple[torch.Tensor | None, list[str] | None]:
    """(labels, class names) of the entries' class labels, or (None, None) when they have none."""
    values = [e.label for e in entries]
    if values[0] is None:
        return None, None
    if isinstance(values[0], int):
        class_names = [str(i) for i in range(max(values) + 1)]
        return torch.tensor(values, dtype=torch.int64), class_names
    class_names = sorted(set(values))
    index = {name: i for i, name in enumerate(class_names)}
    return torch.tensor([index[v] for v in values], dtype=torch.int64), class_names


def load_folder(path: str | os.PathLike, image_size: int | None = None) -> ImageDataset:
    """Every image of the folder at ``path``, center-cropped and resized to ``image_size`` (default 32).

    Images are RGB, or 1-channel when every file is grayscale. Raises GenlabError naming the file (and
    the line of metadata.jsonl) for anything unreadable or inconsistent.
    """
    size = FOLDER_IMAGE_SIZE if image_size is None else image_size
    check_range("image_size", size, 1, MAX_SIDE)
    root = Path(path).expanduser()
    if not root.exists():
        raise GenlabError(f"dataset folder not found: {root}; check the path after 'folder:'")
    if not root.is_dir():
        raise GenlabError(
            f"{root} is a file, not a folder; use folder:DIR with the folder that holds the images"
        )

    entries = _find_entries(root)
    for entry in entries:  # class folders and loose images may be links too
        if is_outside(root, entry.path):
            raise GenlabError(
                f"{entry.path} is a link to {entry.path.resolve()}, outside {root}; copy the file into "
                "the folder instead"
            )
    # Reading headers first costs little and avoids decoding everything twice to learn the channel count.
    channels = 1 if all(is_grayscale_file(e.path) for e in entries) else 3
    check_pixels(len(entries), channels, size)
    images = torch.empty(len(entries), channels, size, size)
    for i, entry in enumerate(entries):
        images[i] = load_image(entry.path, size=size, channels=channels)
    labels, class_names = entry_labels(entries)
    attributes = []
    for entry in entries:
        attrs: dict = {"file": Path(os.path.relpath(entry.path, root)).as_posix()}
        if entry.label is not None:
            attrs["label"] = entry.label
        attributes.append(attrs)
    return ImageDataset(
        name=f"folder:{path}",
        images=images,
        captions=[e.caption for e in entries],
        labels=labels,
        class_names=class_names,
        attributes=attributes,
    )
