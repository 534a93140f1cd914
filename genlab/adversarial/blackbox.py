"""Black-box attacks: the attacker sees only the model's output probabilities, through a counted oracle,
and estimates the gradient from queries (NES: Ilyas et al. 2018, "Black-box adversarial attacks with
limited queries and information", Algorithm 1 with antithetic sampling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.attacks import check_inputs, eval_mode, project
from genlab.errors import GenlabError


class QueryOracle:
    """Answers probability queries for a model and counts them per image, refusing past the budget."""

    def __init__(self, model: nn.Module, budget: int):
        if budget < 1:
            raise GenlabError(f"the query budget must be at least 1 (got {budget})")
        self.model, self.budget, self.used = model, budget, 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for a batch of queries about one image (N_queries, C, H, W)."""
        if self.used + x.shape[0] > self.budget:
            raise GenlabError(f"query budget of {self.budget} exhausted")
        self.used += x.shape[0]
        with eval_mode(self.model):
            return F.softmax(self.model(x), dim=1)


def nes_gradient(
    oracle: QueryOracle,
    x: torch.Tensor,
    label: int,
    samples: int,
    sigma: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """NES estimate of grad_x log p(label | x) from 2 * ``samples`` antithetic queries around one image
    x (C, H, W): g = 1 / (2 n sigma) sum_i [f(x + sigma u_i) - f(x - sigma u_i)] u_i; also mean p(label)."""
    u = torch.randn(samples, *x.shape, generator=generator).to(x)
    probs = oracle(torch.cat([x + sigma * u, x - sigma * u]).clamp(0, 1))
    logp = probs[:, label].clamp_min(1e-12).log()
    diff = logp[:samples] - logp[samples:]
    grad = (diff.view(-1, *([1] * x.dim())) * u).sum(0) / (2 * samples * sigma)
    return grad, float(probs[:, label].mean())


def nes_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    budget: int = 2000,
    samples: int = 25,
    sigma: float = 0.01,
    alpha: float | None = None,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L-inf projected gradient steps on NES gradient estimates, each image attacked with at most ``budget``
    queries (stopping as soon as it is misclassified, or classified as the target). Returns (adversarial
    images, queries used per image)."""
    check_inputs(x, y, eps)
    if samples < 1 or sigma <= 0:
        raise GenlabError("NES needs samples >= 1 and sigma > 0")
    alpha = eps / 10 if alpha is None else alpha
    out, used = x.clone(), torch.zeros(x.shape[0], dtype=torch.long)
    if eps == 0:
        return out, used
    for i in range(x.shape[0]):
        oracle = QueryOracle(model, budget)
        x0, adv, label = x[i], x[i].clone(), int(y[i])
        while oracle.used + 2 * samples + 1 <= budget:
            pred = int(oracle(adv[None]).argmax(1))
            if (pred == label) if targeted else (pred != label):
                break
            grad, _ = nes_gradient(oracle, adv, label, samples, sigma, generator)
            step = alpha * grad.sign() * (1 if targeted else -1)  # ascend the target, descend the truth
            adv = (x0 + project(adv + step - x0, eps, "linf")).clamp(0, 1)
        out[i], used[i] = adv, oracle.used
    return out, used
