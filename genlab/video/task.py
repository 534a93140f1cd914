"""Training a video diffusion model on the shared engine: Ho et al. (2020) Algorithm 1 on whole clips
(one noise level per clip), with the joint image training and first-frame conditioning of
``VideoConfig``, and condition dropout for classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.data import DataConfig, load_clips, save_clips
from genlab.diffusion.config import DiffusionConfig
from genlab.diffusion.parameterization import get_parameterization, network_input
from genlab.diffusion.task import DiffusionTask, draw_noise_levels, noised, text_encoder_config
from genlab.errors import GenlabError
from genlab.nn.pixels import to_model_space
from genlab.nn.pretrained import config_from_dict
from genlab.nn.text_unet import TextUNetConfig, TextVideoNet
from genlab.nn.unet import UNetConfig
from genlab.nn.video_dit import VideoDiTConfig
from genlab.nn.video_unet import VideoUNetConfig
from genlab.train.engine import Batch
from genlab.video.config import VideoConfig
from genlab.video.evaluate import motion_adherence, opposite_direction, single_object_motion_prompts
from genlab.video.generate import generate_clips, with_first_frame
from genlab.video.mixed_noise import decorrelate
from genlab.video.networks import (
    clip_shape,
    past_frames,
    takes_first_frame,
    takes_frames,
    video_network_class,
)

VIDEO_OPTIONS = (
    "temporal",
    "temporal_conv",
    "stack_frames",
    "frame_channels",
    "frame_downsample",
    "temporal_levels",
    "temporal_head_dim",
    "max_distance",
    "max_frames",
    "past_frames",
)


class VideoDiffusionTask(DiffusionTask):
    """A DiffusionTask whose samples are clips: it shares the image task's conditions (class labels and
    prompts with dropout, the text encoders) and its noise levels, and replaces the data, the loss and
    what is drawn and scored."""

    kind = "video"

    def __init__(
        self,
        data: DataConfig,
        diffusion: DiffusionConfig,
        video: VideoConfig | None = None,
        model_config: TextUNetConfig | VideoUNetConfig | VideoDiTConfig | None = None,
        text_encoder: str = "joint",
        text_options: dict[str, Any] | None = None,
        dit_options: dict[str, Any] | None = None,
        samples: int = 0,
        log: Callable[[str], None] = print,
        **unet_options: Any,
    ):
        """Load the clips and build a video denoiser fitted to them (or exactly ``model_config``).

        The denoiser is the factorised space-time U-Net (``unet_options``, with the temporal ones of
        ``VIDEO_OPTIONS``) or, with ``backbone`` dit, the transformer on spacetime patches
        (``dit_options``: tubelet, patch_size, width, depth, heads); with ``cond`` text it reads the
        captions through ``text_encoder`` as the image task's does. ``samples`` > 0: every evaluation
        draws that many clips for held-out prompts and scores them from the pixels (moving-shapes).
        """
        self.data, self.diffusion, self.video = data, diffusion, video or VideoConfig()
        self.log, self.samples = log, samples
        if data.image_size is not None:
            raise GenlabError("clips keep the size they are made at: drop `image_size`")
        self.train_data = load_clips(data.name, "train", data.split_seed, data.val_fraction)
        self.val_data = load_clips(data.name, "val", data.split_seed, data.val_fraction)
        if diffusion.cond == "class" and self.train_data.labels is None:
            raise GenlabError(f"`cond` class needs class labels, and {data.name} has none")
        cls = video_network_class(diffusion)
        if model_config is None:
            self.model = self._new_video_network(
                text_encoder, text_options or {}, dit_options or {}, unet_options
            )
        else:
            self.model = cls(model_config)
        if self.video.image_share and not takes_frames(self.model):
            raise GenlabError(
                "`image_share` needs a noise level per frame, which the factorised video U-Net has and the "
                "DiT and the frame-stacking U-Net (one image of all frames) do not: use the factorised U-Net "
                "or set it to 0"
            )
        if self.video.frame_cond and not takes_first_frame(self.model):
            raise GenlabError(
                "`frame_cond` needs a network that takes a first frame: the factorised video U-Net or the "
                "frame-stacking one (the DiT's tubelets mix frames under one noise level): use a U-Net or "
                "set it to 0"
            )
        if past_frames(self.model) and not self.video.frame_cond:
            raise GenlabError(
                "an autoregressive video U-Net (`past_frames`) learns later frames from the clips given "
                "frames before them: set `frame_cond` above 0 (the share of them; 0.75 is a good start)"
            )
        self.schedule = diffusion.noise_schedule()
        self.latents: dict[str, Any] = {}
        self._extractor = False  # FID's image features are not what a video run is scored on

    def _new_video_network(
        self,
        text_encoder: str,
        text_options: dict[str, Any],
        dit_options: dict[str, Any],
        unet_options: dict[str, Any],
    ) -> nn.Module:
        d, data = self.diffusion, self.train_data
        classes = data.num_classes if d.cond == "class" else 0
        channels, side = data.channels, data.image_size
        temporal = {k: unet_options.pop(k) for k in VIDEO_OPTIONS if k in unet_options}
        if temporal.get("stack_frames") and self.video.frame_cond:  # the first frame as an input plane
            temporal["first_frame_input"] = True
        if "temporal_levels" in temporal and temporal["temporal_levels"] is not None:
            temporal["temporal_levels"] = tuple(temporal["temporal_levels"])
        config: VideoUNetConfig | VideoDiTConfig
        if d.backbone == "dit":
            frames = max(dit_options.pop("frames", 0), data.frames, self.video.sample_frames)
            config = VideoDiTConfig(
                in_channels=channels, image_size=side, frames=frames, num_classes=classes, **dit_options
            )
        else:
            unet = UNetConfig(in_channels=channels, image_size=side, num_classes=classes, **unet_options)
            config = VideoUNetConfig(unet=unet, **temporal)
        if d.cond != "text":
            return video_network_class(d)(config)
        text, tokens, weights = text_encoder_config(text_encoder, text_options, data.captions)
        if isinstance(config, VideoDiTConfig):
            config.context_dim = text.width
            text_config = TextUNetConfig(
                UNetConfig(in_channels=channels, image_size=side, context_dim=text.width),
                text,
                tokens,
                text_encoder != "joint",
                text_encoder,
                video_dit=VideoDiTConfig(**asdict(config)),
            )
        else:
            config.unet.context_dim = text.width
            text_config = TextUNetConfig(
                config.unet,
                text,
                tokens,
                text_encoder != "joint",
                text_encoder,
                video=config_from_dict(VideoUNetConfig, asdict(config), "the video U-Net"),
            )
        net = TextVideoNet(text_config)
        if weights is not None:
            net.text_encoder.load_state_dict(weights)
        return net

    @classmethod
    def from_run_config(
        cls, config: dict[str, Any], log: Callable[[str], None] = print
    ) -> VideoDiffusionTask:
        """Rebuild the task of a saved run (for --resume) from its config.json."""
        diffusion = config_from_dict(DiffusionConfig, config.get("diffusion", {}), "config.json 'diffusion'")
        model_class = video_network_class(diffusion).config_class  # type: ignore[attr-defined]
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            diffusion,
            config_from_dict(VideoConfig, config.get("video", {}), "config.json 'video'"),
            model_config=config_from_dict(model_class, config["model"], "config.json 'model'"),
            samples=int(config.get("monitor", {}).get("samples", 0)),
            log=log,
        )

    def config_sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {
            "data": asdict(self.data),
            "diffusion": asdict(self.diffusion),
            "video": asdict(self.video),
            "monitor": {"samples": self.samples},
        }
        if self.train_data.class_names is not None:
            sections["class_names"] = list(self.train_data.class_names)
        return sections

    def _forward(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        labels,
        captions,
        generator: torch.Generator,
        train: bool,
        timestep: int | None = None,
        first_frame: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of one batch of clips ``x0`` (N, T, C, H, W) in model space: Ho et al. (2020) Algorithm 1
        with one noise level per clip; image rows (``image_share``) draw one per frame and see no other
        frame; clips given their first frame (``frame_cond``) see it clean and are not scored on it;
        ``timestep``: every clip at that timestep instead of a drawn one; ``first_frame`` (N, C, H, W):
        every clip is given this frame instead of its own (the frame probe)."""
        d, v = self.diffusion, self.video
        n, frames = x0.shape[:2]
        device = x0.device
        t, abar = draw_noise_levels(d, self.schedule, n, generator)
        if timestep is not None:
            t = torch.full((n,), timestep, dtype=torch.long)
            abar = self.schedule.abar(t)
        if past_frames(model):
            return self._next_frame_loss(model, x0, labels, captions, generator, train, t, abar, first_frame)
        t, abar = t[:, None].expand(n, frames).clone(), abar[:, None].expand(n, frames).clone()
        images = (
            torch.rand(n, generator=generator) < v.image_share if train else torch.zeros(n, dtype=torch.bool)
        )
        if images.any():  # independent images: a noise level for each frame
            t_img, abar_img = draw_noise_levels(d, self.schedule, int(images.sum()) * frames, generator)
            t[images], abar[images] = t_img.reshape(-1, frames), abar_img.reshape(-1, frames)
        given = (torch.rand(n, generator=generator) < v.frame_cond) & ~images
        if first_frame is not None:
            given = torch.ones(n, dtype=torch.bool)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        flat = decorrelate(x0, v.noise_correlation).flatten(0, 1)
        abar_flat = abar.flatten().to(device)
        x_t = noised(flat, noise.flatten(0, 1), abar_flat)
        inp = network_input(d.parameterization, x_t, abar_flat).unflatten(0, (n, frames))
        drop = torch.rand(n, generator=generator) < d.cond_dropout if train else None
        cond = self._label_condition(labels, captions, drop)
        extra: dict[str, Any] = {}
        if takes_frames(self.model):
            extra["temporal"] = ~images.to(device) if images.any() else True
        else:  # one noise level per clip
            t = t[:, 0]
        abar0 = float(self.schedule.abar(torch.zeros(1, dtype=torch.long))[0])
        out = with_first_frame(
            model,
            d.parameterization,
            abar0,
            inp,
            t.to(device),
            x0[:, 0] if first_frame is None else first_frame,
            given.to(device),
            **cond,
            **extra,
        )
        p = get_parameterization(d.parameterization)
        target = p.target(flat, noise.flatten(0, 1), abar_flat)
        per_frame = (out.flatten(0, 1).float() - target.float()).square().flatten(1).mean(1)
        if d.min_snr_gamma > 0:
            per_frame = per_frame * p.min_snr_weight(abar_flat.float(), d.min_snr_gamma, d.snr_floor)
        scored = torch.ones(n, frames, dtype=torch.bool)
        scored[:, 0] = ~given
        scored = scored.flatten().to(device)
        return (per_frame * scored).sum() / scored.sum()

    def _next_frame_loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        labels,
        captions,
        generator: torch.Generator,
        train: bool,
        t: torch.Tensor,
        abar: torch.Tensor,
        first_frame: torch.Tensor | None,
    ) -> torch.Tensor:
        """``_forward`` for an autoregressive U-Net (MCVD, Voleti et al. 2022): each clip is scored on one
        frame given the ones before it: its first frame, from the condition alone, or, for the share
        ``frame_cond``, a later one drawn uniformly; ``first_frame``: every clip is scored on frame 1 given
        this frame as frame 0 (the frame probe)."""
        d, v = self.diffusion, self.video
        n, frames = x0.shape[:2]
        device = x0.device
        later = torch.rand(n, generator=generator) < v.frame_cond
        k = torch.where(later, torch.randint(1, max(frames, 2), (n,), generator=generator), 0)
        if first_frame is not None:
            k = torch.ones(n, dtype=torch.long)
        count = past_frames(model)
        before = k[:, None] - count + torch.arange(count)  # (N, P): the frame each past slot holds
        rows = torch.arange(n)[:, None]
        past = x0[rows, before.clamp(min=0)]
        if first_frame is not None:
            past[:, -1] = first_frame
        if train and v.past_noise:  # GameNGen's noise augmentation: a level per clip
            level = torch.rand(n, generator=generator) * v.past_noise
            jitter = level[:, None, None, None, None] * torch.randn(past.shape, generator=generator)
            past = past + jitter.to(device)
        given = (before >= 0).to(device)
        frame = x0[torch.arange(n), k]
        noise = torch.randn(frame.shape, generator=generator).to(device)
        abar = abar.to(device)
        x_t = noised(frame, noise, abar)
        inp = network_input(d.parameterization, x_t, abar)[:, None]
        drop = torch.rand(n, generator=generator) < d.cond_dropout if train else None
        cond = self._label_condition(labels, captions, drop)
        out = model(inp, t.to(device), past=past, past_given=given, **cond)[:, 0]
        p = get_parameterization(d.parameterization)
        per_frame = (out.float() - p.target(frame, noise, abar).float()).square().flatten(1).mean(1)
        if d.min_snr_gamma > 0:
            per_frame = per_frame * p.min_snr_weight(abar.float(), d.min_snr_gamma, d.snr_floor)
        return per_frame.mean()

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        x0 = to_model_space(batch.images)
        return self._forward(model, x0, batch.labels, batch.captions, generator, train=True), {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss on (up to 200) validation clips at fixed noise levels; with ``samples``, the motion
        adherence of that many clips drawn for held-out single-object prompts, read from the pixels."""
        data = self.val_data.spread(200)
        g = torch.Generator().manual_seed(1234)
        device = next(model.parameters()).device
        total = 0.0
        for i in range(0, len(data), 50):
            x0 = to_model_space(data.clips[i : i + 50]).to(device)
            labels = data.labels[i : i + 50].to(device) if self.diffusion.cond == "class" else None
            loss = self._forward(model, x0, labels, data.captions[i : i + 50], g, train=False)
            total += float(loss) * len(x0)
        out: dict[str, Any] = {"val_loss": total / len(data)}
        if self.diffusion.cond == "text" and self.data.name == "moving-shapes":
            out["direction_probe"] = self.direction_probe(model)
        if self.video.frame_cond > 0:
            out["frame_probe"] = self.frame_probe(model)
        if self.samples:
            out.update(self.sample_quality(model))
        return out

    @torch.no_grad()
    def direction_probe(self, model: nn.Module, n: int = 96, timestep: int = 600) -> float:
        """How much the run uses the direction words: the loss on ``n`` held-out single-object clips at
        ``timestep`` with every direction in their captions turned around, divided by the loss with the
        true captions, on the same noise. 1.0: the words change nothing; above 1: the run moves objects
        the way it is told (a direction is all that differs)."""
        data = self.val_data
        single = set(single_object_motion_prompts(data.captions))
        keep = [i for i, c in enumerate(data.captions) if c in single][:n]
        if not keep:
            raise GenlabError(f"{self.data.name} has no single-object moving-shapes captions to probe")
        x0 = to_model_space(data.clips[keep]).to(next(model.parameters()).device)
        captions = [data.captions[i] for i in keep]
        opposite = [opposite_direction(c) for c in captions]
        frame = x0[:, 0] if past_frames(model) else None  # the frame after the first, where words decide
        return self._loss_ratio(model, x0, None, timestep, (captions, frame), (opposite, frame))

    @torch.no_grad()
    def frame_probe(self, model: nn.Module, n: int = 96, timestep: int = 400) -> float:
        """How much an image-to-video run (``frame_cond``) uses the first frame it is given: the loss on
        ``n`` held-out clips at ``timestep``, each given the first frame of the clip before it instead of
        its own, divided by the loss with its own, on the same noise (frame 0 is not scored either way).
        1.0: the given frame changes nothing; well above 1: the run continues the frame it is shown."""
        if not self.video.frame_cond:
            raise GenlabError("the frame probe needs a run trained with `frame_cond` > 0")
        data = self.val_data.spread(n)
        device = next(model.parameters()).device
        x0 = to_model_space(data.clips).to(device)
        labels = data.labels.to(device) if self.diffusion.cond == "class" else None
        own, other = (data.captions, x0[:, 0]), (data.captions, x0[:, 0].roll(1, 0))
        return self._loss_ratio(model, x0, labels, timestep, own, other)

    def _loss_ratio(self, model: nn.Module, x0, labels, timestep: int, true: tuple, changed: tuple) -> float:
        """The loss of clips ``x0`` at ``timestep`` given the ``changed`` (captions, first frame) over the
        loss given the ``true`` ones, on the same noise (first frame None: as ``frame_cond`` draws it)."""
        losses = []
        for captions, frame in (true, changed):
            noise = torch.Generator().manual_seed(0)  # the same for both
            losses.append(float(self._forward(model, x0, labels, captions, noise, False, timestep, frame)))
        return losses[1] / losses[0]

    def held_out_prompts(self, n: int) -> list[str]:
        """``n`` single-object prompts of held-out clips (cycled when there are fewer)."""
        pool = single_object_motion_prompts(self.val_data.captions)
        if not pool:
            raise GenlabError(f"{self.data.name} has no single-object moving-shapes captions to score")
        return [pool[i % len(pool)] for i in range(n)]

    def sample_quality(self, model: nn.Module) -> dict[str, Any]:
        """For text runs on moving-shapes: the motion adherence of ``samples`` clips drawn for held-out
        prompts, read from the pixels; ``adherence`` is direction, colour and shape right together, and
        ``adherence_KEY`` each attribute (genlab.video.evaluate.motion_adherence)."""
        if self.diffusion.cond != "text" or self.data.name != "moving-shapes":
            return {}
        prompts = self.held_out_prompts(self.samples)
        clips = self.draw(model, torch.Generator().manual_seed(0), prompts=prompts)
        scores = motion_adherence(clips, prompts)
        return {
            f"adherence_{k}" if k != "motion" else "adherence": v
            for k, v in scores.items()
            if k not in ("per_clip", "count")
        }

    def sample(self, model: nn.Module, path: Path) -> Path:
        """A strip of frames per clip (fixed seed): eight held-out prompts, or the classes, or eight
        unconditional clips; an animated GIF of them beside it."""
        g = torch.Generator().manual_seed(0)
        spread = self.val_data.spread(8)
        if self.diffusion.cond == "text":
            captions = spread.captions
            clips = self.draw(model, g, prompts=captions)
        elif self.diffusion.cond == "class":
            k = self.train_data.num_classes
            labels = torch.arange(k)
            clips = self.draw(model, g, labels=labels)
            names = self.train_data.class_names
            captions = [names[int(i)] for i in labels] if names else None
        else:
            clips, captions = self.draw(model, g, n=8), None
        save_clips(path.with_suffix(".gif"), clips)
        return save_clips(path, clips, captions)

    def _generate(
        self, model: nn.Module, n: int, generator: torch.Generator, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """``n`` clips of ``sample_frames`` frames, drawn as the image task draws images (its ``draw``)."""
        d = self.diffusion
        return generate_clips(
            model,
            self.schedule,
            d.parameterization,
            (n, *clip_shape(model, self.video.sample_frames)),
            steps=d.sample_steps,
            sampler=d.sample_sampler,
            generator=generator,
            precision="auto",
            noise_correlation=self.video.noise_correlation,
            factorized=self.video.factorized,
            past_guidance=self.video.past_guidance,
            **kwargs,
        )
