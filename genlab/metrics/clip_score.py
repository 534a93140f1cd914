"""How well do images match their prompts, in the eyes of a CLIP model?"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


@torch.no_grad()
def clip_score(
    model: nn.Module, images: torch.Tensor, prompts: list[str], batch_size: int = 100
) -> dict[str, Any]:
    """CLIPScore (Hessel et al. 2021, eq. 1): w * max(cos(E_image, E_prompt), 0), averaged over the pairs,
    with w = 100 as torchmetrics uses (the paper's w = 2.5 only rescales).

    ``model`` has ``encode_images`` and ``encode_text`` returning unit vectors (a genlab CLIP). Beside the
    score, the same for mismatched pairs (each image against the next image's prompt) is the baseline a
    model ignoring its prompts would get.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        img = torch.cat([model.encode_images(b.to(device)).cpu() for b in images.split(batch_size)])
        txt = torch.cat(
            [model.encode_text(prompts[i : i + batch_size]).cpu() for i in range(0, len(prompts), batch_size)]
        )
    finally:
        model.train(was_training)
    cos = (img * txt).sum(-1)
    shifted = (img * txt.roll(1, dims=0)).sum(-1)
    return {
        "value": float(100 * cos.clamp_min(0).mean()),
        "std": float(100 * cos.clamp_min(0).std()) if len(cos) > 1 else 0.0,
        "mismatched": float(100 * shifted.clamp_min(0).mean()),
        "generated": len(images),
    }
