"""The denoising networks a diffusion run can hold, and the one way to build or load them from a run.

A pixel run holds a U-Net (genlab.nn.unet), a DiT (genlab.nn.dit) or a text-conditional U-Net
(genlab.nn.text_unet). A latent run (Rombach et al. 2022) holds a ``LatentDiffusion``: one of those,
working on the scaled latents of a frozen autoencoder that travels in the same weights file, so a latent
run needs nothing but its own directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab import rundir
from genlab.diffusion.config import DiffusionConfig
from genlab.errors import GenlabError
from genlab.nn.dit import DiT, DiTConfig
from genlab.nn.pretrained import PretrainedMixin, config_from_dict
from genlab.nn.text_unet import TextUNet, TextUNetConfig
from genlab.nn.unet import UNet, UNetConfig
from genlab.nn.vae import VAE, VAEConfig

_NETWORKS: dict[str, tuple[type[nn.Module], type]] = {
    "unet": (UNet, UNetConfig),
    "dit": (DiT, DiTConfig),
    "text-unet": (TextUNet, TextUNetConfig),
}


def build_network(kind: str, config: dict[str, Any], source: str = "config") -> nn.Module:
    """A fresh network of ``kind`` (unet, dit, text-unet) from its config as a dict."""
    if kind not in _NETWORKS:
        raise GenlabError(f"{source}: unknown network '{kind}'; this genlab knows {', '.join(_NETWORKS)}")
    cls, config_class = _NETWORKS[kind]
    return cls(config_from_dict(config_class, config, source))


def network_kind(network: nn.Module) -> str:
    for kind, (cls, _) in _NETWORKS.items():
        if type(network) is cls:
            return kind
    raise GenlabError(f"{type(network).__name__} is not a diffusion network")


@dataclass
class LatentConfig:
    vae: VAEConfig = field(default_factory=VAEConfig)
    network: str = "unet"  # unet | dit | text-unet: what denoises the latents
    net: dict[str, Any] = field(default_factory=dict)  # that network's config
    scale_factor: float = 1.0  # latents are multiplied by it before diffusion (Rombach et al., section G)
    vae_run: str = ""  # where the autoencoder was trained (a record; its weights are in this run)

    def __post_init__(self) -> None:
        if self.network not in _NETWORKS:
            raise GenlabError(f"unknown network '{self.network}'; this genlab knows {', '.join(_NETWORKS)}")
        if not 0 < self.scale_factor < math.inf:
            raise GenlabError(f"the latent scale_factor must be a positive number (got {self.scale_factor})")

    @property
    def num_classes(self) -> int:
        return int(self.net.get("num_classes", 0))


class LatentDiffusion(PretrainedMixin, nn.Module):
    """A denoiser of the latents z = scale * E(x) of a frozen autoencoder; ``forward`` is the denoiser's,
    ``encode_images`` / ``decode_latents`` cross between images in [0, 1] and scaled latents."""

    kind = "diffusion"
    config_class = LatentConfig

    def __init__(self, config: LatentConfig):
        super().__init__()
        self.config = config
        self.vae = VAE(config.vae).requires_grad_(False).eval()
        self.net = build_network(config.network, config.net, "config.json 'model' 'net'")

    @classmethod
    def around(cls, vae: VAE, net: nn.Module, scale: float, vae_run: str = "") -> LatentDiffusion:
        """Wrap a fresh denoiser ``net`` around a trained ``vae`` (its weights are copied in)."""
        from dataclasses import asdict

        model = cls(LatentConfig(vae.config, network_kind(net), asdict(net.config), scale, vae_run))
        model.vae.load_state_dict(vae.state_dict())
        model.net.load_state_dict(net.state_dict())
        return model

    def train(self, mode: bool = True) -> LatentDiffusion:
        super().train(mode)
        self.vae.eval()  # frozen: always as it was trained
        return self

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.config.vae.latent_shape

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.config.vae.in_channels, self.config.vae.image_size

    def _text(self) -> TextUNet:
        if not isinstance(self.net, TextUNet):
            raise GenlabError("this latent diffusion model is not text-conditional")
        return self.net

    @property
    def tokenizer(self):
        return self._text().tokenizer

    def encode_prompts(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        return self._text().encode_prompts(prompts)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.net(x, t, **cond)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> scaled latents (the posterior means)."""
        mean, _ = self.vae.encode(images)
        return mean * self.config.scale_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1]."""
        return self.vae.decode(z / self.config.scale_factor)


def sample_shape(network: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of what the sampler integrates: the image for a pixel network, the latent otherwise
    (a latent model, genlab's or Stable Diffusion, says it itself)."""
    if hasattr(network, "decode_latents"):
        return network.sample_shape  # type: ignore[return-value]
    cfg = network.config.denoiser if isinstance(network, TextUNet) else network.config
    return cfg.in_channels, cfg.image_size, cfg.image_size


def image_shape(network: nn.Module) -> tuple[int, int]:
    """(channels, side) of the images a network makes."""
    if hasattr(network, "decode_latents"):
        return network.image_shape  # type: ignore[return-value]
    c, h, _ = sample_shape(network)
    return c, h


def num_classes(network: nn.Module) -> int:
    return int(getattr(getattr(network, "config", None), "num_classes", 0))


def network_class(diffusion: Any) -> type[nn.Module]:
    """The class of the network a run with DiffusionConfig ``diffusion`` holds."""
    if diffusion.latent:
        return LatentDiffusion
    if diffusion.cond == "text":
        return TextUNet
    return DiT if diffusion.backbone == "dit" else UNet


def load_network(run_dir: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"):
    """(network, DiffusionConfig, config.json) of a diffusion run."""
    config = rundir.read_config(run_dir, kind="diffusion")
    diffusion = config_from_dict(DiffusionConfig, config.get("diffusion", {}), f"{run_dir}/config.json")
    network = network_class(diffusion).from_pretrained(run_dir, use_ema=use_ema, device=device)
    return network, diffusion, config
