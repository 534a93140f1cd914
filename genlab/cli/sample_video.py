"""`genlab sample` for a video run: clips as an animated GIF and a PNG strip of their frames."""

from __future__ import annotations

import time
from pathlib import Path

import click

from genlab.errors import GenlabError


def sample_video(
    run: str,
    device: str,
    precision: str,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    out: str,
    trajectory: str | None,
    kwargs: dict,
    *,
    prompts: tuple[str, ...],
    class_: str | None,
    n: int | None,
    frames: int | None,
    first_frame: str | None,
    nrow: int | None,
) -> None:
    """Draw ``n`` clips per prompt or class and write them: ``out`` ending in .gif plays them (a PNG strip,
    one row of frames per clip, is written beside it), any other ending is the strip alone."""
    import torch

    from genlab.data import load_image, save_clips, save_gif
    from genlab.pipelines import load_pipeline

    pipe = load_pipeline(run, device=device, precision=precision)
    labels = None
    if pipe.text and not prompts:
        example = f'genlab sample {run} "a red circle moving right"'
        raise GenlabError(f"{run} is a text-to-video run: give a prompt, e.g. {example}")
    if class_ is not None:
        if not pipe.num_classes:
            raise GenlabError(f"{run} was trained without classes; sample it without --class")
        if class_ == "all":
            labels = list(range(pipe.num_classes))
        else:
            labels = [pipe.class_index(c.strip()) for c in class_.split(",") if c.strip()]
    image = None
    if first_frame is not None:
        channels, side = pipe.frame_shape[:2]
        image = load_image(first_frame, size=side, channels=channels)
    n = n if n is not None else 4
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    result = pipe(
        list(prompts) or None,
        labels,
        num_frames=frames,
        num_clips=n,
        num_inference_steps=steps,
        guidance_scale=guidance,
        sampler=sampler,
        generator=g,
        first_frame=image,
        return_trajectory=trajectory is not None,
        **kwargs,
    )
    seconds = time.perf_counter() - t0
    clips = result.clips
    captions = result.prompts
    if result.class_labels is not None:
        names = pipe.class_names
        captions = [names[int(k)] if names else str(int(k)) for k in result.class_labels]
    written = [save_clips(out, clips, captions, nrow=nrow)]
    if out.lower().endswith(".gif"):
        written.append(save_clips(Path(out).with_suffix(".png"), clips, captions))
    count, length = clips.shape[:2]
    click.echo(
        f"{count} clips of {length} frames, {sampler} with {steps} steps, guidance {guidance}, "
        f"{seconds:.1f} s ({seconds / count:.2f} s/clip): {', '.join(map(str, written))}"
    )
    if trajectory is not None:
        first = [state[0] for state in result.trajectory]  # the first clip (T, C, H, W) at every step
        if trajectory.lower().endswith(".gif"):  # one picture per step: the clip's frames in a row
            path = save_gif(trajectory, first, nrow=length)
        else:  # one row of frames per step
            path = save_clips(trajectory, torch.stack(first))
        click.echo(f"trajectory of the first clip, step by step: {path}")
