"""Does a text-to-image sample show what its prompt asks for? Read the scene back from the pixels.

For ``shapes`` prompts the dataset module inverts its own generator (``read_scene``: shape, colour,
size and grid cell of every object, 100% right on the real images), so adherence is exact, not judged
by another network.
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.data.shapes import ATTRIBUTE_NAMES, matches, read_scene
from genlab.data.shapes_text import parse_caption
from genlab.errors import GenlabError


def _parse(prompt: str) -> dict[str, str] | None:
    try:
        return parse_caption(prompt)
    except GenlabError:
        return None


def single_object_prompts(captions: list[str]) -> list[str]:
    """The captions that name one object with all its attributes ("a small red circle at the top left")."""
    return [c for c in captions if _parse(c) is not None]


def paraphrase_prompts(prompts: list[str], seed: int = 0) -> list[str]:
    """Each single-object prompt's scene written again in a held-out phrasing (a word or sentence form
    no training caption uses, genlab.data.shapes_text), drawn with ``seed``: the same scenes, other words."""
    import numpy as np

    from genlab.data.shapes_text import phrase

    rng = np.random.default_rng(seed)
    out = []
    for prompt in prompts:
        attributes = _parse(prompt)
        if attributes is None:
            raise GenlabError(f"only single-object shapes prompts can be paraphrased, not {prompt[:60]!r}")
        out.append(phrase({"shapes": [attributes], "relation": None}, rng, held_out=True))
    return out


def prompt_adherence(images: torch.Tensor, prompts: list[str]) -> dict[str, Any]:
    """Share of samples whose scene, read from the pixels, has each attribute of its single-object prompt
    right (and exactly one object: ``count``), and all of them at once (``all``). Prompts that are not
    single-object shapes captions are skipped and counted."""
    if len(images) != len(prompts):
        raise GenlabError(f"{len(images)} images but {len(prompts)} prompts")
    parsed = [(i, a) for i, a in enumerate(_parse(p) for p in prompts) if a is not None]
    if not parsed:
        raise GenlabError(
            "adherence reads single-object shapes prompts, and none was given (`prompts` single)"
        )
    if images.shape[1] != 3:
        raise GenlabError("adherence reads RGB shapes images; this model makes another kind")
    scenes = read_scene(images[[i for i, _ in parsed]])
    results = [matches(scene, attrs) for scene, (_, attrs) in zip(scenes, parsed, strict=True)]
    keys = (*ATTRIBUTE_NAMES, "count")
    return {
        "all": sum(r["all"] for r in results) / len(results),
        "per_attribute": {k: sum(r[k] for r in results) / len(results) for k in keys},
        "checked": len(results),
        "skipped": len(prompts) - len(results),
        "method": "scene read back from the pixels (genlab.data.shapes.read_scene)",
    }
