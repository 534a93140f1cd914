"""CLIP (Radford et al. 2021): an image tower and a text tower projected into one space, where an image
and its caption point the same way.

Image tower: the classifier's conv body (conv-BN-ReLU x2, then 2x2 max-pooling, per stage), flattened so
that where a thing is stays visible (captions name positions), and one dense layer. Text tower: genlab's
pre-norm transformer, pooled at each prompt's EOS token, reading its own token embedding or the frozen
MiniLM's states (``TextEncoderConfig.backbone``). Each ends in a linear projection without bias to
``embed_dim`` and an L2 normalisation, so a dot product of embeddings is a cosine similarity. The logits
are the cosines times a learned scale exp(t) = 1 / temperature, initialised at 1 / 0.07 and clipped at 100
(the paper's section 2.5). Images come in [0, 1]; their normalisation lives inside the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_DEPTH, MAX_SIDE, MAX_TIMESTEPS, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.classifier import Normalize, conv_stage
from genlab.nn.embeddings import TimestepShifts
from genlab.nn.pretrained import PretrainedMixin
from genlab.nn.text import TextEncoder, TextEncoderConfig, TokenizerConfig, build_tokenizer


@dataclass
class CLIPConfig:
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    # Byte-level by default, so that CLIP(CLIPConfig()) works; training fits a word vocabulary to the data.
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="byte"))
    in_channels: int = 3
    image_size: int = 32
    widths: tuple[int, ...] = (32, 64, 128)  # one conv stage per width, each halving the side
    image_hidden: int = 256  # the dense layer after the flattened conv features
    mean: tuple[float, ...] = ()  # per-channel statistics of the training images; () means 0.5 each
    std: tuple[float, ...] = ()
    embed_dim: int = 64  # the joint space
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0  # exp(t) is clipped here "to prevent training instability"
    # > 0: the image tower reads noisy images x_t and their diffusion timestep (GLIDE's noised CLIP,
    # Nichol et al. 2022, section 2.3), the guide of CLIP guidance; t = 0 is a clean image
    noise_timesteps: int = 0

    def __post_init__(self) -> None:
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("the number of widths", len(self.widths), 0, MAX_DEPTH)
        for w in self.widths:
            check_range("every width of the image tower", w, 1, MAX_WIDTH)
        check_range("image_hidden", self.image_hidden, 1, MAX_WIDTH)
        check_range("embed_dim", self.embed_dim, 1, MAX_WIDTH)
        check_range("noise_timesteps", self.noise_timesteps, 0, MAX_TIMESTEPS)
        if not all(s > 0 for s in self.std):
            raise GenlabError(f"std must be positive (got {self.std})")
        self.mean = tuple(self.mean) or (0.5,) * self.in_channels
        self.std = tuple(self.std) or (0.5,) * self.in_channels
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise GenlabError(f"mean and std need one value per image channel ({self.in_channels})")
        if self.text.max_length != self.tokenizer.max_length:
            raise GenlabError("the text encoder and the tokenizer disagree on the maximum prompt length")
        if (self.text.backbone.startswith("minilm")) != (self.tokenizer.kind == "wordpiece"):
            raise GenlabError("a MiniLM text backbone and the 'wordpiece' tokenizer go together")
        if self.embed_dim < 1:
            raise GenlabError(f"embed_dim must be at least 1 (got {self.embed_dim})")
        if not self.widths:
            raise GenlabError("the image tower needs at least one conv stage (widths)")
        if self.image_size // 2 ** len(self.widths) < 1:
            raise GenlabError(
                f"image_size {self.image_size} is too small for {len(self.widths)} pooling stages"
            )
        if not (self.init_temperature > 0 and 1 / self.init_temperature <= self.max_logit_scale):
            raise GenlabError(
                f"init_temperature must be at least 1 / max_logit_scale = {1 / self.max_logit_scale:g} "
                f"(got {self.init_temperature})"
            )


class CLIPOutput(NamedTuple):
    image_embeds: torch.Tensor  # (N, D), unit rows
    text_embeds: torch.Tensor  # (M, D), unit rows
    logit_scale: torch.Tensor  # () the multiplier exp(t) = 1 / temperature, already clipped

    @property
    def logits_per_image(self) -> torch.Tensor:
        """(N, M): scaled cosine of image i and text j."""
        return self.logit_scale * self.image_embeds @ self.text_embeds.T

    @property
    def logits_per_text(self) -> torch.Tensor:
        return self.logits_per_image.T


class ImageEncoder(nn.Module):
    """[0, 1] images -> (N, image_hidden): normalise, conv stages, [flatten, global max], dense + ReLU."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.normalize = Normalize(cfg.mean, cfg.std)
        stages, c = [], cfg.in_channels
        for w in cfg.widths:
            stages.append(conv_stage(c, w))
            c = w
        self.body = nn.Sequential(*stages)
        side = cfg.image_size // 2 ** len(cfg.widths)
        self.head = nn.Sequential(nn.Linear(c * side * side + c, cfg.image_hidden), nn.ReLU())
        # a noised CLIP's timestep, added to every stage's output
        self.time = TimestepShifts(cfg.widths, cfg.image_hidden) if cfg.noise_timesteps else None

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if self.time is None:
            if t is not None:
                raise GenlabError(
                    "this CLIP was trained on clean images; its image tower takes no timestep `t`"
                )
            h = self.body(self.normalize(x))
        else:
            t = torch.zeros(x.shape[0], device=x.device) if t is None else t.reshape(-1).to(x.device)
            h = self.normalize(x)
            for stage, shift in zip(self.body, self.time(t, x.dtype), strict=True):
                h = stage(h) + shift[:, :, None, None]
        # The flattened map keeps where things are; its global maximum says what is there wherever it is,
        # which the dense layer would otherwise have to learn once per position.
        return self.head(torch.cat([h.flatten(1), h.amax(dim=(2, 3))], dim=1))


