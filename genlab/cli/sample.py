"""`genlab sample`: draw images from a trained diffusion run."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import sampling_options


@cli.command("sample")
@click.argument("run", type=click.Path())
@click.option(
    "--class", "class_", default=None, help="Class to draw: a name or index, a list 1,2,3, or 'all'."
)
@click.option("--n", default=16, show_default=True, type=int, help="How many images.")
@sampling_options
@click.option("--eta", default=None, type=float, help="DDIM noise: 0 deterministic (default), 1 like DDPM.")
@click.option("--out", default="samples.png", show_default=True, help="PNG grid to write.")
@click.option("--nrow", default=None, type=int, help="Images per row of the grid.")
@click.option(
    "--trajectory", default=None, help="Also write the denoising trajectory: .gif animation or .png strip."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def sample_cmd(
    run: str,
    class_: str | None,
    n: int,
    steps: int,
    sampler: str,
    guidance: float,
    eta: float | None,
    seed: int,
    out: str,
    nrow: int | None,
    trajectory: str | None,
    device: str,
) -> None:
    """Sample images from the diffusion model in RUN.

    \b
    Examples:
      genlab sample runs/diffusion-mnist --class 7 --steps 20 --sampler dpmpp-2m --guidance 3 --out sevens.png
      genlab sample runs/diffusion-mnist --class all --n 40 --out digits.png
      genlab sample runs/diffusion-mnist --sampler ddim --eta 0 --steps 50 --trajectory traj.gif
      genlab sample runs/diffusion-shapes --n 64 --sampler heun --steps 10
    """
    import time

    import torch

    from genlab.data import save_gif, save_grid
    from genlab.diffusion.pictures import trajectory_strip
    from genlab.errors import GenlabError
    from genlab.pipelines import DiffusionPipeline

    if trajectory is not None and Path(trajectory).suffix.lower() not in (".gif", ".png"):
        raise GenlabError(f"--trajectory must end in .gif or .png (got {trajectory})")
    if eta is not None and sampler != "ddim":
        raise GenlabError("--eta applies to --sampler ddim only")
    pipe = DiffusionPipeline.from_pretrained(run, device=device)
    labels = None
    if class_ is not None:
        if pipe.num_classes == 0:
            raise GenlabError(f"{run} was trained without classes (--cond none); sample it without --class")
        if class_ == "all":
            per = max(1, n // pipe.num_classes)
            labels = torch.arange(pipe.num_classes).repeat_interleave(per)
            n, nrow = len(labels), nrow or per
        else:
            labels = torch.tensor([pipe.class_index(c.strip()) for c in class_.split(",") if c.strip()])
    kwargs = {"eta": eta} if eta is not None else {}
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    result = pipe(
        n, labels, steps, guidance, sampler, generator=g, return_trajectory=trajectory is not None, **kwargs
    )
    seconds = time.perf_counter() - t0
    names = pipe.class_names
    captions = None
    if result.class_labels is not None:
        captions = [names[int(k)] if names else str(int(k)) for k in result.class_labels]
    path = save_grid(out, result.tensors, captions, nrow=nrow)
    click.echo(
        f"{n} images, {sampler} with {steps} steps, {seconds:.1f} s "
        f"({1000 * seconds / n:.0f} ms/image): {path}"
    )
    if trajectory is not None:
        if trajectory.lower().endswith(".gif"):
            written = save_gif(trajectory, result.trajectory, nrow=nrow)
        else:
            strip = trajectory_strip(result.trajectory)
            written = save_grid(trajectory, strip, nrow=min(9, len(result.trajectory)))
        click.echo(f"trajectory: {written}")
