"""Scoring generated clips from their pixels: each clip read back (genlab.data.moving_read) and judged
against its single-object moving-shapes prompt."""

from __future__ import annotations

import re
from typing import Any

import torch

from genlab.data.moving import DIRECTIONS
from genlab.data.moving_read import SCORE_KEYS, parse_motion_caption, read_clips, score_clip
from genlab.errors import GenlabError

# Each one-word direction of the data and the one whose step is its negative: right <-> left, up <-> down.
OPPOSITE = {
    name: other
    for name, (dx, dy) in DIRECTIONS
    for other, step in DIRECTIONS
    if " " not in name and step == (-dx, -dy)
}

# What the bar counts as a right clip: the motion's direction, the colour and the shape.
MOTION_KEYS = ("direction", "color", "shape")


def opposite_direction(caption: str) -> str:
    """``caption`` with every direction word turned around: "a red circle moving up and left" -> "a red
    circle moving down and right"."""
    return re.sub(r"\b(" + "|".join(OPPOSITE) + r")\b", lambda m: OPPOSITE[m[1]], caption)


def single_object_motion_prompts(captions: list[str]) -> list[str]:
    """The captions of one moving object ("a small red circle moving right")."""
    out = []
    for caption in captions:
        try:
            objects = parse_motion_caption(caption)["objects"]
        except GenlabError:
            continue
        if len(objects) == 1:
            out.append(caption)
    return out


def motion_adherence(clips: torch.Tensor, prompts: list[str]) -> dict[str, Any]:
    """Shares of ``clips`` (N, T, 3, S, S) in [0, 1] that show what their single-object ``prompts`` say,
    read from the pixels: per attribute (colour and shape in every frame, size, direction, speed), one
    object in every frame (``one_object``), direction, colour and shape together (``motion``) and
    everything at once (``all``); ``per_clip`` holds each clip's judgement."""
    if len(clips) != len(prompts):
        raise GenlabError(f"{len(clips)} clips but {len(prompts)} prompts")
    if not prompts:
        raise GenlabError("motion adherence needs at least one clip and prompt")
    read = read_clips(clips)
    judged = []
    for track, prompt in zip(read, prompts, strict=True):
        objects = parse_motion_caption(prompt)["objects"]
        if len(objects) != 1:
            raise GenlabError(f"{prompt!r} names {len(objects)} objects; motion adherence reads one")
        result = score_clip(track, objects[0])
        result["motion"] = all(result[k] for k in MOTION_KEYS)
        judged.append(result)
    keys = [k for k in (*SCORE_KEYS, "one_object", "motion", "all") if all(k in j for j in judged)]
    shares = {k: sum(j[k] for j in judged) / len(judged) for k in keys}
    return {**shares, "per_clip": judged, "count": len(judged)}