class CLIP(PretrainedMixin, nn.Module):
    """``encode_images`` / ``encode_text`` give unit vectors in one space; ``forward(images, ids, mask)``
    gives both and the logit scale (a CLIPOutput, whose ``logits_per_image`` is the similarity matrix)."""

    kind = "clip"
    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = cfg = config
        self.tokenizer = build_tokenizer(cfg.tokenizer)
        if self.tokenizer.vocab_size != cfg.text.vocab_size:
            raise GenlabError(
                f"the tokenizer has {self.tokenizer.vocab_size} symbols, "
                f"the text encoder {cfg.text.vocab_size}"
            )
        self.text_encoder = TextEncoder(cfg.text)
        self.image_encoder = ImageEncoder(cfg)
        self.text_projection = nn.Linear(cfg.text.width, cfg.embed_dim, bias=False)
        self.image_projection = nn.Linear(cfg.image_hidden, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        """exp(t), clipped at ``max_logit_scale``: the logits are cosines times this (1 / temperature)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    @property
    def temperature(self) -> float:
        return 1.0 / float(self.scale().detach())

    def encode_images(self, images: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, S, S) images in [0, 1] -> (N, embed_dim) unit vectors; ``t`` (N,): a noised CLIP's
        diffusion timesteps of the images (default 0, clean)."""
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise GenlabError(
                f"this CLIP takes images shaped (N, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        return F.normalize(self.image_projection(self.image_encoder(images, t)), dim=-1)

    def encode_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask (as ``tokenizer.encode`` gives) -> (N, embed_dim) unit vectors."""
        _, pooled = self.text_encoder(ids, mask)  # the final-LayerNorm state at EOS
        return F.normalize(self.text_projection(pooled), dim=-1)

    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        """Prompts -> (N, embed_dim) unit vectors (a prompt longer than max_length keeps its start)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise GenlabError("encode_text needs at least one prompt")
        encoded = self.tokenizer.encode(texts)
        return self.encode_tokens(encoded.ids.to(self.device), encoded.mask.to(self.device))

    def forward(
        self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, t: torch.Tensor | None = None
    ) -> CLIPOutput:
        return CLIPOutput(self.encode_images(images, t), self.encode_tokens(ids, mask), self.scale())
