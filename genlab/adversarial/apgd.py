"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1): PGD with momentum whose step size halves at checkpoints where the
loss stopped rising, restarting from the best point found, so that no step size has to be tuned.

Two losses: the cross-entropy, and the Difference of Logits Ratio (their eq. 5), which, unlike the
cross-entropy, does not vanish when the logits are scaled up (a model that saturates its softmax masks
the cross-entropy's gradient but not this one's); its targeted form (eq. 6) drives every image toward a
chosen wrong class. ``apgd_targeted`` is their APGD-T: the targeted DLR toward each of the classes the
clean image ranks highest after its own, on the images still classified right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.attacks import NORMS, _per_sample_norm, check_inputs, eval_mode, margin, project
from genlab.errors import GenlabError

LOSSES = ("ce", "dlr", "dlr-targeted")
MOMENTUM = 0.75  # alpha of Algorithm 1
RHO = 0.75  # a checkpoint halves the step when the loss rose in at most rho of the steps since the last
# Checkpoints (section 3.2): the first after 22% of the steps, each interval 3% shorter, none under 6%.
FIRST_CHECKPOINT, CHECKPOINT_SHRINK, MIN_CHECKPOINT = 0.22, 0.03, 0.06


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample Difference of Logits Ratio (Croce & Hein 2020, eq. 5), to be maximised:
    -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), with z_pi the logits sorted in decreasing order; with a
    ``target`` t, the targeted form (eq. 6) -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). Both are
    invariant to shifting and scaling the logits."""
    ranked = logits.sort(dim=1, descending=True).values
    if target is None:
        return -margin(logits, y) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    true = logits.gather(1, y[:, None]).squeeze(1)
    if logits.shape[1] < 4:
        raise GenlabError(f"the targeted DLR loss needs at least 4 classes (got {logits.shape[1]})")
    aimed = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - aimed) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)


def _objective(logits: torch.Tensor, y: torch.Tensor, loss: str, target: torch.Tensor | None) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return dlr_loss(logits, y, target if loss == "dlr-targeted" else None)


def checkpoints(steps: int) -> list[int]:
    """The iterations after which APGD checks its progress (section 3.2): w_j = ceil(p_j N) with p_0 = 0,
    p_1 = 0.22 and p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in whole steps as the reference code
    counts them (22, 41, 57, 70, 80, 87, 93, 99 of 100)."""
    length, shrink, least = (
        max(int(share * steps), 1) for share in (FIRST_CHECKPOINT, CHECKPOINT_SHRINK, MIN_CHECKPOINT)
    )
    marks, at = [], 0
    while at + length <= steps:
        at += length
        marks.append(at)
        length = max(length - shrink, least)
    return marks


def halve_step(
    losses: torch.Tensor, best: torch.Tensor, best_before: torch.Tensor, halved_before: torch.Tensor
) -> torch.Tensor:
    """Which images halve their step at a checkpoint (Croce & Hein 2020, section 3.2), given the
    ``losses`` (steps + 1, N) of the iterates since the last checkpoint, the best loss now and at the last
    checkpoint, and whether the step was halved there. Condition 1: the loss rose in at most rho of the
    steps (the reference code's <=); condition 2: the step was not halved last time and the best loss has
    not risen since."""
    rises = (losses[1:] > losses[:-1]).sum(0)
    return (rises <= RHO * (len(losses) - 1)) | (~halved_before & (best <= best_before))


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A point on the boundary of the eps-ball around x, clipped to [0, 1], as Croce & Hein start."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=generator).to(x) * 2 - 1
        t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    else:
        t = torch.randn(x.shape, generator=generator).to(x)
        t = t / _per_sample_norm(t)
    return (x + eps * t).clamp(0, 1)


def _step(
    x: torch.Tensor, point: torch.Tensor, grad: torch.Tensor, size: torch.Tensor, eps: float, norm: str
):
    """P_S(point + size * direction(grad)): a (sign or normalised) gradient step projected onto the
    eps-ball around x and the image box."""
    direction = grad.sign() if norm == "linf" else grad / _per_sample_norm(grad)
    return x + project((point + size * direction).clamp(0, 1) - x, eps, norm)


def _gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, target, eot: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean gradient over ``eot`` passes, per-sample loss, logits) at x: with eot > 1 the gradient of a
    randomised model is averaged (Athalye et al. 2018, expectation over transformation)."""
    grad = torch.zeros_like(x)
    for _ in range(eot):
        point = x.detach().requires_grad_(True)
        logits = model(point)
        value = _objective(logits, y, loss, target)
        (g,) = torch.autograd.grad(value.sum(), point)
        grad += g
    return grad / eot, value.detach(), logits.detach()


def _single_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    norm: str,
    loss: str,
    target: torch.Tensor | None,
    eot: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of Algorithm 1 from a random start: (images, fooled), each image the first iterate that
    fooled the model if any did, else the iterate of highest loss."""
    n = x.shape[0]
    marks = checkpoints(steps)
    x_adv = _random_start(x, eps, norm, generator)
    grad, value, logits = _gradient(model, x_adv, y, loss, target, eot)
    fooled = logits.argmax(1) != y
    adv = torch.where(fooled.view(-1, 1, 1, 1), x_adv, x)
    best, best_value, best_grad = x_adv.clone(), value.clone(), grad.clone()
    size = torch.full((n, 1, 1, 1), 2.0 * eps, device=x.device)
    previous = x_adv.clone()
    history = torch.zeros(steps + 1, n, device=x.device)  # the loss at every iterate
    history[0] = value
    at_last_check = best_value.clone()
    halved_last_check = torch.ones(n, dtype=torch.bool, device=x.device)
    last_mark = 0
    for i in range(steps):
        with torch.no_grad():
            z = _step(x, x_adv, grad, size, eps, norm)
            if i == 0:
                new = z  # x^(1) = z^(1): no momentum from a single point
            else:
                moved = x_adv + MOMENTUM * (z - x_adv) + (1 - MOMENTUM) * (x_adv - previous)
                new = x + project(moved.clamp(0, 1) - x, eps, norm)
            previous, x_adv = x_adv, new
        grad, value, logits = _gradient(model, x_adv, y, loss, target, eot)
        now_fooled = (logits.argmax(1) != y) & ~fooled
        adv[now_fooled], fooled = x_adv[now_fooled], fooled | now_fooled
        history[i + 1] = value
        improved = value > best_value
        best[improved], best_value[improved], best_grad[improved] = (
            x_adv[improved],
            value[improved],
            grad[improved],
        )
        if i + 1 in marks:
            halve = halve_step(history[last_mark : i + 2], best_value, at_last_check, halved_last_check)
            size[halve] /= 2.0
            x_adv[halve], grad[halve] = best[halve], best_grad[halve]
            halved_last_check, at_last_check, last_mark = halve, best_value.clone(), i + 1
    return torch.where(fooled.view(-1, 1, 1, 1), adv, best), fooled


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 100,
    norm: str = "linf",
    loss: str = "ce",
    target: torch.Tensor | None = None,
    restarts: int = 1,
    eot: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD (Croce & Hein 2020, Algorithm 1) on images ``x`` in [0, 1] with true labels ``y``: ``steps``
    iterations maximising ``loss`` ("ce", "dlr", or "dlr-targeted" toward ``target``) within the ``norm``
    ball of radius ``eps``, from a random start on its boundary; each of ``restarts`` runs attacks only the
    images not yet fooled. ``eot`` > 1 averages each gradient over that many passes of a randomised model.

    Returns, per image, an iterate that fooled the model if one did, else the iterate of highest loss of
    the last run, so the result is never weaker than the first iterate.
    """
    check_inputs(x, y, eps)
    if norm not in NORMS:
        raise GenlabError(f"unknown norm '{norm}'; choose linf or l2")
    if loss not in LOSSES:
        raise GenlabError(f"unknown APGD loss '{loss}'; choose one of {', '.join(LOSSES)}")
    if (loss == "dlr-targeted") != (target is not None):
        raise GenlabError("the targeted DLR loss needs target classes, and only it takes them")
    if steps < 1 or restarts < 1 or eot < 1:
        raise GenlabError(
            f"APGD needs steps, restarts and eot of at least 1 (got {steps}, {restarts}, {eot})"
        )
    x = x.detach()
    out = x.clone()
    if eps == 0 or len(x) == 0:
        return out
    with eval_mode(model):
        with torch.no_grad():
            left = model(x).argmax(1) == y
        for _ in range(restarts):
            idx = left.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            aim = target[idx] if target is not None else None
            adv, fooled = _single_run(model, x[idx], y[idx], eps, steps, norm, loss, aim, eot, generator)
            out[idx] = adv
            left[idx[fooled]] = False
    return out.detach()


def apgd_targeted(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 100,
    norm: str = "linf",
    targets: int = 9,
    eot: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD-T (Croce & Hein 2020, section 4): APGD with the targeted DLR loss toward the class the clean
    image ranks second, then third, ... (``targets`` of them), each run on the images still classified
    right. Returns the adversarial images."""
    check_inputs(x, y, eps)
    x = x.detach()
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    classes = logits.shape[1]
    if not 1 <= targets <= classes - 1:
        raise GenlabError(
            f"APGD-T takes 1 to {classes - 1} target classes for {classes} classes (got {targets})"
        )
    ranked = logits.argsort(dim=1, descending=True)
    out = x.clone()
    left = logits.argmax(1) == y
    for k in range(1, targets + 1):
        idx = left.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        adv = apgd(model, x[idx], y[idx], eps, steps, norm, "dlr-targeted", ranked[idx, k], 1, eot, generator)
        out[idx] = adv
        with eval_mode(model), torch.no_grad():
            left[idx] = model(adv).argmax(1) == y[idx]
    return out
