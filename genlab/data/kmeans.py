"""k-means clustering (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007), in torch.

Used to give an unconditional GAN pseudo-labels (genlab.gan: self-conditioning) and to split a class's
activations in two (genlab.adversarial.backdoor: activation clustering).
"""

from __future__ import annotations

import torch

from genlab.errors import GenlabError


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k starting centres: the first uniformly, each next one drawn with probability proportional to
    its squared distance from the nearest centre chosen so far (Arthur & Vassilvitskii 2007, section 2.2)."""
    centres = [x[torch.randint(len(x), (1,), generator=generator)].squeeze(0)]
    nearest = torch.cdist(x, centres[0][None]).squeeze(1).pow(2)
    for _ in range(k - 1):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        pick = torch.multinomial(weights, 1, generator=generator)
        centres.append(x[pick].squeeze(0))
        nearest = torch.minimum(nearest, torch.cdist(x, x[pick]).squeeze(1).pow(2))
    return torch.stack(centres)


def kmeans(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
    iterations: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (k, D), the cluster of each row of ``x`` (N,)) after Lloyd's iterations: assign each
    point to its nearest centre, move each centre to its points' mean, until no point changes cluster.
    Starts from ``init`` or k-means++; a centre left without points restarts at the point farthest from
    its own centre, so every cluster ends non-empty."""
    x = x.flatten(1).float()
    if not 1 <= k <= len(x):
        raise GenlabError(f"k-means needs 1 <= k <= the number of points (got k={k}, {len(x)} points)")
    generator = generator or torch.Generator().manual_seed(0)
    centres = (init.float().clone() if init is not None else kmeans_plus_plus(x, k, generator)).to(x)
    assign = torch.full((len(x),), -1, dtype=torch.long)
    for _ in range(iterations):
        distances = torch.cdist(x, centres)
        new = distances.argmin(1)
        counts = new.bincount(minlength=k)
        for empty in (counts == 0).nonzero().flatten().tolist():
            far = int(distances.gather(1, new[:, None]).squeeze(1).argmax())
            new[far] = empty
            distances[far] = 0  # taken: the next empty cluster picks another point
            counts = new.bincount(minlength=k)
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = sums / counts[:, None].to(x)
    return centres, assign
