"""`genlab gan ...`: a GAN run's diagnostics, toy distributions, the theory's -log 4, and walks through
the latent space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genlab.cli import cli
from genlab.cli.common import echo

GAN_LOSSES = ("ns", "minimax", "wgan-gp", "hinge")  # genlab.gan.losses.LOSSES, without importing torch


@cli.group(context_settings={"show_default": True})
def gan() -> None:
    """GAN demonstrations: toy distributions, the theory's -log 4, latent interpolation and arithmetic."""


@gan.command("plot")
@click.argument("run", type=click.Path())
@click.option("--out", default=None, help="PNG to write (default: RUN/diagnostics.png).")
def plot_cmd(run: str, out: str | None) -> None:
    """Draw a GAN run's diagnostics: D and G losses, D(x) and D(G(z)), FID, and the class shares of the
    samples at every evaluation (mode collapse made visible).

    \b
    Example:
      genlab gan plot runs/gan-mnist
    """
    from genlab.gan.plots import plot_run

    echo(f"diagnostics: {plot_run(run, out)}")


@gan.command("toy")
@click.option("--data", default="ring", type=click.Choice(["ring", "ducks-cows"]))
@click.option("--loss", default="ns", type=click.Choice(GAN_LOSSES))
@click.option("--steps", default=20000, help="Generator steps.")
@click.option("--minutes", default=None, type=float, help="Stop after this many minutes.")
@click.option("--lr", default=1e-4)
@click.option("--batch-size", default=256)
@click.option("--d-steps", default=0, help="D steps per G step (0: the paper's).")
@click.option(
    "--std", default=None, type=float, help="Std of each Gaussian (default: ring 0.02, ducks-cows 0.3)."
)
@click.option("--seed", default=0)
@click.option("--frames", default=60, help="Frames of the animation.")
@click.option(
    "--out", default=None, help="Folder for the GIF, plot and history (default runs/gan-toy-DATA-LOSS)."
)
def toy_cmd(out: str | None, **options: Any) -> None:
    """Train a small MLP GAN on a toy distribution and animate the generator's distribution moving onto
    the data (in 1-D with D's curve, as in the paper's figure 1); report the modes covered over time.

    \b
    Examples:
      genlab gan toy --data ring --loss ns --minutes 5
      genlab gan toy --data ring --loss minimax      # the saturating loss, for comparison
      genlab gan toy --data ducks-cows --steps 3000
    """
    from genlab.cli.common import fresh_run_dir
    from genlab.gan.toy import ToyConfig, save_toy_run, train_toy

    cfg = ToyConfig(**options)
    folder = Path(out) if out else fresh_run_dir(f"runs/gan-toy-{cfg.data}-{cfg.loss}")
    folder.mkdir(parents=True, exist_ok=True)

    def show(record: dict) -> None:
        echo(
            f"step {record['step']:>6}: {record['modes_covered']}/{record['num_modes']} modes, "
            f"{record['high_quality']:.0%} of samples within 3 std of a mode"
        )

    result = train_toy(cfg, show)
    gif, plot = save_toy_run(result, folder)
    last = result.history[-1]
    echo(
        f"{last['modes_covered']}/{last['num_modes']} modes covered after {last['step']} steps "
        f"({result.seconds / 60:.1f} min); animation {gif}, plot {plot}"
    )


@gan.command("theory")
def theory_cmd() -> None:
    """Check Goodfellow et al.'s theorem 1 numerically on the ducks-and-cows density: with the optimal
    discriminator D* = p_data / (p_data + p_g), V(D*, G) = -log 4 + 2 JSD(p_data || p_g), which is -log 4
    exactly when the generator's density equals the data's."""
    import math

    from genlab.gan.toy import theory_check

    echo(f"-log 4 = {-math.log(4):.6f}")
    echo("generator = data shifted by s    V(D*, G)    -log 4 + 2 JSD")
    for row in theory_check():
        echo(f"  s = {row['shift']:<4}{row['value']:>28.6f}{row['minus_log4_plus_2jsd']:>18.6f}")


@gan.command("interpolate")
@click.argument("run", type=click.Path())
@click.option("--rows", default=4, help="Pairs of random endpoints.")
@click.option("--steps", default=8, help="Images per row, ends included.")
@click.option("--mode", default="slerp", type=click.Choice(["slerp", "lerp"]))
@click.option("--seed", default=0)
@click.option("--out", default="interpolation.png")
@click.option("--device", default="auto")
def interpolate_cmd(run: str, rows: int, steps: int, mode: str, seed: int, out: str, device: str) -> None:
    """Walk the latent space between random points: smooth transitions mean the generator learned a
    space, not a lookup table (Radford et al. 2016, section 6.1). A conditional GAN keeps each row's class.

    \b
    Example:
      genlab gan interpolate runs/gan-mnist --rows 4 --steps 10 --out walk.png
    """
    from genlab.data import save_grid
    from genlab.gan.latent import interpolation_grid
    from genlab.pipelines.gan import GANPipeline

    images = interpolation_grid(GANPipeline.from_pretrained(run, device=device).gan, rows, steps, mode, seed)
    path = save_grid(out, images, nrow=steps)
    echo(f"{rows} interpolations of {steps} images ({mode}): {path}")


@gan.command("arithmetic")
@click.argument("run", type=click.Path())
@click.option("--a", required=True, help="A: a class name, or latent indices like 3,17,42 with --by index.")
@click.option("--b", required=True, help="B: as --a.")
@click.option("--c", required=True, help="C: as --a.")
@click.option(
    "--by",
    default=None,
    type=click.Choice(["class", "index"]),
    help="Choose latents by the class a classifier sees (default for an unconditional GAN) or by index into "
    "the pool (default, and the only way, for a conditional GAN).",
)
@click.option("--exemplars", default=3, help="Latents averaged per class.")
@click.option(
    "--classifier",
    default=None,
    type=click.Path(),
    help="Classifier run that names the classes "
    "of samples (default: the data's own, trained once and cached).",
)
@click.option("--pool", default=2000, help="Latents drawn to choose from.")
@click.option("--seed", default=0, help="Seed of the latent pool.")
@click.option("--out", default="arithmetic.png")
@click.option("--device", default="auto")
def arithmetic_cmd(run: str, classifier: str | None, out: str, device: str, **terms: Any) -> None:
    """Vector arithmetic on latents, A - B + C (Radford et al. 2016, section 6.3): each of A, B, C is the
    mean latent of the samples a classifier puts in a class (the most confident --exemplars of the pool),
    or of the pool latents given by index (0..pool-1; a conditional GAN draws index i with class i mod K and
    the result with C's class). Writes the three means' images, the result and four neighbours of it.

    \b
    Examples:
      genlab gan arithmetic runs/gan-mnist --a 7 --b 1 --c 4
      genlab gan arithmetic runs/gan-mnist --by index --a 3,11 --b 5 --c 8,9
    """
    from genlab.data import save_grid
    from genlab.gan.latent import latent_arithmetic, run_classifier
    from genlab.pipelines.gan import GANPipeline

    model = GANPipeline.from_pretrained(run, device=device).gan
    figure = latent_arithmetic(model, **terms, classifier=lambda: run_classifier(run, classifier, log=echo))
    path = save_grid(out, figure.images, figure.captions, nrow=4)
    echo(f"A - B + C from {', '.join(figure.captions[:3])}: {path}")
