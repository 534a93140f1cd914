"""`genlab bench KIND`: our models against reference implementations, measured side by side."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from typing import Any

import click

from genlab.cli import LazyGroup, cli
from genlab.cli.common import echo
from genlab.errors import GenlabError


@cli.group(
    cls=LazyGroup,
    lazy={
        "sd": "genlab.cli.bench_sd",
        "video": "genlab.cli.bench_video",
        "attacks": "genlab.cli.bench_attacks",
    },
)
def bench() -> None:
    """Benchmarks that time our models against reference implementations in one process.

    Candidates are timed interleaved (A, B, A, B...) after a warm-up and reported as medians and
    ratios, so a busy machine slows both alike. Results go to bench/results/ as JSON (bench/README.md).
    """


def _unet_config(image_size: int) -> Any:
    """The U-Net that `genlab train diffusion --data mnist --cond class` builds: its option defaults."""
    from genlab.cli.common import number_list
    from genlab.cli.train_diffusion import train_diffusion
    from genlab.nn.unet import UNetConfig

    d = {p.name: p.default for p in train_diffusion.params}
    return UNetConfig(
        in_channels=1,
        image_size=image_size,
        base_channels=d["base_channels"],
        channel_mults=number_list(d["channel_mults"], "--channel-mults"),
        num_res_blocks=d["num_res_blocks"],
        attention_levels=number_list(d["attention_levels"], "--attention-levels"),
        dropout=d["dropout"],
        num_classes=10,
    )


@bench.command("diffusion")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to run both models (auto: cuda when available).",
)
@click.option("--threads", default=0, show_default=True, type=int, help="torch threads (0: all cores).")
@click.option("--repeats", default=5, show_default=True, type=int, help="Interleaved timed rounds.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed calls of each model first.")
@click.option(
    "--batch-size", default=None, type=int, help="Training batch  [default: that of genlab train diffusion]"
)
@click.option(
    "--sample-batch-size", default=32, show_default=True, type=int, help="Batch of one denoiser evaluation."
)
@click.option("--image-size", default=28, show_default=True, type=int, help="Side of the 1-channel images.")
@click.option(
    "--matmul-size",
    default=0,
    show_default=True,
    type=int,
    help="Side of the peak matmul (0: 2048, GPU 8192).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Results JSON  [default: bench/results/diffusion-DEVICE.json]",
)
@click.option(
    "--peer-compile/--no-peer-compile",
    default=True,
    show_default=True,
    help="Also time diffusers under torch.compile (a minute or more of compiling on a CPU).",
)
def bench_diffusion(**params: Any) -> None:
    """Our diffusion U-Net against diffusers' UNet2DModel of matched parameter count.

    Measures training images/s (forward, MSE, backward, AdamW step), ms per image of one denoiser
    evaluation (and of a 20-step DPM-Solver++ run, 40 evaluations with guidance), FLOPs per image and the
    fraction of the machine's fp32 matmul peak each model reaches. Our U-Net is the default of
    `genlab train diffusion --data mnist --cond class`, run as shipped (the engine's fused AdamW,
    --precision auto, --compile's default); diffusers' runs in fp32 with torch's AdamW, eager and
    compiled. Without diffusers ours is measured alone.

    \b
    Examples:
      genlab bench diffusion                              # writes bench/results/diffusion-cpu.json
      genlab bench diffusion --threads 1 --repeats 9
      genlab bench diffusion --device cuda --batch-size 256 --out bench/results/diffusion-h100.json
      genlab bench diffusion --image-size 8 --batch-size 2 --repeats 1 --out /tmp/smoke.json
      make bench                                          # installs diffusers (.[bench]), then runs
    """
    from genlab import rundir
    from genlab.bench.diffusion import DiffusionBenchSettings, format_table, run_diffusion_bench
    from genlab.recipes import DIFFUSION_DEFAULTS

    for name in ("repeats", "sample_batch_size", "image_size"):
        if params[name] < 1:
            raise GenlabError(f"--{name.replace('_', '-')} must be at least 1")
    if min(params["threads"], params["warmup"], params["matmul_size"]) < 0:
        raise GenlabError("--threads, --warmup and --matmul-size must not be negative")
    settings = DiffusionBenchSettings(
        device=params["device"],
        threads=params["threads"],
        batch_size=params["batch_size"] or DIFFUSION_DEFAULTS["batch_size"],
        sample_batch_size=params["sample_batch_size"],
        image_size=params["image_size"],
        repeats=params["repeats"],
        warmup=params["warmup"],
        matmul_size=params["matmul_size"],
        peer_compile=params["peer_compile"],
    )
    try:
        result = run_diffusion_bench(_unet_config(params["image_size"]), settings, log=echo)
    except ValueError as e:
        raise GenlabError(str(e)) from None
    result["command"] = shlex.join(["genlab", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = params["out"] or f"bench/results/diffusion-{result['machine']['device'].split(':')[0]}.json"
    rundir.atomic_write_json(out, result)
    echo("")
    echo(format_table(result))
    echo(f"results: {out}")


@bench.command("profile")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Training batch.")
@click.option("--steps", default=5, show_default=True, type=int, help="Profiled steps (after 2 untimed).")
@click.option("--threads", default=0, show_default=True, type=int, help="torch threads (0: all cores).")
@click.option(
    "--baseline", is_flag=True, help="float32 with torch's default AdamW: the step before the speed work."
)
def bench_profile(batch_size: int, steps: int, threads: int, baseline: bool) -> None:
    """Where a training step of the MNIST diffusion U-Net spends its CPU time, by kind of operator
    (torch.profiler): convolutions, attention, normalisation, activations, optimizer, copies.

    \b
    Examples:
      genlab bench profile                 # as genlab train diffusion trains it
      genlab bench profile --baseline      # float32 and torch's default AdamW
    """
    from genlab.bench.profile import format_profile, profile_train_step

    if batch_size < 1 or steps < 1 or threads < 0:
        raise GenlabError("--batch-size and --steps must be at least 1, --threads at least 0")
    result = profile_train_step(_unet_config(28), batch_size, steps, baseline, threads)
    echo(format_profile(result))


@bench.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--n", default=32, show_default=True, type=int, help="Images per timed sampling call.")
@click.option("--steps", default=20, show_default=True, type=int, help="Sampling steps (diffusion).")
@click.option("--guidance", default=3.0, show_default=True, type=float, help="Guidance (class runs).")
@click.option("--repeats", default=3, show_default=True, type=int, help="Interleaved timed rounds.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Results JSON to write.")
def bench_compare(runs, n, steps, guidance, repeats, out) -> None:
    """Trained runs side by side (the first is the reference): training minutes and steps, FLOPs to
    make one image (every denoiser call, and the decoder of a latent model), milliseconds per image timed
    interleaved in this process, and FID and accuracy from each run's eval.json (score each first with
    the same `genlab eval` options: the command checks that they match).

    \b
    Examples:
      genlab bench compare runs/bench-pixel-unet runs/bench-latent-unet runs/bench-pixel-dit
      genlab bench compare runs/diffusion-mnist runs/gan-mnist --out bench/results/gan-diffusion.json
    """
    from genlab import rundir
    from genlab.bench.compare import compare_runs, format_table

    if min(n, steps, repeats) < 1:
        raise GenlabError("--n, --steps and --repeats must be at least 1")
    result = compare_runs(list(runs), n, steps, guidance, repeats, log=echo)
    result["command"] = shlex.join(["genlab", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    echo("")
    echo(format_table(result))
    if out:
        rundir.atomic_write_json(out, result)
        echo(f"results: {out}")


@bench.command("serve")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--model", default=None, help="Which run to ask (default: the first generator).")
@click.option("--requests", default=100, show_default=True, type=int, help="Requests per burst.")
@click.option("--concurrency", default=32, show_default=True, type=int, help="Requests in flight at once.")
@click.option("--rounds", default=2, show_default=True, type=int, help="Bursts, one after another.")
@click.option("--num-images", default=4, show_default=True, type=int)
@click.option("--steps", default=10, show_default=True, type=int)
@click.option(
    "--rate-per-minute",
    default=60.0,
    show_default=True,
    type=float,
    help="The server's per-client rate; a huge one leaves only the queue to bound the burst.",
)
@click.option("--burst", default=10, show_default=True, type=int, help="The server's per-client burst.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Results JSON to write.")
def bench_serve(
    runs, model, requests, concurrency, rounds, num_images, steps, rate_per_minute, burst, out
) -> None:
    """A load test of `genlab serve RUNS` on loopback: bursts of concurrent POST /api/generate from one
    client. Reports the status codes (anything but 200 and 429 is an error), latencies, and the server's
    resident memory before, at its peak and after each burst.

    \b
    Example:
      genlab bench serve runs/diffusion-mnist --requests 100 --concurrency 32 --out bench/results/serve.json
      genlab bench serve runs/diffusion-mnist --rate-per-minute 1e9 --burst 100000   # the queue alone
    """
    import json as _json

    from genlab import rundir
    from genlab.bench.load import load_test

    if min(requests, concurrency, rounds) < 1:
        raise GenlabError("--requests, --concurrency and --rounds must be at least 1")
    name = model or next(
        (
            p.rstrip("/").split("/")[-1]
            for p in runs
            if rundir.read_config(p).get("kind") in ("diffusion", "gan")
        ),
        None,
    )
    if name is None:
        raise GenlabError("none of RUNS makes images: give a diffusion or GAN run")
    body = {"model": name, "num_images": num_images, "steps": steps}
    limits = ["--rate-per-minute", str(rate_per_minute), "--burst", str(burst)]
    result = load_test(list(runs), body, requests, concurrency, rounds, limits)
    result["server_limits"] = {"rate_per_minute": rate_per_minute, "burst": burst}
    echo(_json.dumps(result, indent=2))
    if out:
        rundir.atomic_write_json(out, result)
        echo(f"results: {out}")
    if result["unexpected"] or not result["alive_after"]:
        raise GenlabError(f"the server answered {result['unexpected']} or stopped answering")
