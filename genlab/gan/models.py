"""Generators and discriminators: the original MLP GAN, DCGAN, and the conditional GAN.

Generators work in the model space [-1, 1] (tanh output, as DCGAN); ``GAN.generate`` is the only place
that turns their output into [0, 1] images. Discriminators return one logit (or critic score) per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_BATCH, MAX_CLASSES, MAX_SIDE, MAX_WIDTH, check_fraction, check_range
from genlab.errors import GenlabError
from genlab.nn.pixels import to_images, to_model_space
from genlab.nn.pretrained import PretrainedMixin

ARCHS = ("mlp", "dcgan", "cgan")
NORMS = ("batch", "layer", "none")


@dataclass
class GANConfig:
    arch: str = "dcgan"  # mlp (Goodfellow et al. 2014), dcgan (Radford et al. 2016), cgan (dcgan + labels)
    in_channels: int = 1
    image_size: int = 28
    z_dim: int = 100
    width: int = 64  # DCGAN: channels of D's first / G's last layer; MLP: hidden units are 4x and 8x this
    num_classes: int = 0  # > 0: class-conditional: one-hot label into G (Mirza & Osindero), projection in D
    clusters: int = 0  # > 0: self-conditioned on k-means clusters of the data (Liu et al. 2020), no labels
    d_norm: str = "batch"  # normalisation in D: batch (DCGAN), layer (WGAN-GP: per-sample), none
    dropout: float = 0.0  # in D after each LeakyReLU (the original paper's regulariser)
    pack: int = 1  # D judges groups of this many samples at once: PacGAN (Lin et al. 2018)
    minibatch_std: bool = False  # DCGAN D sees the batch's feature spread (Karras et al. 2018, section 3)
    spectral_norm: bool = (
        False  # every D layer's weight divided by its largest singular value (Miyato et al.)
    )

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise GenlabError(f"unknown GAN `arch` '{self.arch}'; choose one of {', '.join(ARCHS)}")
        if self.d_norm not in NORMS:
            raise GenlabError(f"unknown discriminator norm '{self.d_norm}'; choose one of {', '.join(NORMS)}")
        if self.z_dim < 1 or self.width < 1:
            raise GenlabError(f"`z_dim` and `width` must be positive (got {self.z_dim}, {self.width})")
        check_range("z_dim", self.z_dim, 1, MAX_WIDTH)
        check_range("width", self.width, 1, MAX_WIDTH)
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("num_classes", self.num_classes, 0, MAX_CLASSES)
        check_range("clusters", self.clusters, 0, MAX_CLASSES)
        check_range("pack", self.pack, 1, MAX_BATCH)
        check_fraction("dropout", self.dropout)
        if self.pack < 1 or (self.pack > 1 and self.conditions):
            raise GenlabError(
                f"`pack` must be 1 or more, and 1 for a conditional GAN (got {self.pack}, arch {self.arch})"
            )
        if self.clusters < 0 or self.clusters == 1 or (self.clusters and self.num_classes):
            raise GenlabError(
                f"`clusters` must be 0 (off) or at least 2, and only for an unconditional `arch` "
                f"(got {self.clusters} with arch {self.arch})"
            )
        if self.arch == "cgan" and self.num_classes < 2:
            raise GenlabError("`arch` cgan needs data with class labels (mnist, digits, shapes, folder:)")
        if self.arch != "mlp":
            dcgan_levels(self.image_size)

    @property
    def conditions(self) -> int:
        """How many values the label given to G and D can take: classes, clusters, or 0 (none)."""
        return self.num_classes or self.clusters


def dcgan_levels(image_size: int) -> tuple[int, int]:
    """(number of stride-2 stages, side of the smallest feature map): as many halvings (at most 4) as
    keep the side whole and at least 4, e.g. 28 -> 7 (2 stages), 32 -> 4 (3), 64 -> 4 (4)."""
    k = 0
    while k < 4 and image_size % 2 ** (k + 1) == 0 and image_size // 2 ** (k + 1) >= 4:
        k += 1
    if k == 0:
        raise GenlabError(
            f"a DCGAN needs an even image side of at least 8 (got {image_size}); "
            "pass `image_size` 32 or use `arch` mlp"
        )
    return k, image_size // 2**k


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # over (C, H, W) of each sample, as Gulrajani et al. advise for the critic
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    if num_classes == 0:
        return None
    if labels is None:
        raise GenlabError("this GAN is class-conditional: give class labels")
    return F.one_hot(labels.long(), num_classes).to(like)


def _add_cluster_prior(generator: nn.Module, cfg: GANConfig) -> None:
    """A self-conditioned generator carries p(c), the share of the training data in each cluster (set by
    training; saved with the weights), to draw clusters from."""
    if cfg.clusters:
        generator.register_buffer("cluster_prior", torch.full((cfg.clusters,), 1.0 / cfg.clusters))


def clusters_of(z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The cluster c ~ p(c) that latent z stands for: inverse-CDF sampling of the categorical prior at
    u = Phi(z_0), which is U(0, 1) for z_0 ~ N(0, 1). The image then stays a function of z alone, so
    seeds, interpolation and latent arithmetic work as for any unconditional GAN."""
    u = 0.5 * (1 + torch.erf(z[:, 0].double() / math.sqrt(2)))
    cdf = prior.double().cumsum(0)
    return torch.searchsorted(cdf / cdf[-1], u.contiguous()).clamp(max=len(prior) - 1)


