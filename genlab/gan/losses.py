"""The losses of the GAN game, written as their maths, on the discriminator's logits.

Notation: D(x) = sigmoid(l(x)) for the BCE games, so log D = logsigmoid(l) and log(1 - D) = logsigmoid(-l),
which stay finite where D saturates; for WGAN-GP and hinge, l is the critic's unbounded score.
Each loss is what its player *minimises*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def discriminator_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-[E log D(x) + E log(1 - D(G(z)))]: D ascends the value V(D, G) (Goodfellow et al. 2014, eq. 1)."""
    return -(F.logsigmoid(real).mean() + F.logsigmoid(-fake).mean())


def generator_minimax(fake: torch.Tensor) -> torch.Tensor:
    """E log(1 - D(G(z))): G descends V itself (eq. 1). Its gradient in the logit is -D(G(z)), which
    vanishes when D confidently rejects the fakes, as it does early in training (section 3)."""
    return F.logsigmoid(-fake).mean()


def generator_non_saturating(fake: torch.Tensor) -> torch.Tensor:
    """-E log D(G(z)): the same fixed point, but the gradient in the logit is -(1 - D(G(z))), strong exactly
    where the minimax one vanishes (Goodfellow et al. 2014, section 3)."""
    return -F.logsigmoid(fake).mean()


def critic_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E D(G(z)) - E D(x): the critic's side of the Kantorovich-Rubinstein dual (Arjovsky et al. 2017,
    eq. 3; Gulrajani et al. 2017, Algorithm 1 without the penalty)."""
    return fake.mean() - real.mean()


def generator_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    """-E D(G(z)) (Gulrajani et al. 2017, Algorithm 1, line 11)."""
    return -fake.mean()


def discriminator_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E max(0, 1 - D(x)) + E max(0, 1 + D(G(z))) (Lim & Ye 2017; Miyato et al. 2018, eq. 16)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample (||grad_x D(x_hat)||_2 - 1)^2 at x_hat = e x + (1 - e) x~, e ~ U[0, 1] per sample
    (Gulrajani et al. 2017, Algorithm 1, lines 6-7). Returns one term per sample, shape (N,).

    The norm is taken over each sample's own gradient, so the critic must treat samples independently
    (no BatchNorm: the paper uses layer normalization).
    """
    e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator).to(real)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0) ** 2


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """Per-sample ||grad_x D(x)||^2 on real data only (Mescheder et al. 2018, "Which training methods for
    GANs actually converge?", eq. 9; D's loss adds gamma / 2 times its mean). It pushes D's gradient to
    zero on the data manifold, so at the equilibrium D has nothing left to push G with, and G's samples
    stop chasing D's latest favourite region of the data. Returns one term per sample, shape (N,)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1)


def mode_seeking_term(images: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 / (d(G(z1), G(z2)) / d(z1, z2) + eps) for the two halves of a batch generated with the same
    conditions, d the mean absolute difference (Mao et al. 2019, "Mode seeking GANs", eq. 3): G
    minimises it, so latents that differ must give images that differ, which keeps a conditional G from
    drawing one image per condition whatever z is."""
    h = images.shape[0] // 2
    ratio = (images[:h] - images[h : 2 * h]).abs().mean() / (latents[:h] - latents[h : 2 * h]).abs().mean()
    return 1.0 / (ratio + eps)


@dataclass(frozen=True)
class GANLoss:
    """One game: what D minimises on (real, fake) logits, what G minimises on fake logits, whether the
    gradient penalty applies, and whether D's output is a probability (through a sigmoid)."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    penalty: bool = False
    probabilistic: bool = True


LOSSES: dict[str, GANLoss] = {
    "ns": GANLoss(discriminator_bce, generator_non_saturating),
    "minimax": GANLoss(discriminator_bce, generator_minimax),
    "wgan-gp": GANLoss(critic_wasserstein, generator_wasserstein, penalty=True, probabilistic=False),
    "hinge": GANLoss(discriminator_hinge, generator_wasserstein, probabilistic=False),
}
