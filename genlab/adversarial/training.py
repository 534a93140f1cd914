"""Adversarial training on the shared engine: every batch is attacked against the current weights and the
classifier learns from the attacked images, a weighted sum alpha J(x, y) + (1 - alpha) J(x_adv, y)
(Goodfellow et al. 2015, eq. 6, alpha = 0.5; Madry et al. 2018 train on the PGD images alone, alpha = 0);
or TRADES (Zhang et al. 2019): the clean cross-entropy plus beta times the KL divergence between the
predictions on the clean image and on the nearby image that maximises it, trading accuracy for
robustness through beta."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.attacks import NORMS, _per_sample_norm, check_inputs, eval_mode, fgsm, pgd, project
from genlab.adversarial.evaluation import spread
from genlab.checks import check_range
from genlab.classification.evaluate import predict
from genlab.classification.task import ClassifierDataConfig, ClassifierTask
from genlab.diffusion.guides import NoisyClassifierTask
from genlab.errors import GenlabError
from genlab.nn.classifier import ClassifierConfig
from genlab.nn.pretrained import config_from_dict
from genlab.train.engine import Batch

METHODS = ("fgsm", "pgd", "trades")


@dataclass
class AdversarialTrainingConfig:
    """How each batch is attacked; stored as config.json's ``adversarial``."""

    method: str = "pgd"  # fgsm (Goodfellow et al.), pgd (Madry et al.) or trades (Zhang et al.)
    eps: float = 0.3
    steps: int = 10  # PGD steps while training
    alpha: float | None = None  # PGD step size; None: 2.5 eps / steps
    norm: str = "linf"
    clean_weight: float = 0.0  # alpha of the mix: 0 is Madry's (attacked images only), 0.5 Goodfellow's
    warmup_steps: int = 0  # epsilon ramps up linearly over these steps (small nets can stall at full eps)
    eval_steps: int = 20  # PGD steps of the robust validation accuracy
    eval_images: int = 200
    beta: float = 6.0  # TRADES: weight of the robustness term, 1 / lambda of Zhang et al.'s eq. 5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GenlabError(f"unknown adversarial training '{self.method}'; choose {' or '.join(METHODS)}")
        if self.norm not in NORMS:
            raise GenlabError(f"unknown norm '{self.norm}'; choose linf or l2")
        if not self.eps > 0 or self.steps < 1 or not 0 <= self.clean_weight <= 1:
            raise GenlabError("adversarial training needs `eps` > 0, `steps` >= 1, 0 <= `clean_weight` <= 1")
        check_range("beta", self.beta, 0.0, 1000.0)


