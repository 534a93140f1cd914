"""`TextToImagePipeline`: a text-conditional diffusion run as a callable, in the manner of diffusers'
StableDiffusionPipeline: prompt -> text encoder -> U-Net with cross-attention -> image."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from genlab.clip.model import CLIP
from genlab.diffusion.attention_maps import CrossAttentionRecorder
from genlab.diffusion.config import DiffusionConfig
from genlab.diffusion.generate import generate, step_recorder
from genlab.diffusion.guides import CLIPGuide
from genlab.diffusion.networks import LatentDiffusion, image_shape, load_network, sample_shape
from genlab.diffusion.schedules import NoiseSchedule
from genlab.diffusion.stable_diffusion import StableDiffusion, is_checkpoint
from genlab.errors import GenlabError
from genlab.nn.precision import check_precision
from genlab.nn.text import SPECIALS, Tokenizer
from genlab.nn.text_unet import TextUNet
from genlab.pipelines.diffusion import tensor_to_pil
from genlab.train.distributed import pick_device


@dataclass
class TextToImageOutput:
    images: list[Image.Image]
    tensors: torch.Tensor  # (N, C, H, W) in [0, 1]
    prompts: list[str]  # the prompt of each image
    trajectory: list[torch.Tensor] | None = None
    attention_maps: torch.Tensor | None = None  # (N, max_length, H, W): per token, averaged over steps
    tokens: list[list[str]] | None = None  # the tokens the maps belong to, per image (BOS ... EOS)
    truncated: bool = False


def _as_prompts(prompt: str | list[str], name: str) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise GenlabError(f"{name} must be a string or a non-empty list of strings")
    return prompts


class TextToImagePipeline:
    """``TextToImagePipeline.from_pretrained(run)("a small red circle at the top left").images``, for a
    genlab text-to-image run or a Stable Diffusion checkpoint folder (genlab.diffusion.stable_diffusion).
    """

    def __init__(
        self,
        model: TextUNet | LatentDiffusion | StableDiffusion,
        diffusion: DiffusionConfig | None = None,
        precision: str = "auto",
    ):
        self.model, self.diffusion = model.eval(), diffusion
        self.precision = check_precision(precision)  # of the network's forward passes (genlab.nn.precision)
        if isinstance(model, StableDiffusion):  # its schedule is the checkpoint's own
            self.schedule, self.parameterization = NoiseSchedule(model.schedule), model.parameterization
        elif diffusion is None:
            raise GenlabError("a genlab text-to-image network needs its run's DiffusionConfig (`diffusion`)")
        else:
            self.schedule, self.parameterization = diffusion.noise_schedule(), diffusion.parameterization

    num_classes = 0  # what evaluation asks of every pipeline: no classes here, prompts instead
    class_names = None

    @property
    def unet(self) -> TextUNet | LatentDiffusion:
        """The network called at every denoising step (text encoder and U-Net)."""
        return self.model

    network = unet  # what evaluation counts calls of, in every pipeline

    @property
    def image_shape(self) -> tuple[int, int]:
        """(channels, side) of the images made (the height, for a Stable Diffusion model)."""
        return image_shape(self.model)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images made."""
        if isinstance(self.model, StableDiffusion):
            return self.model.size
        side = self.image_shape[1]
        return side, side

    def _size(self, height: int | None, width: int | None) -> None:
        if height is None and width is None:
            return
        h, w = height or self.image_size[0], width or self.image_size[1]
        if isinstance(self.model, StableDiffusion):
            self.model.set_size(h, w)
        elif (h, w) != self.image_size:
            side = self.image_size[0]
            raise GenlabError(
                f"this run makes {side}x{side} images; it cannot make {w}x{h} (`height`, `width`)"
            )

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        device: str | torch.device = "auto",
        use_ema: bool = True,
        precision: str = "auto",
    ) -> TextToImagePipeline:
        """The run's EMA (or raw) weights on ``device``; ``precision`` "auto" samples with bfloat16 matrix
        products where the device is faster at them, "fp32" never. ``run_dir`` may also be a Stable
        Diffusion checkpoint (a diffusers folder or a Hugging Face cache entry, which has no EMA choice)."""
        dev = pick_device(device) if isinstance(device, str) else device
        if is_checkpoint(run_dir):
            return cls(StableDiffusion.from_folder(run_dir, device=dev, progress=True), None, precision)
        model, diffusion, _ = load_network(run_dir, use_ema=use_ema, device=dev)
        if diffusion.cond != "text":
            raise GenlabError(
                f"{run_dir} is not a text-to-image run (it was trained with `cond` {diffusion.cond}); "
                "use DiffusionPipeline, or train with `cond` text"
            )
        return cls(model, diffusion, precision)

    @property
    def text_unet(self) -> TextUNet:
        """A genlab run's text encoder and U-Net, in pixel space or inside a latent model."""
        return self.model.net if isinstance(self.model, LatentDiffusion) else self.model  # type: ignore[return-value]

    @property
    def reads_embeddings(self) -> bool:
        """Whether the denoiser reads the prompt's CLIP embedding (language-free), not its tokens."""
        return not isinstance(self.model, StableDiffusion) and self.text_unet.config.context == "embedding"

    @property
    def max_tokens(self) -> int:
        """Tokens the text encoder reads, start and end included."""
        if isinstance(self.model, StableDiffusion):
            return self.model.tokenizer.model_max_length
        return self.text_unet.config.tokenizer.max_length

    def read_as(self, prompt: str) -> str | None:
        """``prompt`` as the text encoder's word tokenizer reads it, where that differs from its words
        (genlab.nn.text.Tokenizer.read_as: "tiny" as [UNK], or as "small" with word-minilm); else None."""
        tokenizer = None if isinstance(self.model, StableDiffusion) else self.text_unet.tokenizer
        return tokenizer.read_as(prompt) if isinstance(tokenizer, Tokenizer) else None

    def tokens(self, prompt: str) -> list[str]:
        """The tokens the text encoder sees for ``prompt``: [BOS], words (or bytes), [EOS]."""
        if isinstance(self.model, StableDiffusion):
            return self.model.token_strings(prompt)
        tok = self.text_unet.tokenizer
        ids = tok.encode(prompt)
        return [
            tok.itos[i] if i < len(tok.itos) else repr(chr(i - len(SPECIALS)))
            for i in ids.ids[0][ids.mask[0]]
        ]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        sampler: str = "dpmpp-2m",
        generator: torch.Generator | None = None,
        num_images: int = 4,
        return_trajectory: bool = False,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
        return_attention_maps: bool = False,
        height: int | None = None,
        width: int | None = None,
        clip: CLIP | None = None,
        clip_scale: float = 1.0,
        **sampler_kwargs: Any,
    ) -> TextToImageOutput:
        """``num_images`` images of each prompt. Classifier-free guidance mixes the prompt's prediction
        with the empty prompt's, or with ``negative_prompt``'s when one is given (it then takes the
        unconditional prediction's place, steering away from it); scale 1 is plain conditional sampling.
        ``height`` and ``width`` (pixels, divisible by 8) size a Stable Diffusion model's images; a
        genlab run makes the size it was trained at. A Stable Diffusion model samples its checkpoint's
        own timesteps (``sigmas_kind="discrete"``, spaced as its scheduler config says; a distilled
        model such as SD-Turbo needs them) unless ``sigmas_kind="karras"`` is asked for.

        ``clip`` (a noised CLIP, `genlab train clip --noisy`) guides toward each prompt by the gradient of
        its image-text similarity, ``clip_scale`` times (GLIDE's CLIP guidance), on top of classifier-free
        guidance (``guidance_scale`` 1: none; 0: the model's unconditional prediction alone).
        """
        if num_images < 1:
            raise GenlabError(f"`num_images` must be at least 1 (got {num_images})")
        self._size(height, width)
        if isinstance(self.model, StableDiffusion):  # its own timesteps (the scheduler's), as diffusers
            sampler_kwargs.setdefault("sigmas_kind", "discrete")
        base = _as_prompts(prompt, "prompt")
        negative = _as_prompts("" if negative_prompt is None else negative_prompt, "negative_prompt")
        if len(negative) == 1:
            negative = negative * len(base)
        if len(negative) != len(base):
            raise GenlabError(
                f"give one negative prompt, or one per prompt ({len(base)}), not {len(negative)}"
            )
        prompts = [p for p in base for _ in range(num_images)]
        negatives = [p for p in negative for _ in range(num_images)]
        cond, truncated = self.model.encode_prompts(prompts)
        uncond, truncated_negative = self.model.encode_prompts(negatives)
        length = self.max_tokens
        if any(truncated) or any(truncated_negative):
            warnings.warn(
                f"a prompt was cut to its first {length - 2} tokens (the encoder's limit)", stacklevel=2
            )
        guide = CLIPGuide(clip, prompts) if clip is not None else None
        trajectory: list[torch.Tensor] | None = [] if return_trajectory else None
        record = step_recorder(self.model, num_inference_steps, trajectory, on_step)

        if return_attention_maps and self.reads_embeddings:
            raise GenlabError(
                "this model reads one CLIP embedding per prompt, not its words: it has no per-word "
                "attention maps"
            )
        recorder = CrossAttentionRecorder(self.model, len(prompts), self.image_size)
        if return_attention_maps and not recorder.layers:
            raise GenlabError("this model has no cross-attention layers to draw maps of")
        with recorder if return_attention_maps else nullcontext():
            images = generate(
                self.model,
                self.schedule,
                self.parameterization,
                (len(prompts), *sample_shape(self.model)),
                cond=cond,
                uncond=uncond,
                steps=num_inference_steps,
                sampler=sampler,
                guidance_scale=guidance_scale,
                generator=generator,
                callback=record,
                precision=self.precision,
                guide=guide,
                guide_scale=clip_scale,
                **sampler_kwargs,
            ).cpu()
        maps = tokens = None
        if return_attention_maps:
            maps = recorder.maps
            tokens = [self.tokens(p) for p in prompts]
        return TextToImageOutput(
            tensor_to_pil(images),
            images,
            prompts,
            trajectory,
            maps,
            tokens,
            any(truncated),
        )
