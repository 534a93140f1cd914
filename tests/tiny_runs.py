"""Command lines of the smallest CLIP and text-to-image runs on shapes that still exercise the whole CLI
(seconds each): for the tests that train a text tower and then a text-to-image model reading it."""

from __future__ import annotations

from pathlib import Path

DATA = ["--data", "shapes", "--val-fraction", "0.02", "--image-size", "16", "--no-progress"]


def clip_args(out: Path, *options: str) -> list[str]:
    """`genlab train clip` for 2 steps of a tiny CLIP into ``out``, with ``options`` (its text side)."""
    args = ["train", "clip", *DATA, *options, "--steps", "2", "--batch-size", "8"]
    args += ["--text-width", "32", "--text-layers", "1", "--text-heads", "2", "--widths", "8,8"]
    return [*args, "--image-hidden", "16", "--out", str(out)]


def t2i_args(out: Path, clip_run: Path) -> list[str]:
    """`genlab train diffusion` for 1 step of a tiny text-to-image U-Net reading ``clip_run``'s tower."""
    args = ["train", "diffusion", *DATA, "--eval-samples", "0", "--cond", "text", "--steps", "1"]
    args += ["--text-encoder", f"clip:{clip_run}", "--batch-size", "2"]
    args += ["--base-channels", "16", "--channel-mults", "1,2", "--attention-levels", "1"]
    return [*args, "--out", str(out)]
