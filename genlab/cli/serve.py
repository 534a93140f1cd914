"""`genlab serve`: the web app and REST API over trained runs."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import echo
from genlab.errors import GenlabError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cli.command("serve")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback only).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="Where the models run (cpu, cuda).")
@click.option("--max-images", default=8, show_default=True, type=int, help="Images per request.")
@click.option("--max-steps", default=100, show_default=True, type=int, help="Sampling (and PGD) steps.")
@click.option("--max-prompt-chars", default=200, show_default=True, type=int)
@click.option("--max-upload-bytes", default=1_000_000, show_default=True, type=int)
@click.option(
    "--rate-per-minute", default=60.0, show_default=True, type=float, help="Costly requests per client."
)
@click.option("--burst", default=10, show_default=True, type=int, help="Requests a client may make at once.")
@click.option("--max-waiting", default=8, show_default=True, type=int, help="Jobs queued; more get 429.")
def serve(runs, host, port, device, max_images, max_steps, max_prompt_chars, max_upload_bytes,
          rate_per_minute, burst, max_waiting) -> None:  # fmt: skip
    """Serve RUNS (diffusion, text-to-image, GAN and classifier runs) in a web page at http://HOST:PORT/:
    generate with a live preview, a gallery, training curves and an attack playground; the REST API is
    documented at /docs. Clients choose among these runs by name only.

    \b
    Examples:
      genlab serve runs/diffusion-mnist runs/t2i-shapes runs/classifier-mnist
      genlab serve runs/demo/diffusion-mnist --port 8080 --rate-per-minute 20
    """
    from genlab.server.limits import ServerLimits

    limits = ServerLimits(
        max_images=max_images,
        max_steps=max_steps,
        max_prompt_chars=max_prompt_chars,
        max_upload_bytes=max_upload_bytes,
        rate_per_minute=rate_per_minute,
        burst=burst,
        max_waiting=max_waiting,
    )
    run_server(list(runs), host, port, device, limits)


def run_server(
    runs: list, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", limits=None
) -> None:
    """Load ``runs``, print the URL and serve until Ctrl-C (also the end of `genlab demo --serve`)."""
    import uvicorn

    from genlab.server.app import create_app
    from genlab.server.registry import Registry

    if not 0 < port < 65536:
        raise GenlabError(f"--port must be between 1 and 65535 (got {port})")
    if host not in LOOPBACK:
        echo(
            f"warning: listening on {host}: anyone who can reach this machine can use these models; "
            "the server has no authentication"
        )
    app = create_app(Registry(runs, device), limits)
    shown = "localhost" if host in LOOPBACK else host
    echo(f"serving {len(runs)} run(s) at http://{shown}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
