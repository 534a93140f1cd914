"""Video diffusion: clips (N, T, C, H, W) denoised by a factorised space-time U-Net (Ho et al. 2022) or a
transformer on spacetime patches, conditioned on text, a class or their first frame; trained on the shared
engine, sampled by every sampler, and scored from the pixels."""

from genlab.video.config import VideoConfig
from genlab.video.generate import FrameConditioned, generate_clips
from genlab.video.networks import load_video_network, video_network_class

__all__ = ["FrameConditioned", "VideoConfig", "generate_clips", "load_video_network", "video_network_class"]
