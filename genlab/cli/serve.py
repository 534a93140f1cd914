"""`genlab serve`: the web app and REST API over trained runs."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import echo
from genlab.errors import GenlabError
from genlab.server.limits import ServerLimits

_LIMITS = ServerLimits()  # the defaults, written once (in the dataclass)
# The library's parameters that options of another name set (genlab.cli.flags): errors and the notes of
# genlab.server.registry.Registry name them.
FLAGS = {"data_roots": "--data-root"}


@cli.command("serve", flags=FLAGS)
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; the default keeps the server to this machine.",
)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="Where the models run (cpu, cuda).")
@click.option(
    "--max-images", default=_LIMITS.max_images, show_default=True, type=int, help="Images per request."
)
@click.option(
    "--max-clips", default=_LIMITS.max_clips, show_default=True, type=int, help="Video: clips per request."
)
@click.option(
    "--max-frames", default=_LIMITS.max_frames, show_default=True, type=int, help="Video: frames per clip."
)
@click.option(
    "--max-steps", default=_LIMITS.max_steps, show_default=True, type=int, help="Sampling and PGD steps."
)
@click.option("--max-prompt-chars", default=_LIMITS.max_prompt_chars, show_default=True, type=int)
@click.option("--max-upload-bytes", default=_LIMITS.max_upload_bytes, show_default=True, type=int)
@click.option(
    "--rate-per-minute",
    default=_LIMITS.rate_per_minute,
    show_default=True,
    type=float,
    help="Costly requests per client.",
)
@click.option(
    "--burst", default=_LIMITS.burst, show_default=True, type=int, help="Requests a client may make at once."
)
@click.option(
    "--max-waiting",
    default=_LIMITS.max_waiting,
    show_default=True,
    type=int,
    help="Jobs queued; more get 429.",
)
@click.option(
    "--max-jobs-per-client",
    default=_LIMITS.max_jobs_per_client,
    show_default=True,
    type=int,
    help="Jobs one client may have running or waiting at once; more get 429.",
)
@click.option(
    "--allowed-host",
    "allowed_host",
    multiple=True,
    metavar="NAME",
    help="Another Host name to answer, e.g. a DNS name of this machine (repeatable). Others get 400: "
    "that stops DNS rebinding.",
)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    metavar="IPS",
    help="Trust X-Forwarded-For/-Proto from these proxy addresses (comma-separated, as uvicorn). "
    "By default nobody: otherwise any client could pick its address and escape the rate limit.",
)
@click.option(
    "--data-root", "data_root", multiple=True, type=click.Path(exists=True, file_okay=False), metavar="DIR",
    help="A folder whose images a classifier run's held-out split may show (repeatable). By default only "
    "built-in datasets and folders inside the run directory.",
)  # fmt: skip
def serve(runs, host, port, device, max_images, max_clips, max_frames, max_steps, max_prompt_chars,
          max_upload_bytes,
          rate_per_minute, burst, max_waiting, max_jobs_per_client, allowed_host, forwarded_allow_ips,
          data_root) -> None:  # fmt: skip
    """Serve RUNS (diffusion, text-to-image, video, GAN and classifier runs, and Stable Diffusion checkpoint
    folders) in a web page at http://HOST:PORT/:
    generate with a live preview, a gallery, training curves and an attack playground; the REST API is
    documented at /docs. Clients choose among these runs by name only. There is no authentication: who
    can reach the address can use the models and see the runs' held-out images, class names and metrics.

    \b
    Examples:
      genlab serve runs/diffusion-mnist runs/t2i-shapes runs/classifier-mnist
      genlab serve runs/demo/diffusion-mnist --port 8080 --rate-per-minute 20
      genlab serve runs/video-moving-shapes --max-clips 2 --max-frames 16   # clips, played live
      genlab serve runs/classifier-pets --data-root ~/pets     # show the held-out pets in the playground
      genlab serve ~/models/stable-diffusion-v1-5 --max-images 1   # the real model, previewed live
    """
    limits = ServerLimits(
        max_images=max_images,
        max_clips=max_clips,
        max_frames=max_frames,
        max_steps=max_steps,
        max_prompt_chars=max_prompt_chars,
        max_upload_bytes=max_upload_bytes,
        rate_per_minute=rate_per_minute,
        burst=burst,
        max_waiting=max_waiting,
        max_jobs_per_client=max_jobs_per_client,
    )
    run_server(
        list(runs), host, port, device, limits, allowed_hosts=allowed_host,
        forwarded_allow_ips=forwarded_allow_ips, data_roots=data_root,
    )  # fmt: skip


def run_server(
    runs: list,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    limits: ServerLimits | None = None,
    *,
    allowed_hosts: tuple[str, ...] = (),
    forwarded_allow_ips: str | None = None,
    data_roots: tuple[str, ...] = (),
) -> None:
    """Load ``runs``, print the URL and serve until Ctrl-C (also the end of `genlab demo --serve`)."""
    import uvicorn

    from genlab.cli.flags import as_flags
    from genlab.server.app import create_app, uvicorn_config
    from genlab.server.guard import allowed_hosts as hosts_of
    from genlab.server.guard import is_loopback
    from genlab.server.registry import Registry

    if not 0 < port < 65536:
        raise GenlabError(f"--port must be between 1 and 65535 (got {port})")
    if not is_loopback(host):
        echo(
            f"warning: listening on {host}: anyone who can reach this machine can use these models; "
            "the server has no authentication"
        )
    registry = Registry(runs, device, data_roots)
    for note in registry.notes:
        echo(as_flags(note, FLAGS))
    hosts = hosts_of(host, allowed_hosts)
    app = create_app(registry, limits, allowed_hosts=hosts)
    shown = "localhost" if is_loopback(host) else host
    echo(f"serving {len(runs)} run(s) at http://{shown}:{port}/ (Ctrl-C stops)")
    uvicorn.Server(uvicorn_config(app, host, port, forwarded_allow_ips)).run()
