"""Our diffusion U-Net against diffusers' ``UNet2DModel`` of matched size, in one process.

The networks are built here, fed the same tensors and timed interleaved (``timing.time_interleaved``):
training steps (forward, MSE loss, backward, AdamW step) and single denoiser evaluations under
``torch.no_grad`` as a sampler makes them. FLOPs per image come from ``flops.forward_flops_per_image``;
the fraction of the machine's fp32 matmul peak each model reaches is nanoGPT's MFU, measured rather than
taken from a data sheet.

Ours runs as genlab ships it: as `genlab train diffusion` trains (the fused AdamW of the engine, bfloat16
autocast where ``--precision auto`` picks it, torch.compile where ``--compile`` defaults to it) and as
the pipelines sample (the same autocast). The peer runs as its users get it: ``UNet2DModel`` in fp32 with
``torch.optim.AdamW``'s defaults, eager, and the same under ``torch.compile``.

The peer mirrors our structure: the same resolution levels and channel multipliers, attention at the
same levels and in the middle block, GroupNorm groups, attention head width and a class embedding; its
width and ResBlocks per level are searched for the parameter count nearest ours.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.bench.flops import forward_flops_per_image
from genlab.bench.timing import Timing, matmul_op, matmul_peak_gflops, time_interleaved
from genlab.nn.unet import UNet, UNetConfig
from genlab.train.distributed import pick_device

PEER = "diffusers"
PEER_COMPILED = "diffusers-compiled"
PEERS = (PEER, PEER_COMPILED)
INSTALL_HINT = "pip install -e '.[bench]'  (or: make bench)"
MATMUL = "matmul"  # the peak's product, timed alongside the models
TRAIN_FLOPS_FACTOR = 3  # backward ~ 2x forward: gradients of activations and of weights


@dataclass
class DiffusionBenchSettings:
    """What to run: the shapes fed to both networks and how often each timing is taken."""

    device: str = "cpu"
    threads: int = 0  # 0: all cores
    batch_size: int = 64  # training batch
    sample_batch_size: int = 32  # batch of one denoiser evaluation while sampling
    image_size: int = 28
    repeats: int = 5
    warmup: int = 1
    sampling_steps: int = 20  # DPM-Solver++ steps whose cost is implied
    matmul_size: int = 0  # 0: 2048 on CPU, 8192 on GPU
    seed: int = 0
    match_tolerance: float = 0.10  # largest relative parameter-count gap called "matched"
    peer_compile: bool = True  # also time diffusers under torch.compile (where a compiler is found)


@dataclass
class Contender:
    """One network as the benchmark sees it: a ``(x, t, labels) -> prediction`` callable, how it is run
    (its optimizer, the precision of its forward pass, compiled or not) and its facts."""

    name: str
    model: nn.Module
    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    make_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW
    precision: str = "fp32"  # resolved: "bf16" runs the forward pass under autocast
    compiled: bool = False

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def default_threads() -> int:
    """All the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_diffusers() -> tuple[ModuleType | None, str | None]:
    """The diffusers module, or None and a one-line reason (missing, or failing to import)."""
    try:
        import diffusers
    except ModuleNotFoundError as e:
        if e.name == "diffusers":
            return None, f"diffusers is not installed, so only our U-Net is measured; add it: {INSTALL_HINT}"
        return None, f"diffusers failed to import ({type(e).__name__}: {e}); only our U-Net is measured"
    except Exception as e:  # a broken install or an incompatible dependency
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"diffusers failed to import ({type(e).__name__}: {first}); only our U-Net is measured"
    return diffusers, None


