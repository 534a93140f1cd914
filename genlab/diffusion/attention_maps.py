"""Where does each word of the prompt act? Cross-attention maps recorded while sampling.

As in prompt-to-prompt (Hertz et al. 2022, section 3.1): the cross-attention weights softmax(QK^T/sqrt d)
of every pixel over the prompt's tokens, averaged over heads, layers (each upsampled to the image size)
and denoising steps, give one heat map per token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nn.attention import CrossAttention2d


def cross_attention_layers(net: nn.Module) -> list[nn.Module]:
    """The attention modules of ``net`` whose keys are the prompt's tokens, each with ``keep_weights`` and
    ``weights``: genlab's own (inside ``CrossAttention2d``) and Stable Diffusion's (``is_cross``)."""
    layers = []
    for m in net.modules():
        if isinstance(m, CrossAttention2d):
            layers.append(m.attn)
        elif getattr(m, "is_cross", False) and hasattr(m, "keep_weights"):
            layers.append(m)
    return layers


class CrossAttentionRecorder:
    """Context manager: while active, sums the cross-attention maps of the last ``batch`` images of every
    call (under guidance, the conditional half of the joint batch) into ``maps`` (batch, tokens, H, W),
    for images of ``image_size`` = side or (height, width)."""

    def __init__(self, net: nn.Module, batch: int, image_size: int | tuple[int, int]):
        self.layers = cross_attention_layers(net)
        self.batch = batch
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.total: torch.Tensor | None = None
        self.count = 0
        self._handles: list = []

    def _hook(self, module: nn.Module, inputs, output) -> None:
        weights = module.weights  # (N, heads, h*w, S) on the layer's grid, of the image's aspect
        n, _, hw, s = weights.shape
        height, width = self.size
        h = max(1, round((hw * height / width) ** 0.5))
        maps = weights[n - self.batch :].mean(1).transpose(1, 2).reshape(self.batch, s, h, hw // h)
        maps = F.interpolate(maps.float(), size=self.size, mode="bilinear", align_corners=False)
        self.total = maps.cpu() if self.total is None else self.total + maps.cpu()
        self.count += 1

    def __enter__(self) -> CrossAttentionRecorder:
        for layer in self.layers:
            layer.keep_weights = True
            self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            layer.keep_weights = False
            layer.weights = None
        for handle in self._handles:
            handle.remove()

    @property
    def maps(self) -> torch.Tensor:
        if self.total is None:
            raise RuntimeError("no cross-attention was recorded")
        return self.total / self.count


def heat_overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """``heat`` (H, W), scaled to [0, 1] and coloured with viridis, blended over ``image`` (C, H, W)."""
    from matplotlib import colormaps

    h = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-8)
    colour = torch.from_numpy(colormaps["viridis"](h.numpy())[..., :3]).permute(2, 0, 1).float()
    base = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return ((1 - alpha) * base + alpha * colour).clamp(0, 1)


def save_attention_maps(path: str | Path, result: Any, per_prompt: int = 1) -> Path:
    """One row per prompt (its first image): the image, then the heat map of each token over it.

    ``result`` is a TextToImageOutput sampled with ``return_attention_maps=True``."""
    from genlab.data import save_grid

    width = 1 + max(len(t) for t in result.tokens)
    cells, captions = [], []
    for i in range(0, len(result.prompts), per_prompt):
        image = result.tensors[i]
        image3 = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        tokens = result.tokens[i]
        row = [image3] + [heat_overlay(image, result.attention_maps[i, k]) for k in range(len(tokens))]
        cells += row + [torch.zeros_like(image3)] * (width - len(row))
        captions += ["image", *tokens] + [""] * (width - len(row))
    return save_grid(path, torch.stack(cells), captions, nrow=width)
