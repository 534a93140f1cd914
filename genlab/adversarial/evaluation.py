"""Robustness evaluation: accuracy under each attack at each epsilon, pictures of what the attacks do, and
the sanity checks that catch gradient masking (Carlini et al. 2019, "On evaluating adversarial
robustness", section 5): eps = 0 changes nothing, more PGD steps never help the model, a black-box attack
does not beat the white-box one by a wide margin, accuracy falls as epsilon grows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.adversarial.apgd import apgd, apgd_targeted
from genlab.adversarial.attacks import check_inputs, fgsm, mi_fgsm, pgd
from genlab.adversarial.autoattack import AutoAttackConfig, autoattack
from genlab.adversarial.blackbox import nes_attack
from genlab.adversarial.minimal import carlini_wagner_l2, deepfool, l2_norms
from genlab.adversarial.square import square_attack
from genlab.classification.evaluate import predict
from genlab.data import ImageDataset
from genlab.errors import GenlabError

WHITE_BOX = ("fgsm", "mi-fgsm", "pgd", "pgd-l2", "apgd-ce", "apgd-dlr", "apgd-t", "deepfool", "cw")
BLACK_BOX = ("nes", "square")
ATTACK_NAMES = (*WHITE_BOX, *BLACK_BOX, "autoattack")
L_INF_GRADIENT = ("pgd", "apgd-ce", "apgd-dlr", "apgd-t")  # what a black-box L-inf attack is held against
BLACK_BOX_MARGIN = 0.05  # black-box accuracy may undercut white-box by this much (sampling noise) at most


@dataclass
class RobustnessConfig:
    eps: tuple[float, ...] = (0.1, 0.2, 0.3)
    attacks: tuple[str, ...] = ("fgsm", "pgd")
    pgd_steps: int = 40
    l2_scale: float = (
        5.0  # pgd-l2, deepfool, cw: eps * l2_scale is the L2 radius (28x28: 0.3 L-inf ~ 1.5-2 L2 in Madry)
    )
    n: int = 500
    blackbox_n: int = 50  # images attacked by NES (each costs up to blackbox_budget queries)
    blackbox_budget: int = 2000
    seed: int = 0
    apgd_steps: int = 100  # APGD's iterations (Croce & Hein's 100), also inside autoattack
    queries: int = 5000  # Square's queries per image, also inside autoattack
    restarts: int = 1  # PGD runs from new random starts (pgd, pgd-l2), each image keeping its worst

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attacks) - set(ATTACK_NAMES))
        if unknown or not self.attacks:
            raise GenlabError(
                f"unknown `attacks` {', '.join(unknown) or '(none)'}; choose from {', '.join(ATTACK_NAMES)}"
            )
        if any(not e >= 0 for e in self.eps) or not self.eps:
            raise GenlabError("`eps` takes one or more epsilons >= 0, like 0.1,0.2,0.3")
        if self.n < 1 or self.pgd_steps < 1:
            raise GenlabError("`n` and `pgd_steps` must be at least 1")
        if self.apgd_steps < 1 or self.queries < 1 or self.restarts < 1:
            raise GenlabError("`apgd_steps`, `queries` and `restarts` must be at least 1")


def spread(
    images: torch.Tensor, labels: torch.Tensor, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images drawn without replacement by a seeded permutation (data splits may be sorted by class)."""
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[pick], labels[pick]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean())


