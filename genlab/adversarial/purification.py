"""Diffusion purification (Nie et al. 2022, "Diffusion models for adversarial purification"): noise the
input to a small timestep t*, run the reverse process of a diffusion model back to t = 0, then classify.
The noise drowns the adversarial perturbation; the model restores a clean-looking image of the same
content. An adversary oblivious to the purifier is stopped by it; the adaptive one of
``purification_demo`` attacks the purifier and classifier together, the purifier's backward pass taken as
the identity (BPDA) and its randomness averaged over draws (EOT) (Athalye et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genlab.adversarial.adaptive import BPDA, ExpectedPrediction, Preprocessed
from genlab.adversarial.attacks import check_inputs, pgd
from genlab.adversarial.evaluation import accuracy, spread
from genlab.checks import check_range
from genlab.diffusion.generate import generate
from genlab.errors import GenlabError


@torch.no_grad()
def purify(
    pipe,
    images: torch.Tensor,
    strength: float = 0.1,
    steps: int = 10,
    sampler: str = "ddpm",
    generator: torch.Generator | None = None,
    batch_size: int = 250,
) -> torch.Tensor:
    """``images`` in [0, 1] noised to timestep round(strength T) - 1 and denoised by the (unconditional
    side of the) diffusion model of ``pipe`` in ``steps`` steps."""
    check_inputs(images)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        out.append(
            generate(
                pipe.unet,
                pipe.schedule,
                pipe.diffusion.parameterization,
                tuple(x.shape),
                steps=steps,
                sampler=sampler,
                generator=generator,
                init_images=x,
                strength=strength,
            ).cpu()
        )
    return torch.cat(out)


class Purifier(nn.Module):
    """``purify`` as a module: every call draws new noise from ``generator`` (a randomized defense)."""

    def __init__(
        self, pipe, strength: float, steps: int, sampler: str, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.pipe, self.strength, self.steps, self.sampler = pipe, strength, steps, sampler
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return purify(self.pipe, x, self.strength, self.steps, self.sampler, self.generator)


def adaptive_attack(
    model: nn.Module,
    purifier: Purifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    eot: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD on the purified classifier: each gradient is that of the expected prediction over ``eot``
    purifications (EOT), with each purification's backward pass the identity (BPDA), since purify(x) ~ x
    (Athalye et al. 2018, sections 4.1-4.2)."""
    defended = ExpectedPrediction(Preprocessed(BPDA(purifier), model), eot)
    return pgd(defended, x, y, eps, steps, generator=generator)


@dataclass
class PurificationConfig:
    """`genlab defend purify`: the attack, the noise levels tried and how the purifier samples."""

    eps: float = 0.3  # L-inf radius of the PGD attack
    attack_steps: int = 40
    strengths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)  # noise levels t*/T
    steps: int = 10  # denoising steps
    sampler: str = "ddpm"
    n: int = 200  # held-out images (a seeded random subset)
    seed: int = 0
    adaptive_steps: int = 20  # PGD steps of the adaptive attack (0: skip it)
    eot: int = 4  # purifications averaged per gradient of the adaptive attack

    def __post_init__(self) -> None:
        check_range("adaptive_steps", self.adaptive_steps, 0, 10_000)
        check_range("eot", self.eot, 1, 1000)


def purification_demo(
    model: nn.Module,
    pipe,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: PurificationConfig,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Attack ``cfg.n`` of the held-out ``images`` with PGD on ``model`` and purify clean and attacked
    images at every strength: the accuracies, and a picture's rows (8 clean, attacked, then purified per
    strength). The PGD attack does not see the purifier; at each strength an adaptive one
    (``adaptive_attack``) does, and its accuracy stands beside the oblivious one."""
    if pipe.image_shape != (model.config.in_channels, model.config.image_size):
        raise GenlabError("the diffusion model and the classifier must work on images of the same shape")
    x, y = spread(images, labels, cfg.n, cfg.seed)
    adv = pgd(model, x, y, cfg.eps, cfg.attack_steps, generator=torch.Generator().manual_seed(cfg.seed))
    report: dict[str, Any] = {
        "clean": accuracy(model, x, y),
        "attacked": accuracy(model, adv, y),
        "n": len(x),
    }
    log(
        f"no purification: clean {report['clean']:.1%}, PGD-{cfg.attack_steps} at eps {cfg.eps}: "
        f"{report['attacked']:.1%} ({len(x)} images)"
    )
    rows, report["purified"] = [x[:8], adv[:8]], {}
    for s in cfg.strengths:
        g = torch.Generator().manual_seed(cfg.seed)
        clean_p = purify(pipe, x, s, cfg.steps, cfg.sampler, g)
        adv_p = purify(pipe, adv, s, cfg.steps, cfg.sampler, g)
        rows.append(adv_p[:8])
        row = report["purified"][str(s)] = {
            "clean": accuracy(model, clean_p, y),
            "attacked": accuracy(model, adv_p, y),
        }
        line = f"strength {s}: clean {row['clean']:.1%}, attacked (oblivious PGD) {row['attacked']:.1%}"
        if cfg.adaptive_steps:
            purifier = Purifier(pipe, s, cfg.steps, cfg.sampler, torch.Generator().manual_seed(cfg.seed + 1))
            adaptive = adaptive_attack(model, purifier, x, y, cfg.eps, cfg.adaptive_steps, cfg.eot, g)
            g = torch.Generator().manual_seed(cfg.seed)  # the purification the other rows were scored with
            row["adaptive"] = accuracy(model, purify(pipe, adaptive, s, cfg.steps, cfg.sampler, g), y)
            line += f", adaptive (PGD-{cfg.adaptive_steps}, BPDA + EOT-{cfg.eot}) {row['adaptive']:.1%}"
        log(line)
    return report, torch.cat(rows)
