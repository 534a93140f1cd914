"""Training the autoencoder of latent diffusion on the shared engine: reconstruction + beta KL (+ an
optional perceptual term on a genlab classifier's features), with the latent scale factor measured at
every evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab import rundir
from genlab.data import DataConfig, load_splits, save_grid
from genlab.errors import GenlabError
from genlab.metrics.reconstruction import psnr
from genlab.nn.pixels import to_model_space
from genlab.nn.pretrained import config_from_dict
from genlab.nn.vae import VAE, VAEConfig, kl_divergence, latent_statistics, scale_factor
from genlab.train.engine import Batch, Task

RECONSTRUCTIONS = ("l1", "mse")
LATENT_FILE = "latent.json"  # in an autoencoder run: its latent scale factor and latent shape


@dataclass
class VAELossConfig:
    """What the autoencoder minimises; stored as config.json's ``loss``.

    Per image: reconstruction (mean over pixels) + kl_weight * KL / pixels + perceptual_weight * the mean
    squared difference of the classifier's features. kl_weight 1 with the MSE is the ELBO of a Gaussian
    decoder of fixed variance (up to constants); latent diffusion wants a small weight ("KL-reg", 1e-6 in
    Rombach et al. 2022, appendix G), which keeps the latent detailed while pulling it towards N(0, I).
    """

    reconstruction: str = "l1"
    kl_weight: float = 1e-3
    perceptual: str = ""  # a genlab classifier run whose features the reconstruction must keep
    perceptual_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.reconstruction not in RECONSTRUCTIONS:
            raise GenlabError(f"`reconstruction` must be one of {', '.join(RECONSTRUCTIONS)}")
        if self.kl_weight < 0 or self.perceptual_weight < 0:
            raise GenlabError("`kl_weight` and `perceptual_weight` must be >= 0")


class VAETask(Task):
    kind = "vae"

    def __init__(
        self,
        data: DataConfig,
        loss: VAELossConfig | None = None,
        model_config: VAEConfig | None = None,
        **model_options: Any,
    ):
        self.data, self.loss_config = data, loss or VAELossConfig()
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        if model_config is None:
            x = self.train_data.images
            model_config = VAEConfig(in_channels=x.shape[1], image_size=x.shape[2], **model_options)
        self.model = VAE(model_config)
        self.judge = self._perceptual(model_config)

    def _perceptual(self, cfg: VAEConfig) -> nn.Module | None:
        run = self.loss_config.perceptual
        if not run:
            return None
        from genlab.nn.classifier import Classifier

        judge = Classifier.from_pretrained(run)
        jc = judge.config
        if (jc.in_channels, jc.image_size) != (cfg.in_channels, cfg.image_size):
            raise GenlabError(
                f"`perceptual` {run} takes {jc.in_channels}x{jc.image_size} images, the data is "
                f"{cfg.in_channels}x{cfg.image_size}; train a classifier on this data"
            )
        return judge.requires_grad_(False)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> VAETask:
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(VAELossConfig, config.get("loss", {}), "config.json 'loss'"),
            model_config=config_from_dict(VAEConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        return {"data": asdict(self.data), "loss": asdict(self.loss_config)}

    def terms(
        self, model: nn.Module, images: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """The loss's terms, each a mean over the batch, and their weighted sum as ``loss``."""
        x = to_model_space(images)
        recon, mean, logvar = model(x, generator)
        cfg = self.loss_config
        diff = recon - x
        rec = diff.abs().mean() if cfg.reconstruction == "l1" else diff.pow(2).mean()
        kl = kl_divergence(mean, logvar).mean() / x[0].numel()
        out = {"reconstruction": rec, "kl": kl, "loss": rec + cfg.kl_weight * kl}
        if self.judge is not None:
            self.judge.to(x.device)
            # (recon + 1) / 2 without clamping, so that the gradient reaches out-of-range pixels too
            perceptual = F.mse_loss(self.judge.features((recon + 1) / 2), self.judge.features(images))
            out["perceptual"] = perceptual
            out["loss"] = out["loss"] + cfg.perceptual_weight * perceptual
        return out

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        terms = self.terms(model, batch.images, generator)
        return terms.pop("loss"), {k: v.detach() for k, v in terms.items()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """On up to 500 validation images: the reconstruction (from the posterior mean) as PSNR, the
        loss's terms, and the latent scale factor."""
        vae: VAE = model  # type: ignore[assignment]
        images = self.val_data.images[:500]
        device = next(vae.parameters()).device
        mean, std = latent_statistics(vae, images)
        with torch.no_grad():
            recon = torch.cat([vae.decode(m.to(device)).cpu() for m in mean.split(250)])
            terms = self.terms(vae, images.to(device), torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(0)
        return {
            "val_psnr": psnr(recon, images),
            **{f"val_{k}": float(v) for k, v in terms.items()},
            "scale_factor": scale_factor(mean, std, g),
        }

    def sample(self, model: nn.Module, path: Path) -> Path:
        """Validation images (odd rows) above their reconstructions (even rows)."""
        vae: VAE = model  # type: ignore[assignment]
        images = self.val_data.images[torch.linspace(0, len(self.val_data) - 1, 32).long()]
        mean, _ = latent_statistics(vae, images)
        with torch.no_grad():
            recon = vae.decode(mean.to(next(vae.parameters()).device)).cpu()
        rows = [t for i in range(0, 32, 8) for t in (images[i : i + 8], recon[i : i + 8])]
        return save_grid(path, torch.cat(rows), nrow=8)


def measure_scale(vae: VAE, images: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """The scale factor over ``images`` and the shape of one latent: what latent diffusion needs."""
    mean, std = latent_statistics(vae, images)
    return {
        "scale_factor": scale_factor(mean, std, torch.Generator().manual_seed(seed)),
        "latent_shape": list(vae.config.latent_shape),
        "images": len(images),
    }


def write_scale_factor(run_dir: str | Path) -> tuple[dict[str, Any], DataConfig]:
    """Measure a trained autoencoder run's latent scale factor over its training images, with its final
    (EMA) weights, and write it to RUN/latent.json, where latent diffusion reads it.

    The factor is 1 / the standard deviation of the latents (Rombach et al. 2022, appendix G), so the
    diffusion model sees latents of unit variance. Returns what was written and the data it was measured
    on."""
    run_dir = Path(run_dir)
    data = config_from_dict(DataConfig, rundir.read_config(run_dir)["data"], "config.json 'data'")
    train_data, _ = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
    stats = measure_scale(VAE.from_pretrained(run_dir), train_data.images)
    rundir.atomic_write_json(run_dir / LATENT_FILE, stats)
    return stats, data
