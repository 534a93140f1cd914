"""`VideoPipeline`: a video run as a callable, in the manner of diffusers' text-to-video pipelines:
``VideoPipeline.from_pretrained(run)("a small red circle moving right", num_frames=16).clips``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from genlab.checks import MAX_FRAMES, check_range
from genlab.diffusion.generate import step_recorder
from genlab.errors import GenlabError
from genlab.nn.precision import check_precision
from genlab.pipelines.diffusion import checked_class_names, class_index, tensor_to_pil
from genlab.train.distributed import pick_device
from genlab.video.generate import generate_clips
from genlab.video.networks import (
    clip_shape,
    denoiser_config,
    load_video_network,
    past_frames,
    takes_first_frame,
)


@dataclass
class VideoOutput:
    clips: torch.Tensor  # (N, T, C, H, W) in [0, 1]
    prompts: list[str] | None  # the prompt of each clip (text runs)
    class_labels: torch.Tensor | None  # the class of each clip (class runs)
    trajectory: list[torch.Tensor] | None = None  # per step, the clips (N, T, C, H, W) as they stood

    @property
    def frames(self) -> list[list[Image.Image]]:
        """Each clip as a list of PIL frames."""
        return [tensor_to_pil(clip) for clip in self.clips]


class VideoPipeline:
    """A text-, class- or unconditional video run; every call may also continue a given first frame."""

    def __init__(
        self, model: torch.nn.Module, diffusion: Any, video: Any, config: dict, precision: str = "auto"
    ):
        self.model, self.diffusion, self.video = model.eval(), diffusion, video
        self.precision = check_precision(precision)
        self.schedule = diffusion.noise_schedule()
        self.parameterization = diffusion.parameterization
        self.class_names = checked_class_names(config.get("class_names"), self.num_classes)

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        device: str | torch.device = "auto",
        use_ema: bool = True,
        precision: str = "auto",
    ) -> VideoPipeline:
        dev = pick_device(device) if isinstance(device, str) else device
        model, diffusion, video, config = load_video_network(run_dir, use_ema=use_ema, device=dev)
        return cls(model, diffusion, video, config, precision)

    network = property(lambda self: self.model)  # what evaluation counts calls of, in every pipeline

    @property
    def num_classes(self) -> int:
        return (
            int(getattr(denoiser_config(self.model), "num_classes", 0))
            if self.diffusion.cond == "class"
            else 0
        )

    @property
    def text(self) -> bool:
        return self.diffusion.cond == "text"

    @property
    def max_frames(self) -> int:
        cfg = denoiser_config(self.model)
        return int(getattr(cfg, "max_frames", getattr(cfg, "frames", MAX_FRAMES)))

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a frame."""
        return clip_shape(self.model, 1)[1:]

    def class_index(self, name: str) -> int:
        return class_index(name, self.class_names, self.num_classes)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        class_labels: torch.Tensor | list[int] | None = None,
        num_frames: int | None = None,
        num_clips: int = 1,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        sampler: str = "ddpm",
        generator: torch.Generator | None = None,
        first_frame: torch.Tensor | None = None,
        factorized: bool | None = None,
        past_guidance: bool | None = None,
        return_trajectory: bool = False,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
        **sampler_kwargs: Any,
    ) -> VideoOutput:
        """``num_clips`` clips of ``num_frames`` frames (default: the training clips') per prompt or class
        label (or in all, unconditionally). ``first_frame`` (C, H, W) or (1 or N, C, H, W) in [0, 1]: the
        clips start from it (image-to-video; the run must be trained with ``frame_cond``). Guidance pushes
        toward the prompt or class and the first frame together; 1 is plain conditional sampling.
        ``factorized`` (default: the run's ``VideoConfig.factorized``): without a first frame, draw one
        from the prompt and continue it (Emu Video's two stages, twice the steps). ``past_guidance``
        (default: the run's ``VideoConfig.past_guidance``; autoregressive runs): the unconditional side of
        guidance has no past frames either. ``on_step(i, steps, clips)`` sees each step's estimate of the
        clips."""
        frames = self.video.sample_frames if num_frames is None else num_frames
        check_range("num_frames", frames, 2, self.max_frames)
        check_range("num_clips", num_clips, 1, 1000)
        prompts = labels = None
        kwargs: dict[str, Any] = {}
        if self.text:
            if prompt is None:
                raise GenlabError(
                    'this is a text-to-video run: give a prompt, e.g. "a red circle moving right"'
                )
            base = [prompt] if isinstance(prompt, str) else list(prompt)
            if not base or not all(isinstance(p, str) for p in base):
                raise GenlabError("`prompt` must be a string or a non-empty list of strings")
            prompts = [p for p in base for _ in range(num_clips)]
            cond, _ = self.model.encode_prompts(prompts)
            uncond, _ = self.model.encode_prompts([""] * len(prompts))
            kwargs = dict(cond=cond, uncond=uncond)
            n = len(prompts)
        elif prompt is not None:
            raise GenlabError(
                "this video run was trained without text (`cond` none or class): give no prompt"
            )
        else:
            if class_labels is not None:
                if not self.num_classes:
                    raise GenlabError("this video run was trained without classes: give no `class_labels`")
                base_labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
                labels = base_labels.repeat_interleave(num_clips)
                kwargs = dict(class_labels=labels)
            n = len(labels) if labels is not None else num_clips
        shape = (n, *clip_shape(self.model, frames))
        factorized = self.video.factorized if factorized is None else factorized
        continues = takes_first_frame(self.model) and bool(self.video.frame_cond)
        if (first_frame is not None or factorized) and not continues:
            raise GenlabError(
                "this run was not trained to continue a first frame (`first_frame`, `factorized`): "
                "train it with `frame_cond` (a U-Net run)"
            )
        if first_frame is not None:
            image = first_frame if first_frame.ndim == 4 else first_frame[None]
            if tuple(image.shape[1:]) != shape[2:]:
                raise GenlabError(
                    f"the first frame must be {shape[2:]} (C, H, W), got {tuple(image.shape[1:])}"
                )
            kwargs["first_frame"] = image.expand(n, *shape[2:]) if len(image) == 1 else image
        stages = 2 if factorized and first_frame is None else 1
        if past_frames(self.model):  # a sampler run for every frame it draws
            stages = frames - (first_frame is not None)
        trajectory: list[torch.Tensor] | None = [] if return_trajectory else None
        record = step_recorder(None, stages * num_inference_steps, trajectory, on_step)

        clips = generate_clips(
            self.model,
            self.schedule,
            self.parameterization,
            shape,
            steps=num_inference_steps,
            sampler=sampler,
            guidance_scale=guidance_scale,
            generator=generator,
            callback=record,
            precision=self.precision,
            noise_correlation=self.video.noise_correlation,
            factorized=factorized,
            past_guidance=self.video.past_guidance if past_guidance is None else past_guidance,
            **kwargs,
            **sampler_kwargs,
        ).cpu()
        return VideoOutput(clips, prompts, labels, trajectory)
