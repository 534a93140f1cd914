"""The linearity argument (Goodfellow et al. 2015, section 3): for a linear score w.x, the perturbation
eta = eps sign(w) moves the score by eps ||w||_1, which grows with the dimension although no pixel moves by
more than eps; with the lecture's eta = eps w, by eps ||w||_2^2. Runnable on a logistic regression trained
on two digit classes, where the shift and the flipped predictions can be read off."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.data import ImageDataset
from genlab.errors import GenlabError


def score_shift(w: torch.Tensor, eps: float, direction: str = "sign") -> float:
    """How far the perturbation moves w.x: eps ||w||_1 along sign(w), eps ||w||_2^2 along w itself."""
    if direction == "sign":
        return float(eps * w.abs().sum())
    if direction == "w":
        return float(eps * (w * w).sum())
    raise GenlabError(f"unknown direction '{direction}'; choose sign or w")


@dataclass
class LinearityReport:
    classes: tuple[int, int]
    dimension: int
    clean_accuracy: float
    rows: list[dict]  # per eps: predicted shift, measured shift, accuracy, max pixel change


def fit_logistic(x: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 0.5, l2: float = 1e-3):
    """Logistic regression p(y=1|x) = sigmoid(w.x + b) by full-batch gradient descent."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y.float()) + l2 * (w * w).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def linearity_demo(
    data: ImageDataset, classes: tuple[int, int] = (3, 7), eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
) -> LinearityReport:
    """Train w on two classes, then push every image against its class along sign(w) by each eps:
    the measured shift of w.x equals eps ||w||_1 exactly (until [0, 1] clips a pixel)."""
    if data.labels is None:
        raise GenlabError(f"{data.name} has no labels for the linearity demo")
    keep = (data.labels == classes[0]) | (data.labels == classes[1])
    if keep.sum() < 10:
        raise GenlabError(f"too few images of classes {classes} in {data.name}")
    x = data.images[keep].flatten(1)
    y = (data.labels[keep] == classes[1]).long()
    w, b = fit_logistic(x, y)
    sign = (2 * y - 1).float()[:, None]  # push class-1 images down, class-0 images up
    rows = []
    for e in eps:
        adv = x - e * sign * w.sign()  # unclipped: the pure linear argument
        shift = ((x - adv) @ w * sign.squeeze(1)).mean()
        clipped = adv.clamp(0, 1)
        acc = (((clipped @ w + b) > 0).long() == y).float().mean()
        rows.append(
            {
                "eps": e,
                "predicted_shift": score_shift(w, e, "sign"),
                "measured_shift": float(shift),
                "accuracy": float(acc),
                "max_pixel_change": float((clipped - x).abs().max()),
            }
        )
    clean = float((((x @ w + b) > 0).long() == y).float().mean())
    return LinearityReport(classes, x.shape[1], clean, rows)
