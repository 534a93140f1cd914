"""Zero-shot classification with CLIP (Radford et al. 2021, section 3.1.2): the class labels, written as
captions, are embedded by the text tower, and each image takes the label whose embedding is nearest."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genlab.errors import GenlabError


@torch.no_grad()
def zero_shot_classify(
    model,
    images: torch.Tensor,
    labels: Sequence[str],
    templates: Sequence[str] = ("{}",),
    batch_size: int = 500,
) -> torch.Tensor:
    """Probabilities (N, K) over ``labels`` for (N, C, S, S) images in [0, 1]: softmax of exp(t) * cosine.

    With several ``templates`` ("a photo of {}", ...) each label's embedding is the normalised mean over
    them (prompt ensembling, section 3.1.4). The model runs in eval mode and gets its mode back after.
    """
    labels = [str(label).strip() for label in labels]
    if not labels:
        raise GenlabError("zero-shot classification needs at least one label")
    if any(not label for label in labels):
        raise GenlabError(
            "a zero-shot label is empty; give labels as text, e.g. 'a red circle,a blue square'"
        )
    if not templates or any("{}" not in t for t in templates):
        raise GenlabError("every template must hold '{}' where the label goes, e.g. 'a photo of {}'")
    was_training = model.training
    model.eval()
    try:
        classes = torch.stack(
            [model.encode_text([t.replace("{}", label) for t in templates]).mean(0) for label in labels]
        )
        classes = torch.nn.functional.normalize(classes, dim=-1)
        scale = model.scale()
        probs = [
            (scale * model.encode_images(images[i : i + batch_size].to(model.device)) @ classes.T).softmax(-1)
            for i in range(0, images.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(probs).cpu()
