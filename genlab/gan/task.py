"""Training a GAN on the shared engine: two optimizers, k discriminator steps per generator step
(Goodfellow et al. 2014, Algorithm 1), an EMA of the generator, and a monitor that measures FID and the
histogram of generated classes as training goes, so mode collapse shows when it happens."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.data import DataConfig, load_splits, save_grid
from genlab.errors import GenlabError
from genlab.evaluation.monitor import MonitorConfig, monitor_extractor, sample_quality
from genlab.gan.diffaugment import diff_augment, parse_policy
from genlab.gan.game import discriminator_outputs, discriminator_terms, frozen
from genlab.gan.losses import LOSSES, mode_seeking_term
from genlab.gan.models import GAN, GANConfig, clusters_of
from genlab.nn.pixels import to_model_space
from genlab.nn.pretrained import config_from_dict
from genlab.train.config import TrainConfig
from genlab.train.distributed import DistInfo, average_gradients
from genlab.train.engine import Batch, Task, check_finite, clip_gradients
from genlab.train.optim import adamw

# Adam's betas of each game's paper: DCGAN (Radford et al. 2016, section 4) and WGAN-GP (Gulrajani et al.
# 2017, Algorithm 1: beta1 = 0, beta2 = 0.9, five critic steps per generator step).
PAPER_BETAS = {"wgan-gp": (0.0, 0.9)}
DCGAN_BETAS = (0.5, 0.999)
PAPER_D_STEPS = {"wgan-gp": 5}


@dataclass
class GameConfig:
    """How the two players play; stored as config.json's ``game``."""

    loss: str = "ns"  # ns | minimax | wgan-gp | hinge (genlab.gan.losses)
    d_steps: int = 0  # k discriminator steps per generator step; 0: the loss's paper's (5 WGAN-GP, else 1)
    gp_weight: float = 10.0  # lambda of the gradient penalty (WGAN-GP)
    d_lr_ratio: float = 1.0  # D's learning rate over G's (> 1 is the two time-scale rule, Heusel et al.)
    r1: float = 0.0  # gamma of the R1 penalty on real data (Mescheder et al. 2018); 0: off
    mode_seeking: float = 0.0  # weight of the mode-seeking term in G's loss (Mao et al. 2019); 0: off
    augment: str = ""  # DiffAugment of every D input, e.g. "translation,cutout" (genlab.gan.diffaugment)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise GenlabError(f"unknown GAN `loss` '{self.loss}'; choose one of {', '.join(LOSSES)}")
        if self.d_steps < 0:
            raise GenlabError(f"`d_steps` must be 0 (the paper's) or more (got {self.d_steps})")
        if self.gp_weight < 0 or self.d_lr_ratio <= 0 or self.r1 < 0 or self.mode_seeking < 0:
            raise GenlabError("`gp_weight`, `r1` and `mode_seeking` must be >= 0, and `d_lr_ratio` > 0")
        parse_policy(self.augment)

    @property
    def k(self) -> int:
        return self.d_steps or PAPER_D_STEPS.get(self.loss, 1)

    @property
    def betas(self) -> tuple[float, float]:
        return PAPER_BETAS.get(self.loss, DCGAN_BETAS)


