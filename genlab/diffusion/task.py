"""Training a diffusion model on the shared engine: Ho et al. (2020) Algorithm 1, with condition dropout."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.data import DataConfig, load_splits, save_grid
from genlab.diffusion.generate import generate, to_model_space
from genlab.diffusion.parameterization import PARAMETERIZATIONS, diffusion_loss
from genlab.diffusion.schedules import SCHEDULES, NoiseSchedule, ScheduleConfig
from genlab.errors import GenlabError
from genlab.nn.pretrained import config_from_dict
from genlab.nn.unet import UNet, UNetConfig
from genlab.train.engine import Batch, Task

CONDITIONS = ("none", "class")


@dataclass
class DiffusionConfig:
    """What the network predicts and under which forward process; stored as config.json's ``diffusion``."""

    schedule: str = "linear"
    timesteps: int = 1000
    parameterization: str = "eps"
    cond: str = "none"
    cond_dropout: float = 0.1  # share of training examples shown without their class, for guidance
    sample_steps: int = 20  # for the grids drawn during training
    sample_guidance: float = 3.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise GenlabError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise GenlabError(
                f"unknown parameterization '{self.parameterization}'; "
                f"choose one of {', '.join(PARAMETERIZATIONS)}"
            )
        if self.cond not in CONDITIONS:
            raise GenlabError(f"unknown conditioning '{self.cond}'; choose one of {', '.join(CONDITIONS)}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise GenlabError(f"--cond-dropout must be in [0, 1) (got {self.cond_dropout})")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(ScheduleConfig(kind=self.schedule, timesteps=self.timesteps))


class DiffusionTask(Task):
    kind = "diffusion"

    def __init__(
        self,
        data: DataConfig,
        diffusion: DiffusionConfig,
        model_config: UNetConfig | None = None,
        **unet_options: Any,
    ):
        """Load the data and build a U-Net fitted to it (or exactly ``model_config``, for resume)."""
        self.data, self.diffusion = data, diffusion
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        if diffusion.cond == "class" and self.train_data.labels is None:
            raise GenlabError(
                f"--cond class needs class labels, and {data.name} has none; "
                "use --cond none or class sub-folders"
            )
        if model_config is None:
            x = self.train_data.images
            model_config = UNetConfig(
                in_channels=x.shape[1],
                image_size=x.shape[2],
                num_classes=self.train_data.num_classes if diffusion.cond == "class" else 0,
                **unet_options,
            )
        self.model = UNet(model_config)
        self.schedule = diffusion.noise_schedule()

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> DiffusionTask:
        """Rebuild the task of a saved run (for --resume) from its config.json."""
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(DiffusionConfig, config.get("diffusion", {}), "config.json 'diffusion'"),
            model_config=config_from_dict(UNetConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {"data": asdict(self.data), "diffusion": asdict(self.diffusion)}
        if self.train_data.class_names is not None:
            sections["class_names"] = list(self.train_data.class_names)
        return sections

    def _labels(self, batch: Batch, generator: torch.Generator) -> torch.Tensor | None:
        if self.diffusion.cond != "class":
            return None
        drop = torch.rand(len(batch), generator=generator) < self.diffusion.cond_dropout
        null = torch.full_like(batch.labels, self.model.config.num_classes)
        return torch.where(drop.to(batch.labels.device), null, batch.labels)

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Ho et al. (2020) Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I), regress the target of x_t."""
        x0 = to_model_space(batch.images)
        n = x0.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        out = model(x_t, t.float(), self._labels(batch, generator))
        return diffusion_loss(self.diffusion.parameterization, out, x0, noise, self.schedule.abar(t)), {}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss on (up to 500) validation images at fixed timesteps and noise, so evaluations compare."""
        data = self.val_data.subset(range(min(500, len(self.val_data))))
        g = torch.Generator().manual_seed(1234)
        device = next(model.parameters()).device
        total = 0.0
        for i in range(0, len(data), 100):
            x0 = to_model_space(data.images[i : i + 100]).to(device)
            t = torch.randint(0, self.schedule.timesteps, (x0.shape[0],), generator=g).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            labels = data.labels[i : i + 100].to(device) if self.diffusion.cond == "class" else None
            out = model(self.schedule.q_sample(x0, t, noise), t.float(), labels)
            loss = diffusion_loss(self.diffusion.parameterization, out, x0, noise, self.schedule.abar(t))
            total += float(loss) * x0.shape[0]
        return {"val_loss": total / len(data)}

    def sample(self, model: nn.Module, path: Path) -> Path:
        """A grid of samples (20 DPM-Solver++ steps, fixed seed): per class in rows when class-conditional."""
        cfg = model.config
        n_classes = cfg.num_classes
        labels = torch.arange(n_classes).repeat_interleave(max(1, 40 // n_classes)) if n_classes else None
        n = len(labels) if labels is not None else 32
        images = generate(
            model,
            self.schedule,
            self.diffusion.parameterization,
            (n, cfg.in_channels, cfg.image_size, cfg.image_size),
            class_labels=labels,
            steps=self.diffusion.sample_steps,
            guidance_scale=self.diffusion.sample_guidance if labels is not None else 1.0,
            generator=torch.Generator().manual_seed(0),
        )
        names = self.train_data.class_names
        captions = [names[int(k)] for k in labels] if labels is not None and names else None
        return save_grid(path, images, captions, nrow=max(1, 40 // n_classes) if n_classes else 8)
