"""`genlab train gan` and `genlab gan ...`: GANs from the original game to DCGAN and WGAN-GP, toy
distributions, the theory's -log 4, and walks through the latent space."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import click

from genlab.cli import cli
from genlab.cli.common import (
    data_fields,
    data_options,
    echo,
    is_main_process,
    monitor_options,
    train_options,
)
from genlab.cli.train import train
from genlab.cli.training import choose_run_dir, report_training, run_training
from genlab.errors import GenlabError
from genlab.recipes import GAN_DEFAULTS

GAN_LOSSES = ("ns", "minimax", "wgan-gp", "hinge")  # genlab.gan.losses.LOSSES, without importing torch


@train.command("gan")
@data_options
@click.option("--arch", default="dcgan", show_default=True, type=click.Choice(["mlp", "dcgan", "cgan"]))
@click.option(
    "--loss",
    default="ns",
    show_default=True,
    type=click.Choice(GAN_LOSSES),
    help="ns: non-saturating -log D(G(z)); minimax: log(1 - D(G(z))); wgan-gp; hinge.",
)
@click.option(
    "--d-steps", default=0, show_default=True, type=int, help="D steps per G step (0: 5 for wgan-gp, else 1)."
)
@click.option("--gp-weight", default=10.0, show_default=True, type=float, help="WGAN-GP's lambda.")
@click.option(
    "--r1",
    default=0.0,
    show_default=True,
    type=float,
    help="gamma of the R1 penalty gamma/2 ||grad D(x)||^2 on real images (Mescheder et al. 2018); "
    "makes D's norm default to none.",
)
@click.option(
    "--mode-seeking",
    default=0.0,
    show_default=True,
    type=float,
    help="Weight of the mode-seeking term (Mao et al. 2019) in G's loss: two latents of one class or "
    "cluster must give two different images.",
)
@click.option("--d-lr-ratio", default=1.0, show_default=True, type=float, help="D's learning rate / G's.")
@click.option(
    "--augment",
    default="none",
    show_default=True,
    help="DiffAugment (Zhao et al. 2020) of every D input, real and generated alike: a comma list of "
    "translation, cutout, color; keeps D from memorising a small data set.",
)
@click.option("--z-dim", default=100, show_default=True, type=int, help="Size of the latent z.")
@click.option("--width", default=64, show_default=True, type=int, help="Channels of D's first conv layer.")
@click.option(
    "--d-norm",
    default=None,
    type=click.Choice(["batch", "layer", "none"]),
    help="Normalisation in D (default: batch; layer for wgan-gp and none with --r1, whose penalties are "
    "per sample).",
)
@click.option("--dropout", default=0.0, show_default=True, type=float, help="Dropout in D.")
@click.option(
    "--pack",
    default=1,
    show_default=True,
    type=int,
    help="PacGAN (Lin et al. 2018): D judges groups of N samples at once, which penalises mode collapse.",
)
@click.option(
    "--spectral-norm", is_flag=True, help="Spectral normalisation of every D layer (Miyato et al. 2018)."
)
@click.option(
    "--minibatch-std", is_flag=True, help="Give the DCGAN D the batch's feature spread (Karras et al. 2018)."
)
@click.option(
    "--clusters",
    default=0,
    show_default=True,
    type=int,
    help="Self-conditioning (Liu et al. 2020): condition G and D on the k-means cluster of each training "
    "image (no labels used); samples draw clusters by their sizes. Against mode dropping (0: off).",
)
@monitor_options(samples=500)
@click.option(
    "--restarts",
    default=1,
    show_default=True,
    type=int,
    help="Train N runs (seeds seed..seed+N-1, each as long as asked) and keep the one of best final FID.",
)
@train_options(**GAN_DEFAULTS)
@click.pass_context
def train_gan(ctx: click.Context, **params: Any) -> None:
    """Train a GAN (Goodfellow et al. 2014) on the shared engine: k D steps per G step, an EMA of G,
    and every --eval-every steps the FID and the histogram of generated classes (mode collapse shows as
    classes dropping out); D(x), D(G(z)) and both losses go to metrics.jsonl.

    \b
    Examples:
      genlab train gan --data mnist --arch dcgan --minutes 20
      genlab train gan --data mnist --arch cgan --loss hinge --steps 2000
      genlab train gan --clusters 50 --mode-seeking 0.1 --loss hinge --spectral-norm --d-norm none
      genlab train gan --data mnist --arch mlp --loss minimax --steps 3000   # watch it saturate
      genlab train gan --data shapes --loss wgan-gp --minutes 15
      genlab train gan --data digits --restarts 3 --steps 1500
      genlab train gan --out runs/gan-mnist --resume --steps 6000
    """
    from genlab.data import DataConfig
    from genlab.gan.task import GameConfig, GANTask, MonitorConfig

    restarts = params["restarts"]
    if restarts < 1:
        raise GenlabError(f"--restarts must be at least 1 (got {restarts})")
    if restarts > 1 and params["resume"]:
        raise GenlabError("--resume continues one run: drop --restarts")
    if restarts > 1 and params["features"] == "none":
        raise GenlabError(
            "--restarts keeps the run of best FID: it needs --features (auto, inception or a run)"
        )

    def build(cfg: Any) -> GANTask:
        options = {
            k: params[k]
            for k in (
                "arch",
                "z_dim",
                "width",
                "dropout",
                "pack",
                "minibatch_std",
                "spectral_norm",
                "clusters",
            )
        }
        if params["d_norm"] is not None:
            options["d_norm"] = params["d_norm"]
        if params["pack"] > 1 and cfg.batch_size % params["pack"]:
            raise GenlabError(f"--pack {params['pack']} needs a --batch-size divisible by it")
        return GANTask(
            DataConfig(**data_fields(params)),
            GameConfig(
                loss=params["loss"],
                d_steps=params["d_steps"],
                gp_weight=params["gp_weight"],
                d_lr_ratio=params["d_lr_ratio"],
                r1=params["r1"],
                mode_seeking=params["mode_seeking"],
                augment=params["augment"],
            ),
            monitor=MonitorConfig(params["eval_samples"], params["features"]),
            log=echo,
            **options,
        )

    def rebuild(config: dict[str, Any]) -> GANTask:
        return GANTask.from_run_config(config, log=echo)

    labels = {"fid": "FID (evaluation features)", "modes_covered": "classes covered"}
    if restarts == 1:
        result = run_training(ctx, params, "gan", build, rebuild)
        report_training(result, labels)
    else:
        result = _restarts(ctx, params, build, rebuild, restarts)
    if is_main_process():
        from genlab import rundir
        from genlab.gan.plots import plot_gan_training

        config = rundir.read_config(result.run_dir)
        plot = plot_gan_training(
            rundir.read_metrics(result.run_dir),
            Path(result.run_dir) / "diagnostics.png",
            config.get("class_names"),
        )
        echo(f"diagnostics (losses, D(x), D(G(z)), FID, class shares): {plot}")
        echo(f"sample it: genlab sample {result.run_dir} --n 64 --out gan.png")


def _restarts(ctx: click.Context, params: dict[str, Any], build, rebuild, n: int):
    """Train ``n`` runs into OUT/restarts/seed-S, then move the one of lowest final FID up into OUT; the
    others stay under OUT/restarts, and OUT/restarts.json lists them all."""
    from genlab import rundir

    out = Path(choose_run_dir(params["out"], False, "gan", params["data"]))
    if out.exists() and any(out.iterdir()):
        raise GenlabError(f"{out} already exists and is not empty; choose another --out")
    seed, results = params["seed"], []
    for i in range(n):
        echo(f"restart {i + 1}/{n}: seed {seed + i}")
        sub = dict(params, seed=seed + i, out=str(out / "restarts" / f"seed-{seed + i}"))
        result = run_training(ctx, sub, "gan", build, rebuild)
        if result.interrupted:
            raise GenlabError(f"stopped during restart {i + 1}; its run is in {result.run_dir}")
        fid = result.metrics.get("fid")
        if fid is None:
            raise GenlabError("the runs report no FID to choose by; check --features")
        echo(f"  seed {seed + i}: FID {fid:.2f}, classes covered {result.metrics.get('modes_covered', '?')}")
        results.append(result)
    best = min(results, key=lambda r: r.metrics["fid"])
    for entry in list(best.run_dir.iterdir()):
        os.replace(entry, out / entry.name)
    shutil.rmtree(best.run_dir)
    summary = {
        "chosen_seed": seed + results.index(best),
        "chosen_by": "lowest final FID",
        "runs": [
            {
                "seed": seed + i,
                "fid": r.metrics["fid"],
                "modes_covered": r.metrics.get("modes_covered"),
                "run_dir": str(out) if r is best else str(r.run_dir),
            }
            for i, r in enumerate(results)
        ],
    }
    rundir.atomic_write_json(out / "restarts.json", summary)
    chosen = f"seed {summary['chosen_seed']} (FID {best.metrics['fid']:.2f})"
    echo(f"kept {chosen} in {out}; every restart: {out / 'restarts.json'}")
    best.run_dir = out
    return best


@cli.group()
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
    from genlab import rundir
    from genlab.gan.plots import plot_gan_training

    config = rundir.read_config(run, kind="gan")
    path = plot_gan_training(
        rundir.read_metrics(run), out or Path(run) / "diagnostics.png", config.get("class_names")
    )
    echo(f"diagnostics: {path}")


@gan.command("toy")
@click.option("--data", default="ring", show_default=True, type=click.Choice(["ring", "ducks-cows"]))
@click.option("--loss", default="ns", show_default=True, type=click.Choice(GAN_LOSSES))
@click.option("--steps", default=20000, show_default=True, type=int, help="Generator steps.")
@click.option("--minutes", default=None, type=float, help="Stop after this many minutes.")
@click.option("--lr", default=1e-4, show_default=True, type=float)
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option(
    "--d-steps", default=0, show_default=True, type=int, help="D steps per G step (0: the paper's)."
)
@click.option(
    "--std", default=None, type=float, help="Std of each Gaussian (default: ring 0.02, ducks-cows 0.3)."
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--frames", default=60, show_default=True, type=int, help="Frames of the animation.")
@click.option(
    "--out", default=None, help="Folder for the GIF, plot and history (default runs/gan-toy-DATA-LOSS)."
)
def toy_cmd(
    data: str,
    loss: str,
    steps: int,
    minutes: float | None,
    lr: float,
    batch_size: int,
    d_steps: int,
    std: float | None,
    seed: int,
    frames: int,
    out: str | None,
) -> None:
    """Train a small MLP GAN on a toy distribution and animate the generator's distribution moving onto
    the data (in 1-D with D's curve, as in the paper's figure 1); report the modes covered over time.

    \b
    Examples:
      genlab gan toy --data ring --loss ns --minutes 5
      genlab gan toy --data ring --loss minimax      # the saturating loss, for comparison
      genlab gan toy --data ducks-cows --steps 3000
    """
    from genlab import rundir
    from genlab.cli.common import fresh_run_dir
    from genlab.data import save_gif
    from genlab.gan.toy import ToyConfig, plot_history, render_frame, train_toy

    cfg = ToyConfig(
        data=data,
        loss=loss,
        std=std,
        steps=steps,
        minutes=minutes,
        batch_size=batch_size,
        lr=lr,
        d_steps=d_steps,
        seed=seed,
        frames=frames,
    )
    folder = Path(out) if out else fresh_run_dir(f"runs/gan-toy-{data}-{loss}")
    folder.mkdir(parents=True, exist_ok=True)

    def show(record: dict) -> None:
        echo(
            f"step {record['step']:>6}: {record['modes_covered']}/{record['num_modes']} modes, "
            f"{record['high_quality']:.0%} of samples within 3 std of a mode"
        )

    result = train_toy(cfg, show)
    gif = save_gif(
        folder / "training.gif", [render_frame(result, i)[None] for i in range(len(result.history))]
    )
    plot_history(result, folder / "history.png")
    rundir.atomic_write_json(folder / "history.json", result.to_dict())
    last = result.history[-1]
    echo(
        f"{last['modes_covered']}/{last['num_modes']} modes covered after {last['step']} steps "
        f"({result.seconds / 60:.1f} min); animation {gif}, plot {folder / 'history.png'}"
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


def _pipe(run: str, device: str):
    from genlab.pipelines.gan import GANPipeline

    return GANPipeline.from_pretrained(run, device=device)


@gan.command("interpolate")
@click.argument("run", type=click.Path())
@click.option("--rows", default=4, show_default=True, type=int, help="Pairs of random endpoints.")
@click.option("--steps", default=8, show_default=True, type=int, help="Images per row, ends included.")
@click.option("--mode", default="slerp", show_default=True, type=click.Choice(["slerp", "lerp"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="interpolation.png", show_default=True)
@click.option("--device", default="auto", show_default=True)
def interpolate_cmd(run: str, rows: int, steps: int, mode: str, seed: int, out: str, device: str) -> None:
    """Walk the latent space between random points: smooth transitions mean the generator learned a
    space, not a lookup table (Radford et al. 2016, section 6.1). A conditional GAN keeps each row's class.

    \b
    Example:
      genlab gan interpolate runs/gan-mnist --rows 4 --steps 10 --out walk.png
    """
    import torch

    from genlab.data import save_grid
    from genlab.gan.latent import interpolate

    if rows < 1:
        raise GenlabError(f"--rows must be at least 1 (got {rows})")
    pipe = _pipe(run, device)
    g = torch.Generator().manual_seed(seed)
    a, b = pipe.gan.latents(rows, g).cpu(), pipe.gan.latents(rows, g).cpu()
    z = interpolate(a, b, steps, mode).transpose(0, 1).reshape(rows * steps, -1)  # row-major strips
    labels = (torch.arange(rows) % pipe.num_classes).repeat_interleave(steps) if pipe.num_classes else None
    images = pipe(rows * steps, labels, latents=z).tensors
    path = save_grid(out, images, nrow=steps)
    echo(f"{rows} interpolations of {steps} images ({mode}): {path}")


@gan.command("arithmetic")
@click.argument("run", type=click.Path())
@click.option(
    "--a", "a", required=True, help="A: a class name, or latent indices like 3,17,42 with --by index."
)
@click.option("--b", "b", required=True, help="B: as --a.")
@click.option("--c", "c", required=True, help="C: as --a.")
@click.option(
    "--by",
    default=None,
    type=click.Choice(["class", "index"]),
    help="Choose latents by the class a classifier sees (default for an unconditional GAN) or by index into "
    "the pool (default, and the only way, for a conditional GAN).",
)
@click.option("--exemplars", default=3, show_default=True, type=int, help="Latents averaged per class.")
@click.option(
    "--classifier",
    default=None,
    type=click.Path(),
    help="Classifier run that names the classes "
    "of samples (default: the data's own, trained once and cached).",
)
@click.option("--pool", default=2000, show_default=True, type=int, help="Latents drawn to choose from.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the latent pool.")
@click.option("--out", default="arithmetic.png", show_default=True)
@click.option("--device", default="auto", show_default=True)
def arithmetic_cmd(
    run: str,
    a: str,
    b: str,
    c: str,
    by: str | None,
    exemplars: int,
    classifier: str | None,
    pool: int,
    seed: int,
    out: str,
    device: str,
) -> None:
    """Vector arithmetic on latents, A - B + C (Radford et al. 2016, section 6.3): each of A, B, C is the
    mean latent of the samples a classifier puts in a class (the most confident --exemplars of the pool),
    or of the pool latents given by index (0..pool-1; a conditional GAN draws index i with class i mod K and
    the result with C's class). Writes the three means' images, the result and four neighbours of it.

    \b
    Examples:
      genlab gan arithmetic runs/gan-mnist --a 7 --b 1 --c 4
      genlab gan arithmetic runs/gan-mnist --by index --a 3,11 --b 5 --c 8,9
    """
    import torch

    from genlab import rundir
    from genlab.data import DataConfig, save_grid
    from genlab.gan.latent import arithmetic
    from genlab.nn.pretrained import config_from_dict

    pipe = _pipe(run, device)
    g = torch.Generator().manual_seed(seed)
    if pool < 1 or exemplars < 1:
        raise GenlabError("--pool and --exemplars must be at least 1")
    z = pipe.gan.latents(pool, g).cpu()
    k = pipe.num_classes
    pool_labels = torch.arange(pool) % k if k else None
    by = by or ("index" if k else "class")
    by_index = by == "index"
    judge = None
    probs = None
    if not by_index:
        if k:
            raise GenlabError("a conditional GAN's class is an input, not a region of z: use --by index")
        from genlab.classification.evaluate import predict
        from genlab.evaluation.features import classifier_extractor, resolve_extractor

        if classifier:
            judge = classifier_extractor(classifier).classifier
        else:
            data = config_from_dict(DataConfig, rundir.read_config(run).get("data", {}), f"{run}/config.json")
            judge = resolve_extractor("auto", data, log=echo).classifier
        probs = predict(judge, pipe(pool, latents=z).tensors)
    picked, captions = [], []
    for name, part in (("A", a), ("B", b), ("C", c)):
        if by_index:
            try:
                idx = [int(v) for v in part.split(",") if v.strip()]
            except ValueError:
                raise GenlabError(
                    f"--by index takes latent indices like 3,17 (got --{name.lower()} {part})"
                ) from None
            if not idx or min(idx) < 0 or max(idx) >= pool:
                raise GenlabError(f"--{name.lower()} indices must lie in 0..{pool - 1} (got {part})")
            picked.append((z[idx], pool_labels[idx[0]] if k else None))
            captions.append(f"{name}: #{part}")
        else:
            names = list(judge.config.class_names) or [str(i) for i in range(judge.config.num_classes)]
            if part not in names:
                raise GenlabError(
                    f"unknown class '{part}' for --{name.lower()}; the classifier knows {', '.join(names)}"
                )
            cls = names.index(part)
            top = probs[:, cls].topk(exemplars).indices
            if probs[top].argmax(1).ne(cls).all():
                raise GenlabError(f"none of the {pool} samples looks like a {part}; raise --pool")
            picked.append((z[top], None))
            captions.append(f"{name}: {part}")
    result = arithmetic(picked[0][0], picked[1][0], picked[2][0])
    means = torch.stack([p[0].mean(0) for p in picked])
    near = result + 0.25 * torch.randn(4, result.numel(), generator=g)  # DCGAN's figure 7: result + noise
    latents = torch.cat([means, result[None], near])
    labels = None
    if k:
        labels = torch.stack([p[1] for p in picked] + [picked[2][1]] * 5)
    images = pipe(len(latents), labels, latents=latents).tensors
    captions += ["A - B + C"] + [f"nearby {i + 1}" for i in range(4)]
    path = save_grid(out, images, captions, nrow=4)
    echo(f"A - B + C from {', '.join(captions[:3])}: {path}")
