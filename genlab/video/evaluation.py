"""Evaluating a video run: clips drawn for held-out prompts or for every class, scored from their pixels
(motion adherence) and in feature space (FVD, per-frame FID, what the data's classifiers recognise).

- FVD: the Frechet distance between Gaussians fitted to features of generated and of held-out real clips
  (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video": FID's distance on a video
  network's features). Their features are I3D's, trained on Kinetics; here they are those of a clip
  classifier trained on the data set's own clips (genlab.video.features), as genlab's FID reads images with
  the data's own classifier: numbers compare genlab runs with one another, not with published FVDs.
- Per-frame FID: every generated frame against the held-out real frames, on the features of the frame data
  set's classifier (``moving-shapes-frames``: colour and shape; ``moving-mnist-frames``: the digit).
- Recognition: the share of generated frames the frame classifier reads as the colour and shape or digit
  asked for, and of clips the clip classifier reads as the direction or digit asked for.
- Motion adherence (text runs on moving-shapes): each clip read back from its pixels and checked against
  its prompt (genlab.video.evaluate.motion_adherence).

Each number names its features and counts; the floors are what real training clips (frames) score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genlab.classification.evaluate import predict
from genlab.data import DataConfig, ImageDataset, load_clips, save_clips
from genlab.data.moving import ClipDataset
from genlab.data.registry import clip_frames
from genlab.errors import GenlabError, param
from genlab.evaluation.features import FeatureExtractor, dataset_extractor, reference_features
from genlab.metrics.distances import fid_from_features
from genlab.video.evaluate import motion_adherence, single_object_motion_prompts
from genlab.video.features import ClipFeatures, video_extractor

FRAME_SETS = {"moving-shapes": "moving-shapes-frames", "moving-mnist": "moving-mnist-frames"}
FVD_PAPER = 'Unterthiner et al. 2018, "Towards Accurate Generative Models of Video"'
PREVIEW_CLIPS = 16  # clips in the picture written beside the report


def _asked(pipe: Any, val: ClipDataset, val_frames: ImageDataset, n: int) -> dict[str, Any]:
    """What each of the ``n`` clips is drawn for: its prompt (text), class label (class) or nothing, and
    the clip and frame classes that asks for (None where the classifiers cannot tell). ``val_frames``: the
    frames of the held-out clips ``val``, clip after clip."""
    frame_classes = val_frames.labels[:: val.frames]  # what the first frame of each clip shows
    if pipe.text:
        keep = set(single_object_motion_prompts(val.captions))
        pool = [i for i, caption in enumerate(val.captions) if caption in keep]
        if not pool:
            raise GenlabError(
                f"the held-out clips of {val.name} have no single-object captions to prompt with"
            )
        chosen = torch.tensor([pool[k % len(pool)] for k in range(n)])  # the val captions, cycled
        prompts = [val.captions[i] for i in chosen.tolist()]
        return dict(prompts=prompts, labels=None, clip=val.labels[chosen], frame=frame_classes[chosen])
    if pipe.num_classes:
        labels = torch.arange(n) % pipe.num_classes
        names = list(pipe.class_names or val.class_names or [])
        # The run's classes are its data's clip labels; a frame shows them only where they name what it
        # shows (moving-mnist's digits, not moving-shapes' directions).
        same_clip = pipe.num_classes == val.num_classes and names == list(val.class_names or [])
        return dict(
            prompts=None,
            labels=labels,
            clip=labels if same_clip else None,
            frame=labels if names == val_frames.class_names else None,
        )
    return dict(prompts=None, labels=None, clip=None, frame=None)


def _draw(
    pipe: Any, asked: dict[str, Any], n: int, frames: int, sampling: dict[str, Any], seed: int,
    batch_size: int, log: Callable[[str], None],
) -> tuple[torch.Tensor, float]:  # fmt: skip
    """The ``n`` clips, drawn ``batch_size`` at a time from one generator seeded ``seed``; the seconds."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if asked["prompts"] is not None:
            kwargs = dict(prompt=asked["prompts"][start:stop])
        elif asked["labels"] is not None:
            kwargs = dict(class_labels=asked["labels"][start:stop])
        else:
            kwargs = dict(num_clips=stop - start)
        out.append(pipe(**kwargs, num_frames=frames, generator=generator, **sampling).clips)
        log(f"  {stop}/{n} clips")
    return torch.cat(out), time.perf_counter() - t0


def _share(predicted: torch.Tensor, asked: torch.Tensor) -> float:
    return float((predicted == asked).float().mean())


def frechet_video_distance(
    features: ClipFeatures, real: torch.Tensor, generated: torch.Tensor, floor: torch.Tensor | None = None
) -> dict[str, Any]:
    """FVD (Unterthiner et al. 2018; the Frechet distance of Heusel et al. 2017, eq. 6) between clips
    ``real`` and ``generated`` (N, T, C, H, W), on ``features``; with ``floor`` (real training clips) also
    what those score against ``real``."""
    reference = features(real)
    out: dict[str, Any] = {
        "value": fid_from_features(reference, features(generated)),
        "real": len(real),
        "generated": len(generated),
        "features": features.name,
        "paper": FVD_PAPER,
    }
    if floor is not None:
        out["floor_real_train"] = fid_from_features(reference, features(floor))
    return out


