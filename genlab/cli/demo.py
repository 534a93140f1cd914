"""`genlab demo`: the main job of `make demo`, end to end on the CPU in under 10 minutes."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import fresh_run_dir
from genlab.cli.train import CLASSIFIER_DEFAULTS, DIFFUSION_DEFAULTS
from genlab.errors import GenlabError


@cli.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Folder for everything the demo writes.")
@click.option("--classifier-steps", default=800, show_default=True, type=int, help="Steps of the classifier.")
@click.option(
    "--diffusion-minutes", default=5.0, show_default=True, type=float, help="Diffusion training budget."
)
@click.option(
    "--clip-steps",
    default=200,
    show_default=True,
    type=int,
    help="Steps of the CLIP whose text tower the text-to-image model reads prompts with.",
)
@click.option(
    "--t2i-minutes",
    default=7.0,
    show_default=True,
    type=float,
    help="Text-to-image training budget (shapes).",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option(
    "--serve", is_flag=True, help="End by serving the demo's models in the web app (`genlab serve`)."
)
@click.option("--port", default=8000, show_default=True, type=int, help="Port of --serve.")
def demo(
    out: str,
    classifier_steps: int,
    diffusion_minutes: float,
    clip_steps: int,
    t2i_minutes: float,
    no_progress: bool,
    serve: bool,
    port: int,
) -> None:
    """Train an MNIST classifier, then a class-conditional diffusion model, sample it and judge the samples.

    \b
    1. captioned grids of the mnist and shapes data sets, and an MNIST digit drowning in noise;
    2. a CNN classifier on the shared engine (about 99% validation accuracy in under 2 minutes);
    3. a class-conditional diffusion U-Net (DDPM with condition dropout) for --diffusion-minutes;
    4. one row of samples per digit (20 DPM-Solver++ steps, guidance 3), a denoising trajectory, and the
       share of samples the classifier recognises as the digit asked for;
    5. CLIP on shapes for --clip-steps, then a text-to-image model (its frozen text tower + a
       cross-attention U-Net) for --t2i-minutes: samples for a set of prompts, cross-attention maps,
       prompt adherence read back from the pixels, all on an HTML page (t2i.html).
    """
    if serve and not 0 < port < 65536:  # before 20 minutes of training, not after
        raise GenlabError(f"--port must be between 1 and 65535 (got {port})")
    import torch

    from genlab.classification import evaluate_classifier
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.data import DataConfig, load_dataset, save_grid
    from genlab.diffusion.pictures import noising_strip, trajectory_strip
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.metrics import conditional_accuracy
    from genlab.nn import Classifier
    from genlab.pipelines import DiffusionPipeline
    from genlab.train import TrainConfig, Trainer, seed_step

    root = fresh_run_dir(out)
    root.mkdir(parents=True)
    progress = not no_progress
    click.echo(f"genlab demo -> {root}")

    seed_step(0, -1)
    clf_task = ClassifierTask(ClassifierDataConfig("mnist"))
    mnist, shapes = clf_task.train_data.spread(32), load_dataset("shapes", "train").spread(32)
    sched = DiffusionConfig().noise_schedule()
    strip, captions = noising_strip(mnist.images[5], sched, 8, torch.Generator().manual_seed(0))
    pictures = [
        save_grid(root / "data_mnist.png", mnist.images, mnist.captions, nrow=8),
        save_grid(root / "data_shapes.png", shapes.images, shapes.captions, nrow=8),
        save_grid(root / "noising.png", strip, captions, nrow=8),
    ]
    click.echo("1/5 data grids and the forward process: " + ", ".join(str(p) for p in pictures))

    click.echo(f"2/5 classifier on mnist ({len(clf_task.train_data)} train images, {classifier_steps} steps)")
    cfg = TrainConfig(**{**CLASSIFIER_DEFAULTS, "steps": classifier_steps, "progress": progress})
    clf = Trainer(clf_task, cfg, root / "classifier").train()
    judge = Classifier.from_pretrained(clf.run_dir)
    clf_acc = evaluate_classifier(judge, clf_task.val_data)["accuracy"]
    click.echo(f"    validation accuracy {clf_acc:.2%} on {len(clf_task.val_data)} held-out digits")

    click.echo(f"3/5 class-conditional diffusion on mnist for {diffusion_minutes:g} minutes")
    seed_step(0, -1)
    diff_task = DiffusionTask(DataConfig("mnist"), DiffusionConfig(cond="class"))
    options = {**DIFFUSION_DEFAULTS, "steps": None, "minutes": diffusion_minutes, "progress": progress}
    options.update(eval_every=0, sample_every=0)
    diff = Trainer(diff_task, TrainConfig(**options), root / "diffusion").train()
    click.echo(f"    {diff.step} steps of {options['batch_size']} images in {diff.seconds / 60:.1f} min")

    click.echo("4/5 sampling (20 DPM-Solver++ steps, guidance 3) and judging the samples with the classifier")
    pipe = DiffusionPipeline.from_pretrained(diff.run_dir)
    g = torch.Generator().manual_seed(0)
    rows = pipe(
        40, torch.arange(10).repeat_interleave(4), 20, 3.0, "dpmpp-2m", generator=g, return_trajectory=True
    )
    samples = save_grid(root / "samples.png", rows.tensors, [str(int(k)) for k in rows.class_labels], nrow=4)
    one_per_digit = [frame[::4] for frame in rows.trajectory]
    traj = save_grid(root / "trajectory.png", trajectory_strip(one_per_digit, max_images=10), nrow=9)
    judged = conditional_accuracy(pipe, judge, per_class=10, steps=20, guidance_scale=3.0, seed=1)
    share = f"{judged['accuracy']:.0%} of {judged['n']}"
    click.echo(f"    the classifier recognises {share} samples as the digit asked for")
    page, adherence = _text_to_image(root, clip_steps, t2i_minutes, progress)
    click.echo("outputs:")
    click.echo(f"  data and noising pictures  {', '.join(str(p) for p in pictures)}")
    click.echo(f"  classifier run             {clf.run_dir}")
    click.echo(
        f"  diffusion run              {diff.run_dir} (config.json, model/ema.safetensors, metrics.jsonl)"
    )
    click.echo(f"  samples, one row per digit {samples}")
    click.echo(f"  denoising trajectory       {traj}")
    click.echo(f"  text-to-image page         {page} (samples, attention maps, adherence {adherence:.0%})")
    click.echo(f"next: genlab sample {diff.run_dir} --class 7 --n 16 --trajectory traj.gif")
    click.echo(
        f'      genlab sample {root / "t2i"} "a large red circle on the left" --attention-maps maps.png'
    )
    runs = [diff.run_dir, root / "t2i", clf.run_dir]
    if serve:
        from genlab.cli.serve import run_server

        run_server(runs, port=port)
    else:
        click.echo(f"      genlab serve {' '.join(str(r) for r in runs)}   # the web app")


# Ancestral DDPM steps: their fresh noise corrects what a briefly trained model gets wrong at high noise,
# where the deterministic solvers carry the error to the end as background speckle (measured on shapes).
T2I_SAMPLER = "ddpm"
DEMO_PROMPTS = (
    "a small red circle at the top left",
    "a large blue square in the center",
    "a large yellow triangle at the bottom right",
    "a small green square on the left",
    "a large magenta circle at the top",
    "a small cyan triangle on the right",
    "a red square left of a blue circle",
    "a green triangle above a yellow square",
)


def _text_to_image(root, clip_steps: int, minutes: float, progress: bool):
    """Stage 5: CLIP on shapes, a text-to-image model reading prompts with its text tower, samples, and an
    HTML page of the results."""
    import torch

    from genlab.cli.clip import CLIP_DEFAULTS
    from genlab.clip.task import CLIPTask
    from genlab.data import DataConfig, save_grid
    from genlab.diffusion.attention_maps import save_attention_maps
    from genlab.diffusion.task import TEXT_UNET_RECIPE, DiffusionConfig, DiffusionTask
    from genlab.metrics.adherence import prompt_adherence, single_object_prompts
    from genlab.metrics.evaluation import generate_from_prompts
    from genlab.metrics.html import write_report
    from genlab.pipelines import TextToImagePipeline
    from genlab.train import TrainConfig, Trainer, seed_step

    click.echo(f"5/5 CLIP on shapes ({clip_steps} steps), then text-to-image for {minutes:g} minutes")
    seed_step(0, -1)
    clip_options = {**CLIP_DEFAULTS, "steps": clip_steps, "progress": progress}
    clip_options.update(eval_every=0, sample_every=0, checkpoint_every=0)
    clip = Trainer(CLIPTask(DataConfig("shapes")), TrainConfig(**clip_options), root / "clip").train()
    zero_shot = clip.metrics.get("zero_shot_acc", float("nan"))
    click.echo(f"    CLIP zero-shot accuracy {zero_shot:.0%} on the 18 colour+shape labels")
    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", min_snr_gamma=5.0),
        text_encoder=f"clip:{clip.run_dir}",
        **TEXT_UNET_RECIPE,
    )
    options = {**DIFFUSION_DEFAULTS, "steps": None, "minutes": minutes, "progress": progress}
    options.update(eval_every=0, sample_every=0)
    result = Trainer(task, TrainConfig(**options), root / "t2i").train()
    click.echo(f"    {result.step} steps of {options['batch_size']} images in {result.seconds / 60:.1f} min")
    pipe = TextToImagePipeline.from_pretrained(result.run_dir)
    g = torch.Generator().manual_seed(0)
    sampler = T2I_SAMPLER
    out = pipe(list(DEMO_PROMPTS), guidance_scale=3.0, sampler=sampler, generator=g, num_images=4)
    save_grid(root / "t2i_samples.png", out.tensors, out.prompts, nrow=4)
    mapped = pipe(
        list(DEMO_PROMPTS[:4]),
        sampler=sampler,
        num_images=1,
        generator=torch.Generator().manual_seed(0),
        return_attention_maps=True,
    )
    save_attention_maps(root / "t2i_attention.png", mapped)
    prompts = single_object_prompts(task.val_data.captions)[:100]
    images = generate_from_prompts(pipe, prompts, 20, sampler, 3.0, seed=1)
    adherence = prompt_adherence(images, prompts)
    save_grid(root / "t2i_adherence.png", images[:32], prompts[:32], nrow=8)
    click.echo(
        f"    all attributes right (colour, shape, size, position, one object) in {adherence['all']:.0%} "
        f"of {adherence['checked']} samples for held-out single-object prompts"
    )
    report = {
        "run": str(result.run_dir),
        "sampler": sampler,
        "steps": 20,
        "guidance_scale": 3.0,
        "n": len(prompts),
        "adherence": adherence,
        "pictures": {
            "samples": "t2i_samples.png",
            "attention": "t2i_attention.png",
            "adherence": "t2i_adherence.png",
        },
    }
    page = write_report(root / "t2i.html", report, "genlab demo: text-to-image on shapes")
    return page, adherence["all"]
