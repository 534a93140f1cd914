"""Diffusion purification (Nie et al. 2022, "Diffusion models for adversarial purification"): noise the
input to a small timestep t*, run the reverse process of a diffusion model back to t = 0, then classify.
The noise drowns the adversarial perturbation; the model restores a clean-looking image of the same
content. Note the adversary here is oblivious to the purifier: an adaptive attack that differentiates
through the sampling (or uses BPDA/EOT, Athalye et al. 2018) weakens it considerably."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genlab.adversarial.attacks import check_inputs, pgd
from genlab.adversarial.evaluation import accuracy, spread
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
    strength). The attack does not see the purifier (an adaptive one would do better)."""
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
        report["purified"][str(s)] = {
            "clean": accuracy(model, clean_p, y),
            "attacked": accuracy(model, adv_p, y),
        }
        log(
            f"strength {s}: clean {report['purified'][str(s)]['clean']:.1%}, "
            f"attacked {report['purified'][str(s)]['attacked']:.1%}"
        )
    return report, torch.cat(rows)