def frame_fid(
    extractor: FeatureExtractor, real: Any, generated: torch.Tensor, floor: torch.Tensor | None = None
) -> dict[str, Any]:
    """FID (Heusel et al. 2017, eq. 6) of every generated frame (N*T, C, H, W) against the real frames of
    the ImageDataset ``real`` (their features cached), on ``extractor``; ``floor``: real training frames."""
    reference = reference_features(extractor, real)
    out: dict[str, Any] = {
        "value": fid_from_features(reference, extractor(generated)),
        "real": len(real),
        "generated": len(generated),
        "features": extractor.name,
    }
    if floor is not None:
        out["floor_real_train"] = fid_from_features(reference, extractor(floor))
    return out


def evaluate_video_run(
    pipe: Any,
    data: DataConfig | str,
    n: int = 200,
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance: float = 3.0,
    seed: int = 0,
    *,
    batch_size: int = 50,
    preview: str | Path | None = None,
    frame_recipe: dict | None = None,
    clip_recipe: dict | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Draw ``n`` clips from the VideoPipeline ``pipe``, trained on the clip data set ``data``; score them.

    Text runs are prompted with the held-out single-object captions, cycled; class runs draw the classes in
    turn; unconditional runs draw ``n`` clips. Clips have the real clips' frames. Returns a dict with the
    sampling settings and time (``seconds_per_clip``), ``fvd`` and ``fid_frames`` (each with its floor),
    ``recognised_frames`` and ``recognised_clips`` where the asked class is known, and
    ``motion_adherence`` for text runs on moving-shapes. The data's frame and clip classifiers are trained
    on first use (``frame_recipe``, ``clip_recipe``: their recipes, by default the cached standard ones)
    and cached in ``cache``. ``preview``: a PNG to draw the first clips in, one row of frames each."""
    data = DataConfig(data) if isinstance(data, str) else data
    if data.name not in FRAME_SETS:
        raise GenlabError(
            f"video evaluation reads runs on {' or '.join(FRAME_SETS)}, whose frame and clip classifiers it "
            f"trains; {data.name} has no frame data set"
        )
    if n < 2:
        raise GenlabError(f"{param('n')} must be at least 2 to compare distributions (got {n})")
    if batch_size < 1:
        raise GenlabError(f"{param('batch_size')} must be at least 1 (got {batch_size})")
    frame_data = DataConfig(FRAME_SETS[data.name], data.split_seed, data.val_fraction)
    # First, so that the frames it loads are freed before the clips are
    frame_extractor = dataset_extractor(
        frame_data, cache=cache, recipe=frame_recipe, progress=progress, log=log
    )
    train, val = (load_clips(data.name, s, data.split_seed, data.val_fraction) for s in ("train", "val"))
    clip_features = video_extractor(data, cache, clip_recipe, (train, val), progress, log)
    floor = train.spread(n).clips
    del train  # the training clips served the cache key and the floor; keep memory for sampling
    val_frames = clip_frames(val, frame_data.name, torch.arange(len(val)))
    asked = _asked(pipe, val, val_frames, n)

    sampling = dict(num_inference_steps=steps, sampler=sampler, guidance_scale=guidance)
    how = f"{sampler}, {steps} steps, guidance {guidance}, seed {seed}"
    log(f"sampling {n} clips of {val.frames} frames ({how})")
    clips, seconds = _draw(pipe, asked, n, val.frames, sampling, seed, batch_size, log)
    frames = clips.flatten(0, 1)
    report: dict[str, Any] = {
        "data": data.name,
        "kind": "video",
        "cond": "text" if pipe.text else "class" if pipe.num_classes else "none",
        "n": n,
        "frames": val.frames,
        "steps": steps,
        "sampler": sampler,
        "guidance_scale": guidance,
        "seed": seed,
        "sampling_seconds": seconds,
        "seconds_per_clip": seconds / n,
    }
    if asked["prompts"] is not None and data.name == "moving-shapes":
        adherence = motion_adherence(clips, asked["prompts"])
        report["motion_adherence"] = {k: v for k, v in adherence.items() if k != "per_clip"}
    if asked["frame"] is not None:
        read = predict(frame_extractor.classifier, frames).argmax(1)
        report["recognised_frames"] = {
            "value": _share(read, asked["frame"].repeat_interleave(val.frames)),
            "generated": len(frames),
            "classifier": frame_extractor.name,
        }
    if asked["clip"] is not None:
        report["recognised_clips"] = {
            "value": _share(clip_features.classify(clips), asked["clip"]),
            "generated": len(clips),
            "classifier": clip_features.name,
        }
    report["fvd"] = frechet_video_distance(clip_features, val.clips, clips, floor)
    report["fid_frames"] = frame_fid(frame_extractor, val_frames, frames, floor.flatten(0, 1))
    if preview is not None:  # the first clips, one row of frames each, captioned with what they were asked
        shown = min(PREVIEW_CLIPS, n)
        names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
        captions = (
            asked["prompts"][:shown]
            if asked["prompts"] is not None
            else [names[int(k)] for k in asked["labels"][:shown]]
            if asked["labels"] is not None
            else None
        )
        report["pictures"] = {"clips": save_clips(preview, clips[:shown], captions).name}
    return report
