"""Training a classifier on the shared engine: cross-entropy on augmented batches, accuracy on validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import check_range
from genlab.classification.evaluate import evaluate_classifier, predict
from genlab.data import DataConfig, load_splits, save_grid
from genlab.data.augment import random_affine
from genlab.errors import GenlabError
from genlab.nn.classifier import Classifier, ClassifierConfig
from genlab.nn.pretrained import config_from_dict
from genlab.train.engine import Batch, Task


@dataclass
class ClassifierDataConfig(DataConfig):
    augment: bool = True  # small random rotations, shifts and scalings (random_affine)
    # Gaussian noise of this standard deviation added to every training image, pixels not clipped: the
    # base classifier of randomized smoothing is trained on the noise it will be certified under (Cohen
    # et al. 2019, section 3.4 and appendix; `genlab defend certify`)
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("noise_sigma", self.noise_sigma, 0.0, 10.0)


class ClassifierTask(Task):
    kind = "classifier"

    def __init__(
        self, data: ClassifierDataConfig, model_config: ClassifierConfig | None = None, **model_options: Any
    ):
        """Load the splits of ``data`` and build a Classifier fitted to them.

        ``model_config`` rebuilds a saved model exactly (resume); otherwise ``model_options`` (widths,
        hidden, dropout) shape a new one whose channels, size, classes and normalisation come from the data.
        """
        self.data = data
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        if self.train_data.labels is None:
            raise GenlabError(
                f"data set {data.name} has no class labels; a classifier needs class sub-folders or 'label' "
                "entries in metadata.jsonl"
            )
        if model_config is None:
            x = self.train_data.images
            model_config = ClassifierConfig(
                in_channels=x.shape[1],
                image_size=x.shape[2],
                num_classes=self.train_data.num_classes,
                mean=tuple(x.mean(dim=(0, 2, 3)).tolist()),
                std=tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()),
                class_names=tuple(self.train_data.class_names or ()),
                **model_options,
            )
        self.model = Classifier(model_config)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> ClassifierTask:
        """Rebuild the task of a saved run (for --resume) from its config.json."""
        data = config_from_dict(ClassifierDataConfig, config.get("data", {}), "config.json 'data'")
        return cls(
            data, model_config=config_from_dict(ClassifierConfig, config["model"], "config.json 'model'")
        )

    def config_sections(self) -> dict[str, Any]:
        return {"data": asdict(self.data)}

    def augmented(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A training batch as the model learns from it: randomly transformed, and noised when the data
        config asks for Gaussian noise."""
        x = random_affine(images, generator) if self.data.augment else images
        if self.data.noise_sigma > 0:
            x = x + self.data.noise_sigma * torch.randn(x.shape, generator=generator).to(x)
        return x

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        x = self.augmented(batch.images, generator)
        logits = model(x)
        loss = F.cross_entropy(logits, batch.labels)
        return loss, {"train_acc": (logits.argmax(1) == batch.labels).float().mean().detach()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        m = evaluate_classifier(model, self.val_data)
        out = {"val_acc": m["accuracy"], "val_loss": m["loss"]}
        if self.data.noise_sigma > 0:  # the base classifier of smoothing is judged on noisy images
            images = self.val_data.images
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
            probs = predict(model, images + self.data.noise_sigma * noise)
            out["val_noisy_acc"] = float((probs.argmax(1) == self.val_data.labels).float().mean())
        return out

    def sample(self, model: nn.Module, path: Path) -> Path:
        """Validation images captioned with the predicted class: the mistakes first (with the truth), then
        images spread evenly over the split."""
        probs = predict(model, self.val_data.images)
        labels = self.val_data.labels
        pred = probs.argmax(1)
        wrong = (pred != labels).nonzero().flatten()[:8]
        spread = torch.linspace(0, len(labels) - 1, 32 - len(wrong)).round().long()
        chosen = torch.cat([wrong, spread])
        names = self.model.config.class_names or tuple(str(i) for i in range(probs.shape[1]))
        captions = []
        for i in chosen.tolist():
            k, y = int(pred[i]), int(labels[i])
            caption = f"{names[k]} ({probs[i, k]:.0%})"
            captions.append(caption if k == y else f"{caption} true {names[y]}")
        return save_grid(path, self.val_data.images[chosen], captions, nrow=8)
