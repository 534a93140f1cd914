"""A dataset of the user's own clips: a folder whose samples are animated GIFs or folders of frames.

Samples are clips, each
- an animated GIF: its frames in order, as Pillow composes them (disposal applied, transparency on white);
- a frame folder (a sub-folder of images): its image files sorted by name, numbers compared as numbers
  (``frame2.png`` before ``frame10.png``). Hidden and non-image files are skipped, as in the image folder; a
  folder inside a frame folder, or frames of different sizes in one clip, is refused.
Captions come from ``metadata.jsonl`` when the folder has one, read as the image folder reads it
(genlab.data.folder) except that ``"file_name"`` names a GIF or a frame folder, with an optional ``"label"``
on every line; otherwise from the GIF's or frame folder's name, ``_`` and ``-`` read as spaces. Labels come
only from metadata.jsonl: sub-folders here are clips, not classes.

Every clip is brought to one shape (T, C, H, W): frames are center-cropped and resized to ``image_size``
(default 32) and clips cut to their first ``frames`` frames. ``frames`` defaults to 8, or to the shortest
clip's length when that is less, so the default never refuses a clip; an explicit ``frames`` longer than a
clip refuses that clip rather than padding it with copies of its last frame, which would teach a video model
that motion stops. A clip needs at least two frames: a one-frame GIF is an image. Clips are 1-channel when
every frame is gray: frame files by their headers, as the image folder decides, GIF frames by their pixels
(R = G = B), since Pillow hands over a GIF's later frames as RGB whatever their palette.

Which folders hold clips: with ``clips:PATH`` every folder does, and its sub-folders are frame folders. With
``folder:PATH`` (is_clip_folder) a folder holds clips only when every sample is an animated GIF, or a frame
folder that metadata.jsonl names; a sub-folder it does not name is a class folder of images there, since
frame folders and class folders look alike, so folders of frame folders need ``clips:PATH``.

The rules of the image folder stand: only the folder is read (``..``, absolute paths and links to files
elsewhere are refused, for frames inside frame folders too), hidden files are skipped, and the clips'
numbers are counted (genlab.checks.check_pixels) before any frame is decoded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from PIL import Image

from genlab.checks import MAX_FRAMES, MAX_SIDE, check_pixels, check_range
from genlab.data.folder import (
    FOLDER_IMAGE_SIZE,
    METADATA_FILE,
    FolderEntry,
    entry_labels,
    is_image_file,
    is_outside,
    is_visible,
    metadata_entries,
    words_from_name,
)
from genlab.data.images import convert_mode, image_tensor, is_grayscale_file, load_image, unreadable_error
from genlab.data.images import image_size as file_size
from genlab.data.moving import MIN_FRAMES, MOVING_FRAMES, ClipDataset
from genlab.errors import GenlabError

CLIP_FRAMES = MOVING_FRAMES  # the default clip length: the moving data sets' 8 frames
_EXAMPLE_LINE = '{"file_name": "walk.gif", "text": "a person walking"}'
_WHAT_A_CLIP_IS = "a clip is an animated .gif or a folder of frame images"


def _natural_key(name: str) -> tuple[list[int | str], str]:
    """Sort key reading digit runs as numbers: "f2" < "f10"; the name itself breaks ties ("f01", "f1")."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _is_gif(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".gif"


def _clip_problem(root: Path, path: Path) -> str | None:
    """Why ``path``, named by metadata.jsonl, cannot be a clip (None when it may be one)."""
    if path.is_dir() or _is_gif(path):
        return None
    if not path.exists():
        return f"does not exist in {root}; file names are relative to that folder"
    return f"is not a clip; {_WHAT_A_CLIP_IS}"