def _cluster_labels(
    generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor | None:
    if labels is None and generator.cfg.clusters:
        return clusters_of(z, generator.cluster_prior)
    return labels


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """Stack each run of m consecutive samples along the channels, (N, C, ...) -> (N/m, mC, ...): D then
    judges m samples jointly and sees their variety, which penalises a collapsed generator (Lin et al.
    2018, "PacGAN", section 3)."""
    if m == 1:
        return x
    if x.shape[0] % m:
        raise GenlabError(f"this discriminator packs {m} samples: give a batch size divisible by {m}")
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


def check_pack(pack: int, batch_size: int) -> None:
    """Refuse a training batch that does not split into packs of ``pack`` samples before training
    starts, rather than at D's first step."""
    if pack > 1 and batch_size % pack:
        raise GenlabError(f"`pack` {pack} needs a `batch_size` divisible by it")


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with LeakyReLU(0.2) (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (+ one-hot label) -> 4w -> 8w -> C*H*W, tanh (Goodfellow et al. 2014 used ReLU/sigmoid MLPs)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        out = cfg.in_channels * cfg.image_size**2
        self.net = mlp([cfg.z_dim + cfg.conditions, 4 * cfg.width, 8 * cfg.width, out])
        _add_cluster_prior(self, cfg)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        y = _one_hot(_cluster_labels(self, z, labels), self.cfg.conditions, z)
        h = self.net(z if y is None else torch.cat([z, y], 1))
        return torch.tanh(h).view(-1, self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size)


class MLPDiscriminator(nn.Module):
    """C*H*W (+ one-hot label) -> 8w -> 4w -> 1 logit, LeakyReLU and optional dropout."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        inp = cfg.pack * cfg.in_channels * cfg.image_size**2 + cfg.conditions
        self.net = mlp([inp, 8 * cfg.width, 4 * cfg.width, 1], cfg.dropout)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        y = _one_hot(labels, self.cfg.conditions, x)
        h = pack(x, self.cfg.pack).flatten(1)
        return self.net(h if y is None else torch.cat([h, y], 1)).squeeze(1)


class DCGANGenerator(nn.Module):
    """Radford et al. 2016, figure 1: z projected to a small deep tensor, then stride-2 transposed
    convolutions that halve the channels and double the side, BatchNorm and ReLU, tanh at the output."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        k, s0 = dcgan_levels(cfg.image_size)
        c = cfg.width * 2 ** (k - 1)
        self.project = nn.Sequential(
            nn.Linear(cfg.z_dim + cfg.conditions, c * s0 * s0, bias=False),
            nn.Unflatten(1, (c, s0, s0)),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for _ in range(k - 1):
            layers += [
                nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(True),
            ]
            c //= 2
        layers += [nn.ConvTranspose2d(c, cfg.in_channels, 4, 2, 1), nn.Tanh()]
        self.up = nn.Sequential(*layers)
        _add_cluster_prior(self, cfg)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        y = _one_hot(_cluster_labels(self, z, labels), self.cfg.conditions, z)
        return self.up(self.project(z if y is None else torch.cat([z, y], 1)))


class DCGANDiscriminator(nn.Module):
    """Stride-2 convolutions instead of pooling, LeakyReLU(0.2), BatchNorm on all but the first layer,
    one linear logit (Radford et al. 2016, section 3). A conditional one adds the inner product of a
    learned class embedding with its features: the projection discriminator (Miyato & Koyama 2018), which
    follows labels far better than feeding them as input planes (Mirza & Osindero 2014)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        k, s0 = dcgan_levels(cfg.image_size)
        c = cfg.width
        drop = [nn.Dropout(cfg.dropout)] if cfg.dropout else []
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.pack * cfg.in_channels, c, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            *drop,
        ]
        for _ in range(k - 1):
            layers += [
                nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                _norm(cfg.d_norm, 2 * c),
                nn.LeakyReLU(0.2, True),
                *drop,
            ]
            c *= 2
        self.features = nn.Sequential(*layers)
        dims = (c + cfg.minibatch_std) * s0 * s0
        self.head = nn.Linear(dims, 1)
        # Projection (Miyato & Koyama 2018, eq. 3): D(x, y) = psi(phi(x)) + embed(y) . phi(x)
        self.embed = nn.Embedding(cfg.conditions, dims) if cfg.conditions else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(pack(x, self.cfg.pack))
        if self.cfg.minibatch_std:
            h = minibatch_std(h)
        h = h.flatten(1)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise GenlabError("this GAN is class-conditional: give class labels")
            out = out + (self.embed(labels.long()) * h).sum(1)
        return out


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one feature map holding the mean standard deviation of the features over groups of
    ``group`` samples (Karras et al. 2018, "Progressive growing of GANs", section 3): a batch of
    near-identical fakes (a collapsing generator) stands out to D. Mixes samples, like BatchNorm: not for
    a per-sample penalty."""
    n, c, height, width = h.shape
    g = min(group, n)
    while n % g:
        g -= 1
    std = h.reshape(g, n // g, c, height, width).var(0, unbiased=False).add(1e-8).sqrt()
    stat = std.mean(dim=(1, 2, 3)).repeat(g)  # one number per group, given to each of its samples
    return torch.cat([h, stat[:, None, None, None].expand(n, 1, height, width)], 1)


class GAN(PretrainedMixin, nn.Module):
    """The two players of one game, saved and loaded together (``GAN.from_pretrained(run)``)."""

    kind = "gan"
    config_class = GANConfig

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        conv = config.arch in ("dcgan", "cgan")
        self.generator = (DCGANGenerator if conv else MLPGenerator)(config)
        self.discriminator = (DCGANDiscriminator if conv else MLPDiscriminator)(config)
        if conv:
            self.apply(_dcgan_init)
        if config.spectral_norm:
            _spectral_norm(self.discriminator)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of z ~ N(0, I) (on the CPU generator, so a seed gives the same z on any device)."""
        return torch.randn(n, self.config.z_dim, generator=generator).to(self.device)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] for latents ``z`` (and class labels of a conditional GAN)."""
        return to_images(self.generator(z, labels))

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logit for images in [0, 1]."""
        return self.discriminator(to_model_space(images), labels)


def _spectral_norm(module: nn.Module) -> None:
    """Make every linear and convolutional layer of ``module`` 1-Lipschitz by dividing its weight by its
    largest singular value, estimated by one power iteration per step (Miyato et al. 2018, Algorithm 1)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            _spectral_norm(child)


def _dcgan_init(m: nn.Module) -> None:
    """N(0, 0.02) weights, BatchNorm gains N(1, 0.02) (Radford et al. 2016, section 4)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
