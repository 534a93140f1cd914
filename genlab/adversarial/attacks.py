"""White-box attacks on image classifiers, as small checked functions in the manner of cleverhans and
torchattacks: images in [0, 1], models that take them and return logits (normalisation inside), gradients
taken with respect to the input only, the model's parameters and train/eval mode left as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError

NORMS = ("linf", "l2")


def check_inputs(x: torch.Tensor, y: torch.Tensor | None = None, eps: float | None = None) -> None:
    """One-line errors for what attacks cannot take: images outside [0, 1], labels of the wrong shape,
    negative epsilon."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise GenlabError(f"images must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise GenlabError(
            f"images must lie in [0, 1] (got [{x.min().item():.3g}, {x.max().item():.3g}]); "
            "normalisation belongs inside the model"
        )
    if y is not None:
        if y.shape != (x.shape[0],) or y.dtype not in (torch.int64, torch.int32):
            raise GenlabError(
                f"labels must be {x.shape[0]} integer class indices, shape ({x.shape[0]},); got "
                f"{tuple(y.shape)} {y.dtype}"
            )
    if eps is not None and not bool((torch.as_tensor(eps) >= 0).all()):
        raise GenlabError(f"epsilon must be >= 0 (got {eps})")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (BatchNorm statistics and dropout fixed) and frozen, restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of the attack's objective with respect to x, the logits). The objective is the
    cross-entropy of the true label (to ascend), or minus that of the target label when ``targeted``."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    if targeted:
        loss = -loss
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def project(delta: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """The nearest point of the eps-ball around 0: clipping for L-inf, rescaling for L2 (``eps`` a number,
    or a tensor broadcasting against ``delta``: a radius per image)."""
    if norm == "linf":
        return (
            torch.maximum(torch.minimum(delta, eps), -eps) if torch.is_tensor(eps) else delta.clamp(-eps, eps)
        )
    return delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False
) -> torch.Tensor:
    """The fast gradient sign method, x* = clip(x + eps sign(grad_x J(x, y))) (Goodfellow et al. 2015,
    eq. 3); targeted: a step down the target's loss. ``y`` is the true label, or the target."""
    check_inputs(x, y, eps)
    if eps == 0:
        return x.clone()
    with eval_mode(model):
        grad, _ = input_gradient(model, x, y, targeted)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    steps: int = 40,
    alpha: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    restarts: int = 1,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018, eq. 2; iterative FGSM of Kurakin et al. 2017 without
    the random start): ``steps`` steps of size ``alpha`` (default 2.5 eps / steps, Madry et al.'s ratio) along
    the gradient's sign (L-inf) or its direction (L2), each projected back into the eps-ball and [0, 1].

    The returned image is the most damaging of the iterates for each sample (lowest true-class margin,
    or highest target probability), so more steps can never make the attack weaker. With ``restarts`` > 1
    the whole run is repeated from new random starts and each image keeps its most damaging iterate of
    all runs (Madry et al. report their MNIST model under 50 restarts). ``eps`` may be a tensor of one
    radius per image (N,), as a search for each image's least radius needs.
    """
    if restarts < 1 or (restarts > 1 and not random_start):
        raise GenlabError(f"PGD restarts need a random start and must be at least 1 (got {restarts})")
    best, best_score = None, None
    for _ in range(restarts):
        adv, score = _pgd_run(model, x, y, eps, steps, alpha, norm, random_start, targeted, generator)
        if best is None:
            best, best_score = adv, score
        else:
            better = score > best_score
            best[better], best_score[better] = adv[better], score[better]
    return best


def _pgd_run(model, x, y, eps, steps, alpha, norm, random_start, targeted, generator):
    """One PGD run: (the most damaging iterate of each image, its score)."""
    check_inputs(x, y, eps)
    if norm not in NORMS:
        raise GenlabError(f"unknown norm '{norm}'; choose linf or l2")
    if steps < 1:
        raise GenlabError(f"PGD needs at least one step (got {steps})")
    if isinstance(eps, torch.Tensor):
        eps = eps.to(x).reshape(-1, *([1] * (x.dim() - 1)))
    elif eps == 0:
        return x.clone(), torch.full((x.shape[0],), -torch.inf, device=x.device)
    if alpha is not None and not alpha > 0:
        raise GenlabError(f"the step size alpha must be positive (got {alpha})")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start:
        noise = torch.rand(x.shape, generator=generator).to(x) * 2 - 1
        if norm == "l2":  # uniform direction, radius up to eps
            noise = (
                noise / _per_sample_norm(noise) * torch.rand(x.shape[0], 1, 1, 1, generator=generator).to(x)
            )
        delta = project(noise * eps, eps, norm)
        delta = (x + delta).clamp(0, 1) - x
    best = x.clone()
    best_score = torch.full((x.shape[0],), -torch.inf, device=x.device)
    with eval_mode(model):
        for i in range(steps + 1):
            grad, logits = input_gradient(model, x + delta, y, targeted)
            score = _attack_score(logits, y, targeted)
            better = score > best_score
            best[better], best_score[better] = (x + delta)[better], score[better]
            if i == steps:
                break
            step = grad.sign() if norm == "linf" else grad / _per_sample_norm(grad)
            delta = project(delta + alpha * step, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
    return best.detach(), best_score


def mi_fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    decay: float = 1.0,
    targeted: bool = False,
) -> torch.Tensor:
    """Momentum iterative FGSM (Dong et al. 2018, Algorithm 1): g <- mu g + grad / ||grad||_1,
    x <- clip_eps(x + alpha sign(g)) with alpha = eps / steps and mu = ``decay``. The momentum steadies the
    direction across steps, so the examples transfer to other models better than PGD's, which fit the
    surrogate's local bumps."""
    check_inputs(x, y, eps)
    if steps < 1 or decay < 0:
        raise GenlabError(f"MI-FGSM needs steps >= 1 and decay >= 0 (got {steps}, {decay})")
    if eps == 0:
        return x.clone()
    x = x.detach()
    alpha, adv, g = eps / steps, x.clone(), torch.zeros_like(x)
    with eval_mode(model):
        for _ in range(steps):
            grad, _ = input_gradient(model, adv, y, targeted)
            g = decay * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            adv = x + project(adv + alpha * g.sign() - x, eps, "linf")
            adv = adv.clamp(0, 1)
    return adv.detach()


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i per sample: the true class's lead over the best other (> 0: classified right).
    Log-probabilities give the same value as the logits: their per-sample shift cancels."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    return true - logits.scatter(1, y[:, None], -torch.inf).amax(1)


def _attack_score(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How well the attack is doing per sample: the target's log-probability (targeted), or the best
    wrong logit minus the true one (untargeted: > 0 means misclassified)."""
    if targeted:
        return F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    return -margin(logits, y)


def optimize_input(
    model: nn.Module,
    target: torch.Tensor,
    source: torch.Tensor | None = None,
    steps: int = 200,
    lr: float = 0.05,
    lam: float = 0.0,
    shape: tuple[int, int, int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Optimise an image toward class ``target`` by gradient descent on the input: minimise
    CE(f(x), target) + lam ||x - x_source||^2, starting from ``source`` (or from uniform noise of ``shape``,
    with lam = 0: what the network thinks a class looks like). The image stays in [0, 1] through a sigmoid
    parameterisation. Returns the optimised images (N, C, H, W)."""
    if source is not None:
        check_inputs(source, target)
        start = source.detach()
    else:
        if shape is None:
            raise GenlabError("optimize_input needs a source image or the shape of the noise to start from")
        start = torch.rand(target.shape[0], *shape, generator=generator)
    if lam < 0:
        raise GenlabError(f"the regulariser weight lambda must be >= 0 (got {lam})")
    logit = torch.logit(start.clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=lr)
    with eval_mode(model):
        for _ in range(steps):
            x = torch.sigmoid(logit)
            loss = F.cross_entropy(model(x), target, reduction="sum")
            if source is not None and lam > 0:
                loss = loss + lam * ((x - start) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return torch.sigmoid(logit).detach()