def _find_clip_entries(root: Path, frame_folders: bool) -> list[FolderEntry]:
    metadata = root / METADATA_FILE
    if metadata.is_file():
        return metadata_entries(root, metadata, _clip_problem, _EXAMPLE_LINE, "clip")
    children = sorted((p for p in root.iterdir() if is_visible(p)), key=lambda p: _natural_key(p.name))
    folders = [p for p in children if p.is_dir()]
    if folders and not frame_folders:
        raise GenlabError(
            f"{root} has sub-folders ({folders[0].name}/, ...), which folder: reads as class folders of "
            f"images; to read them as clips, one folder of frames each, write clips:{root}"
        )
    samples = [p for p in children if p.is_dir() or is_image_file(p)]
    if not samples:
        raise GenlabError(
            f"no clips in {root}; {_WHAT_A_CLIP_IS} (frame folders with clips:{root}), "
            f"or list them in {METADATA_FILE}"
        )
    return [FolderEntry(p, words_from_name(p.name if p.is_dir() else p.stem)) for p in samples]


def _frame_files(root: Path, folder: Path) -> list[Path]:
    children = sorted((p for p in folder.iterdir() if is_visible(p)), key=lambda p: _natural_key(p.name))
    inner = next((p for p in children if p.is_dir()), None)
    if inner is not None:
        raise GenlabError(
            f"{folder} holds the folder {inner.name}/; a frame folder holds the frames of one clip as "
            "image files: move the folder out, or make it a clip of its own"
        )
    frames = [p for p in children if is_image_file(p)]
    for frame in frames:
        if is_outside(root, frame):
            raise GenlabError(
                f"{frame} is a link to {frame.resolve()}, outside {root}; copy the file into the folder "
                "instead"
            )
    return frames


def _gif_length(path: Path) -> int:
    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception as exc:
        raise unreadable_error(path, exc) from exc


def _clip_length(root: Path, path: Path) -> int:
    """Frames of the clip at ``path``, counted without decoding; clips of fewer than two are refused."""
    if path.is_dir():
        count = len(_frame_files(root, path))
        if count < MIN_FRAMES:
            raise GenlabError(
                f"{path} holds {count} frame image{'s' * (count != 1)}; a frame folder needs at least "
                f"{MIN_FRAMES} (.png, .jpg, ... files, sorted by name)"
            )
        return count
    if path.suffix.lower() != ".gif":
        raise GenlabError(f"{path} is a still image, not a clip; {_WHAT_A_CLIP_IS}: move it out")
    count = _gif_length(path)
    if count < MIN_FRAMES:
        raise GenlabError(
            f"{path} has one frame, so it is an image, not a clip; {_WHAT_A_CLIP_IS} of at least "
            f"{MIN_FRAMES} frames: remove it or replace it with an animated GIF"
        )
    return count


def _read_frame_folder(root: Path, folder: Path, frames: int, size: int) -> tuple[torch.Tensor, bool]:
    """(frames, 3, size, size) RGB frames of a frame folder, and whether every frame file is grayscale."""
    files = _frame_files(root, folder)[:frames]
    first = file_size(files[0])
    for frame in files[1:]:
        if file_size(frame) != first:
            w, h = file_size(frame)
            raise GenlabError(
                f"{frame} is {w}x{h} but {files[0].name} is {first[0]}x{first[1]}; the frames of one clip "
                "must share one size: resize them alike, or move the odd frame out"
            )
    gray = all(is_grayscale_file(f) for f in files)
    return torch.stack([load_image(f, size=size, channels=3) for f in files]), gray


def _read_gif(path: Path, frames: int, size: int) -> tuple[torch.Tensor, bool]:
    """(frames, 3, size, size) RGB frames of an animated GIF, and whether all of them are gray."""
    out = torch.empty(frames, 3, size, size)
    try:
        with Image.open(path) as img:
            for t in range(frames):
                img.seek(t)
                out[t] = image_tensor(convert_mode(img, 3), size, 3)
    except Exception as exc:
        raise unreadable_error(path, exc) from exc
    gray = bool((out[:, 1:] == out[:, :1]).all())
    return out, gray


