"""The Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search", Algorithm 1 and section 3.1): random search over square patches of +-2 eps
(L-inf), the side of the squares shrinking on a fixed schedule; a change is kept when it lowers the margin
of the true class. It sees only the model's probabilities, through the counting oracle of the black-box
attacks, and needs no gradient, so a model that masks its gradients does not fool it.
"""

from __future__ import annotations

import math

import torch

from genlab.adversarial.attacks import check_inputs
from genlab.adversarial.attacks import margin as true_margin
from genlab.adversarial.blackbox import QueryOracle
from genlab.errors import GenlabError

P_INIT = 0.8  # the share of the image the first squares cover (their L-inf choice for MNIST is 0.8)
# The schedule of section 3.1 (as in the reference code): p halves at these iterations of a 10,000-query run,
# rescaled to the run's budget.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(iteration: int, queries: int, p_init: float = P_INIT) -> float:
    """p, the share of the pixels the square of ``iteration`` covers, of a run of ``queries`` queries."""
    it = int(iteration / queries * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def square_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    queries: int = 5000,
    p_init: float = P_INIT,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The L-inf Square attack on images ``x`` in [0, 1] with labels ``y``: each image gets at most
    ``queries`` queries of the model's probabilities and stops when it is misclassified. Starts from
    vertical stripes of +-eps (section 3.1), then each iteration proposes, for every image still classified
    right, a square of side round(sqrt(p h w)) set to +-2 eps per channel (clipped back into the ball and
    the image box), kept if the margin falls. Returns (adversarial images, queries used per image)."""
    check_inputs(x, y, eps)
    if queries < 1:
        raise GenlabError(f"the Square attack needs at least 1 query an image (got {queries})")
    if not 0 < p_init <= 1:
        raise GenlabError(f"p_init must lie in (0, 1] (got {p_init})")
    n, c, h, w = x.shape
    x = x.detach()
    used = torch.zeros(n, dtype=torch.long)
    if eps == 0 or n == 0:
        return x.clone(), used
    oracle = QueryOracle(model, n * queries)

    def ask(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        used[idx] += 1
        return true_margin(
            oracle(images).clamp_min(1e-30).log(), y[idx]
        )  # log-probabilities: the logits' margin

    signs = torch.randint(0, 2, (n, c, 1, w), generator=generator).to(x) * 2 - 1
    best = (x + eps * signs).clamp(0, 1)
    margin = ask(best, torch.arange(n))
    for i in range(queries - 1):
        idx = (margin > 0).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        side = max(int(round(math.sqrt(square_fraction(i, queries, p_init) * h * w))), 1)
        side = min(side, h, w)
        top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
        flip = (torch.randint(0, 2, (len(idx), c, 1, 1), generator=generator).to(x) * 2 - 1) * 2 * eps
        proposal = best[idx].clone()
        proposal[:, :, top : top + side, left : left + side] += flip
        origin = x[idx]
        proposal = torch.minimum(torch.maximum(proposal, origin - eps), origin + eps).clamp(0, 1)
        new = ask(proposal, idx)
        better = new < margin[idx]
        best[idx[better]], margin[idx[better]] = proposal[better], new[better]
    return best, used
