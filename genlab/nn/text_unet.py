"""A text-conditional diffusion network: the transformer text encoder and the U-Net that attends to it.

One module, so that one optimizer, one EMA and one DDP wrapper cover both when they are trained jointly,
and one run directory holds both. The prompt is encoded once per sampling run (``encode_prompts``) and
its token states are passed to every denoising step; in training the encoder runs inside ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from genlab.errors import GenlabError
from genlab.nn.pretrained import PretrainedMixin
from genlab.nn.text import TextEncoder, TextEncoderConfig, Tokenizer, TokenizerConfig
from genlab.nn.unet import UNet, UNetConfig


@dataclass
class TextUNetConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    freeze_text: bool = False  # True for an encoder taken from a CLIP run: it is not trained further
    text_source: str = "joint"  # "joint" (trained with the U-Net from scratch) or "clip:RUN"

    def __post_init__(self) -> None:
        if self.unet.context_dim != self.text.width:
            raise GenlabError(
                f"the U-Net's context width {self.unet.context_dim} differs from the text "
                f"encoder's width {self.text.width}"
            )
        if self.text.max_length != self.tokenizer.max_length:
            raise GenlabError("the text encoder and the tokenizer disagree on the maximum prompt length")


class TextUNet(PretrainedMixin, nn.Module):
    """``forward(x, t, context=..., context_mask=...)`` as a U-Net, or ``forward(x, t, prompt_ids=...,
    prompt_mask=...)``, which encodes the prompts first (training)."""

    kind = "diffusion"
    config_class = TextUNetConfig

    def __init__(self, config: TextUNetConfig):
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config.tokenizer)
        if self.tokenizer.vocab_size != config.text.vocab_size:
            raise GenlabError(
                f"the tokenizer has {self.tokenizer.vocab_size} symbols, "
                f"the text encoder {config.text.vocab_size}"
            )
        self.text_encoder = TextEncoder(config.text)
        self.unet = UNet(config.unet)
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
            states, _ = self.text_encoder(ids, mask)
        return {"context": states, "context_mask": mask}, encoded.truncated

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if prompt_ids is not None:
            context, _ = self.text_encoder(prompt_ids, prompt_mask)
            context_mask = prompt_mask
        return self.unet(x, t, class_labels, context, context_mask)