def run_attack(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: RobustnessConfig,
    steps: int | None = None,
) -> torch.Tensor:
    """Adversarial images of ``name`` at ``eps`` (PGD with ``steps``, default ``cfg.pgd_steps``)."""
    g = torch.Generator().manual_seed(cfg.seed)
    if name == "fgsm":
        return fgsm(model, x, y, eps)
    if name == "mi-fgsm":
        return mi_fgsm(model, x, y, eps)
    if name == "pgd":
        return pgd(model, x, y, eps, steps or cfg.pgd_steps, generator=g, restarts=cfg.restarts)
    if name == "pgd-l2":
        radius = eps * cfg.l2_scale
        return pgd(model, x, y, radius, steps or cfg.pgd_steps, norm="l2", generator=g, restarts=cfg.restarts)
    if name in ("deepfool", "cw"):  # least-L2 attacks: a perturbation larger than the radius does not count
        adv = deepfool(model, x)[0] if name == "deepfool" else carlini_wagner_l2(model, x, y)[0]
        right = predict(model, x).argmax(1) == y  # DeepFool flips a wrong label too, maybe to the true one
        use = right & (l2_norms(adv, x) <= eps * cfg.l2_scale + 1e-6)
        return torch.where(use.view(-1, *([1] * (x.dim() - 1))), adv, x)
    if name == "nes":
        return nes_attack(model, x, y, eps, budget=cfg.blackbox_budget, generator=g)[0]
    if name in ("apgd-ce", "apgd-dlr"):
        return apgd(model, x, y, eps, cfg.apgd_steps, loss=name.removeprefix("apgd-"), generator=g)
    if name == "apgd-t":
        return apgd_targeted(model, x, y, eps, cfg.apgd_steps, targets=_targets(model, x), generator=g)
    if name == "square":
        return square_attack(model, x, y, eps, cfg.queries, generator=g)[0]
    if name == "autoattack":
        settings = AutoAttackConfig(cfg.apgd_steps, _targets(model, x), cfg.queries)
        return autoattack(model, x, y, eps, settings, generator=g)[0]
    raise GenlabError(f"unknown attack '{name}'")


def _targets(model: nn.Module, x: torch.Tensor) -> int:
    """APGD-T's target classes: Croce & Hein's nine, or every other class of a smaller classifier."""
    return min(9, int(predict(model, x[:1]).shape[1]) - 1)


@dataclass
class RobustnessReport:
    clean_accuracy: float
    n: int
    table: dict[str, dict[str, float]] = field(default_factory=dict)  # attack -> {eps: accuracy}
    checks: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, torch.Tensor] = field(default_factory=dict)  # "pgd@0.3" -> adversarial images
    # eps -> the share of images every attack run on all n left classified right (the worst case per image)
    worst_case: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean_accuracy": self.clean_accuracy,
            "n": self.n,
            "accuracy": self.table,
            "worst_case": self.worst_case,
            "checks": self.checks,
        }


def evaluate_robustness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: RobustnessConfig,
    log: Callable[[str], None] = print,
) -> RobustnessReport:
    """Accuracy of ``model`` on ``cfg.n`` of the images (a seeded random subset) under every attack at every
    epsilon, with the sanity checks; NES runs on the first ``cfg.blackbox_n`` of them only and is compared
    with PGD on the same. With two or more attacks on all the images, the report's ``worst_case`` is the
    share of them that survive every one (the per-image worst case AutoAttack reports)."""
    check_inputs(images, labels)
    x, y = spread(images, labels, cfg.n, cfg.seed)
    report = RobustnessReport(accuracy(model, x, y), len(x))
    log(f"clean accuracy {report.clean_accuracy:.1%} on {len(x)} images")
    survivors: dict[str, list[torch.Tensor]] = {str(eps): [] for eps in cfg.eps}
    for name in cfg.attacks:
        xs, ys = (x[: cfg.blackbox_n], y[: cfg.blackbox_n]) if name == "nes" else (x, y)
        row = {}
        for eps in cfg.eps:
            adv = run_attack(name, model, xs, ys, eps, cfg)
            right = predict(model, adv).argmax(1) == ys
            row[str(eps)] = float(right.float().mean())
            if name != "nes":
                survivors[str(eps)].append(right)
            report.examples[f"{name}@{eps}"] = adv[:8]
            log(f"  {name:>10} eps {eps:<5}: accuracy {row[str(eps)]:.1%} ({len(xs)} images)")
        report.table[name] = row
    if sum(name != "nes" for name in cfg.attacks) > 1:
        for eps, masks in survivors.items():
            report.worst_case[eps] = float(torch.stack(masks).all(0).float().mean())
            log(
                f"  worst case per image over {', '.join(a for a in cfg.attacks if a != 'nes')}, eps {eps}: "
                f"accuracy {report.worst_case[eps]:.1%}"
            )
    report.checks = sanity_checks(model, x, y, cfg, report)
    for check in report.checks:
        log(f"  check {'passed' if check['passed'] else 'FAILED'}: {check['name']} ({check['detail']})")
    return report


