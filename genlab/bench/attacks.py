"""genlab's attacks against torchattacks' on one classifier and the same images: APGD with the cross-entropy,
APGD-T (targeted DLR) and Square, each run by both at the same settings, their robust accuracy, the per-image
worst case over the three, and the seconds each took (one after the other in this process, so a busy
machine slows both alike). torchattacks is the peer only here and in tests; it installs with
``pip install --no-deps torchattacks`` (it declares a torchvision it does not need).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from genlab.adversarial.apgd import apgd, apgd_targeted
from genlab.adversarial.square import square_attack
from genlab.classification.evaluate import predict

PEER_HINT = "pip install --no-deps torchattacks"


@dataclass
class AttackBenchSettings:
    eps: float = 0.3
    n: int = 500
    steps: int = 100  # APGD iterations
    targets: int = 9  # APGD-T's target classes
    queries: int = 1000  # Square's queries per image
    seed: int = 0


def _attacks(settings: AttackBenchSettings, classes: int) -> dict[str, tuple[Callable, Callable | None]]:
    """name -> (ours, theirs or None): each takes (model, x, y) and returns adversarial images."""
    s = settings
    targets = min(s.targets, classes - 1)

    def g() -> torch.Generator:
        return torch.Generator().manual_seed(s.seed)

    ours = {
        "apgd-ce": lambda m, x, y: apgd(m, x, y, s.eps, s.steps, generator=g()),
        "apgd-t": lambda m, x, y: apgd_targeted(m, x, y, s.eps, s.steps, targets=targets, generator=g()),
        "square": lambda m, x, y: square_attack(m, x, y, s.eps, s.queries, generator=g())[0],
    }
    try:
        import torchattacks
    except ImportError:
        return {name: (attack, None) for name, attack in ours.items()}
    theirs = {
        "apgd-ce": lambda m, x, y: torchattacks.APGD(m, eps=s.eps, steps=s.steps, seed=s.seed, loss="ce")(
            x, y
        ),
        "apgd-t": lambda m, x, y: torchattacks.APGDT(
            m, eps=s.eps, steps=s.steps, seed=s.seed, n_classes=targets + 1
        )(x, y),
        "square": lambda m, x, y: torchattacks.Square(m, eps=s.eps, n_queries=s.queries, seed=s.seed)(x, y),
    }
    return {name: (ours[name], theirs[name]) for name in ours}


def run_attack_bench(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: AttackBenchSettings = AttackBenchSettings(),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Robust accuracy and seconds of each attack, ours and (when installed) torchattacks', on images
    ``x`` with labels ``y``; the per-image worst case over the attacks for each side."""
    model.eval()
    classes = int(predict(model, x[:1]).shape[1])
    right = {"ours": [], "torchattacks": []}
    rows: dict[str, dict[str, Any]] = {}
    clean = predict(model, x).argmax(1) == y
    log(f"clean accuracy {clean.float().mean():.1%} on {len(x)} images, eps {settings.eps}")
    for name, (ours, theirs) in _attacks(settings, classes).items():
        row: dict[str, Any] = {}
        for side, attack in (("ours", ours), ("torchattacks", theirs)):
            if attack is None:
                continue
            start = time.perf_counter()
            adv = attack(model, x, y)
            seconds = time.perf_counter() - start
            survived = predict(model, adv).argmax(1) == y
            right[side].append(survived)
            row[side] = {"accuracy": float(survived.float().mean()), "seconds": seconds}
        if "torchattacks" in row:
            row["difference"] = row["ours"]["accuracy"] - row["torchattacks"]["accuracy"]
            row["time_ratio"] = row["ours"]["seconds"] / max(row["torchattacks"]["seconds"], 1e-9)
        rows[name] = row
        log(format_row(name, row))
    worst = {side: float(torch.stack(masks).all(0).float().mean()) for side, masks in right.items() if masks}
    log("worst case per image: " + ", ".join(f"{side} {value:.1%}" for side, value in worst.items()))
    return {
        "settings": asdict(settings),
        "n": len(x),
        "clean_accuracy": float(clean.float().mean()),
        "attacks": rows,
        "worst_case": worst,
        "peer": "torchattacks" if right["torchattacks"] else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "torch": torch.__version__,
    }


def format_row(name: str, row: dict[str, Any]) -> str:
    ours = f"  {name:>8}: ours {row['ours']['accuracy']:.1%} in {row['ours']['seconds']:.1f} s"
    if "torchattacks" not in row:
        return f"{ours} (torchattacks not installed: {PEER_HINT})"
    theirs = row["torchattacks"]
    return (
        f"{ours}, torchattacks {theirs['accuracy']:.1%} in {theirs['seconds']:.1f} s "
        f"(difference {100 * row['difference']:+.1f} points, time ratio {row['time_ratio']:.2f})"
    )
