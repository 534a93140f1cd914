"""`genlab bench sd`: our Stable Diffusion U-Net step against diffusers' at the real SD 1.5 architecture."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone

import click

from genlab.cli.bench import bench
from genlab.cli.common import echo


@bench.command("sd")
@click.option(
    "--sizes", default="512,256", show_default=True, help="Image sides (the latents are 8x smaller)."
)
@click.option("--precisions", default="fp32,bf16", show_default=True, help="fp32 and/or bf16 (autocast).")
@click.option("--repeats", default=3, show_default=True, type=int, help="Interleaved timed rounds.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed calls of each model first.")
@click.option("--threads", default=0, show_default=True, type=int, help="torch threads (0: all cores).")
@click.option("--no-peer", is_flag=True, help="Time ours alone (diffusers not needed).")
@click.option(
    "--out",
    default="bench/results/sd-cpu.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Results JSON to write.",
)
def bench_sd(sizes, precisions, repeats, warmup, threads, no_peer, out) -> None:
    """Time one guided denoising step (a batch of 2 latents, 77 text tokens) of our SD 1.5 U-Net and of
    diffusers' UNet2DConditionModel with the same random weights, interleaved in this process, at each
    size and precision; report seconds per step, the peak memory a step adds, and the largest difference
    between the two predictions. Needs about 8 GB of memory (two 860M-parameter networks).

    \b
    Examples:
      genlab bench sd                                   # writes bench/results/sd-cpu.json
      genlab bench sd --sizes 256 --precisions fp32 --repeats 1 --out /tmp/sd.json
    """
    from genlab import rundir
    from genlab.bench.sd import SDBenchSettings, format_sd_table, run_sd_bench
    from genlab.cli.common import number_list
    from genlab.errors import GenlabError

    names = tuple(p.strip() for p in precisions.split(",") if p.strip())
    if not names or set(names) - {"fp32", "bf16"}:
        raise GenlabError(f"--precisions takes fp32 and/or bf16, like fp32,bf16 (got {precisions!r})")
    sides = number_list(sizes, "--sizes")
    if not sides or any(s < 8 or s % 8 or s > 2048 for s in sides):
        raise GenlabError(
            f"--sizes takes sides divisible by 8 between 8 and 2048, like 512,256 (got {sizes!r})"
        )
    if repeats < 1 or warmup < 0:
        raise GenlabError("--repeats must be at least 1 and --warmup at least 0")
    settings = SDBenchSettings(
        sides, names, repeats=repeats, warmup=warmup, threads=threads, peer=not no_peer
    )
    result = run_sd_bench(settings)
    result["command"] = shlex.join(["genlab", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    echo(format_sd_table(result))
    rundir.atomic_write_json(out, result)
    echo(f"results: {out}")
