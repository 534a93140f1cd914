"""The networks a video run holds, and the one way to load them from a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab import rundir
from genlab.diffusion.config import DiffusionConfig
from genlab.errors import GenlabError
from genlab.nn.pretrained import config_from_dict
from genlab.nn.text_unet import TextVideoNet
from genlab.nn.video_dit import VideoDiT
from genlab.nn.video_unet import VideoUNet
from genlab.video.config import VideoConfig


def video_network_class(diffusion: DiffusionConfig) -> type[nn.Module]:
    """The class of the network a video run with DiffusionConfig ``diffusion`` holds."""
    if diffusion.latent or diffusion.upscale:
        raise GenlabError("a video run diffuses pixels: drop `latent` and `upscale`")
    if diffusion.cond == "text":
        return TextVideoNet
    return VideoDiT if diffusion.backbone == "dit" else VideoUNet


def denoiser_config(network: nn.Module) -> Any:
    """The config of the network that denoises the clips (the video U-Net's or DiT's)."""
    return network.config.denoiser if isinstance(network, TextVideoNet) else network.config


def clip_shape(network: nn.Module, frames: int) -> tuple[int, int, int, int]:
    """(T, C, H, W) of the clips of ``frames`` frames a video network makes."""
    cfg = denoiser_config(network)
    return frames, cfg.in_channels, cfg.image_size, cfg.image_size


def takes_frames(network: nn.Module) -> bool:
    """Whether the network takes a noise level per frame (image-to-video, joint image training): the
    video U-Net does; the DiT's tubelets mix frames under one noise level."""
    net = network.unet if isinstance(network, TextVideoNet) else network
    return isinstance(net, VideoUNet) and not net.config.stack_frames and not net.config.past_frames


def past_frames(network: nn.Module) -> int:
    """How many frames before it an autoregressive video U-Net draws each frame from (0: not one)."""
    net = getattr(network, "unet", network)  # a text network's denoiser (the factorised one's 2-D U-Net: 0)
    return int(getattr(getattr(net, "config", None), "past_frames", 0))


def takes_first_frame(network: nn.Module) -> bool:
    """Whether the network can be given a clean first frame (image-to-video): the factorised U-Net at a
    noise level of its own, the frame-stacking U-Net built with ``first_frame_input``, the autoregressive
    one as the past of its second frame."""
    net = network.unet if isinstance(network, TextVideoNet) else network
    return (
        takes_frames(network)
        or past_frames(network) > 0
        or (isinstance(net, VideoUNet) and net.config.first_frame_input)
    )


def load_video_network(
    run_dir: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, DiffusionConfig, VideoConfig, dict[str, Any]]:
    """(network, DiffusionConfig, VideoConfig, config.json) of a video run."""
    config = rundir.read_config(run_dir, kind="video")
    source = f"{run_dir}/config.json"
    diffusion = config_from_dict(DiffusionConfig, config.get("diffusion", {}), source)
    video = config_from_dict(VideoConfig, config.get("video", {}), source)
    network = video_network_class(diffusion).from_pretrained(run_dir, use_ema=use_ema, device=device)
    return network, diffusion, video, config