def ours(config: UNetConfig, device: torch.device | str = "cpu") -> Contender:
    """Our U-Net as ``genlab train diffusion`` builds and trains it on ``device``: the engine's AdamW, the
    precision ``--precision auto`` picks there, compiled where ``--compile`` defaults to it."""
    from genlab.nn.precision import resolve_precision
    from genlab.train.compile import compile_problem, want_compile
    from genlab.train.optim import adamw

    device = torch.device(device)
    model = UNet(config)
    compiled = want_compile(None, device) and compile_problem(device) is None
    net = torch.compile(model) if compiled else model
    return Contender(
        "ours",
        model,
        lambda x, t, y: net(x, t, y),
        asdict(config),
        make_optimizer=adamw,
        precision=resolve_precision("auto", device),
        compiled=compiled,
    )


def diffusers_kwargs(config: UNetConfig, width: int, layers_per_block: int) -> dict[str, Any]:
    """``UNet2DModel`` arguments shaped like ``config`` with base ``width`` and ``layers_per_block``."""
    levels = range(len(config.channel_mults))
    attn = set(config.attention_levels)
    return dict(
        sample_size=config.image_size,
        in_channels=config.in_channels,
        out_channels=config.out_channels or config.in_channels,
        block_out_channels=tuple(width * m for m in config.channel_mults),
        layers_per_block=layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(levels)),
        norm_num_groups=config.groups,
        attention_head_dim=config.head_dim,
        dropout=config.dropout,
        num_class_embeds=config.num_classes or None,
    )


def match_diffusers_unet(
    diffusers: ModuleType, config: UNetConfig, target_params: int
) -> tuple[dict[str, Any], int]:
    """The ``UNet2DModel`` arguments whose parameter count is nearest ``target_params``.

    Searches base widths (multiples of the GroupNorm groups, up to 4x ours, attention levels a multiple
    of the head width) and 1-3 ResBlocks per level; ties go to our number of ResBlocks. Candidates are
    built on the meta device, so the search allocates nothing; widening stops once past the target.
    """
    best: tuple[float, int, dict[str, Any], int] | None = None
    for layers in (1, 2, 3):
        for width in range(config.groups, 4 * config.base_channels + 1, config.groups):
            channels = [width * m for m in config.channel_mults]
            if any(c % config.groups for c in channels):
                continue
            if any(channels[i] % config.head_dim for i in config.attention_levels):
                continue
            kwargs = diffusers_kwargs(config, width, layers)
            with torch.device("meta"):
                n = sum(p.numel() for p in diffusers.UNet2DModel(**kwargs).parameters())
            key = (abs(n - target_params) / target_params, abs(layers - config.num_res_blocks), kwargs, n)
            if best is None or key[:2] < best[:2]:
                best = key
            if n > target_params:  # wider ones only grow
                break
    if best is None:
        raise ValueError(f"no UNet2DModel shape fits channel multipliers {config.channel_mults}")
    return best[2], best[3]


def theirs(
    diffusers: ModuleType, config: UNetConfig, target_params: int, compiled: bool = False
) -> Contender:
    """diffusers' ``UNet2DModel`` of the parameter count nearest ``target_params``, in fp32 with
    ``torch.optim.AdamW``'s defaults, eager or under ``torch.compile``."""
    kwargs, _ = match_diffusers_unet(diffusers, config, target_params)
    model = diffusers.UNet2DModel(**kwargs)
    net = torch.compile(model) if compiled else model
    config_out = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return Contender(
        PEER_COMPILED if compiled else PEER,
        model,
        lambda x, t, y: net(x, t, class_labels=y, return_dict=False)[0],
        config_out,
        compiled=compiled,
    )