class GANTask(Task):
    kind = "gan"

    def __init__(
        self,
        data: DataConfig,
        game: GameConfig | None = None,
        model_config: GANConfig | None = None,
        monitor: MonitorConfig | None = None,
        log=print,
        **model_options: Any,
    ):
        """Load the data and build a GAN fitted to it (or exactly ``model_config``, for resume).

        ``model_options`` are GANConfig fields (arch, z_dim, width, d_norm, dropout); a WGAN-GP critic gets
        layer normalisation unless told otherwise, since BatchNorm would mix the samples of the penalty.
        """
        self.data, self.game, self.monitor = data, game or GameConfig(), monitor or MonitorConfig()
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        if model_config is None:
            x = self.train_data.images
            arch = model_options.get("arch", "dcgan")
            if arch == "cgan" and self.train_data.labels is None:
                raise GenlabError(f"`arch` cgan needs class labels, and {data.name} has none; use dcgan")
            # per-sample penalties forbid BatchNorm: WGAN-GP's critic has layer norm, R1's D none (as
            # each paper's)
            default_norm = "layer" if LOSSES[self.game.loss].penalty else "none" if self.game.r1 else "batch"
            model_options.setdefault("d_norm", default_norm)
            model_config = GANConfig(
                in_channels=x.shape[1],
                image_size=x.shape[2],
                num_classes=self.train_data.num_classes if arch == "cgan" else 0,
                **model_options,
            )
        if (LOSSES[self.game.loss].penalty or self.game.r1 > 0) and (
            model_config.d_norm == "batch" or model_config.minibatch_std or model_config.pack > 1
        ):
            raise GenlabError(
                "the WGAN-GP and R1 penalties are per sample: no `minibatch_std` or `pack`, and `d_norm` "
                "layer or none"
            )
        self.model = GAN(model_config)
        self.clusters = self._cluster(log) if model_config.clusters else None
        self.extractor = monitor_extractor(self.monitor, self.data, log)
        self.dist: DistInfo | None = None  # set by `distribute` in a multi-process run

    def _cluster(self, log) -> torch.Tensor:
        """Self-conditioning (Liu et al. 2020, section 3): the k-means cluster of every training image,
        its pseudo-label for D, and p(c) for G. Liu et al. cluster D's features and recluster every 25k
        steps (more than a whole CPU run); here the clusters are those of the pixels, fixed for the run
        (seed 0: a resumed run finds the same ones)."""
        from genlab.data.kmeans import kmeans

        k = self.model.config.clusters
        if k > len(self.train_data):
            raise GenlabError(f"`clusters` {k} is more than the {len(self.train_data)} training images")
        _, assign = kmeans(self.train_data.images, k, torch.Generator().manual_seed(0))
        sizes = assign.bincount(minlength=k)
        self.model.generator.cluster_prior.copy_(sizes / sizes.sum())
        low, high = int(sizes.min()), int(sizes.max())
        log(f"self-conditioning on {k} k-means clusters of the pixels, {low}-{high} images each")
        return assign

    @classmethod
    def from_run_config(cls, config: dict[str, Any], log=print) -> GANTask:
        """Rebuild the task of a saved run (to resume it) from its config.json."""
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(GameConfig, config.get("game", {}), "config.json 'game'"),
            model_config=config_from_dict(GANConfig, config["model"], "config.json 'model'"),
            monitor=config_from_dict(MonitorConfig, config.get("monitor", {}), "config.json 'monitor'"),
            log=log,
        )

    def config_sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {
            "data": asdict(self.data),
            "game": asdict(self.game),
            "monitor": asdict(self.monitor),
        }
        if self.train_data.class_names is not None:
            sections["class_names"] = list(self.train_data.class_names)
        return sections

    # --- the game ---------------------------------------------------------------------------------

    def optimizers(self, model: nn.Module, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """One Adam(W) per player, with the betas of the loss's paper."""
        assert isinstance(model, GAN)

        def adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
            params = list(module.parameters())
            return adamw(params, lr=lr, betas=self.game.betas, weight_decay=cfg.weight_decay)

        return {
            "generator": adam(model.generator, cfg.lr),
            "discriminator": adam(model.discriminator, cfg.lr * self.game.d_lr_ratio),
        }

    def distribute(self, model: nn.Module, dist: DistInfo) -> nn.Module:
        self.dist = dist  # `step` averages each player's gradients itself: DDP cannot double-backward
        return model

    def _real(
        self, batch: Batch, j: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The real minibatch of discriminator step j (the engine's batch first, then fresh random ones)
        and its labels for D: the classes of a conditional GAN, the clusters of a self-conditioned one."""
        data, device = self.train_data, batch.images.device
        if j == 0:
            images, idx = batch.images, batch.indices.cpu()
        else:
            idx = torch.randint(0, len(data), (len(batch),), generator=generator)
            images = data.images[idx].to(device)
        if self.clusters is not None:
            return images, self.clusters[idx].to(device)
        if self.model.config.num_classes:
            return images, data.labels[idx].to(device)
        return images, None

    def _fake_labels(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The labels of G's samples: uniform classes, or the clusters their latents stand for."""
        cfg = self.model.config
        if cfg.clusters:
            return clusters_of(z, self.model.generator.cluster_prior)
        if cfg.num_classes:
            return torch.randint(0, cfg.num_classes, (len(z),), generator=generator).to(z.device)
        return None

    def step(
        self,
        net: nn.Module,
        batch: Batch,
        generator: torch.Generator,
        optimizers: dict[str, torch.optim.Optimizer],
        cfg: TrainConfig,
    ) -> tuple[torch.Tensor, dict]:
        """k discriminator steps, then one generator step (Goodfellow et al. 2014, Algorithm 1)."""
        gan: GAN = net  # type: ignore[assignment]
        game, rule = self.game, LOSSES[self.game.loss]
        G, D = gan.generator, gan.discriminator
        opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
        n = len(batch)
        cond = gan.config.conditions > 0
        policy = parse_policy(game.augment)

        def judge(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            """D on the augmented images: the same random policy for real and generated ones."""
            return D(diff_augment(x, policy, generator) if policy else x, y)

        logs: dict[str, float] = {}
        for j in range(game.k):
            images, labels = self._real(batch, j, generator)
            real = to_model_space(images)
            y_real = labels if cond else None
            z = gan.latents(n, generator)
            y_fake = self._fake_labels(z, generator)
            if rule.penalty and cond:  # the penalty interpolates within a class: fakes of the reals' labels
                y_fake = y_real
            with torch.no_grad():
                fake = G(z, y_fake)
            d = discriminator_terms(
                partial(judge, y=y_real),
                real,
                fake,
                rule,
                game.gp_weight,
                critic=partial(D, labels=y_real),
                generator=generator,
                r1_gamma=game.r1,
            )
            check_finite(d.loss, "discriminator loss")
            opt_d.zero_grad(set_to_none=True)
            d.loss.backward()
            if self.dist is not None:
                average_gradients(list(D.parameters()), self.dist)
            logs["d_grad_norm"] = clip_gradients(opt_d, cfg.grad_clip)
            opt_d.step()

        pairs = game.mode_seeking > 0 and n >= 2
        z = gan.latents(n, generator)
        if pairs:  # pairs of one condition: the second half repeats the first's z_0 (a cluster) and labels
            z = torch.cat([_repeat_first_half(z[:, :1]), z[:, 1:]], 1)
        y_fake = self._fake_labels(z, generator)
        if pairs and y_fake is not None:
            y_fake = _repeat_first_half(y_fake)
        with frozen(D):
            fake = G(z, y_fake)
            g_loss = rule.generator(judge(fake, y_fake))
            if pairs:
                ms = mode_seeking_term(fake, z)
                logs["mode_seeking"] = ms.item()
                g_loss = g_loss + game.mode_seeking * ms
            check_finite(g_loss, "generator loss")
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
        if self.dist is not None:
            average_gradients(list(G.parameters()), self.dist)
        logs["g_grad_norm"] = clip_gradients(opt_g, cfg.grad_clip)
        opt_g.step()
        if d.penalty is not None:
            logs["gradient_penalty"] = d.penalty.item()
        if d.r1 is not None:
            logs["r1_penalty"] = d.r1.item()
        logs.update(d_loss=d.loss.item(), g_loss=g_loss.item(), **discriminator_outputs(d, rule))
        return d.loss.detach(), logs

    # --- monitoring ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self, model: GAN, n: int, seed: int = 0, batch_size: int = 250
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n images from fixed latents (and, for a conditional GAN, classes in turn)."""
        g = torch.Generator().manual_seed(seed)
        k = model.config.num_classes
        labels = torch.arange(n) % k if k else None
        images = []
        for i in range(0, n, batch_size):
            z = model.latents(min(batch_size, n - i), g)
            y = labels[i : i + batch_size].to(model.device) if labels is not None else None
            images.append(model.generate(z, y).cpu())
        return torch.cat(images), labels

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """FID and precision/recall of ``monitor.samples`` images against the validation split, and the
        histogram of the classes the data's classifier sees in them (modes covered, normalised entropy):
        mode collapse over time."""
        if self.extractor is None or self.monitor.samples == 0:
            return {}
        images, labels = self.generate(model, self.monitor.samples)
        return sample_quality(self.extractor, images, self.val_data, labels)

    def sample(self, model: nn.Module, path: Path) -> Path:
        """64 samples from fixed latents; a conditional GAN draws one class per column."""
        k = model.config.num_classes
        n = 8 * k if k and k <= 10 else 64
        images, labels = self.generate(model, n)
        names = self.train_data.class_names
        captions = [names[int(y)] for y in labels] if labels is not None and names else None
        return save_grid(path, images, captions, nrow=k if k and k <= 10 else 8)


def _repeat_first_half(t: torch.Tensor) -> torch.Tensor:
    """``t`` with its second half replaced by its first (an odd last row stays): the pairs of the
    mode-seeking term (genlab.gan.losses.mode_seeking_term)."""
    h = len(t) // 2
    return torch.cat([t[:h], t[:h], t[2 * h :]])
