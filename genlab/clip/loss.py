"""CLIP's contrastive loss, the matched-pairs-only loss that collapses without negatives, and a collapse
measure.

All losses share one signature ``loss(image_emb, text_emb, logit_scale)``: (N, D) unit rows where row i of
each is a matching (image, caption) pair, and the multiplier exp(t) = 1 / temperature (already
exponentiated, as ``CLIP.scale()`` gives it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pairs(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape or image_emb.shape[0] == 0:
        raise ValueError(
            f"need (N, D) image and text embeddings of one shape, got {tuple(image_emb.shape)} "
            f"and {tuple(text_emb.shape)}"
        )


def clip_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric cross-entropy over the batch's similarity matrix (Radford et al. 2021, Figure 3).

    logits[i, j] = exp(t) * <I_i, T_j>; each image must pick its own caption among the N captions of the
    batch (rows) and each caption its own image (columns):
        loss = (CE(logits, arange(N)) + CE(logits^T, arange(N))) / 2
    The other N - 1 pairs of each row and column are the negatives. A caption that occurs twice in a
    batch is a negative for its twin's image too (a false negative), as in the paper.
    """
    _check_pairs(image_emb, text_emb)
    logits = logit_scale * image_emb @ text_emb.T  # (N, N) scaled cosine similarities
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss_i = F.cross_entropy(logits, labels)  # image -> text: softmax over each row
    loss_t = F.cross_entropy(logits.T, labels)  # text -> image: softmax over each column
    return (loss_i + loss_t) / 2


def matched_only_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Mean cosine distance of the matched pairs, 1 - <I_i, T_i>: the positive half of the contrastive loss.

    With no negatives nothing pushes different inputs apart, and every constant embedding is a global
    minimum (loss 0): training collapses (all embeddings alike), which is why CLIP needs the other N - 1
    pairs of the batch (Radford et al. 2021, section 2.3; the same argument as for SimCLR, Chen et al. 2020).
    ``logit_scale`` is ignored: with no softmax there is nothing for a temperature to sharpen.
    """
    _check_pairs(image_emb, text_emb)
    return (1 - (image_emb * text_emb).sum(dim=1)).mean()


LOSSES = {"contrastive": clip_loss, "matched": matched_only_loss}


def mean_pairwise_cosine(emb: torch.Tensor) -> float:
    """Mean cosine similarity of distinct rows i != j of (N, D) embeddings of *different* inputs.

    Near 1: the embeddings collapsed onto one direction. Contrastive training keeps it well below 1 (the
    rows spread over the sphere; about 0 for random directions).
    """
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"need (N, D) embeddings with N >= 2, got {tuple(emb.shape)}")
    e = F.normalize(emb.detach().double(), dim=1)
    gram = e @ e.T
    n = e.shape[0]
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))
