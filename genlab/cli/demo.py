"""`genlab demo`: the main job of `make demo`, end to end on the CPU in about ten minutes."""

from __future__ import annotations

import time

import click

from genlab.cli import cli
from genlab.cli.common import fresh_run_dir
from genlab.errors import GenlabError

_DEFAULTS = {  # DemoConfig's, without importing torch before --help
    "classifier_steps": 300,
    "diffusion_steps": 900,
    "clip_steps": 100,
    "t2i_steps": 1300,
    "judged_samples": 100,
    "prompts": 300,
    "sampling_steps": 20,
}


@cli.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Folder for everything the demo writes.")
@click.option("--classifier-steps", default=_DEFAULTS["classifier_steps"], show_default=True, type=int)
@click.option("--diffusion-steps", default=_DEFAULTS["diffusion_steps"], show_default=True, type=int)
@click.option(
    "--clip-steps",
    default=_DEFAULTS["clip_steps"],
    show_default=True,
    type=int,
    help="Steps of the CLIP whose text tower the text-to-image model reads prompts with.",
)
@click.option("--t2i-steps", default=_DEFAULTS["t2i_steps"], show_default=True, type=int)
@click.option(
    "--judged-samples",
    default=_DEFAULTS["judged_samples"],
    show_default=True,
    type=int,
    help="MNIST samples the classifier judges.",
)
@click.option(
    "--prompts",
    default=_DEFAULTS["prompts"],
    show_default=True,
    type=int,
    help="Held-out single-object prompts whose adherence is read back from the pixels.",
)
@click.option(
    "--sampling-steps",
    default=_DEFAULTS["sampling_steps"],
    show_default=True,
    type=int,
    help="Sampling steps of every picture and every score.",
)
@click.option(
    "--parallel/--sequential",
    default=True,
    show_default=True,
    help="Train the text-to-image model in a second process beside the mnist ones (two cores or more).",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option(
    "--serve", is_flag=True, help="End by serving the demo's models in the web app (`genlab serve`)."
)
@click.option("--port", default=8000, show_default=True, type=int, help="Port of --serve.")
def demo(out: str, parallel: bool, no_progress: bool, serve: bool, port: int, **steps: int) -> None:
    """Train models that work, on the CPU, in fixed numbers of steps: the same numbers on every run.

    \b
    1. captioned grids of the mnist and shapes data sets, and an MNIST digit drowning in noise;
    2. CLIP on shapes, whose frozen text tower reads the prompts of stage 5;
    3. a CNN classifier on mnist (about 99% validation accuracy);
    4. a class-conditional diffusion U-Net on mnist; one row of samples per digit, a denoising
       trajectory, and the share of 100 samples (20 DPM-Solver++ steps, guidance 3) the classifier
       recognises as the digit asked for;
    5. a text-to-image U-Net on shapes, in a second process beside 3 and 4 (--parallel): samples for a
       set of prompts, cross-attention maps, and the share of 300 held-out single-object prompts it
       gets entirely right, on one HTML page (t2i.html).

    Each stage prints the time it took; everything else it prints is the same on every run.
    """
    if serve and not 0 < port < 65536:  # before the training, not after
        raise GenlabError(f"--port must be between 1 and 65535 (got {port})")
    from genlab.demo import DemoConfig, run_demo
    from genlab.nn.precision import resolve_precision

    cfg = DemoConfig(**steps, parallel=parallel, progress=not no_progress)
    root = fresh_run_dir(out)
    click.echo(f"genlab demo -> {root} (diffusion trains in {resolve_precision('auto', 'cpu')} on this CPU)")
    start = time.perf_counter()
    result = run_demo(root, cfg, log=click.echo)
    total = time.perf_counter() - start
    click.echo(f"done in {total / 60:.1f} min")
    click.echo(f"  MNIST samples recognised as the digit asked for: {result.numbers['mnist_recognised']:.0%}")
    click.echo(f"  text-to-image prompt adherence:                  {result.numbers['t2i_adherence']:.0%}")
    held_out = result.numbers["t2i_paraphrase_adherence"]
    click.echo(f"  the same scenes in held-out phrasings:           {held_out:.0%}")
    click.echo("outputs:")
    p, r = result.pictures, result.runs
    click.echo(f"  data and noising pictures  {p['data_mnist']}, {p['data_shapes']}, {p['noising']}")
    click.echo(f"  runs                       {', '.join(str(v) for v in r.values())}")
    click.echo(f"  samples, one row per digit {p['samples']}")
    click.echo(f"  denoising trajectory       {p['trajectory']}")
    if "diagnostics" in p:
        click.echo(f"  diffusion diagnostics      {p['diagnostics']}")
    click.echo(f"  text-to-image page         {p['t2i_page']} (samples, attention maps, adherence)")
    click.echo(f"next: genlab sample {r['diffusion']} --class 7 --n 16 --trajectory traj.gif")
    click.echo(f'      genlab sample {r["t2i"]} "a large red circle on the left" --attention-maps maps.png')
    runs = [r["diffusion"], r["t2i"], r["classifier"]]
    if serve:
        from genlab.cli.serve import run_server

        run_server(runs, port=port)
    else:
        click.echo(f"      genlab serve {' '.join(str(v) for v in runs)}   # the web app")
