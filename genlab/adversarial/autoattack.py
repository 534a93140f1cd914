"""The AutoAttack ensemble (Croce & Hein 2020, section 5): attacks of different kinds run one after the
other, each on the images the ones before left classified right, so an image counts as robust only if it
survives all of them (the worst case per image). genlab's ensemble is APGD with the cross-entropy,
APGD-T (targeted DLR toward the nine runner-up classes) and the query-based Square attack, the
standard version's components less FAB-T, which rarely finds what the others miss (their table 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.adversarial.apgd import apgd, apgd_targeted
from genlab.adversarial.attacks import check_inputs, eval_mode
from genlab.adversarial.square import square_attack
from genlab.errors import GenlabError

COMPONENTS = ("apgd-ce", "apgd-t", "square")


@dataclass(frozen=True)
class AutoAttackConfig:
    steps: int = 100  # APGD iterations, per restart and per target
    targets: int = 9  # APGD-T's target classes (fewer when the model has fewer classes)
    queries: int = 5000  # Square's queries per image
    components: tuple[str, ...] = COMPONENTS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.components) - set(COMPONENTS))
        if unknown or not self.components:
            raise GenlabError(
                f"unknown AutoAttack components {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(COMPONENTS)}"
            )
        if self.steps < 1 or self.targets < 1 or self.queries < 1:
            raise GenlabError("AutoAttack needs steps, targets and queries of at least 1")


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: AutoAttackConfig = AutoAttackConfig(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """The L-inf ensemble on images ``x`` in [0, 1] with labels ``y``: returns (adversarial images, the
    number of images each component was the first to break). An image no component breaks is returned
    as the last component left it."""
    check_inputs(x, y, eps)
    x = x.detach()
    out = x.clone()
    with eval_mode(model), torch.no_grad():
        left = model(x).argmax(1) == y
        classes = model(x[:1]).shape[1]
    broken: dict[str, int] = {}
    for name in cfg.components:
        idx = left.nonzero().squeeze(1)
        if len(idx) == 0 or eps == 0:
            broken[name] = 0
            continue
        xs, ys = x[idx], y[idx]
        if name == "apgd-ce":
            adv = apgd(model, xs, ys, eps, cfg.steps, loss="ce", generator=generator)
        elif name == "apgd-t":
            targets = min(cfg.targets, classes - 1)
            adv = apgd_targeted(model, xs, ys, eps, cfg.steps, targets=targets, generator=generator)
        else:
            adv = square_attack(model, xs, ys, eps, cfg.queries, generator=generator)[0]
        with eval_mode(model), torch.no_grad():
            still = model(adv).argmax(1) == ys
        out[idx] = adv
        left[idx] = still
        broken[name] = int((~still).sum())
    return out, broken