def _inputs(
    batch: int, config: UNetConfig, device: torch.device, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Noisy images, the noise to predict, random timesteps in [0, 1000) and random class labels."""
    shape = (batch, config.in_channels, config.image_size, config.image_size)
    x = torch.randn(shape, generator=gen)
    noise = torch.randn(shape, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen).float()
    y = torch.randint(0, max(config.num_classes, 1), (batch,), generator=gen)
    return tuple(v.to(device) for v in (x, noise, t, y))


def train_step(
    contender: Contender, inputs: tuple[torch.Tensor, ...], lr: float = 1e-4
) -> Callable[[], None]:
    """One optimizer step of eps-prediction: forward, MSE against the noise, backward, AdamW."""
    from genlab.nn.precision import autocast

    x, noise, t, y = inputs
    model = contender.model
    optimizer = contender.make_optimizer(model.parameters(), lr=lr)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, contender.precision):
            out = contender.predict(x, t, y)
        loss = F.mse_loss(out.float(), noise)
        loss.backward()
        optimizer.step()

    return step


def denoise_run(
    contender: Contender, inputs: tuple[torch.Tensor, ...], evaluations: int = 20
) -> Callable[[], None]:
    """``evaluations`` denoiser evaluations in a row, without autograd, as a sampler makes them: one
    sampling run, less the sampler's own (elementwise) arithmetic. Under autocast, as in
    ``genlab.diffusion.generate``, the run is one region, so the weights are cast once."""
    from genlab.nn.precision import autocast

    x, _, t, y = inputs

    def run() -> None:
        contender.model.eval()
        with torch.no_grad(), autocast(x.device, contender.precision):
            for _ in range(evaluations):
                contender.predict(x, t, y)

    return run


def run_diffusion_bench(
    config: UNetConfig,
    settings: DiffusionBenchSettings,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure our U-Net (and diffusers' matched one where installed); return the results as JSON data."""
    device = pick_device(settings.device)
    threads = settings.threads or default_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(config, settings, device, threads, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    config: UNetConfig,
    settings: DiffusionBenchSettings,
    device: torch.device,
    threads: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    notes: list[str] = []
    diffusers, problem = load_diffusers()
    if problem:
        log(problem)
        notes.append(problem)

    torch.manual_seed(settings.seed)
    contenders = [ours(config, device)]
    if diffusers is not None:
        from genlab.train.compile import compile_problem

        torch.manual_seed(settings.seed)
        contenders.append(theirs(diffusers, config, contenders[0].params))
        problem = compile_problem(device) if settings.peer_compile else "--no-peer-compile"
        if problem is None:
            torch.manual_seed(settings.seed)
            contenders.append(theirs(diffusers, config, contenders[0].params, compiled=True))
        else:
            notes.append(f"diffusers not timed compiled: {problem}")
    for c in contenders:
        c.model.to(device)

    gen = torch.Generator().manual_seed(settings.seed)
    train_inputs = _inputs(settings.batch_size, config, device, gen)
    sample_inputs = _inputs(settings.sample_batch_size, config, device, gen)
    matmul_n = settings.matmul_size or (8192 if device.type == "cuda" else 2048)

    log(f"device {device}, {threads} threads; measuring the fp32 matmul peak ({matmul_n}x{matmul_n})")
    peak_before = matmul_peak_gflops(matmul_n, repeats=5, device=device)
    log("counting FLOPs")
    x, _, t, y = (v[:2] for v in sample_inputs)  # FLOPs grow linearly with the batch: two images do
    flops = {}
    for c in contenders:  # counted on the eager module: compiling changes the kernels, not the products
        c.model.eval()
        flops[c.name] = forward_flops_per_image(_eager_predict(c), x, t, y)
    if any(c.compiled for c in contenders):
        log("the compiled models compile during their warm-up call (a minute or more on a CPU)")
    # The matmul joins every round too, so the peak is also measured under the models' conditions.
    mm, mm_flops = matmul_op(matmul_n, device)
    log(f"timing training steps (batch {settings.batch_size}), interleaved, {settings.repeats} repeats")
    train = time_interleaved(
        {**{c.name: train_step(c, train_inputs) for c in contenders}, MATMUL: mm},
        settings.repeats,
        settings.warmup,
        device=device,
    )
    log(
        f"timing runs of {settings.sampling_steps} denoiser evaluations "
        f"(batch {settings.sample_batch_size}), interleaved"
    )
    sample = time_interleaved(
        {**{c.name: denoise_run(c, sample_inputs, settings.sampling_steps) for c in contenders}, MATMUL: mm},
        settings.repeats,
        settings.warmup,
        device=device,
    )
    peak_after = matmul_peak_gflops(matmul_n, repeats=5, device=device)
    interleaved = [mm_flops / s / 1e9 for s in train[MATMUL].samples + sample[MATMUL].samples]
    peak = max(peak_before, peak_after, *interleaved)

    models = {
        c.name: _model_result(c, flops[c.name], train[c.name], sample[c.name], settings, peak)
        for c in contenders
    }
    ratios: dict[str, dict[str, float]] = {}
    keys = ["params", "forward_flops_per_image", "train_images_per_s", "sample_ms_per_image"]
    keys.append("train_peak_fraction")
    for peer in PEERS:
        if peer in models:
            ratios[peer] = {k: models["ours"][k] / models[peer][k] for k in keys}
    if PEER in ratios:
        gap = abs(ratios[PEER]["params"] - 1)
        if gap > settings.match_tolerance:
            notes.append(f"parameter counts differ by {gap:.0%}, more than {settings.match_tolerance:.0%}")
    steps = settings.sampling_steps
    notes += [
        f"training FLOPs per image are taken as {TRAIN_FLOPS_FACTOR}x the forward FLOPs "
        "(backward ~ 2x forward)",
        "FLOPs count the matrix products (convolutions, linear layers, attention), 2 per multiply-add",
        f"sampling cost: {steps} DPM-Solver++ steps = {steps} evaluations per image, {2 * steps} with "
        "classifier-free guidance (conditional + unconditional)",
        "ratios are ours / diffusers (eager, and compiled), medians of interleaved samples taken in one "
        "process",
        "fractions of peak are of the fp32 matmul peak, also for bfloat16 forward passes",
    ]
    return {
        "benchmark": "diffusion",
        "machine": _machine(device, threads, diffusers),
        "settings": asdict(settings) | {"device": str(device), "threads": threads, "matmul_size": matmul_n},
        "peak": {
            "dtype": "float32",
            "matmul_size": matmul_n,
            "gflops": peak,
            "gflops_before": peak_before,
            "gflops_after": peak_after,
            "gflops_interleaved": interleaved,
        },
        "models": models,
        "ratios_ours_over_diffusers": ratios.get(PEER, {}),
        "ratios_ours_over_diffusers_compiled": ratios.get(PEER_COMPILED, {}),
        "notes": notes,
    }


def _model_result(
    c: Contender,
    fwd_flops: float,
    train: Timing,
    sample: Timing,
    settings: DiffusionBenchSettings,
    peak_gflops: float,
) -> dict[str, Any]:
    images_per_s = settings.batch_size / train.median
    ms_per_image = 1000 * sample.median / (settings.sample_batch_size * settings.sampling_steps)
    train_gflops = TRAIN_FLOPS_FACTOR * fwd_flops * images_per_s / 1e9
    sample_gflops = fwd_flops / (ms_per_image / 1000) / 1e9
    return {
        "params": c.params,
        "config": c.config,
        "precision": c.precision,
        "compiled": c.compiled,
        "optimizer": "AdamW (fused)" if _fused(c) else "AdamW",
        "forward_flops_per_image": fwd_flops,
        "train_flops_per_image": TRAIN_FLOPS_FACTOR * fwd_flops,
        "train_step_s": train.median,
        "train_step_s_samples": train.samples,
        "train_images_per_s": images_per_s,
        "train_gflops": train_gflops,
        "train_peak_fraction": train_gflops / peak_gflops,
        "sample_run_s": sample.median,  # sampling_steps evaluations of a batch in a row
        "sample_run_s_samples": sample.samples,
        "sample_ms_per_image": ms_per_image,
        "sample_gflops": sample_gflops,
        "sample_peak_fraction": sample_gflops / peak_gflops,
        "dpm_solver_ms_per_image": settings.sampling_steps * ms_per_image,
        "dpm_solver_cfg_ms_per_image": 2 * settings.sampling_steps * ms_per_image,
    }


def _eager_predict(c: Contender) -> Callable[..., torch.Tensor]:
    """The contender's prediction without torch.compile (for counting FLOPs)."""
    if isinstance(c.model, UNet):
        return lambda x, t, y: c.model(x, t, y)
    return lambda x, t, y: c.model(x, t, class_labels=y, return_dict=False)[0]


def _fused(c: Contender) -> bool:
    probe = c.make_optimizer([torch.zeros(1, requires_grad=True)], lr=1e-3)
    return bool(probe.defaults.get("fused"))


def _machine(device: torch.device, threads: int, diffusers: ModuleType | None) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": getattr(diffusers, "__version__", None),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def format_table(result: dict[str, Any]) -> str:
    """The results as a small fixed-width table: one column per contender, then ours over each peer."""
    models = result["models"]
    s, peak = result["settings"], result["peak"]
    steps = s["sampling_steps"]
    peers = [p for p in PEERS if p in models]
    ratio_sets = {
        PEER: result.get("ratios_ours_over_diffusers", {}),
        PEER_COMPILED: result.get("ratios_ours_over_diffusers_compiled", {}),
    }
    rows: list[tuple[str, str, Callable[[Any], str], str | None]] = [
        ("parameters", "params", lambda v: f"{v / 1e6:.3f}M", "params"),
        ("precision / compiled", "precision", str, None),
        (
            "forward MFLOP/image",
            "forward_flops_per_image",
            lambda v: f"{v / 1e6:.1f}",
            "forward_flops_per_image",
        ),
        ("train images/s", "train_images_per_s", lambda v: f"{v:.1f}", "train_images_per_s"),
        ("train GFLOP/s (3x fwd)", "train_gflops", lambda v: f"{v:.2f}", None),
        ("train fraction of fp32 peak", "train_peak_fraction", lambda v: f"{v:.1%}", "train_peak_fraction"),
        ("ms/image/evaluation", "sample_ms_per_image", lambda v: f"{v:.3f}", "sample_ms_per_image"),
        (f"ms/image, {steps} DPM++ steps", "dpm_solver_ms_per_image", lambda v: f"{v:.1f}", None),
        (f"ms/image, {steps} steps + CFG", "dpm_solver_cfg_ms_per_image", lambda v: f"{v:.1f}", None),
        ("sample fraction of fp32 peak", "sample_peak_fraction", lambda v: f"{v:.1%}", None),
    ]
    m = result["machine"]
    names = ["ours", *peers]
    header = "".join(f"{n:>20}" for n in names) + "".join(f"{'ours/' + p:>24}" for p in peers)
    lines = [
        f"genlab bench diffusion: {m['device']} ({m['device_name']}), {m['threads']} threads, "
        f"torch {m['torch']}, diffusers {m['diffusers'] or 'not measured'}",
        f"train batch {s['batch_size']}, sample batch {s['sample_batch_size']}, "
        f"image {s['image_size']}x{s['image_size']}; medians of {s['repeats']} interleaved repeats "
        f"after {s['warmup']} warm-up",
        f"matmul peak (fp32 {peak['matmul_size']}^2 mm, best of 5 before, of each round, of 5 after): "
        f"{peak['gflops']:.1f} GFLOP/s ({peak['gflops_before']:.1f} / "
        f"{max(peak['gflops_interleaved']):.1f} / {peak['gflops_after']:.1f})",
        "",
        f"{'':30}{header}",
    ]
    for label, key, fmt, ratio_key in rows:
        if key == "precision":
            cells = [f"{models[n]['precision']} / {'yes' if models[n]['compiled'] else 'no'}" for n in names]
        else:
            cells = [fmt(models[n][key]) for n in names]
        ratios = [
            f"{ratio_sets[p][ratio_key]:.2f}" if ratio_key and ratio_key in ratio_sets[p] else ""
            for p in peers
        ]
        lines.append(f"{label:30}" + "".join(f"{c:>20}" for c in cells) + "".join(f"{r:>24}" for r in ratios))
    lines.append("")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
