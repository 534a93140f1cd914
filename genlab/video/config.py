"""What a video run adds to a diffusion run: how its clips are used in training (config.json's ``video``)."""

from __future__ import annotations

from dataclasses import dataclass

from genlab.checks import MAX_FRAMES, check_fraction, check_range
from genlab.errors import GenlabError


@dataclass
class VideoConfig:
    """Stored as config.json's ``video``; the forward process and condition are the run's DiffusionConfig.

    ``image_share``: joint image and video training (Ho et al. 2022, section 3.1): this share of the
    training clips are shown as independent images (each frame its own noise level, the temporal
    attention masked off), so the per-frame layers also learn from images. ``frame_cond``: this share
    of the clips are given their first frame clean (noise level 0, left out of the loss), so the network
    also learns image-to-video; the rest are not, which makes the frame a condition that classifier-free
    guidance can push toward. ``noise_correlation``: the noise of every two frames of a clip correlates by
    this much (PYoCo's mixed noise, genlab.video.mixed_noise), which gives motion a larger share of the
    signal; it needs every frame at one noise level, so no ``image_share`` or ``frame_cond``.
    For an autoregressive U-Net (``past_frames``, MCVD) ``frame_cond`` is the share of clips scored on a
    later frame given the frames before it; the rest are scored on their first frame, drawn from the
    condition alone. ``factorized``: text-to-video in two stages (Emu Video, Girdhar et al. 2023, section
    3.1): a clip is drawn from the prompt only for its first frame, which the network then continues
    (image-to-video), so where the object starts is fixed before its motion is drawn; it needs
    ``frame_cond`` > 0.
    ``sample_frames``: the frames of the clips drawn while training.
    """

    image_share: float = 0.0
    frame_cond: float = 0.0
    noise_correlation: float = 0.0
    factorized: bool = False
    sample_frames: int = 8
    # Autoregressive runs: the past frames of a training clip get Gaussian noise of a standard deviation
    # drawn uniformly up to this (in model space, [-1, 1]), so that the network learns to continue frames
    # it drew itself, flaws and all (the noise augmentation of GameNGen, Valevski et al. 2024, section
    # 3.2.1, against the drift of autoregressive sampling); sampling shows it clean frames
    past_noise: float = 0.0
    # Autoregressive runs: the unconditional side of classifier-free guidance has no past frames either, so
    # guidance also pushes each frame toward continuing the ones before it (measured: 67.5% against 63.0%
    # of clips right on 200 prompts, docs/video.md); False: the past is on both sides
    past_guidance: bool = False

    def __post_init__(self) -> None:
        check_fraction("image_share", self.image_share)
        check_fraction("frame_cond", self.frame_cond)
        check_fraction("noise_correlation", self.noise_correlation)
        if self.noise_correlation and (self.image_share or self.frame_cond):
            raise GenlabError(
                "`noise_correlation` mixes the noise of all frames of a clip, which `image_share` and "
                "`frame_cond` give noise levels of their own: set them to 0, or `noise_correlation` to 0"
            )
        if self.factorized and not self.frame_cond:
            raise GenlabError(
                "`factorized` continues a first frame drawn from the prompt, which needs a run trained "
                "to continue frames: set `frame_cond` above 0 (0.5 is a good start)"
            )
        check_range("sample_frames", self.sample_frames, 1, MAX_FRAMES)
        check_range("past_noise", self.past_noise, 0.0, 2.0)
