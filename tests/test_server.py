"""The web app's REST API through FastAPI's test client: every endpoint, bad inputs refused with a 4xx
and a one-line JSON message, the rate limit and the queue, and the server still answering afterwards."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from genlab.cli import cli
from genlab.errors import GenlabError
from genlab.server.app import create_app
from genlab.server.limits import JobQueue, RateLimiter, ServerLimits
from genlab.server.registry import Registry

SHORT = ["--steps", "2", "--eval-every", "0", "--sample-every", "0", "--no-progress"]


def _cli(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def registry(served_runs):
    root = served_runs
    return Registry([root / "diffusion", root / "gan", root / "classifier", root / "t2i"])


@pytest.fixture()
def client(registry):
    return TestClient(create_app(registry, ServerLimits(max_images=4, max_steps=20, burst=1000)))


def _png(size=(8, 8), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_page_models_health_and_openapi(client):
    page = client.get("/")
    assert (
        page.status_code == 200
        and 'id="generate"' in page.text
        and "http" not in page.text.split("<script>")[0]
    )
    assert "cdn" not in page.text.lower()  # no internet: everything is served by the app
    models = client.get("/api/models").json()
    kinds = {m["name"]: m["kind"] for m in models["models"]}
    assert kinds == {
        "diffusion": "diffusion",
        "gan": "gan",
        "classifier": "classifier",
        "t2i": "text-to-image",
    }
    assert models["limits"]["max_images"] == 4
    assert client.get("/api/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/api/models", "/api/generate", "/api/generate/stream", "/api/attack"} <= set(spec["paths"])


@pytest.mark.parametrize(
    "body",
    [
        {"model": "diffusion", "class_name": "3", "num_images": 2, "steps": 2},
        {"model": "t2i", "prompt": "a red circle", "negative_prompt": "blue", "num_images": 2, "steps": 2},
        {"model": "gan", "num_images": 3},
    ],
)
def test_generate(client, body):
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["images"]) == body["num_images"]
    assert _decoded(out["images"][0]).size[0] in (8, 32)
    assert out["settings"]["model"] == body["model"]
    again = client.post("/api/generate", json=body).json()
    assert again["images"] == out["images"]  # the seed fixes the images


def test_generate_stream_sends_progress_then_the_result(client):
    body = {"model": "diffusion", "class_name": "1", "num_images": 2, "steps": 3}
    with client.stream("POST", "/api/generate/stream", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [
        (block.split("\n")[0][len("event: ") :], json.loads(block.split("\n")[1][len("data: ") :]))
        for block in text.strip().split("\n\n")
    ]
    progress = [d for e, d in events if e == "progress"]
    assert [d["step"] for d in progress] == [0, 1, 2, 3] and all(len(d["preview"]) == 2 for d in progress)
    assert events[-1][0] == "done" and len(events[-1][1]["images"]) == 2


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model": "nope"}, 404, "no model named 'nope'"),
        ({"model": "classifier"}, 404, "choose one of"),
        ({"model": "diffusion", "num_images": 10**12}, 422, "num_images must be between 1 and 4"),
        ({"model": "diffusion", "num_images": 1e308}, 422, "num_images"),
        ({"model": "diffusion", "steps": "many"}, 422, "steps"),
        ({"model": "diffusion", "steps": 21}, 422, "steps must be between 1 and 20"),
        ({"model": "diffusion", "seed": -1}, 422, "seed"),
        ({"model": "diffusion", "guidance": 1e9}, 422, "guidance"),
        ({"model": "diffusion", "sampler": "magic"}, 422, "unknown sampler"),
        ({"model": "diffusion", "class_name": "cat"}, 422, "unknown class 'cat'"),
        ({"model": "diffusion", "class_name": "99"}, 422, "out of range"),
        ({"model": "diffusion", "prompt": "a cat"}, 422, "takes no prompt"),
        ({"model": "t2i"}, 422, "give a prompt"),
        ({"model": "t2i", "prompt": "x" * 500}, 422, "limited to 200 characters"),
        ({"model": "diffusion", "path": "/etc/passwd"}, 422, "path"),
        ({"steps": 2}, 422, "model"),
    ],
)
def test_bad_generate_requests_get_a_clear_4xx(client, body, status, message):
    r = client.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error
    assert client.get("/api/health").status_code == 200


def test_attack_on_a_held_out_image_and_an_upload(client):
    r = client.post(
        "/api/attack", data={"model": "classifier", "attack": "pgd", "eps": "0.3", "steps": "5", "index": "3"}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["true_label"] == out["attacked_label"] and out["linf"] <= 0.3 + 1e-6
    assert len(out["before"]) == 3 and len(out["after"]) == 3
    assert _decoded(out["adversarial"]).size == (8, 8) and out["magnification"] > 0
    zero = client.post("/api/attack", data={"model": "classifier", "eps": "0", "index": "3"}).json()
    assert zero["linf"] == 0 and zero["adversarial"] == zero["original"]  # eps 0 is the identity
    files = {"image": ("digit.png", _png((20, 12)), "image/png")}
    r = client.post("/api/attack", data={"model": "classifier", "eps": "0.1"}, files=files)
    assert r.status_code == 200 and r.json()["true_label"] is None
    png = client.get("/api/models/classifier/images/3")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "data, files, status, message",
    [
        ({"model": "diffusion", "index": "0"}, None, 404, "choose one of: classifier"),
        ({"model": "classifier", "index": "0", "attack": "cw"}, None, 422, "unknown attack"),
        ({"model": "classifier", "index": "0", "eps": "5"}, None, 422, "eps must be between 0 and 0.5"),
        ({"model": "classifier", "index": "0", "eps": "nan"}, None, 422, "eps"),
        ({"model": "classifier", "index": "0", "steps": "1000"}, None, 422, "steps"),
        ({"model": "classifier", "index": "99999"}, None, 422, "index must be between"),
        ({"model": "classifier"}, None, 422, "either index"),
        (
            {"model": "classifier"},
            {"image": ("x.png", b"not an image", "image/png")},
            422,
            "not a readable image",
        ),
        ({"model": "classifier"}, {"image": ("x.txt", b"hello", "text/plain")}, 415, "uploads must be"),
        ({"model": "classifier"}, {"image": ("x.png", b"0" * 2_000_000, "image/png")}, 413, "larger than"),
        ({"model": "classifier"}, {"image": ("x.png", _png((4000, 4000)), "image/png")}, 422, "at most 512"),
    ],
)
def test_bad_attack_requests_get_a_clear_4xx(client, data, files, status, message):
    r = client.post("/api/attack", data=data, files=files)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/api/health").status_code == 200


def test_metrics_of_a_run(client):
    out = client.get("/api/models/diffusion/metrics").json()
    assert out["train"] and all("step" in row and "loss" in row for row in out["train"])
    assert client.get("/api/models/nope/metrics").status_code == 404


def test_rate_limit_per_client(registry):
    now = [0.0]
    app = create_app(registry, ServerLimits(rate_per_minute=60, burst=2), clock=lambda: now[0])
    client = TestClient(app)
    body = {"model": "gan", "num_images": 1}
    assert [client.post("/api/generate", json=body).status_code for _ in range(3)] == [200, 200, 429]
    r = client.post("/api/generate", json=body)
    assert (
        r.status_code == 429 and r.headers["retry-after"] == "1" and "too many requests" in r.json()["error"]
    )
    now[0] += 1.0  # one token back after a second at 60 a minute
    assert client.post("/api/generate", json=body).status_code == 200
    assert client.get("/api/models").status_code == 200  # cheap endpoints are not limited


def test_token_bucket_and_queue_units():
    now = [0.0]
    bucket = RateLimiter(rate_per_minute=30, burst=2, clock=lambda: now[0])
    assert [bucket.take("a"), bucket.take("a")] == [0.0, 0.0]
    assert bucket.take("a") == pytest.approx(2.0) and bucket.take("b") == 0.0  # per client
    now[0] = 2.0
    assert bucket.take("a") == 0.0

    import asyncio
    import threading

    gate = threading.Event()

    async def burst():
        queue = JobQueue(running=1, waiting=1)
        jobs = [asyncio.create_task(queue.run(gate.wait, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Exception) as refused:
            await queue.run(gate.wait, 5)
        gate.set()
        await asyncio.gather(*jobs)
        return type(refused.value).__name__, queue.admitted

    assert asyncio.run(burst()) == ("Busy", 0)
    with pytest.raises(GenlabError):
        ServerLimits(max_images=0)


def test_registry_refuses_other_kinds(tmp_path):
    _cli(
        "train",
        "vae",
        "--data",
        "digits",
        "--downsample",
        "2",
        "--base-channels",
        "8",
        "--out",
        str(tmp_path / "vae"),
        *SHORT,
    )
    with pytest.raises(GenlabError, match="the server shows"):
        Registry([tmp_path / "vae"])
    with pytest.raises(GenlabError):
        Registry([tmp_path / "missing"])


def test_serve_command_errors():
    r = CliRunner().invoke(cli, ["serve", "/nonexistent/run"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["serve", "x", "--port", "0"])
    assert r.exit_code == 2 and "--port" in r.output


def test_torch_threads_unchanged():
    assert torch.get_num_threads() >= 1


def test_a_burst_against_a_live_server_gets_only_200_and_429(served_runs):
    from genlab.bench.load import load_test

    out = load_test(
        [str(served_runs / "gan")], {"model": "gan", "num_images": 2}, requests=30, concurrency=10, rounds=2,
        server_args=["--burst", "5"],
    )  # fmt: skip
    assert out["unexpected"] == {} and out["alive_after"]
    first = out["rounds"][0]["statuses"]
    assert first.get(200, 0) >= 1 and first.get(429, 0) >= 1 and sum(first.values()) == 30
    assert out["rounds"][1]["rss_after_mb"] < out["rss_before_mb"] + 300  # bounded, not growing per request
