"""One round of the game's pieces, shared by image GANs (genlab.gan.task) and toy ones (genlab.gan.toy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from genlab.gan.losses import GANLoss, gradient_penalty, r1_penalty


@dataclass
class DiscriminatorTerms:
    loss: torch.Tensor  # what D minimises, the penalty included
    real: torch.Tensor  # D's logits (or critic scores) on the real batch
    fake: torch.Tensor  # ... and on the generated one
    penalty: torch.Tensor | None  # the mean gradient penalty, when the loss has one
    r1: torch.Tensor | None = None  # the mean R1 penalty, when asked for


def discriminator_terms(
    judge: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    rule: GANLoss,
    gp_weight: float = 10.0,
    critic: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    r1_gamma: float = 0.0,
) -> DiscriminatorTerms:
    """D's loss on a real and a (detached) generated batch, as D sees them through ``judge``; the
    gradient penalty (WGAN-GP) is taken on ``critic`` (default ``judge``) between the two batches, and
    with ``r1_gamma`` > 0 the R1 penalty gamma / 2 * E ||grad D(x)||^2 on the real batch."""
    d_real, d_fake = judge(real), judge(fake)
    loss = rule.discriminator(d_real, d_fake)
    gp = None
    if rule.penalty:
        gp = gradient_penalty(critic or judge, real, fake, generator).mean()
        loss = loss + gp_weight * gp
    r1 = None
    if r1_gamma > 0:
        r1 = r1_penalty(critic or judge, real).mean()
        loss = loss + 0.5 * r1_gamma * r1
    return DiscriminatorTerms(loss, d_real, d_fake, gp, r1)


def discriminator_outputs(terms: DiscriminatorTerms, rule: GANLoss) -> dict[str, float]:
    """Mean D(x) and D(G(z)): probabilities for the BCE games, raw critic scores otherwise."""
    squash = torch.sigmoid if rule.probabilistic else (lambda t: t)
    return {
        "d_real": float(squash(terms.real.detach()).mean()),
        "d_fake": float(squash(terms.fake.detach()).mean()),
    }


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s weights get no gradients inside (G's step differentiates through D, not D's weights)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)