def _check_inside(root: Path, entries: list[FolderEntry]) -> None:
    for entry in entries:  # GIFs and frame folders may be links too
        if is_outside(root, entry.path):
            raise GenlabError(
                f"{entry.path} is a link to {entry.path.resolve()}, outside {root}; copy it into the folder "
                "instead"
            )


def is_clip_folder(path: str | os.PathLike) -> bool:
    """Whether ``folder:PATH`` holds clips: every sample an animated GIF, or a frame folder that its
    metadata.jsonl names. Reads headers only; False for anything it cannot read (the image folder's reader
    then says what is wrong)."""
    root = Path(path).expanduser()
    try:
        if not root.is_dir():
            return False
        entries = _find_clip_entries(root, frame_folders=False)
        _check_inside(root, entries)
        for entry in entries:
            if entry.path.is_dir():
                continue
            with Image.open(entry.path) as img:
                if entry.path.suffix.lower() != ".gif" or not getattr(img, "is_animated", False):
                    return False
    except (GenlabError, OSError, ValueError):
        return False
    return True


def load_clip_folder(
    path: str | os.PathLike,
    frames: int | None = None,
    image_size: int | None = None,
    frame_folders: bool = True,
) -> ClipDataset:
    """Every clip of the folder at ``path`` as a ClipDataset of (N, frames, C, image_size, image_size).

    ``frames`` None takes CLIP_FRAMES or the shortest clip's length, whichever is less; longer clips are cut
    to their first ``frames`` frames and shorter ones refused. ``frame_folders`` False (``folder:PATH``)
    refuses sub-folders that metadata.jsonl does not name, as they would be class folders of images. Raises
    GenlabError naming the file (and the line of metadata.jsonl) for anything unreadable or inconsistent.
    """
    size = FOLDER_IMAGE_SIZE if image_size is None else image_size
    check_range("image_size", size, 1, MAX_SIDE)
    if frames is not None:
        check_range("frames", frames, MIN_FRAMES, MAX_FRAMES)
    prefix = "clips:" if frame_folders else "folder:"
    root = Path(path).expanduser()
    if not root.exists():
        raise GenlabError(f"clip folder not found: {root}; check the path after '{prefix}'")
    if not root.is_dir():
        raise GenlabError(
            f"{root} is a file, not a folder; use {prefix}DIR with the folder that holds the clips"
        )

    entries = _find_clip_entries(root, frame_folders)
    _check_inside(root, entries)
    lengths = [_clip_length(root, e.path) for e in entries]
    if frames is None:
        frames = min(CLIP_FRAMES, *lengths)
    short = next((i for i, n in enumerate(lengths) if n < frames), None)
    if short is not None:
        raise GenlabError(
            f"{entries[short].path} has {lengths[short]} frames, fewer than the {frames} asked for; lower "
            "`frames`, or remove the clip (clips are not padded: a frozen end would read as motion stopping)"
        )
    # Clips are read as RGB and made gray afterwards, so the bound counts three channels.
    check_pixels(len(entries) * frames, 3, size)
    clips = torch.empty(len(entries), frames, 3, size, size)
    all_gray = True
    for i, entry in enumerate(entries):
        if entry.path.is_dir():
            clips[i], gray = _read_frame_folder(root, entry.path, frames, size)
        else:
            clips[i], gray = _read_gif(entry.path, frames, size)
        all_gray = all_gray and gray
    if all_gray:
        clips = clips[:, :, :1].contiguous()
    labels, class_names = entry_labels(entries)
    attributes = []
    for entry, length in zip(entries, lengths, strict=True):
        attrs: dict = {"file": Path(os.path.relpath(entry.path, root)).as_posix(), "frames": length}
        if entry.label is not None:
            attrs["label"] = entry.label
        attributes.append(attrs)
    return ClipDataset(
        name=f"{prefix}{path}",
        clips=clips,
        captions=[e.caption for e in entries],
        labels=labels,
        class_names=class_names,
        attributes=attributes,
    )