def sanity_checks(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RobustnessConfig, report: RobustnessReport
) -> list[dict[str, Any]]:
    checks = []
    zero = run_attack("pgd", model, x[:100], y[:100], 0.0, cfg)
    checks.append(
        {
            "name": "eps = 0 is the identity",
            "passed": bool(torch.equal(zero, x[:100])),
            "detail": "PGD at eps 0 on 100 images",
        }
    )
    eps = max(cfg.eps)
    few = accuracy(model, run_attack("pgd", model, x, y, eps, cfg, steps=max(1, cfg.pgd_steps // 4)), y)
    many = report.table.get("pgd", {}).get(str(eps))
    if many is None:
        many = accuracy(model, run_attack("pgd", model, x, y, eps, cfg), y)
    fewer = max(1, cfg.pgd_steps // 4)
    checks.append(
        {
            "name": "more PGD steps are never weaker",
            "passed": many <= few + 0.005,  # different step sizes: allow one image in 200 of noise
            "detail": f"eps {eps}: {fewer} steps {few:.1%}, {cfg.pgd_steps} steps {many:.1%}",
        }
    )
    for name, row in report.table.items():
        values = [row[str(e)] for e in sorted(cfg.eps)]
        checks.append(
            {
                "name": f"{name}: accuracy does not rise with epsilon",
                "passed": all(b <= a + 0.02 for a, b in zip(values, values[1:], strict=False)),
                "detail": ", ".join(f"{v:.1%}" for v in values),
            }
        )
    gradient = [a for a in L_INF_GRADIENT if a in report.table]
    if "square" in report.table and gradient:
        for e in cfg.eps:
            white = min(report.table[a][str(e)] for a in gradient)
            black, names = report.table["square"][str(e)], "/".join(gradient)
            checks.append(
                {
                    "name": f"Square does not beat the gradient attacks at eps {e}",
                    "passed": black >= white - BLACK_BOX_MARGIN,
                    "detail": f"Square {black:.1%}, {names} at best {white:.1%} ({len(x)} images)",
                }
            )
    if "nes" in report.table:
        xs, ys = x[: cfg.blackbox_n], y[: cfg.blackbox_n]
        for e in cfg.eps:
            white = accuracy(model, run_attack("pgd", model, xs, ys, e, cfg), ys)
            black = report.table["nes"][str(e)]
            checks.append(
                {
                    "name": f"black-box does not beat white-box at eps {e}",
                    "passed": black >= white - BLACK_BOX_MARGIN,
                    "detail": f"NES {black:.1%}, PGD {white:.1%} on {len(xs)} images",
                }
            )
    return checks


def magnify(delta: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Perturbations made visible: each scaled so its largest pixel reaches 0 or 1 around mid-gray, and
    the magnification of each."""
    scale = delta.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return 0.5 + 0.5 * delta / scale, (0.5 / scale.flatten()).tolist()


def example_panel(
    images: torch.Tensor, report: RobustnessReport, model: nn.Module, path: str | Path, names: list[str]
) -> Path:
    """Rows: clean images, then per attack at the largest epsilon the adversarial images and their
    perturbations magnified (x - x_adv scaled to fill [0, 1]), captioned with the predictions."""
    from genlab.data import save_grid

    x = images[:8]
    rows, captions = [x], [f"clean: {names[k]}" for k in predict(model, x).argmax(1).tolist()]
    eps = max(float(e) for e in next(iter(report.table.values())))
    for key, adv in report.examples.items():
        name, e = key.split("@")
        if float(e) != eps:
            continue
        n = len(adv)
        pred = predict(model, adv).argmax(1).tolist()
        shown, factors = magnify(adv - x[:n])
        rows += [adv, shown]
        captions += [f"{name} {e}: {names[k]}" for k in pred] + [
            f"x{factors[i]:.0f} perturbation" for i in range(n)
        ]
    return save_grid(path, torch.cat(rows), captions, nrow=len(x))


def class_index(names: list[str], target: str) -> int:
    """The index of the class called ``target`` among the classifier's ``names`` (one-line error if none)."""
    if target not in names:
        raise GenlabError(f"unknown `target` '{target}'; the classifier knows {', '.join(names)}")
    return names.index(target)


def robustness_report(
    run: str,
    model: nn.Module,
    val: ImageDataset,
    names: list[str],
    cfg: RobustnessConfig,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], list[Path]]:
    """`genlab attack eval`: evaluate_robustness on the classifier ``run``'s held-out split ``val``, written
    as JSON to ``out`` (default ``run/attack.json``) with the accuracy-versus-epsilon plot and the example
    panel beside it (``{stem}_curve.png``, ``{stem}_examples.png``). Returns the result and the paths of
    the JSON, the plot and the panel."""
    from genlab import rundir
    from genlab.adversarial.plots import plot_accuracy_vs_eps

    report = evaluate_robustness(model, val.images, val.labels, cfg, log=log)
    path = Path(out) if out else Path(run) / "attack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    curve = plot_accuracy_vs_eps(report, path.with_name(f"{path.stem}_curve.png"))
    panel = example_panel(
        spread(val.images, val.labels, cfg.n, cfg.seed)[0],
        report,
        model,
        path.with_name(f"{path.stem}_examples.png"),
        names,
    )
    result = {
        "run": run,
        **report.to_dict(),
        "settings": {
            "pgd_steps": cfg.pgd_steps,
            "l2_scale": cfg.l2_scale,
            "apgd_steps": cfg.apgd_steps,
            "queries": cfg.queries,
            "restarts": cfg.restarts,
            "seed": cfg.seed,
        },
        "pictures": {"curve": curve.name, "examples": panel.name},
    }
    rundir.atomic_write_json(path, result)
    return result, [path, curve, panel]


def transfer_attack(
    surrogate: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: tuple[float, ...] = (0.1, 0.2, 0.3),
    steps: int = 40,
    attack: str = "pgd",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The transfer attack (Papernot et al. 2017): PGD (or, with ``attack`` "mi-fgsm", momentum iterative
    FGSM) examples crafted on ``surrogate`` and applied to ``target``, which the attack never queries;
    beside them, the surrogate's own accuracy on its examples and a white-box PGD on the target, at each
    epsilon."""
    if attack not in ("pgd", "mi-fgsm"):
        raise GenlabError(f"unknown transfer attack '{attack}'; choose pgd or mi-fgsm")
    s, t = surrogate.config, target.config
    if (s.image_size, s.in_channels) != (t.image_size, t.in_channels):
        raise GenlabError("the surrogate and the target must take images of the same shape")
    report: dict[str, Any] = {"clean": accuracy(target, x, y), "surrogate_clean": accuracy(surrogate, x, y)}
    log(
        f"target clean accuracy {report['clean']:.1%}, surrogate {report['surrogate_clean']:.1%} "
        f"({len(x)} images)"
    )
    for e in eps:
        if attack == "mi-fgsm":
            adv = mi_fgsm(surrogate, x, y, e, steps)
        else:
            adv = pgd(surrogate, x, y, e, steps, generator=torch.Generator().manual_seed(0))
        white = pgd(target, x, y, e, steps, generator=torch.Generator().manual_seed(0))
        row = {"transfer": accuracy(target, adv, y), "surrogate": accuracy(surrogate, adv, y)}
        row["white_box"] = accuracy(target, white, y)
        report[str(e)] = row
        log(
            f"  eps {e}: target accuracy under transfer {row['transfer']:.1%} "
            f"(surrogate itself {row['surrogate']:.1%}; white-box on the target {row['white_box']:.1%})"
        )
    return report