class AdversarialClassifierTask(ClassifierTask):
    """A classifier task whose loss trains on attacked images; evaluation adds accuracy under PGD."""

    def __init__(
        self,
        data: ClassifierDataConfig,
        adversarial: AdversarialTrainingConfig,
        model_config: ClassifierConfig | None = None,
        **model_options: Any,
    ):
        if data.noise_sigma > 0:  # noisy pixels leave [0, 1], where every attack works
            raise GenlabError("train with Gaussian noise (`noise_sigma`) or adversarially, not both")
        super().__init__(data, model_config, **model_options)
        self.adversarial = adversarial

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> AdversarialClassifierTask:
        return cls(
            config_from_dict(ClassifierDataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(AdversarialTrainingConfig, config["adversarial"], "config.json 'adversarial'"),
            model_config=config_from_dict(ClassifierConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        return {**super().config_sections(), "adversarial": asdict(self.adversarial)}

    def attack(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, step: int = 0
    ) -> torch.Tensor:
        """Attack a batch against the current weights (the bare model: an attack never steps DDP), at the
        epsilon of the ramp at ``step``; PGD's step size scales with it."""
        a = self.adversarial
        scale = min(1.0, (step + 1) / a.warmup_steps) if a.warmup_steps else 1.0
        if a.method == "fgsm":
            return fgsm(self.model, x, y, a.eps * scale)
        alpha = a.alpha * scale if a.alpha is not None else None
        if a.method == "trades":
            return trades_adversary(self.model, x, a.eps * scale, a.steps, alpha, a.norm, generator)
        return pgd(self.model, x, y, a.eps * scale, a.steps, alpha, a.norm, generator=generator)

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        x = self.augmented(batch.images, generator)
        x_adv = self.attack(x, batch.labels, generator, batch.step)
        if self.adversarial.method == "trades":
            return self.trades_loss(model, x, x_adv, batch.labels)
        w = self.adversarial.clean_weight
        logits_adv = model(x_adv)
        loss = (1 - w) * F.cross_entropy(logits_adv, batch.labels)
        logs = {"train_adv_acc": (logits_adv.argmax(1) == batch.labels).float().mean().detach()}
        if w > 0:
            logits = model(x)
            loss = loss + w * F.cross_entropy(logits, batch.labels)
            logs["train_acc"] = (logits.argmax(1) == batch.labels).float().mean().detach()
        return loss, logs

    def trades_loss(
        self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """TRADES (Zhang et al. 2019, eq. 5 and Algorithm 1): CE(f(x), y) + beta KL(f(x) || f(x')), the
        KL averaged over the batch, gradients through both predictions."""
        logits, logits_adv = model(x), model(x_adv)
        kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
        loss = F.cross_entropy(logits, y) + self.adversarial.beta * kl
        logs = {
            "train_acc": (logits.argmax(1) == y).float().mean().detach(),
            "train_adv_acc": (logits_adv.argmax(1) == y).float().mean().detach(),
            "train_kl": kl.detach(),
        }
        return loss, logs

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Clean validation accuracy, and accuracy under PGD at the training epsilon (fixed images, seed)."""
        out = super().evaluate(model)
        a = self.adversarial
        x, y = spread(self.val_data.images, self.val_data.labels, a.eval_images)
        with torch.enable_grad():
            adv = pgd(
                model, x, y, a.eps, a.eval_steps, norm=a.norm, generator=torch.Generator().manual_seed(0)
            )
        out["val_robust_acc"] = float((predict(model, adv).argmax(1) == y).float().mean())
        return out


def trades_adversary(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float | None = None,
    norm: str = "linf",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TRADES' inner maximisation (Zhang et al. 2019, Algorithm 1, lines 5-7): from x + 0.001 N(0, I),
    ``steps`` steps of size ``alpha`` (default 2.5 eps / steps) up the gradient of KL(f(x) || f(x')),
    by its sign (L-inf) or direction (L2), each projected onto the eps-ball and [0, 1]. No label is used:
    the image is pushed to where the prediction changes most, whatever it was."""
    check_inputs(x, eps=eps)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    with eval_mode(model):
        with torch.no_grad():
            clean = F.softmax(model(x), 1)
        noise = 0.001 * torch.randn(x.shape, generator=generator).to(x)
        adv = (x + noise).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(adv), 1), clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, adv)
            step = grad.sign() if norm == "linf" else grad / _per_sample_norm(grad)
            adv = (x + project(adv.detach() + alpha * step - x, eps, norm)).clamp(0, 1)
    return adv.detach()


def classifier_task(
    data: ClassifierDataConfig,
    adversarial: AdversarialTrainingConfig | None = None,
    noisy: bool = False,
    **model_options: Any,
) -> ClassifierTask:
    """The training task of a new classifier (``model_options``: widths, hidden, dropout): plain,
    adversarially trained when ``adversarial`` says how each batch is attacked, or noise-aware
    (``noisy``: on images noised by the diffusion forward process, the guide of classifier guidance)."""
    if noisy:
        if adversarial is not None:
            raise GenlabError("a classifier is trained either `noisy` or adversarially, not both")
        return NoisyClassifierTask(data, **model_options)
    if adversarial is None:
        return ClassifierTask(data, **model_options)
    return AdversarialClassifierTask(data, adversarial, **model_options)


def classifier_task_from_run_config(config: dict[str, Any]) -> ClassifierTask:
    """The task of a saved classifier run (to resume it): adversarial when its config.json has an
    ``adversarial`` section, noise-aware when its model takes timesteps, as `classifier_task` made it."""
    if "adversarial" in config:
        return AdversarialClassifierTask.from_run_config(config)
    if config.get("model", {}).get("noise_timesteps"):
        return NoisyClassifierTask.from_run_config(config)
    return ClassifierTask.from_run_config(config)
