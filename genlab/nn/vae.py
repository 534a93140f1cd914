"""The KL-regularised convolutional autoencoder of latent diffusion (Rombach et al. 2022, section 3 and
appendix G): an encoder that halves the side log2(f) times to a small map of ``latent_channels``, giving
the mean and log-variance of a diagonal Gaussian q(z|x) (Kingma & Welling 2014), and a decoder that maps a
latent back to an image. Images enter and leave in the model space [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_SIDE, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.pixels import to_images, to_model_space
from genlab.nn.pretrained import PretrainedMixin

DOWNSAMPLINGS = (2, 4, 8)


@dataclass
class VAEConfig:
    in_channels: int = 1
    image_size: int = 28
    latent_channels: int = 4
    downsample: int = 4  # f: the latent's side is image_size / f
    base_channels: int = 32  # channels at full resolution, doubled at each halving
    groups: int = 8  # GroupNorm groups

    def __post_init__(self) -> None:
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("latent_channels", self.latent_channels, 1, MAX_WIDTH)
        check_range("base_channels", self.base_channels, 1, MAX_WIDTH)
        check_range("groups", self.groups, 1, self.base_channels)
        if self.downsample not in DOWNSAMPLINGS:
            raise GenlabError(f"`downsample` must be one of {', '.join(map(str, DOWNSAMPLINGS))}")
        if self.image_size % self.downsample:
            raise GenlabError(
                f"the image side {self.image_size} is not divisible by `downsample` {self.downsample}; "
                "pick another factor or `image_size`"
            )
        if self.latent_channels < 1 or self.base_channels % self.groups:
            raise GenlabError(
                f"`latent_channels` must be positive and `base_channels` a multiple of {self.groups}"
            )

    @property
    def levels(self) -> int:
        return int(math.log2(self.downsample))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.downsample
        return self.latent_channels, side, side

    def widths(self) -> list[int]:
        """Channels at each resolution, full size first."""
        return [self.base_channels * 2**i for i in range(self.levels + 1)]


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each sample, summed over its dimensions:
    -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2) (Kingma & Welling 2014, appendix B)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


class ConvResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the input (projected when the width changes)."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w = cfg.widths()
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)]
        for i in range(cfg.levels):
            layers += [ConvResBlock(w[i], w[i + 1], cfg.groups), nn.Conv2d(w[i + 1], w[i + 1], 3, 2, 1)]
        layers += [
            ConvResBlock(w[-1], w[-1], cfg.groups),
            nn.GroupNorm(cfg.groups, w[-1]),
            nn.SiLU(),
            nn.Conv2d(w[-1], 2 * cfg.latent_channels, 3, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # as the LDM code does: exp() stays finite


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w = cfg.widths()
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.latent_channels, w[-1], 3, padding=1),
            ConvResBlock(w[-1], w[-1], cfg.groups),
        ]
        for i in reversed(range(cfg.levels)):
            layers += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Conv2d(w[i + 1], w[i + 1], 3, padding=1),
                ConvResBlock(w[i + 1], w[i], cfg.groups),
            ]
        layers += [nn.GroupNorm(cfg.groups, w[0]), nn.SiLU(), nn.Conv2d(w[0], cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VAE(PretrainedMixin, nn.Module):
    """``encode`` images in [0, 1] to q(z|x)'s (mean, logvar); ``decode`` latents to images in [0, 1]."""

    kind = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def check(self, images: torch.Tensor) -> None:
        cfg = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise GenlabError(
                f"this autoencoder takes images of {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}, "
                f"got {tuple(images.shape[1:])}"
            )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(images)
        return self.encoder(to_model_space(images))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return to_images(self.decoder(z))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x in [-1, 1] -> (reconstruction in [-1, 1], mean, logvar), through z = mean + sigma * e (the
        reparameterisation trick, Kingma & Welling 2014, section 2.4)."""
        mean, logvar = self.encoder(x)
        e = torch.randn(mean.shape, generator=generator).to(mean)
        return self.decoder(mean + (0.5 * logvar).exp() * e), mean, logvar


@torch.no_grad()
def latent_statistics(
    vae: VAE, images: torch.Tensor, batch_size: int = 250
) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z|x)'s mean and standard deviation for every image (on the VAE's device, returned on the CPU)."""
    device = next(vae.parameters()).device
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        mean, logvar = vae.encode(images[i : i + batch_size].to(device))
        means.append(mean.cpu())
        stds.append((0.5 * logvar).exp().cpu())
    return torch.cat(means), torch.cat(stds)


def scale_factor(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """1 / the standard deviation of latents drawn from q(z|x) over a data set, so that scaled latents
    have unit variance like the diffusion's noise (Rombach et al. 2022, section G: "rescale the latent
    by the component-wise standard deviation"; Stable Diffusion's 0.18215)."""
    z = mean + std * torch.randn(mean.shape, generator=generator)
    return float(1.0 / z.flatten().std().clamp_min(1e-8))


def interpolate_latents(z: torch.Tensor, size: int) -> torch.Tensor:
    """Latents (or masks) brought to ``size`` by area averaging (masks of inpainting in latent space)."""
    return F.interpolate(z, size=(size, size), mode="area")
